"""A route's `training:` section: when the distiller trains, how it splits, and the
hyperparameters; typed and strict, so a misspelt key is a policy error with its line.

Invariant: a value left unset means "chosen for the data" (`distiller.training.recipe_for`
documents how), never a silent default that ignores the data size.
"""

from __future__ import annotations

from pydantic import Field

from contracts.model_config import Strict


class Resources(Strict):
    """What one training (and its evaluation) needs: a Ray task's `num_cpus`, `num_gpus`
    and `memory`, a Kubernetes Job's requests and limits. The local backend ignores them."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)
    memory_gb: float | None = Field(default=None, gt=0, description="unset: no request")


class Training(Strict):
    """The distiller's settings for a route: when to train, how to split, and the
    hyperparameters. Unknown keys are errors (`epoch: 3` is caught with its line)."""

    min_new_examples: int = Field(
        default=200, ge=0, description="curated examples the last dataset lacks before a run"
    )
    eval_fraction: float = Field(default=0.2, gt=0, lt=1, description="share held out to eval")
    pretrain_steps: int = Field(
        default=200, ge=0, description="domain pretraining steps of a `local:tiny` base"
    )
    # Left unset, epochs, learning rate and LoRA rank are chosen from the base and the data
    # size (`distiller.training.recipe_for`, documented there); set them to override.
    epochs: float | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=16, ge=1)
    max_length: int = Field(default=256, ge=8, description="tokens per example, prompt included")
    lora: bool | None = Field(default=None, description="default: LoRA unless the base is tiny")
    lora_rank: int | None = Field(default=None, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1, description="default: twice the rank")
    seed: int = 0
    max_steps: int = Field(default=-1, description="stop after this many steps (-1: epochs)")
    time_budget_s: float | None = Field(
        default=None, gt=0, description="stop training (keeping the best so far) after this"
    )
    early_stopping_patience: int = Field(
        default=2, ge=0, description="evaluations without improvement before stopping (0: off)"
    )
    calibration_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="share of training data held out to calibrate"
    )
    finetune_encoder: bool | None = Field(
        default=None,
        description="classifier: train the backbone too (default: on CUDA only; a head on "
        "frozen features on CPU); structured: default on everywhere",
    )
    max_labels: int = Field(
        default=500, ge=2, description="classifier: most distinct answers that count as labels"
    )
    scope_quantile: float | None = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="classifier: a second gate in the student's feature space: a request "
        "farther (cosine distance to the nearest training example) than this quantile of "
        "the held-out in-scope distances gets confidence 0, so the router escalates it "
        "(about 1 - quantile of in-scope traffic; null: off)",
    )
    out_of_scope_labels: list[str] = Field(
        default_factory=lambda: ["oos", "out_of_scope"],
        description="classifier: answers by which the teacher says a request lies outside "
        "the route's label set (matched ignoring case, '-' and spaces as '_'); learned like "
        "any label, and a request the student gives one of them gets confidence 0, so the "
        "router escalates it to the teacher",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(),
        description="what one training job of this route asks a ray or kubernetes backend for",
    )
