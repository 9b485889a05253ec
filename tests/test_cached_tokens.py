"""Prompt-cache pricing: prompt tokens a provider read from (or wrote to) its prompt cache
are billed at its cache rates, in every usage shape upstreams send; a coding agent's long,
cached prompts cost what the provider bills."""

from __future__ import annotations

from decimal import Decimal

import openai

from contracts.model_config import ModelConfig
from contracts.pricing import Tokens, billed_tokens, litellm_price_table, price_for
from tests.support.gateway import APP_KEY, RunningGateway


def test_usage_shapes_give_the_same_billed_tokens() -> None:
    # OpenAI chat: prompt_tokens includes the cached ones.
    openai_usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 800},
    }
    assert billed_tokens(openai_usage) == Tokens(1000, 20, 800, 0)
    # litellm's chat view of an Anthropic answer: prompt_tokens includes reads and writes.
    litellm_usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 800},
        "cache_read_input_tokens": 800,
        "cache_creation_input_tokens": 150,
    }
    assert billed_tokens(litellm_usage) == Tokens(1000, 20, 800, 150)
    # Anthropic Messages: input_tokens excludes both.
    anthropic_usage = {
        "input_tokens": 50,
        "output_tokens": 20,
        "cache_read_input_tokens": 800,
        "cache_creation_input_tokens": 150,
    }
    assert billed_tokens(anthropic_usage) == Tokens(1000, 20, 800, 150)
    # Responses: input_tokens includes input_tokens_details.cached_tokens.
    responses_usage = {
        "input_tokens": 1000,
        "output_tokens": 20,
        "input_tokens_details": {"cached_tokens": 800},
    }
    assert billed_tokens(responses_usage) == Tokens(1000, 20, 800, 0)
    # Nonsense never bills more cache than prompt, nor a negative count.
    assert billed_tokens({"prompt_tokens": 5, "cache_read_input_tokens": 9}) == Tokens(5, 0, 5, 0)
    assert billed_tokens({"prompt_tokens": -3, "completion_tokens": None}) == Tokens(0, 0, 0, 0)


def test_cache_rates_come_from_litellm_or_the_override() -> None:
    entry = litellm_price_table()["claude-sonnet-4-5"]
    price = price_for("claude", ModelConfig(model="anthropic/claude-sonnet-4-5"))
    tokens = Tokens(1000, 20, 800, 150)
    expected = (
        Decimal(str(entry["input_cost_per_token"])) * 50
        + Decimal(str(entry["cache_read_input_token_cost"])) * 800
        + Decimal(str(entry["cache_creation_input_token_cost"])) * 150
        + Decimal(str(entry["output_cost_per_token"])) * 20
    )
    assert price.billed(tokens) == expected
    assert price.billed(tokens) < price.cost(1000, 20)  # reads cost a tenth of input
    override = price_for(
        "m",
        ModelConfig.model_validate(
            {
                "model": "openai/custom",
                "price": {
                    "input_per_million": "2",
                    "output_per_million": "8",
                    "cache_read_per_million": "0.5",
                },
            }
        ),
    )
    # Writes fall back to the input rate when the override names none: 50 fresh at $2/M,
    # 800 read at $0.5/M, 150 written at $2/M, 20 out at $8/M.
    assert override.billed(tokens) == Decimal("0.0001") + Decimal("0.0004") + Decimal(
        "0.0003"
    ) + Decimal("0.00016")


def test_a_cached_prompt_is_logged_at_the_cache_rate(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are a long cached system prompt " * 3},
            {"role": "user", "content": "what changed [[cached:12]]"},
        ],
    )
    assert resp.usage is not None and resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 12
    row = gateway.row(resp.id)
    entry = litellm_price_table()["gpt-4o"]
    expected = (
        Decimal(str(entry["input_cost_per_token"])) * (row["input_tokens"] - 12)
        + Decimal(str(entry["cache_read_input_token_cost"])) * 12
        + Decimal(str(entry["output_cost_per_token"])) * row["output_tokens"]
    )
    assert row["input_tokens"] == resp.usage.prompt_tokens
    assert row["cost_usd"] == expected and row["baseline_cost_usd"] == expected
    # The split is kept: in the row, and summed for finance by the hourly rollup.
    assert (row["cached_input_tokens"], row["cache_write_tokens"]) == (12, 0)
    from gateway.dashboard.filters import Filters
    from gateway.dashboard.finance import breakdown

    routes = {r["route"]: r for r in breakdown(gateway.state.store, Filters.last_days(1), "route")}
    support = routes[row["route"]]
    assert support["cached_input_tokens"] >= 12
    assert support["cached_input_pct"] == (
        Decimal(support["cached_input_tokens"] * 100) / support["input_tokens"]
    ).quantize(Decimal("0.01"))
