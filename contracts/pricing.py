"""Prices per token as Decimal USD, read once per model from litellm's price table.

Invariant: every configured model has a price (an override or litellm's), found at start-up;
a model with no known price is a `ConfigError`, never a silent $0. Costs are Decimal USD
quantized to 1e-9 (nano-dollars), exact when summed in ClickHouse's Decimal(18, 9).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from contracts.model_config import ModelConfig
from contracts.yaml_source import ConfigError

NANO = Decimal("0.000000001")
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    input_per_token: Decimal
    output_per_token: Decimal
    max_output_tokens: int | None = None  # the longest answer (litellm's table, or set)

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        total = self.input_per_token * input_tokens + self.output_per_token * output_tokens
        return total.quantize(NANO)

    def nominal_request(self, prompts: int = 1) -> Decimal:
        """One request whose prompt is `prompts` questions, each as long as its answer, in
        units of a token: the cost that ranks candidates (per-token price alone would rank a
        cheap model shown 8 examples below a dearer one that costs less per request)."""
        return self.input_per_token * prompts + self.output_per_token


@cache
def litellm_price_table() -> dict[str, Any]:
    """litellm's bundled price map, read as data: importing litellm costs ~4 s and is not
    needed for prices (the same JSON `litellm.model_cost` is loaded from locally)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    table: dict[str, Any] = json.loads(path.read_text())
    return table


def _lookup(model: str) -> dict[str, Any] | None:
    table = litellm_price_table()
    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        entry = table.get(name)
        if entry and "input_cost_per_token" in entry:
            return dict(entry)
    return None


def price_for(name: str, model: ModelConfig) -> Price:
    if model.price is not None:
        return Price(
            model.price.input_per_million / _MILLION,
            model.price.output_per_million / _MILLION,
            model.price.max_output_tokens,
        )
    entry = _lookup(model.model)
    if entry is None:
        raise ConfigError(
            f"models.{name}: no known price for {model.model!r}; add `price:` "
            "(input_per_million, output_per_million in USD)"
        )
    # str() first: Decimal(float) would carry binary noise into every sum.
    longest = entry.get("max_output_tokens") or entry.get("max_tokens")
    return Price(
        Decimal(str(entry.get("input_cost_per_token") or 0)),
        Decimal(str(entry.get("output_cost_per_token") or 0)),
        int(longest) if isinstance(longest, int | float) and longest > 0 else None,
    )


def price_table(models: dict[str, ModelConfig]) -> dict[str, Price]:
    return {name: price_for(name, m) for name, m in models.items()}
