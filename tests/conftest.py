"""Fixtures: a fake provider and one real gateway on 127.0.0.1 for the session.

The session gateway is shared by the tests that only read what it logs; a test that changes
a gateway (its policy files, its store, its process) starts its own (`own_gateway`) or works
on a route nobody else uses. Helpers live in `tests/support/`, never in a test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstreamThread
from tests.support.gateway import ROUTING_STATES, RunningGateway, gateway_config, start_gateway
from tests.support.wait import eventually

# The dashboard tests' shared data.
pytest_plugins = ["tests.support.dashboard_data"]


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstreamThread]:
    fake = FakeUpstreamThread().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread
) -> Iterator[RunningGateway]:
    """One gateway for the session: chdb allows one store path per process at a time."""
    config = gateway_config(tmp_path_factory.mktemp("gw"), upstream.base_url)
    gw = start_gateway(config)
    gw.state.store.insert_rows(
        "candidate_states",
        [
            [route, cand, "v1", st, datetime.now(UTC), "set by the test"]
            for (route, cand), st in ROUTING_STATES.items()
        ],
        ["route", "candidate", "version", "state", "updated_at", "reason"],
    )
    states = eventually(lambda: gw.state.router.states.states, 10, lambda s: s == ROUTING_STATES)
    assert states == ROUTING_STATES
    yield gw
    gw.stop()
    gw.state.store.close()


@pytest.fixture
def hot_policy(gateway: RunningGateway) -> Iterator[Path]:
    """The session gateway's hot-reloaded policy file that only reload tests edit; restored
    (and reloaded) after the test."""
    path = next(p for p in gateway.state.config.policy_paths() if p.name == "hot.policy.yaml")
    original = path.read_text()
    version = gateway.state.router.policy_version
    yield path
    path.write_text(original)
    eventually(lambda: gateway.state.router.policy_version, 10, lambda v: v == version)
