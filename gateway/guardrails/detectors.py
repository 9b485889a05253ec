"""Fast local detectors: PII, secrets, jailbreak and prompt-injection phrasing, deny topics.

Each detector is compiled regular expressions plus a validator where a pattern alone would
flag innocent text: card numbers must pass Luhn and carry a card-network prefix, IBANs must
pass ISO 13616 mod-97, phone numbers need a phone's shape and digit count, e-mail addresses
need a real domain. They are plain functions so nemoguardrails can run them as actions and
the gateway can call them on its hot path without an interpreter in between.

Invariant: `find_pii(text)` returns non-overlapping spans sorted by start, and `mask` replaces
exactly those spans, so masked text never contains a detected value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENTITIES = ("email", "phone", "card", "iban", "national_id", "secret")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    entity: str


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{2,4}(?:[ .-]\d{2,5}){1,3}"
    r"(?![\w-])"
    r"|(?<![\w+])\+\d{8,14}(?!\w)"
)
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_NINO = re.compile(
    r"\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?"
    r"\d{2} ?[A-D]\b"
)
_SECRET = re.compile(
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(?:api[_-]?key|secret|token|password|passwd)[\"']?\s*[:=]\s*[\"']?)"
    r"[A-Za-z0-9_\-/+=]{12,}"
)

# ISO 13616 lengths of the IBAN countries most often seen; others pass on mod-97 alone.
_IBAN_LENGTHS = {
    "AT": 20,
    "BE": 16,
    "CH": 21,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "IE": 22,
    "IT": 27,
    "LU": 20,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "SE": 24,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_network(digits: str) -> bool:
    """A known issuer prefix and a length that network issues."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    return (
        (digits[0] == "4" and n in (13, 16, 19))
        or (51 <= two <= 55 and n == 16)
        or (2221 <= four <= 2720 and n == 16)
        or (two in (34, 37) and n == 15)
        or ((digits.startswith("6011") or two == 65) and n in (16, 19))
        or (3528 <= four <= 3589 and n in (16, 19))
    )


def iban_ok(raw: str) -> bool:
    iban = raw.replace(" ", "")
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _phone_ok(match: str) -> bool:
    digits = sum(ch.isdigit() for ch in match)
    if not 9 <= digits <= 15:
        return False
    # Dates (2024-01-31 10:30) and SSN-shaped numbers (123-45-6789) are not phones.
    return not (re.match(r"\d{4}-\d{2}-\d{2}", match) or re.fullmatch(r"\d{3}-\d{2}-\d{4}", match))


def find_pii(text: str, entities: tuple[str, ...] | list[str] = ENTITIES) -> list[Span]:
    """Every PII/secret span in `text`, without overlaps (the earlier, longer one wins)."""
    spans: list[Span] = []
    want = set(entities)
    if "secret" in want:
        spans += [Span(m.start(), m.end(), "secret") for m in _SECRET.finditer(text)]
    if "email" in want:
        spans += [Span(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
    if "iban" in want:
        spans += [
            Span(m.start(), m.end(), "iban") for m in _IBAN.finditer(text) if iban_ok(m.group())
        ]
    if "card" in want:
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if _card_network(digits) and luhn_ok(digits):
                spans.append(Span(m.start(), m.end(), "card"))
    if "national_id" in want:
        spans += [Span(m.start(), m.end(), "national_id") for m in _SSN.finditer(text)]
        spans += [Span(m.start(), m.end(), "national_id") for m in _NINO.finditer(text)]
    if "phone" in want:
        spans += [
            Span(m.start(), m.end(), "phone") for m in _PHONE.finditer(text) if _phone_ok(m.group())
        ]
    spans.sort(key=lambda s: (s.start, -(s.end - s.start)))
    out: list[Span] = []
    for span in spans:
        if not out or span.start >= out[-1].end:
            out.append(span)
    return out


def mask(text: str, spans: list[Span]) -> str:
    parts, last = [], 0
    for s in spans:
        parts.append(text[last : s.start])
        parts.append(f"[{s.entity.upper()}]")
        last = s.end
    parts.append(text[last:])
    return "".join(parts)


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
