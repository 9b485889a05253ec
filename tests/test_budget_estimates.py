"""What a request reserves on its budgets: its own `max_tokens` of output; without one, the
model's longest answer under a hard budget (so no answer costs more than it reserved), else
a default; the dearest of whoever may answer it, a few-shot prompt with its examples."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import orjson

from contracts.model_config import ModelConfig
from contracts.policy import load_policies
from contracts.pricing import Price, price_for, price_table
from gateway.budgets import DEFAULT_OUTPUT_TOKENS, estimate_nano, reservation_nano
from gateway.routing import CandidateStates, Decision, RequestFacts, Router

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


MODELS = {
    "teacher": ModelConfig(model="openai/gpt-4o"),
    "small": ModelConfig(model="openai/s", price={"input_per_million": "0.1"}),
}
POLICY = """
routes:
  - name: r
    teacher: teacher
    candidates: [{name: fs, model: small, kind: few_shot, examples: 4}]
"""


def _decide(tmp_path: Path, state: str) -> tuple[Decision, dict[str, Price]]:
    path = tmp_path / "p.policy.yaml"
    path.write_text(POLICY)
    policies = load_policies([path], MODELS)
    prices = price_table(policies.models)
    router = Router(policies, prices, CandidateStates({("r", "fs"): state}), random.Random(1))
    facts = RequestFacts(
        app="a", team="t", model="r", headers={}, metadata={}, tags=(), system_fingerprint=""
    )
    return router.decide(facts), prices


def test_a_student_request_holds_what_its_fallback_teacher_would_cost(tmp_path: Path) -> None:
    """A promoted student that fails hands the request to the teacher: the reservation is
    the teacher's, not the cheap student's, so a hard budget still bounds the answer."""
    decision, prices = _decide(tmp_path, "promoted")
    assert decision.primary.candidate == "fs"
    held = reservation_nano(decision, prices, BODY, hard=True)
    assert held == estimate_nano(prices["teacher"], BODY, hard=True)
    assert held > estimate_nano(prices["small"], BODY, hard=True, prompts=9)
    # The teacher alone holds the same.
    teacher_only, _ = _decide(tmp_path, "failed")
    assert reservation_nano(teacher_only, prices, BODY, hard=True) == held


def test_a_few_shot_estimate_pays_for_its_examples() -> None:
    price = price_for("small", MODELS["small"])
    one = estimate_nano(price, {**BODY, "max_tokens": 1})
    nine = estimate_nano(price, {**BODY, "max_tokens": 1}, prompts=9)
    assert nine > one
    tokens_in = len(orjson.dumps(BODY["messages"])) // 4 + 1
    assert nine - one == int(price.input_per_token * tokens_in * 8 * 10**9)
