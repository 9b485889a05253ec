"""Train a classifier student: the teacher's answers on a route form a closed label set;
a linear head over a pooled encoder (or LM backbone) learns to pick one.

Recipe: mean-pooled features of the users' turns; a multinomial logistic-regression head
fitted on them (seconds on CPU, and the best start where data is scarce); on CUDA (or with
`training.finetune_encoder: true`) the backbone and the head, warm-started from that
solution, are then fine-tuned end to end with early stopping on the calibration split and
a time budget. Last, a temperature is fitted on the calibration split (held out of
training, chosen by a stable hash) so probabilities mean what they say, and the scope gate
(`students.classifier.Scope`: the cosine distance to the nearest training example's
features) gets the threshold that `training.scope_quantile` of the calibration split stays
within. The teacher's out-of-scope answers (`training.out_of_scope_labels`, e.g. `oos`) are
labels the head learns, but not part of the scope: the gate's examples are the in-scope
ones, so a request like those the teacher called out of scope is far from all of them.

Invariant: the run leaves `<out_dir>/merged` loadable by `students.classifier.Classifier`
and by the student server, and `training_log.json`, or raises `NotAClosedSet`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from contracts.training import Training
from distiller.examples import Example
from distiller.progress import RunProgress
from distiller.training import TrainResult
from students.classifier import Encoder, Scope, catch_all_key, input_text, save
from students.loading import use_threads_by_load

log = logging.getLogger("flywheel.classifier")


class NotAClosedSet(ValueError):
    """The route's answers are too varied to be labels: a classifier cannot serve it."""


def label_set(examples: list[Example], max_labels: int) -> list[str]:
    """The distinct answers, when they are few enough to be classes: at most `max_labels`,
    and each seen three times on average."""
    counts = Counter(ex.answer.strip() for ex in examples)
    if not counts or len(counts) > max_labels or len(counts) * 3 > len(examples):
        raise NotAClosedSet(
            f"{len(counts)} distinct answers in {len(examples)} examples: the teacher's "
            f"answers are not a closed set (at most {max_labels}, each seen ~3 times)"
        )
    return sorted(counts)


def split_calibration(
    examples: list[Example], fraction: float
) -> tuple[list[Example], list[Example]]:
    """(fit, calibration): a stable hash of the request id picks the side, so an example
    never moves as data grows."""
    fit: list[Example] = []
    cal: list[Example] = []
    for ex in examples:
        bucket = int(hashlib.sha256(f"cal:{ex.request_id}".encode()).hexdigest()[:8], 16)
        (cal if bucket / 0xFFFFFFFF < fraction else fit).append(ex)
    return (fit, cal) if fit and cal else (examples, [])


def fit_temperature(logits: Any, targets: Any) -> float:
    """The temperature minimising the negative log-likelihood of held-out labels (a 1-D
    search over a log grid, then refined: robust, no optimiser state)."""
    import torch

    if len(targets) == 0:
        return 1.0

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / t, targets))

    grid = [math.exp(x / 20) for x in range(-80, 81)]  # 0.018 .. 54.6
    best = min(grid, key=nll)
    fine = [best * math.exp(x / 200) for x in range(-10, 11)]
    return min(fine, key=nll)


def _logistic_head(features: Any, targets: Any, labels: int) -> tuple[Any, Any]:
    import torch
    from sklearn.linear_model import LogisticRegression

    present = sorted(set(targets.tolist()))
    lr = LogisticRegression(C=20.0, max_iter=3000)
    lr.fit(features.numpy(), targets.numpy())
    coef = torch.tensor(lr.coef_, dtype=torch.float32)
    icpt = torch.tensor(lr.intercept_, dtype=torch.float32)
    if len(present) == 2 and coef.shape[0] == 1:  # sklearn's binary form: one row
        coef = torch.cat([-coef / 2, coef / 2])
        icpt = torch.cat([-icpt / 2, icpt / 2])
    weight = torch.zeros(labels, features.shape[1])
    bias = torch.full((labels,), -30.0)  # a label never seen in the fit split is never picked
    for row, label in enumerate(present):
        weight[label], bias[label] = coef[row], icpt[row]
    return weight, bias


def _finetune(
    encoder: Encoder,
    weight: Any,
    bias: Any,
    fit: tuple[list[str], Any],
    cal: tuple[list[str], Any],
    cfg: Training,
    losses: list[float],
    progress: RunProgress,
) -> int:
    """End-to-end fine-tuning; keeps the epoch with the best calibration loss. Returns
    the optimiser steps taken."""
    import torch

    cuda = encoder.device.type == "cuda"
    head = torch.nn.Linear(weight.shape[1], weight.shape[0]).to(encoder.device)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    epochs = math.ceil(cfg.epochs or 3)
    lr = cfg.learning_rate or 5e-5
    opt = torch.optim.AdamW(
        [
            {"params": encoder.model.parameters(), "lr": lr},
            {"params": head.parameters(), "lr": lr * 20},
        ],
        weight_decay=0.01,
        fused=cuda,
    )
    texts, targets = fit
    batch = max(16, cfg.batch_size)
    total = epochs * math.ceil(len(texts) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr, lr * 20], total_steps=max(1, total), pct_start=0.1
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    stale, steps, t0 = 0, 0, time.perf_counter()
    for _ in range(epochs):
        encoder.model.train()
        order = torch.randperm(len(texts), generator=gen).tolist()
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = head(encoder.pooled([texts[i] for i in idx]))
            loss = torch.nn.functional.cross_entropy(
                logits.float(), targets[idx].to(encoder.device)
            )
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
            if steps % 10 == 0:
                losses.append(float(loss.detach()))
            progress.report("train", steps, total, losses[-1] if losses else None)
        if cal[0]:
            with torch.no_grad():
                val = float(
                    torch.nn.functional.cross_entropy(
                        head(encoder.embed(cal[0]).to(encoder.device)).float().cpu(), cal[1]
                    )
                )
            if best is None or val < best[0]:
                model_state = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
                head_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
                best, stale = (val, model_state, head_state), 0
            else:
                stale += 1
                if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                    break
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
    if best is not None:
        encoder.model.load_state_dict(best[1])
        head.load_state_dict(best[2])
    encoder.model.eval()
    weight.copy_(head.weight.detach().cpu())
    bias.copy_(head.bias.detach().cpu())
    return steps


def keep_encoder(encoder: Encoder, base: str | Path, merged: Path, finetuned: bool) -> str:
    """Where the artifact's manifest says its encoder is: a tuned encoder is saved inside
    the artifact (`encoder`, relative); a frozen one is the base, by absolute path when it
    is one."""
    if finetuned:
        encoder.model.save_pretrained(merged / "encoder")
        encoder.tokenizer.save_pretrained(merged / "encoder")
        return "encoder"
    return str(Path(base).resolve()) if Path(str(base)).exists() else str(base)


def train_classifier(
    base: str | Path, examples: list[Example], out_dir: Path, config: Training | None = None
) -> TrainResult:
    import torch

    use_threads_by_load()
    cfg = config or Training()
    labels = label_set(examples, cfg.max_labels)
    index = {label: i for i, label in enumerate(labels)}
    fit, cal = split_calibration(examples, cfg.calibration_fraction)
    encoder = Encoder(base, max_length=min(cfg.max_length, 256))
    finetune = (
        encoder.device.type == "cuda" if cfg.finetune_encoder is None else cfg.finetune_encoder
    )
    fit_texts = [input_text(ex.prompt) for ex in fit]
    cal_texts = [input_text(ex.prompt) for ex in cal]
    fit_y = torch.tensor([index[ex.answer.strip()] for ex in fit])
    cal_y = torch.tensor([index[ex.answer.strip()] for ex in cal])
    t0 = time.perf_counter()
    progress = RunProgress(out_dir)
    # Reading the examples through the encoder is most of a frozen-head run: its own stage.
    progress.report("features", 0, len(fit_texts), force=True)
    features = encoder.embed(fit_texts, done=lambda n, total: progress.report("features", n, total))
    progress.report("train", 0, 1, force=True)
    weight, bias = _logistic_head(features, fit_y, len(labels))
    progress.report("train", 1, 1, force=True)
    losses: list[float] = []
    steps = 1
    if finetune:
        steps = _finetune(
            encoder, weight, bias, (fit_texts, fit_y), (cal_texts, cal_y), cfg, losses, progress
        )
    cal_features = encoder.embed(cal_texts) if cal else torch.zeros(0, encoder.dim)
    cal_logits = cal_features @ weight.T + bias
    temperature = fit_temperature(cal_logits, cal_y)
    keys = {catch_all_key(x) for x in cfg.out_of_scope_labels}
    catch_all = [label for label in labels if catch_all_key(label) in keys]
    outside = torch.tensor([index[label] for label in catch_all], dtype=torch.long)
    scope = None
    cal_in = ~torch.isin(cal_y, outside)
    if cfg.scope_quantile is not None and int(cal_in.sum()) >= 20:
        if finetune:  # the tuned backbone's own feature space
            features = encoder.embed(fit_texts)
        fit_in = ~torch.isin(fit_y, outside)
        scope = Scope.fit(features[fit_in], cal_features[cal_in], cfg.scope_quantile)
    seconds = time.perf_counter() - t0
    merged = out_dir / "merged"
    encoder_ref = keep_encoder(encoder, base, merged, finetune)
    save(
        merged,
        labels,
        temperature,
        encoder_ref,
        weight,
        bias,
        encoder.max_length,
        {"base": str(base), "finetuned": finetune},
        scope,
        catch_all,
    )
    epochs_done = (cfg.epochs or 3) if finetune else 1
    tokens = int(
        sum(len(encoder.tokenizer(t)["input_ids"]) for t in fit_texts[:2000])
        * (len(fit_texts) / max(1, min(2000, len(fit_texts))))
        * epochs_done
    )
    result = TrainResult(
        out_dir,
        merged,
        False,
        losses,
        steps,
        seconds,
        tokens,
        encoder.device.type,
        os.getpid(),
    )
    (out_dir / "training_log.json").write_text(
        json.dumps(
            {
                **result.summary(),
                "kind": "classifier",
                "base": str(base),
                "labels": len(labels),
                "temperature": temperature,
                "scope_threshold": None if scope is None else scope.threshold,
                "out_of_scope_labels": catch_all,
                "fit": len(fit),
                "calibration": len(cal),
                "finetuned": finetune,
                "config": cfg.model_dump(),
            },
            indent=2,
        )
    )
    log.info("classifier %s: %d labels, T=%.2f, %.1fs", merged, len(labels), temperature, seconds)
    return result
