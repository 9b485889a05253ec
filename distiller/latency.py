"""Whether a candidate is fast enough to be promoted: its p99 latency against the policy's
bound (`rollout.max_p99_ratio` times the teacher's, `rollout.max_p99_ms`) over the last
`rollout.latency_window_h`, and its timeouts (a student that falls back on timeouts for more
than 1% of its answers is held).

Invariant: a hold needs evidence on both sides (`MIN_LATENCY_SAMPLES` answers each): too
few answers never hold a promotion, and never release one from a timeout hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.policy import Route
from store import Store

# Serving-speed evidence: enough answers on both sides before latency can hold promotion.
MIN_LATENCY_SAMPLES = 20
MAX_TIMEOUT_SHARE = 0.01

LATENCY_SQL = """
SELECT
    quantileIf(0.99)(latency_us, served_by IN ('student', 'shadow') AND candidate = {c:String})
        AS student_p99,
    countIf(served_by IN ('student', 'shadow') AND candidate = {c:String}) AS student_n,
    quantileIf(0.99)(latency_us, served_by = 'teacher' AND kind = 'request') AS teacher_p99,
    countIf(served_by = 'teacher' AND kind = 'request') AS teacher_n,
    countIf(kind = 'request' AND route_reason = 'fallback: student timeout') AS timeouts
FROM requests
WHERE route = {r:String} AND status = 'ok' AND started_at >= {since:DateTime64(3)}
"""


def latency_hold(store: Store, route: Route, candidate: str) -> tuple[str, dict[str, Any]] | None:
    """Why the candidate may not be promoted for speed, with the evidence, or None."""
    rollout = route.rollout
    since = datetime.now(UTC) - timedelta(hours=rollout.latency_window_h)
    row = store.query_dicts(
        LATENCY_SQL, {"r": route.name, "c": candidate, "since": since.replace(tzinfo=None)}
    )[0]
    student_n, teacher_n, timeouts = (
        int(row["student_n"]),
        int(row["teacher_n"]),
        int(row["timeouts"]),
    )
    student_ms = float(row["student_p99"] or 0) / 1000
    teacher_ms = float(row["teacher_p99"] or 0) / 1000
    evidence = {
        "student_p99_ms": student_ms,
        "teacher_p99_ms": teacher_ms,
        "student_answers": student_n,
        "teacher_answers": teacher_n,
        "student_timeouts": timeouts,
        "window_h": rollout.latency_window_h,
        "max_p99_ratio": rollout.max_p99_ratio,
        "max_p99_ms": rollout.max_p99_ms,
    }
    if timeouts > MAX_TIMEOUT_SHARE * max(student_n, 1):
        return f"{timeouts} student timeouts fell back to the teacher", evidence
    if rollout.max_p99_ms is not None and student_n >= MIN_LATENCY_SAMPLES:
        if student_ms > rollout.max_p99_ms:
            return f"student p99 {student_ms:.0f} ms > max_p99_ms {rollout.max_p99_ms:g}", evidence
    ratio = rollout.max_p99_ratio
    if ratio is not None and student_n >= MIN_LATENCY_SAMPLES and teacher_n >= MIN_LATENCY_SAMPLES:
        if student_ms > teacher_ms * ratio:
            times = "" if ratio == 1 else f" × {ratio:g}"
            return (
                f"student p99 {student_ms:.0f} ms > teacher p99 {teacher_ms:.0f} ms{times}",
                evidence,
            )
    return None
