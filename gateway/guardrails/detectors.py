"""Fast local detectors for jailbreak and prompt-injection phrasing and deny-listed topics
(PII and secrets are in `pii.py`).

They are plain patterns so nemoguardrails can run them as actions and the gateway can call
them on its hot path without an interpreter in between.
"""

from __future__ import annotations

import re

# --- jailbreak and prompt injection ----------------------------------------------------------

JAILBREAK_PATTERNS = [
    # The verb, an optional determiner, the qualifier and the noun must be adjacent:
    # "ignore all previous instructions" is an attack, "don't ignore my previous email
    # about the oven's instructions" is not.
    r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)?"
    r"(?:of\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|preceding|system)\s+"
    r"(?:instructions|rules|guidelines|prompts?|directions)\b",
    r"\b(?:ignore|forget)\s+(?:everything|all)\s+(?:you\s+were|you've\s+been)\s+told\b",
    r"\byou are (?:now )?(?:DAN|in developer mode|jailbroken|unfiltered|unrestricted)\b",
    r"\bdo anything now\b",
    r"\b(?:developer|god|sudo|jailbreak) mode\b",
    r"\bpretend (?:that )?you (?:have|had) no (?:restrictions|rules|filters|guidelines)\b",
    r"\b(?:reveal|print|show|repeat|leak|output)\s+(?:me\s+)?(?:your|the)\s+"
    r"(?:full\s+)?(?:system|hidden|initial|original)\s+(?:prompt|instructions)\b",
    r"</?(?:system|instructions?)>|\[/?INST\]|<\|im_start\|>\s*system",
    r"\bnew instructions?:",
]


def topic_patterns(keywords: list[str]) -> list[str]:
    """Whole-word, case-blind patterns for a deny-listed topic's keywords."""
    return [r"\b" + re.escape(k).replace(r"\ ", r"\s+") + r"\b" for k in keywords]
