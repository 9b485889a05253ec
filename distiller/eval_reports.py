"""An evaluation's record in ClickHouse: every example's row (`eval_results`, with the role
it played: calibrate or certify) and the report's summary (`eval_reports`: agreement, the
chosen threshold, the certify rows' figure, the coverage curve, and what it was certified
on).

Invariant: a report's rows are written before its summary, so a summary always has its rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from distiller.evaluation import EvalReport

if TYPE_CHECKING:
    from store import Store


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
    cert = report.certified(confidence) if report.min_coverage is not None else None
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
                report.role(r),
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
            "role",
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
                cert.examples if cert else 0,
                cert.kept if cert else 0,
                cert.agreement if cert else 0.0,
                cert.lower if cert else 0.0,
                cert.upper if cert else 0.0,
                cert.coverage if cert else 0.0,
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
            "certified_examples",
            "certified_kept",
            "certified_agreement",
            "certified_lower",
            "certified_upper",
            "certified_coverage",
        ],
    )
