"""Request-level escalation: when a student should not answer alone.

Two signals, each optional per route:
- confidence: the geometric mean of the student's token probabilities (from OpenAI-style
  `logprobs`, which our student server and vLLM return); below `min_confidence` the teacher
  answers instead;
- novelty: the prompt's cosine distance (character n-grams) to the nearest prompt the
  candidate was trained on; above `max_prompt_distance` the teacher answers without asking
  the student.

Invariant: indexes are built off the event loop when a candidate's dataset changes; a
lookup is one sparse vector product, done only on routes that ask for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def confidence_of(response: dict[str, Any]) -> float | None:
    """exp(mean token logprob) of the first choice, or None when no logprobs came back."""
    choices = response.get("choices") or []
    if not choices:
        return None
    logprobs = (choices[0].get("logprobs") or {}).get("content") or []
    values = [t["logprob"] for t in logprobs if isinstance(t, dict) and "logprob" in t]
    if not values:
        return None
    return math.exp(sum(values) / len(values))


def prompt_text(messages: Any) -> str:
    """The user's side of a chat (system prompts excluded): what novelty is measured on."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    parts = []
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
    return "\n".join(parts)


@dataclass
class PromptIndex:
    """Training prompts as L2-normalised hashed character n-gram vectors."""

    matrix: Any  # scipy.sparse.csr_matrix, rows = training prompts
    size: int

    @staticmethod
    def _vectorizer() -> Any:
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(3, 4),
            n_features=2**18,
            alternate_sign=False,
            norm="l2",
            lowercase=True,
        )

    @classmethod
    def build(cls, prompts: list[str]) -> PromptIndex:
        return cls(cls._vectorizer().transform(prompts), len(prompts))

    def distance(self, prompt: str) -> float:
        """1 - cosine similarity to the nearest training prompt (1.0 for an empty index)."""
        if self.size == 0:
            return 1.0
        vec = self._vectorizer().transform([prompt])
        sims = (self.matrix @ vec.T).toarray().ravel()
        return float(1.0 - np.max(sims))


def confidence_reason(confidence: float | None, threshold: float) -> str | None:
    """The escalation reason, or None when the student's answer may stand."""
    if confidence is None:
        return "escalated: student returned no logprobs"
    if confidence < threshold:
        return f"escalated: confidence {confidence:.2f} < {threshold:.2f}"
    return None
