"""Answers from a student model: one batched, greedy-by-default generate call.

Shared by evaluation and the student server, so a student is scored exactly the way it
serves. Each answer carries its tokens' log-probabilities and a confidence (their geometric
mean).

Invariant: greedy batched answers equal one-by-one answers (left padding, attention mask).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class Prompt(Protocol):
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    stop: list[str]


@dataclass
class Request:
    """A prompt to answer outside the server (evaluation)."""

    messages: list[dict[str, Any]]
    max_tokens: int = 64
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    name: str
    path: str
    model: Any
    tokenizer: Any
    version: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def load_student(name: str, path: str | Path, adapter: str | None = None) -> Loaded:
    from distiller.base_model import load

    model, tokenizer = load(path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    tokenizer.padding_side = "left"
    return Loaded(name, str(path), model, tokenizer)


def generate_batch(student: Loaded, jobs: Sequence[Prompt]) -> list[dict[str, Any]]:
    """One generate call for the batch; each answer with its tokens' logprobs."""
    import torch

    tok, model = student.tokenizer, student.model
    texts = [
        tok.apply_chat_template(j.messages, add_generation_prompt=True, tokenize=False)
        for j in jobs
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    sample = any(j.temperature > 0 for j in jobs)
    with torch.no_grad():
        gen = model.generate(
            **enc,
            max_new_tokens=max(j.max_tokens for j in jobs),
            do_sample=sample,
            temperature=max(j.temperature for j in jobs) if sample else None,
            top_p=None,
            top_k=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = gen.sequences[:, enc["input_ids"].shape[1] :]
    logprobs = torch.stack(gen.scores, dim=1).log_softmax(-1)
    token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
    out = []
    for i, job in enumerate(jobs):
        ids = new[i].tolist()[: job.max_tokens]
        finish = "length"
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id)]
            finish = "stop"
        text = tok.decode(ids, skip_special_tokens=True)
        for s in job.stop:
            if s and s in text:
                text, finish = text[: text.index(s)], "stop"
        lps = [float(x) for x in token_lp[i, : max(1, len(ids))]]
        out.append(
            {
                "text": text,
                "finish_reason": finish,
                "tokens": [tok.decode([t]) for t in ids],
                "logprobs": lps[: len(ids)],
                "confidence": math.exp(sum(lps) / len(lps)) if lps else 0.0,
                "prompt_tokens": int(enc["attention_mask"][i].sum()),
                "completion_tokens": len(ids),
            }
        )
    return out
