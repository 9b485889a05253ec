"""Which route a request belongs to and which model serves it.

For now a route is matched by the model alias an app calls and served by its teacher; the
policy engine (candidates, shares, escalation) will plug in behind `Router.decide`.

Invariant: `decide` is pure in-memory work (a dict lookup); it never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import GatewayConfig, ModelConfig, RouteConfig
from gateway.errors import ApiError


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    model_name: str
    model: ModelConfig
    teacher: str
    served_by: str
    reason: str
    policy_version: str


class Router:
    def __init__(self, config: GatewayConfig, policy_version: str = "") -> None:
        self._models = config.models
        self._by_alias: dict[str, RouteConfig] = {}
        for route in config.routes:
            for alias in route.called_as():
                self._by_alias[alias] = route
        self.policy_version = policy_version

    def aliases(self) -> list[str]:
        return sorted(self._by_alias)

    def decide(self, requested_model: str) -> Decision:
        route = self._by_alias.get(requested_model)
        if route is None:
            raise ApiError(
                404,
                f"The model `{requested_model}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return Decision(
            route=route.name,
            model_name=route.teacher,
            model=self._models[route.teacher],
            teacher=route.teacher,
            served_by="teacher",
            reason="teacher: only model on route",
            policy_version=self.policy_version,
        )
