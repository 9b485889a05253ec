"""A few-shot candidate's "training": index the dataset's train split, then evaluate the
candidate's model prompted with each eval example's nearest examples.

Nothing is trained: the run's artifact is the index folder (`students/few_shot.py`), and
the gate, rollout, audits and rollback that follow are a fine-tuned candidate's. The model is
asked through litellm (any provider), with `logprobs` so the selective gate and the router's
escalation read the same confidence a student's answers carry.

Invariant: runs with no store access, like every job; the report scores the prompts the
gateway will send (built by the index it saved), and its cost is the model's own usage.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from contracts.bases import Retriever
from contracts.model_config import ModelConfig
from contracts.openai_shapes import answer_text, confidence_of
from contracts.policy import Gate
from distiller.evaluation import EvalReport, Judge, score_answers
from distiller.examples import Example
from distiller.progress import RunProgress
from distiller.training import TrainResult
from students.few_shot import FewShotIndex

log = logging.getLogger("flywheel.few_shot")

INDEX = "index"
CONCURRENCY = 8  # eval calls in flight to the candidate's model


class CandidateUnreachable(RuntimeError):
    """Most eval calls to the candidate's model failed: the run fails and is retried."""


def ask(model: ModelConfig, max_tokens: int = 128, logprobs: bool = True) -> Any:
    """One chat call to `model` (greedy, with logprobs unless told not to: a teacher re-asked
    for its answer needs none, and not every provider gives them): (answer, confidence,
    tokens)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    def one(messages: list[dict[str, Any]]) -> tuple[str, float, int]:
        resp = litellm.completion(
            # OpenAI-compatible upstreams (our student server, vLLM) speak OpenAI's API.
            model=f"openai/{model.upstream_name}" if model.openai_compatible else model.model,
            api_base=model.api_base,
            api_key=model.api_key() or "none",
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            **({"logprobs": True} if logprobs else {}),
            timeout=model.timeout_s,
        )
        body = resp.model_dump()
        usage = body.get("usage") or {}
        confidence = confidence_of(body)
        return (
            answer_text(body).strip(),
            0.0 if confidence is None else confidence,
            int(usage.get("total_tokens") or 0),
        )

    return one


def build_and_evaluate(
    retriever: Retriever,
    k: int,
    encoder_path: str,
    model: ModelConfig,
    train_set: list[Example],
    eval_set: list[Example],
    dirs: Path,
    run_id: str,
    eval_set_id: str,
    dataset_id: str,
    gate: Gate,
    judge: Judge | None = None,
    max_tokens: int = 128,
) -> tuple[TrainResult, EvalReport]:
    t0 = time.perf_counter()
    index = FewShotIndex.build(
        [(ex.request_id, ex.prompt, ex.answer) for ex in train_set],
        retriever,
        k,
        dataset_id,
        encoder_path,
    )
    folder = index.save(dirs / INDEX)
    progress = RunProgress(dirs)
    call = ask(model, max_tokens)
    failures: list[str] = []

    def one(i_ex: tuple[int, Example]) -> tuple[str, float, int]:
        i, ex = i_ex
        if i % 50 == 0:
            progress.report("evaluate", i, len(eval_set))
        try:
            return call(index.prompt(ex.prompt))  # type: ignore[no-any-return]
        except Exception as e:  # one failed call is one disagreement, not a failed run
            failures.append(f"{type(e).__name__}: {e}")
            return "", 0.0, 0

    with ThreadPoolExecutor(CONCURRENCY, "few-shot-eval") as pool:
        answers = list(pool.map(one, enumerate(eval_set)))
    if eval_set and len(failures) > len(eval_set) // 2:
        raise CandidateUnreachable(
            f"{len(failures)} of {len(eval_set)} calls to {model.model} failed: {failures[0]}"
        )
    report = EvalReport(
        run_id,
        eval_set_id,
        gate.metric,
        gate.threshold,
        gate.min_examples,
        [],
        gate.min_coverage,
        gate.certify_share,
    )
    score_answers(report, eval_set, [(a, c) for a, c, _ in answers], gate.fields, judge)
    seconds = time.perf_counter() - t0
    log.info(
        "few-shot %s: %d examples indexed (%s), %d eval calls in %.1f s",
        run_id,
        len(index.shots),
        retriever,
        len(eval_set),
        seconds,
    )
    result = TrainResult(
        out_dir=dirs,
        merged=folder,
        lora=False,
        seconds=seconds,
        tokens=sum(t for _, _, t in answers),
        device="upstream",
    )
    return result, report
