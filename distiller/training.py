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
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contracts.training import Training
from distiller.base_model import is_local_tiny
from distiller.examples import Example
from distiller.progress import RunProgress
from students.loading import load, use_threads_by_load

log = logging.getLogger("flywheel.training")


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


def recipe_for(cfg: Training, examples: int, tiny: bool) -> Training:
    """The route's `training:` with what it left unset chosen from the base and data size.

    - a tiny local base (fully fine-tuned): 8 epochs at 1e-3;
    - a pretrained base with LoRA: fewer, gentler passes as data grows, and a larger rank
      once there is data to fill it: under 500 examples rank 8, 5 epochs at 2e-4; under
      5,000 rank 16, 3 epochs at 2e-4; from 5,000 rank 32, 2 epochs at 1e-4.
    LoRA alpha defaults to twice the rank."""
    if tiny:
        epochs, lr, rank = 8.0, 1e-3, 16
    elif examples < 500:
        epochs, lr, rank = 5.0, 2e-4, 8
    elif examples < 5000:
        epochs, lr, rank = 3.0, 2e-4, 16
    else:
        epochs, lr, rank = 2.0, 1e-4, 32
    rank = cfg.lora_rank or rank
    return cfg.model_copy(
        update={
            "epochs": cfg.epochs or epochs,
            "learning_rate": cfg.learning_rate or lr,
            "lora_rank": rank,
            "lora_alpha": cfg.lora_alpha or 2 * rank,
        }
    )


def _rows(examples: list[Example]) -> list[dict[str, Any]]:
    return [
        {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": ex.answer}]}
        for ex in examples
    ]


def train(
    base: str | Path,
    examples: list[Example],
    out_dir: Path,
    config: Training | None = None,
    dev: list[Example] | None = None,
) -> TrainResult:
    """Fine-tune `base` on `examples`. With `dev` examples, the loss on them is evaluated
    each epoch, the best epoch is kept and training stops after `early_stopping_patience`
    epochs without improvement; `time_budget_s` stops it early in any case."""
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    use_threads_by_load()
    tiny = is_local_tiny(base)
    cfg = recipe_for(config or Training(), len(examples), tiny)
    assert cfg.epochs is not None and cfg.learning_rate is not None
    use_lora = (not tiny) if cfg.lora is None else cfg.lora
    cuda = torch.cuda.is_available()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    model, tokenizer = load(base)
    data = Dataset.from_list(_rows(examples))
    early = bool(dev) and cfg.early_stopping_patience > 0
    peft_config = None
    if use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_rank or 16,
            lora_alpha=cfg.lora_alpha or 32,
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
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_length=cfg.max_length,
        logging_steps=5,
        eval_strategy="epoch" if early else "no",
        save_strategy="epoch" if early else "no",
        save_total_limit=1 if early else None,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        report_to=[],
        seed=cfg.seed,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        gradient_checkpointing=False,
        use_cpu=not cuda,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )
    losses: list[float] = []
    t0 = time.perf_counter()
    progress = RunProgress(out_dir)
    tokens_per_step = [0.0]  # set once the trainer has tokenised the data

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            elapsed = time.perf_counter() - t0
            progress.report(
                "train",
                int(state.global_step),
                int(state.max_steps),
                losses[-1] if losses else None,
                tokens_per_s=tokens_per_step[0] * int(state.global_step) / elapsed
                if elapsed
                else None,
            )
            if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
                control.should_training_stop = True

    callbacks: list[Any] = [Losses()]
    if early:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=Dataset.from_list(_rows(dev or [])) if early else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    tokenised: Any = trainer.train_dataset
    tokens_per_step[0] = (
        sum(len(x) for x in tokenised["input_ids"]) / max(1, len(tokenised)) * cfg.batch_size
    )
    state = trainer.train()
    seconds = time.perf_counter() - t0
    encoded: Any = trainer.train_dataset
    # Tokens actually trained on: the steps taken, not the epochs planned (early stops).
    per_epoch_steps = max(1, math.ceil(len(examples) / cfg.batch_size))
    epochs_done = int(state.global_step) / per_epoch_steps
    tokens = int(sum(len(x) for x in encoded["input_ids"]) * epochs_done)
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
