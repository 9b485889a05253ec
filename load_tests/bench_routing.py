"""The routing decision's cost per request, in microseconds.

Measures `Router.decide` (match + candidate choice + shadow/audit draws) and the system-prompt
fingerprint the gateway computes per request, on the example policy and on a policy with many
routes where the match is the last one (worst case).

    python load_tests/bench_routing.py
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

from contracts.openai_shapes import fingerprint_system_prompt
from contracts.pricing import price_table
from gateway.config import load_config, load_policy_set
from gateway.routing import CandidateStates, RequestFacts, Router

MESSAGES = [
    {"role": "system", "content": "You turn support tickets into JSON"},
    {"role": "user", "content": "My order 81723 never arrived and I want a refund."},
]


def timed(fn, n: int = 20000) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return {"median_us": statistics.median(samples), "min_us": min(samples)}


def main() -> dict[str, object]:
    config = load_config(Path("router_policies/gateway.yaml"))
    policies = load_policy_set(config)
    router = Router(
        policies,
        price_table(policies.models),
        CandidateStates({("support-triage", "triage-small"): "canary"}),
        random.Random(1),
    )
    facts = RequestFacts(
        app="support-bot",
        team="customer-care",
        model="gpt-4o-mini",
        headers={"x-flywheel-workload": "triage"},
        metadata={"feature": "ticket-triage"},
        tags=("triage",),
        system_fingerprint=fingerprint_system_prompt(MESSAGES),
    )
    many = load_policy_set(config)
    from contracts.policy import Match, Route

    # Worst case: 200 routes for the same model that differ by app (the model index cannot
    # skip them), and the request matches after all of them.
    many.routes = [
        Route(
            name=f"r{i}",
            match=Match(models=["gpt-4o-mini"], apps=[f"app{i}"]),
            teacher="gpt-4o-mini",
        )
        for i in range(200)
    ] + many.routes
    # Typical: 200 routes for other models, skipped by the model index.
    indexed = load_policy_set(config)
    indexed.routes = [
        Route(name=f"r{i}", match=Match(models=[f"m{i}"]), teacher="gpt-4o-mini")
        for i in range(200)
    ] + indexed.routes
    worst = Router(many, price_table(many.models), router.states, random.Random(1))
    skip = Router(indexed, price_table(indexed.models), router.states, random.Random(1))
    return {
        "decide_example_policy": timed(lambda: router.decide(facts)),
        "decide_200_other_model_routes": timed(lambda: skip.decide(facts)),
        "decide_200_same_model_routes_scanned": timed(lambda: worst.decide(facts), n=2000),
        "fingerprint_system_prompt": timed(lambda: fingerprint_system_prompt(MESSAGES)),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
