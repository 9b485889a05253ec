"""Evaluation: the candidate answers every eval prompt; agreement with the teacher decides.

Scores use the route's gate metric (`contracts.agreement`); `llm_judge` asks the teacher
through the gateway's upstream client. The gate passes when the lower bound of the 95%
Wilson interval of agreement reaches the threshold on at least `min_examples` examples.
The student's confidence (geometric mean of its token probabilities) is kept per example,
and the coverage-vs-agreement curve says which escalation threshold gives a target
agreement.

Invariant: every report names the frozen eval set it used, and its per-example rows are in
`eval_results`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from contracts.agreement import agreement, judge_messages, parse_judgement, wilson_bounds
from contracts.model_config import ModelConfig
from distiller.examples import Example
from distiller.progress import RunProgress
from students.generation import Request, generate_batch, load_student

if TYPE_CHECKING:  # scoring needs no database: it runs where none is installed (GPU jobs)
    from store import Store

AGREE_AT = 0.999  # a similarity metric's score must reach this to count as agreement


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Lower bound of the Wilson score interval for a binomial proportion."""
    return wilson_bounds(successes, n, confidence)[0]


@dataclass
class ExampleResult:
    request_id: str
    score: float
    agree: bool
    confidence: float
    student: str
    teacher: str


@dataclass(frozen=True)
class Selection:
    """The answers a candidate keeps at a confidence threshold, and how good they are."""

    min_confidence: float
    coverage: float
    agreement: float
    wilson_lower: float
    kept: int


@dataclass
class EvalReport:
    run_id: str
    eval_set_id: str
    metric: str
    threshold: float
    min_examples: int
    results: list[ExampleResult] = field(default_factory=list)
    min_coverage: float | None = None  # set: the selective gate

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def agreement(self) -> float:
        return sum(r.agree for r in self.results) / self.n if self.n else 0.0

    def lower_bound(self, confidence: float = 0.95) -> float:
        return wilson_lower(sum(r.agree for r in self.results), self.n, confidence)

    def selection(self, confidence: float = 0.95) -> Selection | None:
        """The lowest confidence threshold (largest coverage) at which the Wilson lower
        bound of agreement over the kept answers reaches `threshold`, or None. Answers with
        equal confidence are kept or escalated together, as the router would."""
        ranked = sorted(self.results, key=lambda r: -r.confidence)
        best: Selection | None = None
        agree = 0
        for k, r in enumerate(ranked, start=1):
            agree += r.agree
            if k < len(ranked) and ranked[k].confidence == r.confidence:
                continue  # a threshold cannot split a tie
            lower = wilson_lower(agree, k, confidence)
            if lower >= self.threshold:
                best = Selection(r.confidence, k / len(ranked), agree / k, lower, k)
        return best

    def passed(self, confidence: float = 0.95) -> bool:
        if self.n < self.min_examples:
            return False
        if self.min_coverage is None:
            return self.lower_bound(confidence) >= self.threshold
        chosen = self.selection(confidence)
        return chosen is not None and chosen.coverage >= self.min_coverage

    def serving_threshold(self, confidence: float = 0.95) -> float | None:
        """The confidence below which the router escalates, when the gate is selective."""
        if self.min_coverage is None:
            return None
        chosen = self.selection(confidence)
        return chosen.min_confidence if chosen is not None else None

    def coverage_curve(self, points: int = 20) -> list[dict[str, float]]:
        """For confidence thresholds from high to low: the share of traffic the student
        would keep (coverage) and its agreement on that share."""
        ranked = sorted(self.results, key=lambda r: -r.confidence)
        out = []
        for k in range(1, points + 1):
            take = max(1, round(len(ranked) * k / points)) if ranked else 0
            kept = ranked[:take]
            if not kept:
                break
            out.append(
                {
                    "min_confidence": kept[-1].confidence,
                    "coverage": take / len(ranked),
                    "agreement": sum(r.agree for r in kept) / take,
                }
            )
        return out

    def threshold_for(self, target_agreement: float) -> dict[str, float] | None:
        """The largest coverage whose agreement reaches the target."""
        ok = [p for p in self.coverage_curve(50) if p["agreement"] >= target_agreement]
        return max(ok, key=lambda p: p["coverage"]) if ok else None


def generate(
    model_path: str | Path,
    prompts: list[list[dict[str, Any]]],
    max_new_tokens: int = 64,
    batch_size: int | None = None,
) -> list[tuple[str, float]]:
    """Greedy answers with their confidence, generated as the student server would
    (batches of 16 on CPU, 128 on a GPU, where a batch costs about what one answer does)."""
    import torch

    batch_size = batch_size or (128 if torch.cuda.is_available() else 16)
    student = load_student("eval", model_path)
    progress = RunProgress(Path(model_path).parent)
    out: list[tuple[str, float]] = []
    for start in range(0, len(prompts), batch_size):
        progress.report("evaluate", start, len(prompts))
        batch = [Request(p, max_new_tokens) for p in prompts[start : start + batch_size]]
        out += [(r["text"].strip(), r["confidence"]) for r in generate_batch(student, batch)]
    return out


Judge = Callable[[list[dict[str, Any]], str, str], float]


def teacher_judge(teacher: ModelConfig) -> Judge:
    """Metric `llm_judge`: the route's teacher says whether two answers agree (the same
    prompt the gateway's audits use), through litellm so any provider works."""
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    def judge(prompt: list[dict[str, Any]], student: str, reference: str) -> float:
        resp = litellm.completion(
            model=teacher.model,
            api_base=teacher.api_base,
            api_key=teacher.api_key() or "none",
            messages=judge_messages(orjson.dumps(prompt).decode(), student, reference),
            temperature=0,
            max_tokens=3,
        )
        return parse_judgement(str(resp.choices[0].message.content or ""))

    return judge


def evaluate(
    model_path: str | Path,
    run_id: str,
    eval_set_id: str,
    examples: list[Example],
    metric: str,
    threshold: float,
    min_examples: int,
    fields: list[str] | None = None,
    judge: Judge | None = None,
    min_coverage: float | None = None,
) -> EvalReport:
    if metric == "llm_judge" and judge is None:
        raise ValueError("metric llm_judge needs a judge: teacher_judge(<route's teacher>)")
    report = EvalReport(run_id, eval_set_id, metric, threshold, min_examples, [], min_coverage)
    answers = generate(model_path, [e.prompt for e in examples])
    return score_answers(report, examples, answers, fields, judge)


def score_answers(
    report: EvalReport,
    examples: list[Example],
    answers: list[tuple[str, float]],
    fields: list[str] | None = None,
    judge: Judge | None = None,
) -> EvalReport:
    """`report` filled with the candidate's (answer, confidence) to each eval example,
    however the answers were made (a local student, or a few-shot prompt to an upstream)."""
    metric = report.metric
    for ex, (answer, confidence) in zip(examples, answers, strict=True):
        if judge is not None and metric == "llm_judge":
            score = judge(ex.prompt, answer, ex.answer)
        else:
            score = agreement(metric, answer, ex.answer, fields)
        report.results.append(
            ExampleResult(ex.request_id, score, score >= AGREE_AT, confidence, answer, ex.answer)
        )
    return report


def store_report(
    store: Store,
    report: EvalReport,
    route: str,
    candidate: str,
    confidence: float = 0.95,
    certified_on: dict[str, str] | None = None,
) -> None:
    """The report's rows and summary; `certified_on`: what it was measured against
    (`distiller.certification.Certification.as_dict()`: teacher, judge, digests)."""
    on = certified_on or {}
    chosen = report.selection(confidence) if report.min_coverage is not None else None
    store.insert_rows(
        "eval_results",
        [
            [
                report.run_id,
                report.eval_set_id,
                r.request_id,
                report.metric,
                r.score,
                r.agree,
                r.confidence,
                r.student,
                r.teacher,
            ]
            for r in report.results
        ],
        [
            "run_id",
            "eval_set_id",
            "request_id",
            "metric",
            "score",
            "agree",
            "confidence",
            "student_answer",
            "teacher_answer",
        ],
    )
    store.insert_rows(
        "eval_reports",
        [
            [
                report.run_id,
                route,
                candidate,
                report.eval_set_id,
                report.metric,
                report.n,
                report.agreement,
                report.lower_bound(confidence),
                report.threshold,
                report.passed(confidence),
                orjson.dumps(report.coverage_curve()).decode(),
                datetime.now(UTC),
                report.serving_threshold(confidence),
                chosen.coverage if chosen is not None else 1.0,
                report.min_coverage,
                on.get("teacher", ""),
                on.get("judge", ""),
                on.get("data_digest", ""),
                on.get("artifact_digest", ""),
            ]
        ],
        [
            "run_id",
            "route",
            "candidate",
            "eval_set_id",
            "metric",
            "examples",
            "agreement",
            "wilson_lower",
            "threshold",
            "passed",
            "coverage_curve",
            "created_at",
            "min_confidence",
            "coverage",
            "min_coverage",
            "teacher",
            "judge",
            "data_digest",
            "artifact_digest",
        ],
    )
