"""Which route a request belongs to, and which model serves it.

The router sends a request to the cheapest candidate whose state allows it (canary or
promoted), else to the teacher; cheapest is the cost of one request
(`Price.nominal_request`), so a few-shot candidate pays for the examples in its prompt.
Shadow candidates get sampled background copies; promoted and canary students are audited
by the teacher on a sampled share. Every decision carries a reason a person can read
(`canary 10%`, `promoted`, `teacher: no candidate passed its gate`).

Invariant: `decide` is in-memory work only (no I/O): candidate states are a snapshot that a
background task refreshes from ClickHouse and swaps in whole.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import ApiError
from contracts.model_config import ModelConfig
from contracts.policy import Candidate, PolicySet, Route
from contracts.pricing import Price
from contracts.states import SERVING_STATES, CandidateState, ServedBy
from gateway.guardrails.engine import RouteRails
from gateway.guardrails.nemo import NemoRails
from gateway.session_routing import Pin


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What routing may look at; built once per request."""

    app: str
    team: str
    model: str
    headers: Mapping[str, str]
    metadata: Mapping[str, str]
    tags: tuple[str, ...]
    system_fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    model_name: str
    model: ModelConfig
    served_by: ServedBy
    reason: str
    candidate: str = ""
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    route: Route
    primary: Target
    fallbacks: tuple[Target, ...]
    policy_version: str
    shadow: Target | None = None
    audit: bool = False
    escalated: str = ""  # why the student was passed over for this request, once it was

    @property
    def teacher(self) -> str:
        return self.route.teacher

    def min_confidence(self, states: CandidateStates) -> float | None:
        """The confidence below which the primary student's answer escalates: the route's
        `escalation.min_confidence` when set, else the threshold its selective gate fitted."""
        if self.primary.served_by != "student":
            return None
        fitted = states.thresholds.get((self.route.name, self.primary.candidate))
        return self.route.escalation_threshold(fitted)

    def escalate(self, reason: str) -> Decision:
        """The same request sent past the student: the teacher (then backups) answers."""
        teacher, *rest = self.fallbacks
        primary = Target(teacher.model_name, teacher.model, "teacher", reason)
        return Decision(
            self.route,
            primary,
            tuple(rest),
            self.policy_version,
            self.shadow,
            audit=False,
            escalated=reason,
        )


@dataclass(frozen=True, slots=True)
class Share:
    """A candidate's share of a route's requests under the current states."""

    candidate: Candidate
    share: float
    state: CandidateState


@dataclass
class CandidateStates:
    """(route, candidate) → state, as last read from ClickHouse."""

    states: dict[tuple[str, str], CandidateState] = field(default_factory=dict)
    datasets: dict[tuple[str, str], str] = field(default_factory=dict)
    # The confidence a selective gate chose for the candidate's run: below it, escalate.
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    # The run each candidate's state belongs to (a few-shot candidate serves its index).
    runs: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, route: str, candidate: str) -> CandidateState:
        return self.states.get((route, candidate), "untrained")


def _price_key(prices: dict[str, Price], cand: Candidate) -> Any:
    return prices[cand.model].nominal_request(cand.prompts_per_request)


class Router:
    def __init__(
        self,
        policies: PolicySet,
        prices: dict[str, Price],
        states: CandidateStates | None = None,
        rng: random.Random | None = None,
        rails: dict[str, RouteRails] | None = None,
        nemo: NemoRails | None = None,
    ) -> None:
        self.policies = policies
        self.prices = prices
        self.states = states or CandidateStates()
        self._rng = rng or random.Random()
        self.rails = rails or {}
        self.nemo = nemo  # the guardrail engines this policy version built
        self._by_name = {r.name: r for r in policies.routes}
        # Routes that can match a model name, in policy order: a request only looks at these.
        routes = policies.routes
        self._any_model = [r for r in routes if not r.match.models]
        self._by_model = {
            m: [r for r in routes if not r.match.models or m in r.match.models]
            for r0 in routes
            for m in r0.match.models
        }
        self._by_price = {
            r.name: sorted(r.candidates, key=lambda c: _price_key(prices, c)) for r in routes
        }

    def sample(self, share: float) -> bool:
        """True for `share` of calls (audit sampling outside a decision)."""
        return self._rng.random() < share

    @property
    def policy_version(self) -> str:
        return self.policies.version

    def with_states(self, states: CandidateStates) -> Router:
        """The same policy with a new state snapshot (swapped in whole)."""
        return Router(self.policies, self.prices, states, self._rng, self.rails, self.nemo)

    def route_named(self, name: str) -> Route | None:
        return self._by_name.get(name)

    def _open_to(self, app: str | None, team: str | None) -> list[Route]:
        return [
            r
            for r in self.policies.routes
            if (app is None or not r.match.apps or app in r.match.apps)
            and (team is None or not r.match.teams or team in r.match.teams)
        ]

    def aliases(self, app: str | None = None, team: str | None = None) -> list[str]:
        """Model names routes answer to; with `app`/`team`, only those of routes that
        may match that caller (routes limited to other apps or teams are left out). A
        catch-all route (no `match.models`) answers any name: its teacher and backups are
        listed, as the names a model picker should offer."""
        names: set[str] = set()
        for r in self._open_to(app, team):
            names.update(r.match.models or [r.teacher, *r.fallbacks])
        return sorted(names)

    def answers(self, model: str, app: str | None = None, team: str | None = None) -> bool:
        """Whether a request for `model` may be served for this caller: a listed name, or
        any name where a catch-all route is open to it."""
        routes = self._open_to(app, team)
        return any(not r.match.models or model in r.match.models for r in routes)

    # --- matching --------------------------------------------------------------------------

    @staticmethod
    def mismatch(route: Route, facts: RequestFacts) -> str | None:
        """Why `route` does not match, or None when it does."""
        m = route.match
        if m.models and facts.model not in m.models:
            return f"model {facts.model!r} not in {m.models}"
        if m.apps and facts.app not in m.apps:
            return f"app {facts.app!r} not in {m.apps}"
        if m.teams and facts.team not in m.teams:
            return f"team {facts.team!r} not in {m.teams}"
        for name, value in m.headers.items():
            if facts.headers.get(name) != value:
                return f"header {name}={facts.headers.get(name)!r}, wants {value!r}"
        for name, value in m.metadata.items():
            if facts.metadata.get(name) != value:
                return f"metadata {name}={facts.metadata.get(name)!r}, wants {value!r}"
        missing = [t for t in m.tags if t not in facts.tags]
        if missing:
            return f"tags {missing} missing"
        if m.system_prompts and facts.system_fingerprint not in m.system_prompts:
            return f"system prompt fingerprint {facts.system_fingerprint or '(none)'} not listed"
        return None

    @staticmethod
    def match_reasons(route: Route, facts: RequestFacts) -> list[str]:
        m = route.match
        out = []
        if m.models:
            out.append(f"model {facts.model!r} in {m.models}")
        if m.apps:
            out.append(f"app {facts.app!r} in {m.apps}")
        if m.teams:
            out.append(f"team {facts.team!r} in {m.teams}")
        out += [f"header {k}={v!r}" for k, v in m.headers.items()]
        out += [f"metadata {k}={v!r}" for k, v in m.metadata.items()]
        if m.tags:
            out.append(f"tags {m.tags} present")
        if m.system_prompts:
            out.append(f"system prompt fingerprint {facts.system_fingerprint} listed")
        return out

    def match(self, facts: RequestFacts) -> Route:
        for route in self._by_model.get(facts.model, self._any_model):
            if self.mismatch(route, facts) is None:
                return route
        raise ApiError(
            404,
            f"The model `{facts.model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )

    # --- deciding --------------------------------------------------------------------------

    def _target(self, name: str, served_by: ServedBy, reason: str, **kw: Any) -> Target:
        return Target(name, self.policies.models[name], served_by, reason, **kw)

    def _cheapest(self, route: Route, states: tuple[CandidateState, ...]) -> Candidate | None:
        for cand in self._by_price[route.name]:
            if self.states.get(route.name, cand.name) in states:
                return cand
        return None

    def serving_plan(self, route: Route) -> tuple[Share, ...]:
        """Who may answer the route's users, and with what share of requests: the cheapest
        promoted candidate takes everything; otherwise canary candidates, cheapest first,
        each take their canary share; the rest goes to the teacher. `decide` draws from this
        plan and `explain` reports it, so they cannot disagree."""
        promoted = self._cheapest(route, ("promoted",))
        if promoted is not None:
            return (Share(promoted, 1.0, "promoted"),)
        return tuple(
            Share(c, route.canary_share(c), "canary")
            for c in self._by_price[route.name]
            if self.states.get(route.name, c.name) == "canary"
        )

    def _pick_student(self, route: Route, draw: float) -> tuple[Candidate | None, str]:
        plan = self.serving_plan(route)
        upto = 0.0
        for s in plan:
            upto += s.share
            if draw < upto:
                if s.state == "promoted":
                    return s.candidate, f"promoted: {s.candidate.name}"
                return s.candidate, f"canary {s.share:.0%}: {s.candidate.name}"
        if plan:
            return None, f"teacher: canary {upto:.0%} not drawn"
        if route.candidates:
            return None, "teacher: no candidate has passed its gate"
        return None, "teacher: route has no candidates"

    def _pinned(self, route: Route, pin: Pin, source: str) -> tuple[Candidate | None, str]:
        """The first turn's choice for a later turn of its session (see
        `gateway/session_routing.py`)."""
        if pin.served_by != "student":
            return None, f"session ({source}): the teacher, as on its first turn"
        cand = next((c for c in route.candidates if c.name == pin.candidate), None)
        if cand is None or self.states.get(route.name, cand.name) not in SERVING_STATES:
            gone = f"its student {pin.candidate} no longer serves"
            return None, f"session ({source}): teacher, {gone}"
        return cand, f"session ({source}): {cand.name}, as on its first turn"

    def decide(self, facts: RequestFacts, pin: Pin | None = None, source: str = "") -> Decision:
        """Who serves the request: drawn from the route's serving plan, or, for a later turn
        of a session (`pin`), whoever served its first turn."""
        route = self.match(facts)
        draw = self._rng.random
        teacher_fallbacks = tuple(
            self._target(f, "fallback", f"fallback: teacher {route.teacher} failed")
            for f in route.fallbacks
        )
        if pin is not None:
            chosen, reason = self._pinned(route, pin, source)
        else:
            chosen, reason = self._pick_student(route, draw())
        if chosen is None:
            primary = self._target(route.teacher, "teacher", reason)
            fallbacks = teacher_fallbacks
            audit = False
        else:
            primary = self._target(
                chosen.model,
                "student",
                reason,
                candidate=chosen.name,
                timeout_s=route.retries.student_timeout_s,
            )
            fallbacks = (
                self._target(route.teacher, "teacher", "fallback: student failed"),
                *teacher_fallbacks,
            )
            share = route.audit.share
            if self.states.get(route.name, chosen.name) == "canary":
                share = route.audit.canary_share
            audit = draw() < share
        shadow = None
        in_shadow = self._cheapest(route, ("shadow",))
        if in_shadow is not None and draw() < route.rollout.shadow_share:
            shadow = self._target(
                in_shadow.model,
                "shadow",
                f"shadow {route.rollout.shadow_share:.0%}",
                candidate=in_shadow.name,
                timeout_s=route.retries.student_timeout_s,
            )
        return Decision(route, primary, fallbacks, self.policies.version, shadow, audit)

    def explain(self, facts: RequestFacts) -> dict[str, Any]:
        """Which route matches and why, which would serve and why, for admins."""
        skipped = []
        for route in self.policies.routes:
            why = self.mismatch(route, facts)
            if why is None:
                break
            skipped.append({"route": route.name, "why_not": why})
        route = self.match(facts)
        because = self.match_reasons(route, facts) or ["default route (matches everything)"]
        candidates = []
        for c in route.candidates:
            state = self.states.get(route.name, c.name)
            price = self.prices[c.model]
            candidates.append(
                {
                    "name": c.name,
                    "model": c.model,
                    "state": state,
                    "may_serve": state in SERVING_STATES,
                    "usd_per_million_tokens": {
                        "input": str(price.input_per_token * 1_000_000),
                        "output": str(price.output_per_token * 1_000_000),
                    },
                }
            )
        plan = self.serving_plan(route)
        would: dict[str, Any]
        if not plan:
            would = {
                "model": route.teacher,
                "served_by": "teacher",
                "why": "no candidate is in canary or promoted",
            }
        elif plan[0].state == "promoted":
            best = plan[0].candidate
            would = {
                "model": best.model,
                "served_by": "student",
                "why": f"{best.name} is the cheapest promoted candidate; "
                f"{route.audit.share:.0%} audited by the teacher",
            }
        else:
            rest = max(0.0, 1.0 - sum(s.share for s in plan))
            shares = ", ".join(f"{s.candidate.name} {s.share:.0%}" for s in plan)
            would = {
                "model": plan[0].candidate.model,
                "served_by": "student or teacher",
                "why": f"in canary: {shares} of requests; the rest ({rest:.0%}) to {route.teacher}",
            }
        would["shares"] = [
            {"candidate": s.candidate.name, "model": s.candidate.model, "share": s.share}
            for s in plan
        ]
        return {
            "policy_version": self.policies.version,
            "route": route.name,
            "matched_because": because,
            "skipped_routes": skipped,
            "teacher": route.teacher,
            "fallbacks": route.fallbacks,
            "candidates": candidates,
            "would_serve": would,
            "system_prompt_fingerprint": facts.system_fingerprint,
            "sessions": (
                "the turns of one agent session (a session header or id, a prompt_cache_key, "
                "a previous_response_id, or the same opening of a continued conversation) go "
                "to whoever served its first turn; a session the teacher began stays on it"
            ),
        }
