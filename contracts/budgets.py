"""Spend budgets: who they cover, over which period, how much, and what happens past it.

A budget covers one key, app, team or route, per UTC day or month, in USD. A hard budget
refuses a request that would take spend past it; a soft one only flags the rows and raises
a metric. Money is integer nano-dollars at run time (the cost column's precision).

Invariant: a `Budget` that validated names exactly one scope, and its period boundaries are
pure functions of a timestamp (every replica agrees on them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["key", "app", "team", "route"]
NANO = Decimal("1000000000")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    key: str | None = None
    app: str | None = None
    team: str | None = None
    route: str | None = None
    period: Literal["day", "month"] = "month"
    limit_usd: Decimal = Field(gt=0)
    kind: Literal["hard", "soft"] = "hard"

    @model_validator(mode="after")
    def _one_scope(self) -> Budget:
        given = [s for s in ("key", "app", "team", "route") if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `key`, `app`, `team` or `route`")
        return self

    @property
    def scope(self) -> tuple[Scope, str]:
        for name in ("key", "app", "team", "route"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated to have one scope")

    @property
    def limit_nano(self) -> int:
        return int(self.limit_usd * NANO)

    def covers(self, key_id: str, app: str, team: str, route: str) -> bool:
        scope, value = self.scope
        return {"key": key_id, "app": app, "team": team, "route": route}[scope] == value


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month that contains `now`."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def period_id(period: str, now: datetime) -> str:
    start, _ = period_bounds(period, now)
    return start.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
