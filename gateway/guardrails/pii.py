"""PII and secrets: where they are in a text, and the text with them masked.

Candidates come from patterns; well-kept libraries decide where a pattern alone would be
wrong: `phonenumbers` (Google's libphonenumber) validates each phone-shaped run in the
national formats of the regions in `PHONE_REGIONS`, or anywhere when written with a `+`
country code; `python-stdnum` validates IBANs of every country in any case (ISO 13616),
Luhn for cards, and national ids (Spanish DNI/NIE, Italian codice fiscale, French NIR; US
SSN and UK NINO by their issuing rules). Cards pass Luhn and carry the prefix and length
of a card network (Visa, Mastercard, Amex, Discover, Diners, JCB, Maestro, UnionPay, Mir,
RuPay, Troy). IP addresses are their own entity (`ip`), never a phone. E-mail addresses
need a real domain.

Invariant: `find_pii(text)` returns non-overlapping spans sorted by start, and `mask`
replaces exactly those spans, so masked text never contains a detected value.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale

ENTITIES = ("email", "phone", "card", "iban", "national_id", "secret", "ip")

# Regions whose national formats (no `+` prefix) are recognised by default (a rail's
# `phone_regions` sets its own); numbers written with a country code are found whatever
# the region.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "AU", "BR")


@functools.cache
def _national_floor(region: str) -> int:
    """Fewest digits a national-format candidate needs before it is tried in `region`: the
    region's shortest fixed-line or mobile number, never under 8 (shorter runs are order
    numbers, amounts and times far more often than local numbers without an area code), and
    9 where the plan has numbers under 7 digits (Germany, Italy, Austria): there almost any
    8-digit run, a build number or a compact date, parses as valid."""
    from phonenumbers import PhoneMetadata

    md = PhoneMetadata.metadata_for_region(region)
    if md is None:
        raise ValueError(f"unknown phone region {region!r}")
    lengths = [
        n for desc in (md.fixed_line, md.mobile) if desc for n in desc.possible_length if n > 0
    ]
    shortest = min(lengths or [9])
    return 9 if shortest < 7 else max(8, shortest)


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    entity: str


_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){11,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?\b")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
_NINO = re.compile(r"\b[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]\b")
# HMRC's rules for a NINO's two letters (stdnum has no UK NINO module).
_NINO_PREFIX = re.compile(r"(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z]")
_DNI = re.compile(r"\b(?:\d{8}|[XYZxyz]\d{7})-?[A-Za-z]\b")
_CODICE = re.compile(r"\b[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z]\b")
_NIR = re.compile(r"\b[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_SECRET = re.compile(
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:(?:api[_-]?key|secret|token|password|passwd)[\"']?\s*[:=]\s*[\"']?)"
    r"[A-Za-z0-9_\-/+=]{12,}"
)
# A run of digits with the separators phone numbers are written with (spaces, dots,
# dashes, brackets, a leading +); libphonenumber decides which runs are numbers.
_PHONE_SHAPE = re.compile(r"(?<![\w+.-])\+?\(?\d[\d ().-]{5,}\d(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def luhn_ok(digits: str) -> bool:
    return luhn.is_valid(digits)


def _card_network(digits: str) -> bool:
    """A card network's issuer prefix and a length it issues."""
    n = len(digits)
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    return (
        (digits[0] == "4" and n in (13, 16, 19))  # Visa
        or ((51 <= two <= 55 or 2221 <= four <= 2720) and n == 16)  # Mastercard
        or (two in (34, 37) and n == 15)  # Amex
        or ((four == 6011 or 644 <= three <= 649 or two == 65) and 16 <= n <= 19)  # Discover
        or ((300 <= three <= 305 or two in (36, 38, 39)) and 14 <= n <= 19)  # Diners
        or (two == 35 and 16 <= n <= 19)  # JCB (3528-3589 issued; the 35 range kept whole)
        or (four in (1800, 2131) and n == 15)  # JCB, 15 digits
        or ((two == 50 or 56 <= two <= 69) and 12 <= n <= 19)  # Maestro, UnionPay, RuPay
        or (digits[:4] == "0604" and 12 <= n <= 19)  # Maestro (UK range)
        or (2200 <= four <= 2204 and 16 <= n <= 19)  # Mir
        or (four == 9792 and n == 16)  # Troy
    )


def iban_ok(raw: str) -> bool:
    """ISO 13616 shape and mod-97 check digits. The country's own BBAN check is not asked
    for: an IBAN with a mistyped bank check digit is still someone's account number."""
    return std_iban.is_valid(raw.upper(), check_country=False)


def _iban_spans(text: str) -> list[Span]:
    spans = []
    for m in _IBAN.finditer(text):
        value = m.group()
        if not iban_ok(value) and " " in value:
            # The optional last group may have taken the next short word ("... 1776 for").
            value = value.rsplit(" ", 1)[0]
        if iban_ok(value):
            spans.append(Span(m.start(), m.start() + len(value), "iban"))
    return spans


def _nino_ok(value: str) -> bool:
    return bool(_NINO_PREFIX.match(value))


def _national_id_spans(text: str) -> list[Span]:
    spans = [Span(m.start(), m.end(), "national_id") for m in _SSN.finditer(text)]
    checks = ((_NINO, _nino_ok), (_CODICE, codicefiscale.is_valid), (_NIR, nir.is_valid))
    for pattern, valid in checks:
        spans += [
            Span(m.start(), m.end(), "national_id")
            for m in pattern.finditer(text)
            if valid(m.group().upper())
        ]
    for m in _DNI.finditer(text):
        value = m.group().upper()
        if (nie if value[0] in "XYZ" else dni).is_valid(value):
            spans.append(Span(m.start(), m.end(), "national_id"))
    return spans


def _ip_spans(text: str) -> list[Span]:
    spans = []
    for m in [*_IPV4.finditer(text), *_IPV6.finditer(text)]:
        try:
            ipaddress.ip_address(m.group())
        except ValueError:
            continue
        spans.append(Span(m.start(), m.end(), "ip"))
    return spans


def _phone_number(candidate: str, digits: int, regions: tuple[str, ...]) -> bool:
    """A valid number in one of the regions (or anywhere, with a `+` country code)."""
    tries: tuple[str | None, ...] = (
        (None,)
        if candidate.lstrip("(").startswith("+")
        else tuple(r for r in regions if digits >= _national_floor(r))
    )
    for region in tries:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


def _phone_spans(text: str, ips: list[Span], regions: tuple[str, ...]) -> list[Span]:
    """Phone-shaped runs (cheap pattern), each validated by libphonenumber: scanning the
    whole text with its matcher once per region cost ~3 ms a message, this ~0.1 ms."""
    spans = []
    for m in _PHONE_SHAPE.finditer(text):
        if any(s.start < m.end() and m.start() < s.end for s in ips):
            continue
        value = m.group()
        digits = sum(c.isdigit() for c in value)
        # Runs under 8 digits are order numbers, amounts and times (see `_national_floor`).
        if _DATE.match(value) or not 8 <= digits <= 15:
            continue
        if _phone_number(value, digits, regions):
            spans.append(Span(m.start(), m.end(), "phone"))
    return spans


def find_pii(
    text: str,
    entities: tuple[str, ...] | list[str] = ENTITIES,
    regions: tuple[str, ...] = PHONE_REGIONS,
) -> list[Span]:
    """Every PII/secret span in `text`, without overlaps (the earlier, longer one wins).
    `regions`: whose national phone formats count (any region's with a `+` code)."""
    spans: list[Span] = []
    want = set(entities)
    if "secret" in want:
        spans += [Span(m.start(), m.end(), "secret") for m in _SECRET.finditer(text)]
    if "email" in want:
        spans += [Span(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
    if "iban" in want:
        spans += _iban_spans(text)
    if "card" in want:
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if _card_network(digits) and luhn_ok(digits):
                spans.append(Span(m.start(), m.end(), "card"))
    if "national_id" in want:
        spans += _national_id_spans(text)
    ips = _ip_spans(text) if ("ip" in want or "phone" in want) else []
    if "ip" in want:
        spans += ips
    if "phone" in want:
        spans += _phone_spans(text, ips, regions)
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
