"""The learned jailbreak and prompt-injection detector: hashed character n-grams under a
logistic-regression head, scored in well under a millisecond on one CPU core.

Why n-grams and not a transformer: attack prompts are marked by their wording (role-play
set-ups, "Developer Mode", "ignore the instructions", token smuggling), which character
3-5-grams catch across spelling games and languages; on this project's VM MiniLM-L6 cost
~25 ms a short prompt at one thread, the n-gram head ~0.4 ms (load_tests/RESULTS.md).

On disk (the model store, reachable from every gateway process):

    <guards_dir>/<name>/<version>/manifest.json   features, intercept, training summary
    <guards_dir>/<name>/<version>/coef.npy        float32 weights, one per hashed feature
    <guards_dir>/<name>/current.json              the version in use and per-route thresholds

Invariant: `current.json` is replaced atomically and names a version whose files are complete,
so a gateway reading it at any moment loads a whole detector or the previous one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils import murmurhash3_32

N_FEATURES = 2**18
NGRAMS = (3, 5)
# Long prompts are scored on their head and tail: attacks set the scene at the start or
# append the payload at the end, and the cost stays bounded.
HEAD_CHARS, TAIL_CHARS = 3000, 1000
CURRENT = "current.json"
# Up to this length `score` hashes in a Python loop (~45 us for a one-line question);
# longer texts go through sklearn's vectorizer, whose fixed cost is then the smaller part.
SHORT_CHARS = 600


def _bucket(h: int) -> int:
    """sklearn's feature index for a signed 32-bit murmurhash (`_hashing_fast.transform`)."""
    if h == -(2**31):
        return (2**31 - 1 - (N_FEATURES - 1)) % N_FEATURES
    return abs(h) % N_FEATURES


def vectorizer() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer="char_wb",
        ngram_range=NGRAMS,
        n_features=N_FEATURES,
        alternate_sign=False,
        norm="l2",
        lowercase=True,
    )


def clip(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + " " + text[-TAIL_CHARS:]


@dataclass(frozen=True)
class Thresholds:
    """Scores at or above `by_route[route]` (else `default`) are attacks."""

    default: float
    by_route: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_route(self, route: str) -> float:
        entry = self.by_route.get(route)
        return float(entry["threshold"]) if entry else self.default


class AttackDetector:
    def __init__(self, name: str, version: str, coef: Any, intercept: float) -> None:
        self.name = name
        self.version = version
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = float(intercept)
        self._vec = vectorizer()
        self._analyze = self._vec.build_analyzer()

    def score(self, text: str) -> float:
        """P(attack) for one prompt: the same features as `vectorizer().transform`, hashed
        here for short prompts because sklearn's per-call checks cost ~10x the hashing."""
        text = clip(text)
        if len(text) > SHORT_CHARS:
            row = self._vec.transform([text])
            z = float(row.data @ self.coef[row.indices]) + self.intercept
        else:
            index = np.fromiter(
                (_bucket(murmurhash3_32(g, seed=0)) for g in self._analyze(text)), dtype=np.int64
            )
            z = self.intercept
            if index.size:
                buckets, counts = np.unique(index, return_counts=True)
                z += float(counts @ self.coef[buckets]) / math.sqrt(float(counts @ counts))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def scores(self, texts: list[str]) -> Any:
        """P(attack) for many prompts, as a float64 array."""
        if not texts:
            return np.zeros(0)
        z = self._vec.transform([clip(t) for t in texts]) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def save_version(
    root: Path, name: str, version: str, coef: Any, intercept: float, summary: dict[str, Any]
) -> Path:
    out = root / name / version
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "coef.npy", np.asarray(coef, dtype=np.float32))
    manifest = {
        "name": name,
        "version": version,
        "features": {"analyzer": "char_wb", "ngrams": list(NGRAMS), "n_features": N_FEATURES},
        "intercept": float(intercept),
        "summary": summary,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def write_current(root: Path, name: str, version: str, thresholds: Thresholds) -> None:
    """Point `name` at `version` with these thresholds, atomically."""
    target = root / name / CURRENT
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {"version": version, "default": thresholds.default, "routes": thresholds.by_route},
            indent=2,
        )
    )
    os.replace(tmp, target)


def read_current(root: Path, name: str) -> tuple[str, Thresholds] | None:
    path = root / name / CURRENT
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(data["version"]), Thresholds(float(data["default"]), dict(data.get("routes", {})))


def load(root: Path, name: str) -> tuple[AttackDetector, Thresholds] | None:
    """The detector `current.json` names, or None when none was trained yet."""
    current = read_current(root, name)
    if current is None:
        return None
    version, thresholds = current
    return load_version(root, name, version), thresholds


def load_version(root: Path, name: str, version: str) -> AttackDetector:
    folder = root / name / version
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest["features"]["n_features"] != N_FEATURES:
        raise ValueError(f"{folder}: trained with other features than this code computes")
    coef = np.load(folder / "coef.npy")
    return AttackDetector(name, version, coef, manifest["intercept"])


def attack_text(messages: Any) -> str:
    """What the detector reads of a request: the user's turns and tool results (where
    indirect injections arrive), never the app's own system prompt."""
    from contracts.openai_shapes import role_text

    if isinstance(messages, str):
        return messages
    return "\n".join(role_text(messages, ("user", "tool")))
