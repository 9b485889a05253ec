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
    model: Any  # a causal LM, a `students.classifier.Classifier` or a `Structured`
    tokenizer: Any  # None for a classifier or a structured student
    version: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def is_classifier(self) -> bool:
        from students.classifier import Classifier

        return isinstance(self.model, Classifier)

    @property
    def is_structured(self) -> bool:
        from students.structured import Structured

        return isinstance(self.model, Structured)


def load_student(name: str, path: str | Path, adapter: str | None = None) -> Loaded:
    """A generating student (merged, or a base plus a LoRA adapter), a classifier or a
    structured student."""
    from students.classifier import Classifier, is_classifier
    from students.loading import load, use_threads_by_load
    from students.model_fetch import local_copy
    from students.structured import Structured, is_structured

    use_threads_by_load()
    source, path = str(path), local_copy(path)
    if is_classifier(path):
        return Loaded(name, source, Classifier.load(path), None)
    if is_structured(path):
        return Loaded(name, source, Structured.load(path), None)
    model, tokenizer = load(path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    import torch

    if torch.cuda.is_available():
        # Serve in bf16 on a GPU: half the memory traffic of fp32 for the same answers.
        model = model.to("cuda", dtype=torch.bfloat16)
    model.eval()
    tokenizer.padding_side = "left"
    return Loaded(name, source, model, tokenizer)


def end_of_turn_ids(student: Loaded) -> set[int]:
    """Tokens that end an answer: the tokenizer's EOS, the model's, and the chat template's
    end-of-turn marker (`<|im_end|>` for ChatML models such as SmolLM2 and Qwen, `<|end|>`
    for tiny local bases). Stopping at EOS alone runs a ChatML model into its next turn."""
    tok, model = student.tokenizer, student.model
    ids = {tok.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    for marker in ("<|im_end|>", "<|end|>", "<|eot_id|>", "<end_of_turn>"):
        token = tok.convert_tokens_to_ids(marker)
        if isinstance(token, int) and token != tok.unk_token_id:
            ids.add(token)
    return {i for i in ids if isinstance(i, int)}


def generate_batch(student: Loaded, jobs: Sequence[Prompt]) -> list[dict[str, Any]]:
    """One generate call for the batch; each answer with its tokens' logprobs."""
    import torch

    if student.is_classifier:
        return _classify(student, jobs)
    if student.is_structured:
        return _structure(student, jobs)
    tok, model = student.tokenizer, student.model
    texts = [
        tok.apply_chat_template(j.messages, add_generation_prompt=True, tokenize=False)
        for j in jobs
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stops = end_of_turn_ids(student)
    sample = any(j.temperature > 0 for j in jobs)
    with torch.no_grad():
        gen = model.generate(
            **enc,
            max_new_tokens=max(j.max_tokens for j in jobs),
            do_sample=sample,
            temperature=max(j.temperature for j in jobs) if sample else None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(stops),
            pad_token_id=tok.pad_token_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = gen.sequences[:, enc["input_ids"].shape[1] :]
    logprobs = torch.stack(gen.scores, dim=1).float().log_softmax(-1)
    token_lp = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
    out = []
    for i, job in enumerate(jobs):
        ids = new[i].tolist()[: job.max_tokens]
        finish = "length"
        ends = [k for k, t in enumerate(ids) if t in stops]
        if ends:
            ids = ids[: ends[0]]
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


def _classify(student: Loaded, jobs: Sequence[Prompt]) -> list[dict[str, Any]]:
    """A classifier's answers in the generation shape: the label is the whole answer, one
    "token" whose probability is the calibrated class probability. Usage counts the whole
    prompt and the label at ~4 characters a token, as a generator would have been billed:
    the row's teacher baseline is priced from these counts."""
    from students.classifier import input_text

    out = []
    for job, (label, prob, distance) in zip(
        jobs, student.model.predict_scoped([input_text(j.messages) for j in jobs]), strict=True
    ):
        out.append(
            {
                "text": label,
                "finish_reason": "stop",
                "tokens": [label],
                "logprobs": [math.log(max(prob, 1e-12))],
                "confidence": prob,
                # Beyond the scope gate, or a catch-all label: confidence 0, and the answer
                # says why.
                "out_of_scope": student.model.outside(label, distance),
                "prompt_tokens": _approx_prompt_tokens(job),
                "completion_tokens": _approx_tokens(label),
            }
        )
    return out


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _approx_prompt_tokens(job: Prompt) -> int:
    """The whole prompt at ~4 characters a token, as a generator would have been billed."""
    from contracts.openai_shapes import content_text

    return sum(_approx_tokens(content_text(m.get("content"))) + 4 for m in job.messages)


def _structure(student: Loaded, jobs: Sequence[Prompt]) -> list[dict[str, Any]]:
    """A structured student's answers in the generation shape: the JSON it writes is the
    whole answer, one "token" whose probability is the answer's confidence (the product of
    its decisions'). Usage is approximated as for a classifier."""
    from students.classifier import input_text

    out = []
    answers = student.model.predict([input_text(j.messages) for j in jobs])
    for job, (text, conf) in zip(jobs, answers, strict=True):
        out.append(
            {
                "text": text,
                "finish_reason": "stop",
                "tokens": [text],
                "logprobs": [math.log(max(conf, 1e-12))],
                "confidence": conf,
                "prompt_tokens": _approx_prompt_tokens(job),
                "completion_tokens": _approx_tokens(text),
            }
        )
    return out
