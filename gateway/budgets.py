"""Spend budgets enforced on the request path (see `contracts/budgets.py` for the schema).

Before dispatch a request reserves its estimated cost (the priced prompt plus its
`max_tokens` of output; without one, the model's longest answer when a hard budget covers it,
else `DEFAULT_OUTPUT_TOKENS`; at the dearest of the models that may answer it, a few-shot
prompt with its examples) on every budget that covers it; after the answer the
reservation is settled with the real cost. A hard budget refuses (429 `insufficient_quota`,
with the period's reset time and `Retry-After`) a request whose reservation would take
spent + reserved past the limit; since no answer costs more than its reservation (a model
whose longest answer is unknown aside: set `price.max_output_tokens`), concurrent requests
cannot take spend past the limit. A soft budget only flags the row
(`budgets_over`) and counts it (`flywheel_budget_exceeded_total`).

Invariant: counters are integer nano-dollars per budget and period, in Redis when
`redis.url` is set (one Lua script per reserve or settle, atomic across workers and
replicas), else in this process; at start each period's counter is seeded from ClickHouse
(set only if absent), so a restart does not forget what was spent. A Redis that does not
answer lets requests through (spend is still logged).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from contracts.budgets import NANO, Budget, period_bounds, period_id
from contracts.errors import ApiError
from contracts.pricing import Price
from gateway.redis_link import RedisLink, SharedStateDown
from gateway.routing import Decision
from store import Store

log = logging.getLogger("flywheel.budgets")

DEFAULT_OUTPUT_TOKENS = 1024
_TTL_S = 40 * 86400  # longer than any period

# KEYS: spent_1, held_1, spent_2, held_2, ...; ARGV: estimate, n, limit_1, hard_1, ...
# Returns {0, soft indexes over...} or {-i} when hard budget i refuses.
_RESERVE = """
local est = tonumber(ARGV[1]); local n = tonumber(ARGV[2])
local over = {0}
for i = 1, n do
  local spent = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
  local held = tonumber(redis.call('GET', KEYS[2*i]) or '0')
  if spent + held + est > tonumber(ARGV[1 + 2*i]) then
    if ARGV[2 + 2*i] == '1' then return {-i} end
    table.insert(over, i)
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[2*i], est)
  redis.call('EXPIRE', KEYS[2*i], tonumber(ARGV[3 + 2*n]))
end
return over
"""
# KEYS as above; ARGV: estimate, actual. Releases the hold, adds the real cost.
_SETTLE = """
for i = 1, #KEYS / 2 do
  redis.call('DECRBY', KEYS[2*i], ARGV[1])
  redis.call('INCRBY', KEYS[2*i-1], ARGV[2])
  redis.call('EXPIRE', KEYS[2*i-1], tonumber(ARGV[3]))
end
return 1
"""
_SEED = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[2]))"


@dataclass(slots=True)
class Reservation:
    budgets: list[Budget]
    keys: list[str]  # spent, held per budget
    estimate: int
    over: list[str] = field(default_factory=list)  # soft budgets this request is past


def _keys(budget: Budget, now: datetime) -> tuple[str, str]:
    base = f"fw:budget:{budget.name}:{period_id(budget.period, now)}"
    return base + ":spent", base + ":held"


def estimate_nano(
    price: Price | None, body: dict[str, object], hard: bool = False, prompts: int = 1
) -> int:
    """An upper bound of what the request will cost: ~4 characters a prompt token (times
    `prompts` for a few-shot candidate, whose examples are added later), and the output it
    may produce (`hard`: the model's longest answer when the request sets no `max_tokens`,
    so a hard budget's bound holds)."""
    if price is None:
        return 0
    prompt = body.get("messages", body.get("input", body.get("prompt", "")))
    tokens_in = (len(orjson.dumps(prompt)) // 4 + 1) * prompts
    max_out = (
        body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    )
    if isinstance(max_out, int) and max_out > 0:
        tokens_out = max_out
    elif hard and price.max_output_tokens:
        tokens_out = price.max_output_tokens
    else:
        tokens_out = DEFAULT_OUTPUT_TOKENS
    return int(price.cost(tokens_in, tokens_out) * NANO)


def reservation_nano(
    decision: Decision, prices: Mapping[str, Price], body: dict[str, object], hard: bool
) -> int:
    """What a routed request holds: the dearest estimate of whoever may answer it (the
    student, or the teacher or a backup it falls back to), a few-shot candidate's with its
    examples, so no answer costs more than its reservation."""
    by_name = {c.name: c for c in decision.route.candidates}
    estimate = 0
    for target in (decision.primary, *decision.fallbacks):
        cand = by_name.get(target.candidate or "")
        prompts = cand.prompts_per_request if cand is not None else 1
        estimate = max(estimate, estimate_nano(prices.get(target.model_name), body, hard, prompts))
    return estimate


class BudgetBook:
    def __init__(self, budgets: list[Budget], link: RedisLink | None = None) -> None:
        self.budgets = budgets
        self.link = link
        self._local: dict[str, int] = {}
        self._seeded: set[str] = set()

    def replace(self, budgets: list[Budget]) -> None:
        """A policy edit's budgets (counters are per name and period, so a budget whose
        limit changed keeps what was spent; a new one is seeded on the next pass)."""
        self.budgets = budgets

    def covering(self, key_id: str, app: str, team: str, route: str) -> list[Budget]:
        return [b for b in self.budgets if b.covers(key_id, app, team, route)]

    async def reserve(self, budgets: list[Budget], estimate: int) -> Reservation | None:
        """Hold `estimate` on each budget, or raise the hard budget's 429."""
        if not budgets:
            return None
        now = datetime.now(UTC)
        keys = [k for b in budgets for k in _keys(b, now)]
        limits = [v for b in budgets for v in (b.limit_nano, "1" if b.kind == "hard" else "0")]
        try:
            result = await self._run(_RESERVE, keys, [estimate, len(budgets), *limits, _TTL_S])
        except SharedStateDown as e:
            log.warning("budgets not checked (Redis down), admitting: %s", e)
            return None
        first = int(str(result[0]))
        if first < 0:
            raise _exhausted(budgets[-first - 1], now)
        over = [budgets[int(str(i)) - 1].name for i in result[1:]]
        return Reservation(budgets, keys, estimate, over)

    async def settle(self, reservation: Reservation, actual: int) -> None:
        try:
            await self._run(_SETTLE, reservation.keys, [reservation.estimate, actual, _TTL_S])
        except SharedStateDown as e:
            log.warning("budget spend not settled (Redis down): %s", e)

    async def seed(self, store: Store) -> None:
        """Each budget's spend so far this period, from ClickHouse, where not yet counted
        (a replica already running has been counting: its counter stands). Raises
        StoreUnavailable; `seed_pending` retries until it succeeds."""
        now = datetime.now(UTC)
        for budget in self.budgets:
            if budget.name in self._seeded:
                continue
            start, end = period_bounds(budget.period, now)
            scope, value = budget.scope
            column = {"key": "key_id", "app": "app", "team": "team", "route": "route"}[scope]
            rows = await asyncio.to_thread(
                store.query_rows,
                # Callers' requests only, as settling counts them: shadow, audit and
                # escalated-student rows are the gateway's own calls (the finance page's).
                f"SELECT sum(cost_usd) FROM requests WHERE kind = 'request'"
                f" AND {column} = {{v:String}}"
                " AND started_at >= {s:DateTime64(3)} AND started_at < {e:DateTime64(3)}",
                {"v": value, "s": start.replace(tzinfo=None), "e": end.replace(tzinfo=None)},
            )
            spent = int(Decimal(str(rows[0][0] or 0)) * NANO) if rows else 0
            try:
                await self._run(_SEED, [_keys(budget, now)[0]], [spent, _TTL_S])
            except SharedStateDown as e:
                log.warning("budget %s not seeded (Redis down): %s", budget.name, e)
                continue
            self._seeded.add(budget.name)

    async def seed_pending(self, store: Store) -> None:
        """Retry seeding budgets ClickHouse or Redis did not let us seed at start."""
        if any(b.name not in self._seeded for b in self.budgets):
            try:
                await self.seed(store)
            except Exception as e:  # still unavailable: the next pass tries again
                log.warning("budgets still not seeded: %s", e)

    async def status(self) -> list[dict[str, object]]:
        """Each budget's period, limit, spend and what is held for requests in flight."""
        now = datetime.now(UTC)
        out: list[dict[str, object]] = []
        for budget in self.budgets:
            spent_key, held_key = _keys(budget, now)
            spent, held = await self._get(spent_key), await self._get(held_key)
            start, end = period_bounds(budget.period, now)
            out.append(
                {
                    "name": budget.name,
                    "scope": "=".join(budget.scope),
                    "period": budget.period,
                    "kind": budget.kind,
                    "period_start": start.isoformat(),
                    "resets_at": end.isoformat(),
                    "limit_usd": str(budget.limit_usd),
                    "spent_usd": str(Decimal(spent) / NANO),
                    "held_usd": str(Decimal(held) / NANO),
                    "remaining_usd": str(max(Decimal(0), (budget.limit_nano - spent) / NANO)),
                    "exhausted_at": _projection(spent, budget.limit_nano, start, now, end),
                }
            )
        return out

    async def _get(self, key: str) -> int:
        if self.link is None:
            return self._local.get(key, 0)
        try:
            raw = await self.link.client.get(key)
        except Exception:  # status is informative only; Redis health says why
            return 0
        return int(raw or 0)

    async def _run(self, source: str, keys: list[str], args: list[object]) -> list[object]:
        if self.link is not None:
            result = await self.link.run(source, keys, list(args))
            return list(result) if isinstance(result, list) else [result]
        return self._run_local(source, keys, args)

    def _run_local(self, source: str, keys: list[str], args: list[object]) -> list[object]:
        """The same scripts' effect on this process's counters (no Redis configured)."""
        c = self._local
        if source is _SEED:
            c.setdefault(keys[0], int(str(args[0])))
            return [1]
        if source is _SETTLE:
            for spent, held in zip(keys[::2], keys[1::2], strict=True):
                c[held] = c.get(held, 0) - int(str(args[0]))
                c[spent] = c.get(spent, 0) + int(str(args[1]))
            return [1]
        est, over = int(str(args[0])), [0]
        pairs = list(zip(keys[::2], keys[1::2], strict=True))
        for i, (spent, held) in enumerate(pairs, start=1):
            if c.get(spent, 0) + c.get(held, 0) + est > int(str(args[2 * i])):
                if args[2 * i + 1] == "1":
                    return [-i]
                over.append(i)
        for _, held in pairs:
            c[held] = c.get(held, 0) + est
        return list(over)


def _exhausted(budget: Budget, now: datetime) -> ApiError:
    _, end = period_bounds(budget.period, now)
    wait = max(1, math.ceil((end - now).total_seconds()))
    return ApiError(
        429,
        f"Budget `{budget.name}` ({budget.limit_usd} USD per {budget.period}) is used up; "
        f"it resets at {end.isoformat()}.",
        code="insufficient_quota",
        type_="insufficient_quota",
        headers={"retry-after": str(wait), "x-flywheel-budget-reset": end.isoformat()},
    )


def _projection(
    spent: int, limit: int, start: datetime, now: datetime, end: datetime
) -> str | None:
    """When spend reaches the limit at this period's rate so far (None: not this period)."""
    if spent >= limit:
        return now.isoformat()
    elapsed = (now - start).total_seconds()
    if spent <= 0 or elapsed <= 0:
        return None
    at = start.timestamp() + elapsed * limit / spent
    return datetime.fromtimestamp(at, UTC).isoformat() if at < end.timestamp() else None
