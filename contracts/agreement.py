"""Agreement between a student's answer and the teacher's, by the metric a route names.

Used by evaluation (every eval example) and by the gateway's audits (sampled live traffic),
so both judge with the same function. Each metric returns a score in [0, 1]; a pair
"agrees" when the score is 1 for exact metrics, or at least the threshold for similarity.
"""

from __future__ import annotations

import math
import re
from statistics import NormalDist
from typing import Any

import orjson

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def exact_match(student: str, teacher: str) -> float:
    return 1.0 if normalise(student) == normalise(teacher) else 0.0


def _json(text: str) -> Any:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def json_field_match(student: str, teacher: str, fields: list[str] | None = None) -> float:
    """Share of the teacher's fields (or the named ones) the student got equal; 0 when the
    student's answer is not JSON."""
    s, t = _json(student), _json(teacher)
    if not isinstance(t, dict):
        return exact_match(student, teacher)
    if not isinstance(s, dict):
        return 0.0
    keys = fields or list(t)
    if not keys:
        return 1.0 if s == t else 0.0
    return sum(1 for k in keys if s.get(k) == t.get(k)) / len(keys)


def chrf(student: str, teacher: str) -> float:
    """chrF (character n-gram F-score, sacrebleu's implementation) scaled to [0, 1]."""
    from sacrebleu.metrics.chrf import CHRF

    return float(CHRF().sentence_score(student, [teacher]).score) / 100.0


def agreement(metric: str, student: str, teacher: str, fields: list[str] | None = None) -> float:
    if metric == "exact_match":
        return exact_match(student, teacher)
    if metric == "json_field_match":
        return json_field_match(student, teacher, fields)
    if metric == "chrf":
        return chrf(student, teacher)
    raise ValueError(f"metric {metric!r} needs the teacher as judge; use distiller.judge")


JUDGE_SYSTEM = (
    "You compare two answers to the same request. Reply with one word: YES if the candidate "
    "answer says the same thing as the reference answer (same decision, same facts, same "
    "values), otherwise NO."
)


def judge_messages(prompt: str, candidate: str, reference: str) -> list[dict[str, str]]:
    """The chat the teacher sees when it judges agreement (metric `llm_judge`)."""
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": f"Request:\n{prompt}\n\nReference answer:\n{reference}\n\n"
            f"Candidate answer:\n{candidate}\n\nSame? YES or NO.",
        },
    ]


def parse_judgement(text: str) -> float:
    return 1.0 if normalise(text).startswith("yes") else 0.0


def wilson_bounds(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(lower, upper) of the Wilson score interval for a binomial proportion; (0, 1) with
    no evidence. The gate, the rollout and the quality views all bound agreement with it."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return (centre - margin) / denom, (centre + margin) / denom
