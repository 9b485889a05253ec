"""The unit every step of the loop passes on: one curated example.

Curation makes them, datasets split and freeze them, training learns from them, evaluation
scores against them; the type lives here, below all four, so none imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AnswerSource = Literal["teacher", "review"]


@dataclass
class Example:
    request_id: str
    prompt: list[dict[str, Any]]
    answer: str
    answer_source: AnswerSource = "teacher"  # "review": a person's label replaced the teacher's
    label_id: str = ""
