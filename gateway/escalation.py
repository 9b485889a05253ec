"""Request-level escalation: when a student should not answer alone.

Two signals, each optional per route:
- confidence: the geometric mean of the student's token probabilities (from OpenAI-style
  `logprobs`, which our student server and vLLM return); below `min_confidence` the teacher
  answers instead;
- novelty: the prompt's cosine distance (character n-grams, `contracts.prompt_index`) to
  the nearest prompt the candidate was trained on; above `max_prompt_distance` the teacher
  answers without asking the student.

Invariant: indexes are built off the event loop when a candidate's dataset changes; a
lookup is one sparse vector product, done only on routes that ask for it.
"""

from __future__ import annotations

from contracts.openai_shapes import confidence_of

__all__ = ["confidence_of", "confidence_reason"]


def confidence_reason(confidence: float | None, threshold: float) -> str | None:
    """The escalation reason, or None when the student's answer may stand."""
    if confidence is None:
        return "escalated: student returned no logprobs"
    if confidence < threshold:
        return f"escalated: confidence {confidence:.2f} < {threshold:.2f}"
    return None
