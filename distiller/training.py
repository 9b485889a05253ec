"""Fine-tune a student with trl's SFTTrainer.

Chat examples go in as conversational prompt-completion pairs, so the loss is on the
assistant's answer only (trl masks the prompt). A pretrained base gets a peft LoRA adapter
(saved, and merged into a full copy for serving); a tiny locally built base is fine-tuned
whole. CUDA when present, CPU otherwise (bf16 and gradient checkpointing off on CPU, where
current trl/transformers need it).

Invariant: a run leaves `<out_dir>/merged` loadable with `from_pretrained` (plus `adapter`
for LoRA runs) and `training_log.json` with the loss curve, or raises.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distiller.base_model import is_local_tiny, load

log = logging.getLogger("flywheel.training")


class TrainConfig(BaseModel):
    """Hyperparameters; a route's `training:` section overrides them."""

    model_config = ConfigDict(extra="ignore")

    epochs: float = 8
    learning_rate: float | None = Field(default=None, description="default: 1e-3 tiny, 2e-4 LoRA")
    batch_size: int = 16
    max_length: int = 256
    lora: bool | None = Field(default=None, description="default: LoRA unless the base is tiny")
    lora_rank: int = 16
    lora_alpha: int = 32
    seed: int = 0
    max_steps: int = -1


@dataclass
class Example:
    request_id: str
    prompt: list[dict[str, Any]]
    answer: str
    answer_source: str = "teacher"  # or "review": a person's label replaced the teacher's
    label_id: str = ""


@dataclass
class TrainResult:
    out_dir: Path
    merged: Path
    lora: bool
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    device: str = "cpu"
    pid: int = 0  # the process that trained (the embedded worker trains in a subprocess)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"], out["merged"] = str(self.out_dir), str(self.merged)
        out["tokens_per_s"] = self.tokens_per_s
        return out


def train(
    base: str | Path, examples: list[Example], out_dir: Path, config: TrainConfig | None = None
) -> TrainResult:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    cfg = config or TrainConfig()
    tiny = is_local_tiny(base)
    use_lora = (not tiny) if cfg.lora is None else cfg.lora
    lr = cfg.learning_rate or (1e-3 if tiny else 2e-4)
    cuda = torch.cuda.is_available()
    model, tokenizer = load(base)
    data = Dataset.from_list(
        [
            {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": ex.answer}]}
            for ex in examples
        ]
    )
    peft_config = None
    if use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_length=cfg.max_length,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False,
        use_cpu=not cuda,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Losses()],
    )
    t0 = time.perf_counter()
    state = trainer.train()
    seconds = time.perf_counter() - t0
    encoded: Any = trainer.train_dataset
    tokens = int(sum(len(x) for x in encoded["input_ids"]) * cfg.epochs)
    merged = out_dir / "merged"
    trained: Any = trainer.model
    if use_lora:
        trained.save_pretrained(out_dir / "adapter")
        trained = trained.merge_and_unload()
    trained.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    result = TrainResult(
        out_dir,
        merged,
        use_lora,
        losses,
        int(state.global_step),
        seconds,
        tokens,
        "cuda" if cuda else "cpu",
        os.getpid(),
    )
    (out_dir / "training_log.json").write_text(
        json.dumps(
            {
                **result.summary(),
                "base": str(base),
                "config": cfg.model_dump(),
                "examples": len(examples),
            },
            indent=2,
        )
    )
    log.info(
        "trained %s in %.1fs (%d steps, %.0f tokens/s)",
        merged,
        seconds,
        result.steps,
        result.tokens_per_s,
    )
    return result
