"""The dashboard's filters: a date range and optional apps and teams.

Invariant: a `Filters` is always a valid, half-open UTC range [start, end) at hour
resolution (the rollups' grain); bad query parameters raise a 400 `ApiError` naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ApiError

DEFAULT_DAYS = 30


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def parse_time(name: str, raw: str) -> datetime:
    """`2026-11-01` or an ISO datetime; naive values are UTC."""
    try:
        t = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            f"`{name}` must be a date (2026-11-01) or an ISO datetime, got {raw!r}.",
            code="invalid_filter",
            param=name,
        ) from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if not EARLIEST <= t <= LATEST:
        raise ApiError(
            400,
            f"`{name}` must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, got {raw!r}.",
            code="invalid_filter",
            param=name,
        )
    return t


# What ClickHouse's DateTime (the rollups' hour) can hold, with a day's margin for `to`.
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2105, 12, 31, tzinfo=UTC)


class Filters(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    apps: tuple[str, ...] = Field(default=())
    teams: tuple[str, ...] = Field(default=())
    # Not a query parameter: the models few-shot candidates serve (the policy says), so
    # savings by lever tell a few-shot candidate's answers from a fine-tuned student's.
    few_shot_models: tuple[str, ...] = Field(default=())

    @classmethod
    def last_days(cls, days: int = DEFAULT_DAYS, now: datetime | None = None) -> Filters:
        end = _hour(now or datetime.now(UTC)) + timedelta(hours=1)
        return cls(start=end - timedelta(days=days), end=end)

    @classmethod
    def from_query(cls, params: Mapping[str, Any]) -> Filters:
        """From `?from=&to=&app=&team=` (app and team repeat or take commas). `to` is
        exclusive; a bare date as `to` means the end of that day."""
        default = cls.last_days()
        start = parse_time("from", params["from"]) if params.get("from") else default.start
        end = default.end
        if params.get("to"):
            raw = str(params["to"])
            end = parse_time("to", raw)
            if len(raw.strip()) == 10:  # a date: the whole day is in range
                end += timedelta(days=1)
        if end <= start:
            raise ApiError(400, "`to` must be after `from`.", code="invalid_filter", param="to")
        return cls(
            start=_hour(start),
            end=end if end == _hour(end) else _hour(end) + timedelta(hours=1),
            apps=_many(params, "app"),
            teams=_many(params, "team"),
        )

    def sql(self, time_column: str = "hour") -> str:
        return (
            f"{time_column} >= {{start:DateTime}} AND {time_column} < {{end:DateTime}} "
            "AND (empty({apps:Array(String)}) OR app IN {apps:Array(String)}) "
            "AND (empty({teams:Array(String)}) OR team IN {teams:Array(String)})"
        )

    def params(self) -> dict[str, Any]:
        return {
            "start": self.start.replace(tzinfo=None),
            "end": self.end.replace(tzinfo=None),
            "apps": list(self.apps),
            "teams": list(self.teams),
            "few_shot_models": list(self.few_shot_models),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "apps": list(self.apps),
            "teams": list(self.teams),
        }


def _many(params: Mapping[str, Any], name: str) -> tuple[str, ...]:
    getlist = getattr(params, "getlist", None)
    raw = getlist(name) if getlist else [params.get(name) or ""]
    return tuple(sorted({v.strip() for item in raw for v in str(item).split(",") if v.strip()}))
