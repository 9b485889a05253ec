"""The `prompt_attack` rail: the learned jailbreak and injection detector on one route, with
the threshold the distiller chose on that route's own traffic.

The detector is trained by the distiller (`distiller/guard_training.py`) into the model
store; each gateway process loads it when it builds its policy, and the policy watcher
rebuilds when a detector's `current.json` changes (new version or new thresholds).

Invariant: a route whose detector is not trained yet passes requests and says so in the
verdict (`no detector`); it never blocks on a guess.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from contracts.policy import PolicySet
from students.attack_detector import AttackDetector, Thresholds, attack_text, load

log = logging.getLogger("flywheel.guardrails")

Loaded = dict[str, tuple[AttackDetector, Thresholds]]


def load_detectors(guards_dir: Path, policies: PolicySet) -> Loaded:
    """Every detector a `prompt_attack` rail of these policies names that has been trained."""
    names = {
        rail.detector
        for route in policies.routes
        for rail in route.guardrails.input
        if rail.rail == "prompt_attack"
    }
    out: Loaded = {}
    for name in sorted(names):
        try:
            found = load(guards_dir, name)
        except (OSError, ValueError, KeyError) as e:
            log.error("prompt_attack detector %r could not be loaded: %s", name, e)
            continue
        if found is None:
            log.warning(
                "prompt_attack detector %r is not trained yet (%s): its rails pass everything "
                "until `flywheel guard train` or the distiller trains it",
                name,
                guards_dir / name,
            )
        else:
            out[name] = found
    return out


class PromptAttackCheck:
    """Scores one request's user and tool text; a hit at or above the route's threshold."""

    def __init__(self, route: str, name: str, loaded: Loaded) -> None:
        found = loaded.get(name)
        self.name = name
        self.detector = found[0] if found else None
        self.threshold = found[1].for_route(route) if found else 1.0
        entry = found[1].by_route.get(route) if found else None
        # Where the threshold came from, for the dashboard.
        self.threshold_from = (
            f"this route's traffic ({entry['measured_on']} prompts)"
            if entry
            else ("held-out public benign text" if found else "")
        )

    @property
    def rule(self) -> str:
        return f"{self.name}@{self.detector.version}" if self.detector else self.name

    def check(self, messages: object) -> tuple[bool, str, str, int, float | None]:
        """(hit, detail, rule, latency_us, score)."""
        t0 = time.perf_counter()
        if self.detector is None:
            return False, "no detector trained yet", self.name, 0, None
        text = attack_text(messages)
        score = self.detector.score(text) if text else 0.0
        hit = score >= self.threshold
        detail = f"score {score:.3f} {'>=' if hit else '<'} {self.threshold:.3f}"
        return hit, detail, self.rule, int((time.perf_counter() - t0) * 1e6), round(score, 6)
