"""A route's guardrails as admins write them in a policy: which rails run on input and
output, what each does (block, mask, flag) and how a block answers.

Invariant: a `Guardrails` that validated is one the engine can build: masks only on pii,
topics given where needed, phone regions known to libphonenumber, `prompt_attack` on input.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Entity = Literal["email", "phone", "card", "iban", "national_id", "secret", "ip"]
_ENTITIES: tuple[Entity, ...] = ("email", "phone", "card", "iban", "national_id", "secret", "ip")


class Rail(_Strict):
    """One guardrail. `pii` masks, blocks or flags personal data and secrets; `jailbreak`
    (regex tripwire) and `deny_topics` block or flag; `prompt_attack` is the learned
    jailbreak and injection detector, its threshold chosen on the route's own traffic;
    `self_check` asks the route's teacher (LLM rail)."""

    rail: Literal["pii", "jailbreak", "deny_topics", "prompt_attack", "self_check"]
    action: Literal["block", "mask", "flag"] = "block"
    entities: list[Entity] = Field(default_factory=lambda: list(_ENTITIES))
    mask_upstream: bool = Field(
        default=True,
        description="input pii masks: true = the model sees masked text too; false = only "
        "the logs and training data are masked",
    )
    topics: dict[str, list[str]] = Field(
        default_factory=dict, description="deny_topics: topic name -> keywords"
    )
    phone_regions: list[str] | None = Field(
        default=None,
        description="pii: regions (ISO 3166 alpha-2) whose national phone formats count; "
        "default US GB DE FR ES IT NL IN AU BR; any region's with a + country code",
    )
    detector: str = Field(
        default="prompt-attack",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="prompt_attack: the trained detector's name in the model store",
    )
    target_fpr: float = Field(
        default=0.005,
        gt=0,
        lt=0.5,
        description="prompt_attack: the share of this route's logged traffic the chosen "
        "threshold may flag",
    )

    @model_validator(mode="after")
    def _fits(self) -> Rail:
        if self.action == "mask" and self.rail != "pii":
            raise ValueError(f"action `mask` applies to the pii rail only, not {self.rail}")
        if self.rail == "deny_topics" and not self.topics:
            raise ValueError("deny_topics needs `topics`")
        if self.phone_regions is not None:
            import phonenumbers

            known = phonenumbers.SUPPORTED_REGIONS
            bad = [r for r in self.phone_regions if r not in known]
            if bad:
                raise ValueError(f"unknown phone_regions {bad}: use ISO 3166 codes like GB, DK")
        return self


class Guardrails(_Strict):
    input: list[Rail] = Field(default_factory=list)
    output: list[Rail] = Field(default_factory=list)
    block_with: Literal["error", "refusal"] = Field(
        default="error",
        description="error: an OpenAI-style 400 `guardrail_blocked`; refusal: a normal answer "
        "carrying `refusal_message`",
    )
    refusal_message: str = "I can't help with that request."

    @model_validator(mode="after")
    def _input_only(self) -> Guardrails:
        if any(r.rail == "prompt_attack" for r in self.output):
            raise ValueError("`prompt_attack` reads what users send: it is an input rail")
        return self
