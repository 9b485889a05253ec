"""Evaluation: the candidate answers every eval prompt; agreement with the teacher decides.

Scores use the route's gate metric (`contracts.agreement`); `llm_judge` asks the teacher
through the gateway's upstream client. The gate passes when the lower bound of the 95%
Wilson interval of agreement reaches the threshold on at least `min_examples` examples.
The student's confidence (geometric mean of its token probabilities) is kept per example,
and the coverage-vs-agreement curve says which escalation threshold gives a target
agreement.

A selective gate with `certify_share` splits the eval set by a stable hash of each request:
`calibrate` rows choose the confidence threshold, `certify` rows (never used to fit or to
choose) measure what that threshold keeps. The certified figure, the curve and the rollout's
"below what was certified" rule read the certify rows only, so they say what fresh traffic
gets rather than what the choice was tuned to.

Invariant: every report names the frozen eval set it used; scoring needs no database (it runs
where none is installed, on GPU jobs): `eval_reports.py` writes the report's rows
(`eval_results`, each with the role it played) and summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from contracts.agreement import agreement, judge_messages, parse_judgement, wilson_bounds
from contracts.model_config import ModelConfig
from distiller.examples import Example
from distiller.progress import RunProgress
from students.generation import Request, generate_batch, load_student

AGREE_AT = 0.999  # a similarity metric's score must reach this to count as agreement


Role = Literal["", "calibrate", "certify"]


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Lower bound of the Wilson score interval for a binomial proportion."""
    return wilson_bounds(successes, n, confidence)[0]


def role_of(request_id: str, certify_share: float) -> Role:
    """A stable role per request: the same request certifies in every run."""
    bucket = int(hashlib.sha256(f"certify:{request_id}".encode()).hexdigest()[:8], 16)
    return "certify" if bucket / 0xFFFFFFFF < certify_share else "calibrate"


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


@dataclass(frozen=True)
class Certified:
    """What the chosen threshold keeps of the certify rows, with the agreement's bounds."""

    examples: int
    kept: int
    agree: int
    lower: float
    upper: float

    @property
    def coverage(self) -> float:
        return self.kept / self.examples if self.examples else 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.kept if self.kept else 0.0

    def as_dict(self) -> dict[str, float]:
        """For a run's evidence."""
        return {
            "examples": self.examples,
            "kept": self.kept,
            "agree": self.agree,
            "coverage": round(self.coverage, 4),
            "lower": round(self.lower, 4),
            "upper": round(self.upper, 4),
        }


@dataclass
class EvalReport:
    run_id: str
    eval_set_id: str
    metric: str
    threshold: float
    min_examples: int
    results: list[ExampleResult] = field(default_factory=list)
    min_coverage: float | None = None  # set: the selective gate
    certify_share: float | None = None  # set (selective only): rows held out of the choice

    @property
    def split(self) -> bool:
        return self.min_coverage is not None and self.certify_share is not None

    def role(self, r: ExampleResult) -> Role:
        return role_of(r.request_id, self.certify_share or 0.0) if self.split else ""

    def rows(self, role: Role) -> list[ExampleResult]:
        """The rows that play `role` (every row when the set is not split)."""
        return [r for r in self.results if self.role(r) in (role, "")]

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
        bound of agreement over the kept calibrate answers reaches `threshold`, or None.
        Answers with equal confidence are kept or escalated together, as the router would."""
        ranked = sorted(self.rows("calibrate"), key=lambda r: -r.confidence)
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

    def certified(self, confidence: float = 0.95) -> Certified | None:
        """The certify rows at the chosen threshold (None: no threshold was chosen)."""
        chosen = self.selection(confidence)
        if chosen is None:
            return None
        rows = self.rows("certify")
        kept = [r for r in rows if r.confidence >= chosen.min_confidence]
        agree = sum(r.agree for r in kept)
        lower, upper = wilson_bounds(agree, len(kept), confidence)
        return Certified(len(rows), len(kept), agree, lower, upper)

    def contradicted(self, confidence: float = 0.95) -> str:
        """Why the certify rows contradict the choice (else ''): what it keeps agrees, or
        keeps, significantly less than the target. Short of the bound by chance is not a
        contradiction: that is what half of all fresh samples of a threshold tuned to the
        bound would show; the rollout then proves it on traffic."""
        cert = self.certified(confidence) if self.split else None
        if cert is None or not cert.examples:
            return ""
        if cert.kept and cert.upper < self.threshold:
            return (
                f"certify rows: {cert.agree}/{cert.kept} kept agree (upper bound "
                f"{cert.upper:.3f}) < {self.threshold}"
            )
        cov_upper = wilson_bounds(cert.kept, cert.examples, confidence)[1]
        if self.min_coverage is not None and cov_upper < self.min_coverage:
            return (
                f"certify rows: {cert.kept}/{cert.examples} kept (upper bound {cov_upper:.2f}) "
                f"< min_coverage {self.min_coverage}"
            )
        return ""

    def passed(self, confidence: float = 0.95) -> bool:
        if self.n < self.min_examples:
            return False
        if self.min_coverage is None:
            return self.lower_bound(confidence) >= self.threshold
        chosen = self.selection(confidence)
        return (
            chosen is not None
            and chosen.coverage >= self.min_coverage
            and not self.contradicted(confidence)
        )

    def serving_threshold(self, confidence: float = 0.95) -> float | None:
        """The confidence below which the router escalates, when the gate is selective."""
        if self.min_coverage is None:
            return None
        chosen = self.selection(confidence)
        return chosen.min_confidence if chosen is not None else None

    def coverage_curve(self, points: int = 20) -> list[dict[str, float]]:
        """For confidence thresholds from high to low: the share of traffic the student
        would keep (coverage) and its agreement on that share, on the certify rows."""
        ranked = sorted(self.rows("certify"), key=lambda r: -r.confidence)
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
    certify_share: float | None = None,
) -> EvalReport:
    if metric == "llm_judge" and judge is None:
        raise ValueError("metric llm_judge needs a judge: teacher_judge(<route's teacher>)")
    report = EvalReport(
        run_id, eval_set_id, metric, threshold, min_examples, [], min_coverage, certify_share
    )
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
