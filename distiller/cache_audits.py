"""The semantic cache's lifecycle: on while its audited hits agree with the teacher, rolled
back (exact matching goes on) when they stop agreeing, as a promoted student would be.

It lives in `candidate_states` under its name (`semantic-cache@<threshold>`): `promoted` the
first time the distiller sees it configured, `rolled_back` when agreement over the last
`audit.window` audits of its hits falls below `audit.min_agreement` (with at least as many
audits as a canary needs). A new threshold is a new name, so it starts afresh.

Invariant: like every state change, each move writes the state and an event with its
evidence (`distiller.promotion.transition`).
"""

from __future__ import annotations

from contracts.policy import Route
from distiller.promotion import current, recent_audits, transition
from store import Store


def advance_semantic(store: Store, route: Route) -> list[str]:
    """Move the route's semantic cache along from its audits; a line per change."""
    policy = route.cache.semantic if route.cache is not None else None
    if policy is None:
        return []
    name = policy.name
    st = current(store, route.name, name)
    if st is None:
        why = f"semantic cache configured (threshold {policy.threshold:g})"
        transition(store, route.name, name, "promoted", why, {"threshold": policy.threshold})
        return [f"{name}: → promoted: {why}"]  # its audits are read from the next pass on
    if st.state != "promoted":
        return []
    audits = recent_audits(store, route.name, name, route.audit.window)
    enough = len(audits) >= min(route.audit.window, route.rollout.canary_min_examples)
    mean = sum(audits) / len(audits) if audits else 1.0
    if enough and mean < route.audit_target():
        why = (
            f"audit agreement {mean:.3f} over the last {len(audits)} semantic hits < "
            f"{route.audit_target()}"
        )
        evidence = {"audits": len(audits), "agreement": mean, "threshold": policy.threshold}
        transition(store, route.name, name, "rolled_back", why, evidence)
        return [f"{name}: promoted → rolled_back: {why}"]
    return []
