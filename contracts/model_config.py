"""An upstream model: where it lives, its key, its price."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PriceOverride(Strict):
    """USD per million tokens; overrides litellm's table for this model."""

    input_per_million: Decimal
    output_per_million: Decimal = Decimal(0)
    cache_read_per_million: Decimal | None = Field(
        default=None, description="prompt tokens read from the provider's cache (default: input)"
    )
    cache_write_per_million: Decimal | None = Field(
        default=None, description="prompt tokens written to the provider's cache (default: input)"
    )
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        description="the longest answer the model gives: what a hard budget reserves for a "
        "request without max_tokens",
    )


class ModelConfig(Strict):
    """One upstream model. `model` is a litellm model string such as `openai/gpt-4o-mini`."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    price: PriceOverride | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    responses_api: bool = Field(
        default=False,
        description="the upstream serves OpenAI's Responses API itself: /v1/responses "
        "requests go to it natively (else they are translated to chat completions)",
    )

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    @property
    def upstream_name(self) -> str:
        """The name the provider knows the model by (litellm's prefix removed)."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def openai_compatible(self) -> bool:
        """OpenAI-compatible upstreams (OpenAI, vLLM, our student server) take the fast path."""
        return self.provider in ("openai", "hosted_vllm", "vllm", "flywheel")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def missing_key_variables(models: Mapping[str, ModelConfig]) -> dict[str, list[str]]:
    """Each `api_key_env` that is named but not set, with the models that need it: what a
    gateway says at start and in `/healthz`, before requests fail with 502."""
    out: dict[str, list[str]] = {}
    for name, model in models.items():
        if model.api_key_env and not os.environ.get(model.api_key_env):
            out.setdefault(model.api_key_env, []).append(name)
    return out
