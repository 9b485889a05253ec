"""Train a structured student: the teacher's answers on a route are JSON objects whose
fields are labels or spans copied from the user's text (`distiller/structure_inference.py`).

Recipe: the shape inferred from the curated answers; each answer read back as a label per
label field and BIO tags per token for the span fields (an answer that cannot be written
back exactly from them is left out, and counted); a calibration split held out by the
classifier's stable hash. Encoder and heads are trained end to end (on CPU too: short
requests in batches of similar length keep a pass over 13k SNIPS requests to minutes);
`training.finetune_encoder: false` trains the heads alone on token features computed once.
Last, one temperature per head is fitted on the calibration split.

Invariant: the run leaves `<out_dir>/merged` loadable by `students.structured.Structured`
and by the student server, and `training_log.json` (with the shape, the fields it could
learn and those it could not), or raises `NotStructured`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from contracts.training import Training
from distiller.classifier import fit_temperature, keep_encoder, split_calibration
from distiller.examples import Example
from distiller.progress import RunProgress
from distiller.structure_inference import NotStructured, infer_shape, targets
from distiller.training import TrainResult
from students.classifier import Encoder, input_text
from students.loading import use_threads_by_load
from students.structure import AnswerShape, Spans
from students.structured import (
    Structured,
    encode,
    heads_module,
    hidden_states,
    tag_names,
    word_starts,
)

log = logging.getLogger("flywheel.structured")
IGNORE = -100  # a token with no tag to learn (padding, special tokens)


def token_tags(
    text: str, offsets: list[tuple[int, int]], spans: Spans, index: dict[str, int]
) -> list[int]:
    """BIO tag ids of the tokens that begin words: B- at a span's first word, I- after it;
    the other pieces of a word and special tokens are ignored (`students.structured`
    decodes from the words' first tokens)."""
    tags = []
    for (a, _), starts in zip(offsets, word_starts(text, offsets), strict=True):
        if not starts:
            tags.append(IGNORE)
            continue
        tag = "O"
        for name, ranges in spans.items():
            for start, end in ranges:
                if start <= a < end:
                    tag = f"{'B' if a <= start else 'I'}-{name}"
        tags.append(index[tag])
    return tags


class _Batches:
    """Examples as tensors: token ids, tags and label targets, in batches of similar
    length; with a frozen encoder, each batch's hidden states computed once."""

    def __init__(
        self,
        encoder: Encoder,
        shape: AnswerShape,
        rows: list[tuple[str, dict[str, Any], Spans]],
        batch_size: int,
        frozen: bool,
    ) -> None:
        import torch

        index = {t: i for i, t in enumerate(tag_names(shape))}
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        self.batches: list[dict[str, Any]] = []
        for start in range(0, len(order), batch_size):
            chunk = [rows[i] for i in order[start : start + batch_size]]
            batch = encode(encoder, [text for text, _, _ in chunk])
            offsets = batch["offset_mapping"].tolist()
            tags = torch.tensor(
                [
                    token_tags(text, [(o[0], o[1]) for o in offs], spans, index)
                    for offs, (text, _, spans) in zip(offsets, chunk, strict=True)
                ]
            )
            labels = [
                torch.tensor([f.labels.index(lab[f.name]) for _, lab, _ in chunk])
                for f in shape.labels
            ]
            item: dict[str, Any] = {"batch": batch, "tags": tags, "labels": labels}
            if frozen:
                with torch.no_grad():
                    item["hidden"] = hidden_states(encoder, batch).float()
            self.batches.append(item)


def _loss(heads: Any, hidden: Any, item: dict[str, Any]) -> Any:
    import torch

    mask = item["batch"]["attention_mask"].to(hidden.device)
    label_logits, tag_logits = heads(hidden, mask)
    loss = torch.nn.functional.cross_entropy(
        tag_logits.reshape(-1, tag_logits.shape[-1]),
        item["tags"].to(hidden.device).reshape(-1),
        ignore_index=IGNORE,
    )
    for logits, target in zip(label_logits, item["labels"], strict=True):
        loss = loss + torch.nn.functional.cross_entropy(logits, target.to(hidden.device))
    return loss


def _hidden(encoder: Encoder, item: dict[str, Any]) -> Any:
    return item["hidden"] if "hidden" in item else hidden_states(encoder, item["batch"])


def train_structured(
    base: str | Path, examples: list[Example], out_dir: Path, config: Training | None = None
) -> TrainResult:
    import torch

    use_threads_by_load()
    cfg = config or Training()
    shape = infer_shape(examples, cfg.max_labels)
    # What each answer teaches, by request; an answer that cannot be written back is left out.
    by_id = {ex.request_id: t for ex in examples if (t := targets(shape, ex)) is not None}
    if not by_id or (not shape.labels and not shape.spans):
        raise NotStructured(
            f"no field of the route's answers can be learned (unlearnable: {shape.unlearnable})"
        )
    kept = [ex for ex in examples if ex.request_id in by_id]
    fit, cal = split_calibration(kept, cfg.calibration_fraction)

    def rows(part: list[Example]) -> list[tuple[str, dict[str, Any], Spans]]:
        return [(input_text(ex.prompt), *by_id[ex.request_id]) for ex in part]

    encoder = Encoder(base, max_length=min(cfg.max_length, 256))
    # End to end by default, on CPU too: frozen MiniLM token features with these heads wrote
    # 60% of SNIPS test answers exactly (load_tests/RESULTS.md), too few to serve.
    finetune = True if cfg.finetune_encoder is None else cfg.finetune_encoder
    t0 = time.perf_counter()
    progress = RunProgress(out_dir)
    progress.report("features", 0, len(fit), force=True)
    batch_size = max(16, cfg.batch_size)
    train_batches = _Batches(encoder, shape, rows(fit), batch_size, not finetune).batches
    cal_batches = _Batches(encoder, shape, rows(cal), 64, not finetune).batches if cal else []
    progress.report("features", len(fit), len(fit), force=True)
    torch.manual_seed(cfg.seed)  # the heads' initial weights: a rerun trains the same student
    heads = heads_module(encoder.dim, [len(f.labels) for f in shape.labels], len(tag_names(shape)))
    heads.to(encoder.device)
    # Frozen features: the heads alone, many cheap passes. End to end: a few passes at the
    # recipe's learning rate for the encoder, the heads 20x faster.
    epochs = math.ceil(cfg.epochs or (3 if finetune else 30))
    lr = cfg.learning_rate or (1e-4 if finetune else 1e-3)
    groups = [{"params": heads.parameters(), "lr": lr * 20 if finetune else lr}]
    if finetune:
        groups.append({"params": encoder.model.parameters(), "lr": lr})
        encoder.model.train()
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    total = epochs * len(train_batches)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=max(1, total), pct_start=0.1
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    steps = 0
    for _ in range(epochs):
        for k in torch.randperm(len(train_batches), generator=gen).tolist():
            item = train_batches[k]
            loss = _loss(heads, _hidden(encoder, item), item)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
            if steps % 10 == 0:
                losses.append(float(loss.detach()))
            progress.report("train", steps, total, losses[-1] if losses else None)
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
    encoder.model.eval()
    heads.eval()
    if finetune:  # the calibration split read by the tuned encoder
        with torch.no_grad():
            for item in cal_batches:
                item["hidden"] = hidden_states(encoder, item["batch"]).float()
    temperatures = (
        _fit_temperatures(heads, shape, cal_batches)
        if cal_batches
        else [1.0] * (len(shape.labels) + 1)
    )
    seconds = time.perf_counter() - t0
    merged = out_dir / "merged"
    encoder_ref = keep_encoder(encoder, base, merged, finetune)
    Structured(shape, encoder, heads, temperatures).save(
        merged, encoder_ref, {"base": str(base), "finetuned": finetune}
    )
    tokens = sum(int(b["batch"]["attention_mask"].sum()) for b in train_batches) * epochs
    result = TrainResult(
        out_dir, merged, False, losses, steps, seconds, tokens, encoder.device.type, os.getpid()
    )
    (out_dir / "training_log.json").write_text(
        json.dumps(
            {
                **result.summary(),
                "kind": "structured",
                "base": str(base),
                "fields": {f.name: f.kind for f in shape.fields},
                "unlearnable": shape.unlearnable,
                "examples_unreadable": len(examples) - len(kept),
                "temperatures": temperatures,
                "fit": len(fit),
                "calibration": len(cal),
                "finetuned": finetune,
                "config": cfg.model_dump(),
            },
            indent=2,
        )
    )
    log.info("structured %s: %d fields, %.1fs", merged, len(shape.fields), seconds)
    return result


def _fit_temperatures(heads: Any, shape: AnswerShape, cal_batches: list[Any]) -> list[float]:
    import torch

    label_logits: list[list[Any]] = [[] for _ in shape.labels]
    label_targets: list[list[Any]] = [[] for _ in shape.labels]
    tag_logits, tag_targets = [], []
    with torch.no_grad():
        for item in cal_batches:
            hidden = item["hidden"]
            lg, tg = heads(hidden, item["batch"]["attention_mask"].to(hidden.device))
            for i, (logits, target) in enumerate(zip(lg, item["labels"], strict=True)):
                label_logits[i].append(logits.cpu())
                label_targets[i].append(target)
            keep = item["tags"].reshape(-1) != IGNORE
            tag_logits.append(tg.reshape(-1, tg.shape[-1]).cpu()[keep])
            tag_targets.append(item["tags"].reshape(-1)[keep])
    temps = [
        fit_temperature(torch.cat(lg), torch.cat(tg))
        for lg, tg in zip(label_logits, label_targets, strict=True)
    ]
    return [*temps, fit_temperature(torch.cat(tag_logits), torch.cat(tag_targets))]
