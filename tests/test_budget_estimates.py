"""What a request reserves on its budgets: its own `max_tokens` of output; without one, the
model's longest answer under a hard budget (so no answer costs more than it reserved), else
a default."""

from __future__ import annotations

from decimal import Decimal

from contracts.model_config import ModelConfig
from contracts.pricing import price_for
from gateway.budgets import DEFAULT_OUTPUT_TOKENS, estimate_nano

BODY = {"messages": [{"role": "user", "content": "hello there"}]}


def test_hard_budgets_reserve_the_longest_answer_without_max_tokens() -> None:
    price = price_for("teacher", ModelConfig(model="openai/gpt-4o"))
    assert price.max_output_tokens and price.max_output_tokens > DEFAULT_OUTPUT_TOKENS
    prompt = estimate_nano(price, {**BODY, "max_tokens": 1})
    per_output = estimate_nano(price, {**BODY, "max_tokens": 2}) - prompt
    soft = estimate_nano(price, BODY)
    hard = estimate_nano(price, BODY, hard=True)
    assert hard - soft == per_output * (price.max_output_tokens - DEFAULT_OUTPUT_TOKENS)
    # A request that says how long it may be reserves exactly that, hard or not.
    assert estimate_nano(price, {**BODY, "max_tokens": 8}, hard=True) == estimate_nano(
        price, {**BODY, "max_tokens": 8}
    )


def test_a_priced_model_can_say_its_longest_answer() -> None:
    price = price_for(
        "local",
        ModelConfig.model_validate(
            {
                "model": "openai/local",
                "price": {
                    "input_per_million": "0",
                    "output_per_million": "1000000",
                    "max_output_tokens": 300,
                },
            }
        ),
    )
    assert price.max_output_tokens == 300 and price.output_per_token == Decimal(1)
    assert estimate_nano(price, BODY, hard=True) == 300 * 10**9
    assert estimate_nano(price, BODY) == DEFAULT_OUTPUT_TOKENS * 10**9
