"""Train the prompt-attack detector and choose each route's threshold from its own traffic.

A pass (`refresh`), for each detector a policy's `prompt_attack` rails name:
1. Retrain when there is no model yet, when reviewers labelled flagged requests since the
   current version, or when forced: public attack corpora (positives), public benign text and
   the routes' own unflagged traffic (negatives), and reviewers' labels on flagged requests
   (either side, weighted up: they are the mistakes that matter on this deployment).
2. Per route, score its recent logged prompts (leaving out requests a block rail stopped and
   those reviewers called attacks) and set the threshold so that at most the rail's
   `target_fpr` of them would be flagged. Routes with too little traffic use the default,
   chosen the same way on held-out public benign text.
3. Point `current.json` at the version and thresholds; gateways pick it up on their next
   policy check.

Invariant: a threshold is written only with the number of prompts it was measured on, and
never from fewer than `min_traffic`; a pass that cannot train (no corpora, store down) leaves
the current detector serving.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from contracts.policy import PolicySet
from distiller.attack_corpora import CorporaMissing, attacks, benign
from store import Store
from students.attack_detector import (
    AttackDetector,
    Thresholds,
    attack_text,
    load_version,
    read_current,
    save_version,
    vectorizer,
    write_current,
)

log = logging.getLogger("flywheel.guard")

LABEL_WEIGHT = 20.0
TRAFFIC_PER_ROUTE = 2000

# A request's latest review label on a guardrail flag: 'attack' or 'not_attack'.
_LABELS = """
SELECT toString(l.request_id) AS request_id, argMax(l.choice, l.at) AS choice,
       any(r.messages) AS messages
FROM review_labels AS l
INNER JOIN (SELECT request_id, messages FROM requests WHERE kind = 'request') AS r
    ON r.request_id = l.request_id
WHERE l.source = 'guardrail'
GROUP BY l.request_id
"""

# The route's recent prompts, less those a blocking rail stopped.
_TRAFFIC = """
SELECT toString(request_id) AS request_id, messages, guardrail_flagged
FROM requests
WHERE kind = 'request' AND route = {route:String}
  AND NOT arrayExists(v -> JSONExtractBool(v, 'hit') AND JSONExtractString(v, 'action') = 'block',
                      JSONExtractArrayRaw(guardrails))
ORDER BY started_at DESC
LIMIT {n:UInt32}
"""


@dataclass
class RouteRail:
    route: str
    detector: str
    target_fpr: float


@dataclass
class GuardReport:
    detector: str
    version: str = ""
    trained: bool = False
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: str = ""


def prompt_attack_rails(policies: PolicySet) -> list[RouteRail]:
    return [
        RouteRail(route.name, rail.detector, rail.target_fpr)
        for route in policies.routes
        for rail in route.guardrails.input
        if rail.rail == "prompt_attack"
    ]


def held_out(text: str, fraction: float = 0.2) -> bool:
    """A stable hash picks the side: a sample never moves as corpora grow."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def choose_threshold(benign_scores: Any, target_fpr: float) -> float:
    """The lowest threshold that flags at most `target_fpr` of these benign scores (a score
    at or above the threshold is flagged)."""
    ordered = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
    if ordered.size == 0:
        raise ValueError("no benign scores to choose a threshold from")
    allowed = int(np.floor(target_fpr * ordered.size))
    if allowed >= ordered.size:
        return 0.0
    # Just above the first score that may not be flagged (ties stay on the benign side).
    return float(np.nextafter(ordered[allowed], np.inf))


def fit(
    positives: list[str],
    negatives: list[str],
    weights: tuple[list[float], list[float]] | None = None,
) -> tuple[Any, float]:
    """(coef, intercept) of a class-balanced logistic regression on hashed n-grams."""
    from sklearn.linear_model import LogisticRegression

    from students.attack_detector import clip

    x = vectorizer().transform([clip(t) for t in positives + negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    pos_w, neg_w = weights or ([1.0] * len(positives), [1.0] * len(negatives))
    balance = np.r_[
        np.full(len(positives), len(y) / (2 * max(1, len(positives)))),
        np.full(len(negatives), len(y) / (2 * max(1, len(negatives)))),
    ]
    clf = LogisticRegression(C=10.0, max_iter=3000)
    clf.fit(x, y, sample_weight=balance * np.r_[pos_w, neg_w])
    return clf.coef_.ravel().astype(np.float32), float(clf.intercept_[0])


def _labels(store: Store) -> dict[str, tuple[str, str]]:
    out = {}
    for row in store.query_dicts(_LABELS, {}):
        text = attack_text(orjson.loads(row["messages"] or "[]"))
        if text and row["choice"] in ("attack", "not_attack"):
            out[row["request_id"]] = (row["choice"], text)
    return out


def _traffic(
    store: Store, route: str, labels: dict[str, tuple[str, str]]
) -> list[tuple[str, bool]]:
    """(prompt, flagged) of the route's recent requests, reviewer-confirmed attacks left out."""
    rows = store.query_dicts(_TRAFFIC, {"route": route, "n": TRAFFIC_PER_ROUTE})
    out = []
    for row in rows:
        if labels.get(row["request_id"], ("",))[0] == "attack":
            continue
        text = attack_text(orjson.loads(row["messages"] or "[]"))
        if text:
            out.append((text, bool(row["guardrail_flagged"])))
    return out


def train(
    guards_dir: Path,
    name: str,
    corpora_dir: Path,
    banking77_csv: Path | None,
    traffic: list[str],
    labels: dict[str, tuple[str, str]],
    default_fpr: float,
) -> tuple[str, Thresholds]:
    """Fit a new version on public corpora, route traffic and labels; returns it with its
    default threshold (chosen on held-out public benign text)."""
    t0 = time.monotonic()
    pos = [s.text for s in attacks(corpora_dir)]
    neg_public = [s.text for s in benign(corpora_dir, banking77_csv)]
    neg_fit = [t for t in neg_public if not held_out(t)] + traffic
    neg_check = [t for t in neg_public if held_out(t)]
    pos_labelled = [t for c, t in labels.values() if c == "attack"]
    neg_labelled = [t for c, t in labels.values() if c == "not_attack"]
    coef, intercept = fit(
        pos + pos_labelled,
        neg_fit + neg_labelled,
        (
            [1.0] * len(pos) + [LABEL_WEIGHT] * len(pos_labelled),
            [1.0] * len(neg_fit) + [LABEL_WEIGHT] * len(neg_labelled),
        ),
    )
    version = time.strftime("v%Y%m%d%H%M%S", time.gmtime())
    detector = AttackDetector(name, version, coef, intercept)
    default = choose_threshold(detector.scores(neg_check), default_fpr)
    summary = {
        "attacks": len(pos),
        "benign_public": len(neg_fit) - len(traffic),
        "benign_traffic": len(traffic),
        "labels": len(labels),
        "labelled_attacks": len(pos_labelled),
        "default_threshold": default,
        "default_fpr_target": default_fpr,
        "default_measured_on": len(neg_check),
        "seconds": round(time.monotonic() - t0, 1),
    }
    save_version(guards_dir, name, version, coef, intercept, summary)
    return version, Thresholds(default)


def refresh(
    store: Store,
    policies: PolicySet,
    guards_dir: Path,
    corpora_dir: Path,
    banking77_csv: Path | None = None,
    min_traffic: int = 200,
    force: bool = False,
) -> list[GuardReport]:
    """One pass over every detector the policies use (see the module docstring)."""
    rails = prompt_attack_rails(policies)
    reports = []
    for name in sorted({r.detector for r in rails}):
        mine = [r for r in rails if r.detector == name]
        report = GuardReport(name)
        reports.append(report)
        labels = _labels(store)
        traffic = {r.route: _traffic(store, r.route, labels) for r in mine}
        current = read_current(guards_dir, name)
        trained_labels = _trained_labels(guards_dir, name, current)
        if current is None or force or len(labels) != trained_labels:
            unflagged = [t for r in mine for t, flagged in traffic[r.route] if not flagged]
            try:
                version, thresholds = train(
                    guards_dir,
                    name,
                    corpora_dir,
                    banking77_csv,
                    unflagged,
                    labels,
                    min(r.target_fpr for r in mine),
                )
            except CorporaMissing as e:
                report.skipped = str(e)
                log.warning("prompt-attack detector %s not trained: %s", name, e)
                continue
            report.trained = True
        else:
            version, thresholds = current
        loaded = load_version(guards_dir, name, version)
        by_route = {}
        for r in mine:
            texts = [t for t, _ in traffic[r.route]]
            if len(texts) < min_traffic:
                continue
            threshold = choose_threshold(loaded.scores(texts), r.target_fpr)
            by_route[r.route] = {
                "threshold": threshold,
                "target_fpr": r.target_fpr,
                "measured_on": len(texts),
            }
        report.version, report.thresholds = version, by_route
        write_current(guards_dir, name, version, Thresholds(thresholds.default, by_route))
        log.info("prompt-attack detector %s %s: thresholds %s", name, version, by_route)
    return reports


def _trained_labels(guards_dir: Path, name: str, current: tuple[str, Thresholds] | None) -> int:
    if current is None:
        return -1
    manifest = orjson.loads((guards_dir / name / current[0] / "manifest.json").read_bytes())
    return int(manifest["summary"].get("labels", 0))
