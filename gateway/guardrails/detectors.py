"""Fast local detectors for jailbreak and prompt-injection phrasing and deny-listed topics
(PII and secrets are in `pii.py`).

They are plain patterns so nemoguardrails can run them as actions and the gateway can call
them on its hot path without an interpreter in between.
"""

from __future__ import annotations

import re


def first_rule(rules: dict[str, str], text: str) -> str:
    """The name of the first rule whose pattern is in `text` (case-blind), or ''."""
    for name, pattern in rules.items():
        if re.search(pattern, text, re.I):
            return name
    return ""


# --- jailbreak and prompt injection ----------------------------------------------------------

# Named, so a verdict says which rule fired.
JAILBREAK_RULES: dict[str, str] = {
    # The verb, an optional determiner, the qualifier and the noun must be adjacent:
    # "ignore all previous instructions" is an attack, "don't ignore my previous email
    # about the oven's instructions" is not.
    "ignore_previous": r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)?"
    r"(?:of\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|preceding|system)\s+"
    r"(?:instructions|rules|guidelines|prompts?|directions)\b",
    # "Ignore all the instructions you got before" (the DAN-Mode opener).
    "ignore_before": r"\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:the\s+)?"
    r"(?:instructions|rules|guidelines)\s+you\s+(?:got|were\s+given|received)\s+before\b",
    "ignore_told": r"\b(?:ignore|forget)\s+(?:everything|all)\s+"
    r"(?:you\s+were|you've\s+been)\s+told\b",
    "you_are_dan": r"\byou are (?:now )?"
    r"(?:DAN|in developer mode|jailbroken|unfiltered|unrestricted)\b",
    "do_anything_now": r"\bdo anything now\b",
    "special_mode": r"\b(?:developer|god|sudo|jailbreak|DAN) mode\b",
    "no_restrictions": r"\bpretend (?:that )?you (?:have|had) no "
    r"(?:restrictions|rules|filters|guidelines)\b",
    "reveal_prompt": r"\b(?:reveal|print|show|repeat|leak|output)\s+(?:me\s+)?(?:your|the)\s+"
    r"(?:full\s+)?(?:system|hidden|initial|original)\s+(?:prompt|instructions)\b",
    "chat_markup": r"</?(?:system|instructions?)>|\[/?INST\]|<\|im_start\|>\s*system",
    "new_instructions": r"\bnew instructions?:",
}
JAILBREAK_PATTERNS = list(JAILBREAK_RULES.values())


def topic_patterns(keywords: list[str]) -> list[str]:
    """Whole-word, case-blind patterns for a deny-listed topic's keywords."""
    return [r"\b" + re.escape(k).replace(r"\ ", r"\s+") + r"\b" for k in keywords]
