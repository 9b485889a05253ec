"""Prices per token as Decimal USD, read once per model from litellm's price table.

Invariant: every configured model has a price (an override or litellm's), found at start-up;
a model with no known price is a `ConfigError`, never a silent $0. Costs are Decimal USD
quantized to 1e-9 (nano-dollars), exact when summed in ClickHouse's Decimal(18, 9). Prompt
tokens a provider read from or wrote to its prompt cache are priced at its cache rates
(litellm's `cache_read_input_token_cost` / `cache_creation_input_token_cost`, or the
override's), the rest at the input rate: a coding agent's long cached prompts cost what the
provider bills, not ten times that.
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
class Tokens:
    """A call's tokens as billed: `prompt` counts every prompt token, of which `cache_read`
    came from and `cache_write` went to the provider's prompt cache."""

    prompt: int
    completion: int
    cache_read: int = 0
    cache_write: int = 0


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def billed_tokens(usage: dict[str, Any]) -> Tokens:
    """The tokens of a usage object in any of the shapes upstreams send: chat completions
    (`prompt_tokens` includes the cached ones: OpenAI's `prompt_tokens_details.cached_tokens`,
    litellm's `cache_read_input_tokens` / `cache_creation_input_tokens` from Anthropic),
    Anthropic Messages (`input_tokens` excludes `cache_read_input_tokens` and
    `cache_creation_input_tokens`) and Responses (`input_tokens` includes
    `input_tokens_details.cached_tokens`)."""
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    read = _int(usage.get("cache_read_input_tokens")) or cached
    write = _int(usage.get("cache_creation_input_tokens"))
    if "prompt_tokens" in usage:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
    else:
        prompt = _int(usage.get("input_tokens"))
        completion = _int(usage.get("output_tokens"))
        if "input_tokens_details" not in usage:  # Anthropic: the cache is not in input_tokens
            prompt += read + write
    read, write = min(read, prompt), min(write, max(0, prompt - read))
    return Tokens(prompt, completion, read, write)


@dataclass(frozen=True, slots=True)
class Price:
    input_per_token: Decimal
    output_per_token: Decimal
    max_output_tokens: int | None = None  # the longest answer (litellm's table, or set)
    cache_read_per_token: Decimal | None = None  # None: the input rate
    cache_write_per_token: Decimal | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        total = self.input_per_token * input_tokens + self.output_per_token * output_tokens
        return total.quantize(NANO)

    def billed(self, tokens: Tokens) -> Decimal:
        """What the provider bills for `tokens`, its cached prompt tokens at cache rates."""
        read = (
            self.input_per_token if self.cache_read_per_token is None else self.cache_read_per_token
        )
        write = (
            self.input_per_token
            if self.cache_write_per_token is None
            else self.cache_write_per_token
        )
        fresh = tokens.prompt - tokens.cache_read - tokens.cache_write
        total = (
            self.input_per_token * fresh
            + read * tokens.cache_read
            + write * tokens.cache_write
            + self.output_per_token * tokens.completion
        )
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
        over = model.price
        return Price(
            over.input_per_million / _MILLION,
            over.output_per_million / _MILLION,
            over.max_output_tokens,
            None if over.cache_read_per_million is None else over.cache_read_per_million / _MILLION,
            None
            if over.cache_write_per_million is None
            else over.cache_write_per_million / _MILLION,
        )
    entry = _lookup(model.model)
    if entry is None:
        raise ConfigError(
            f"models.{name}: no known price for {model.model!r}; add `price:` "
            "(input_per_million, output_per_million in USD)"
        )
    # str() first: Decimal(float) would carry binary noise into every sum.
    longest = entry.get("max_output_tokens") or entry.get("max_tokens")
    read, write = (
        entry.get("cache_read_input_token_cost"),
        entry.get("cache_creation_input_token_cost"),
    )
    return Price(
        Decimal(str(entry.get("input_cost_per_token") or 0)),
        Decimal(str(entry.get("output_cost_per_token") or 0)),
        int(longest) if isinstance(longest, int | float) and longest > 0 else None,
        Decimal(str(read)) if isinstance(read, int | float) else None,
        Decimal(str(write)) if isinstance(write, int | float) else None,
    )


def price_table(models: dict[str, ModelConfig]) -> dict[str, Price]:
    return {name: price_for(name, m) for name, m in models.items()}
