"""Rollout after the gate: canary to promoted on audits (held for a slow student), rollback
when audits drop, and the router following at its next refresh."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from contracts.policy import Route
from distiller.promotion import advance, current, transition
from tests.support.gateway import RunningGateway
from tests.support.wait import eventually


def insert_audits(store, route: str, candidate: str, scores: list[float]) -> None:
    """Audit rows as the gateway writes them, with the given agreement scores."""
    store.insert_rows(
        "audits",
        [
            [
                uuid.uuid4(),
                uuid.uuid4(),
                datetime.now(UTC),
                route,
                candidate,
                "exact_match",
                s,
                "a",
                "b",
            ]
            for s in scores
        ],
        [
            "request_id",
            "audit_request_id",
            "at",
            "route",
            "candidate",
            "metric",
            "agreement",
            "student_answer",
            "teacher_answer",
        ],
    )


def test_rollback_when_audits_drop(gateway: RunningGateway) -> None:
    store = gateway.state.store
    route = Route.model_validate(
        {
            "name": "distill-rollback",
            "teacher": "teacher",
            "candidates": [{"name": "c1", "model": "student-ok"}],
            "audit": {"share": 0.1, "min_agreement": 0.9, "window": 20},
            "rollout": {"canary_min_examples": 10},
        }
    )
    transition(store, route.name, "c1", "canary", "test", {})

    def audits(scores: list[float]) -> None:
        insert_audits(store, route.name, "c1", scores)

    audits([1.0] * 12)
    assert advance(store, route)[0].startswith("c1: canary → promoted")
    time.sleep(0.01)  # the rollback reads the latest audits by time: later than the first
    audits([0.0] * 10)
    changes = advance(store, route)
    assert changes and "rolled_back" in changes[0]
    assert current(store, route.name, "c1").state == "rolled_back"
    # The router stops sending it traffic at its next refresh.
    state = eventually(
        lambda: gateway.state.router.states.get(route.name, "c1"), 10, lambda s: s == "rolled_back"
    )
    assert state == "rolled_back"


def test_promotion_waits_for_a_student_as_fast_as_the_teacher(gateway: RunningGateway) -> None:
    """Audits agree, but a student whose p99 latency is above the teacher's (seen: a CPU
    student under load, 3.5 s against 0.4 s) stays in canary; a fast one is promoted."""
    store = gateway.state.store
    route = Route.model_validate(
        {
            "name": "distill-latency",
            "teacher": "teacher",
            "candidates": [
                {"name": "slow", "model": "student-ok"},
                {"name": "fast", "model": "student-dear"},
            ],
            "audit": {"share": 0.1, "min_agreement": 0.9, "window": 20},
            "rollout": {"canary_min_examples": 10},
        }
    )
    now = datetime.now(UTC)
    rows = [
        [uuid.uuid4(), now, now, route.name, "teacher", "", "request", "ok", 400_000]
        for _ in range(30)
    ]
    for cand, latency in (("slow", 3_500_000), ("fast", 150_000)):
        transition(store, route.name, cand, "canary", "test", {})
        rows += [
            [uuid.uuid4(), now, now, route.name, "student", cand, "request", "ok", latency]
            for _ in range(30)
        ]
        insert_audits(store, route.name, cand, [1.0] * 12)
    store.insert_rows(
        "requests",
        rows,
        [
            "request_id",
            "started_at",
            "finished_at",
            "route",
            "served_by",
            "candidate",
            "kind",
            "status",
            "latency_us",
        ],
    )
    changes = advance(store, route)
    assert "slow: canary, promotion held: student p99 3500 ms > teacher p99 400 ms" in changes
    assert any(c.startswith("fast: canary → promoted") for c in changes)
    assert current(store, route.name, "slow").state == "canary"
    assert current(store, route.name, "fast").state == "promoted"
    held = store.query_dicts(
        "SELECT reason FROM events WHERE route = {r:String} AND kind = 'promotion_held'",
        {"r": route.name},
    )
    assert [h["reason"] for h in held] == ["student p99 3500 ms > teacher p99 400 ms"]
    advance(store, route)  # asked again: the same hold is not recorded twice
    assert (
        len(
            store.query_rows(
                "SELECT 1 FROM events WHERE route = {r:String} AND kind = 'promotion_held'",
                {"r": route.name},
            )
        )
        == 1
    )
