"""The words rows and states are made of, as literals, and the candidate lifecycle's legal
moves in one table.

Invariant: every `candidate_states.state`, `requests.served_by`, `requests.kind` and
`requests.status` value written anywhere is one of these literals; a candidate moves only
along `TRANSITIONS` (the distiller checks each move before writing it).
"""

from __future__ import annotations

from typing import Literal, get_args

CandidateState = Literal[
    "untrained",  # declared in a policy, never trained (what the router assumes by default)
    "trained",  # gate passed but publishing failed: never serves
    "failed",  # gate (or shadow agreement) failed
    "shadow",  # answers sampled copies in the background
    "canary",  # serves a share of users' requests
    "promoted",  # serves every request of its route (the cheapest promoted one does)
    "rolled_back",  # audits fell below the route's minimum agreement
    "retired",  # a cheaper promoted candidate replaced it
]

# States in which a candidate may answer users.
SERVING_STATES: tuple[CandidateState, ...] = ("canary", "promoted")

# Who answered a row: the route's teacher, a candidate student, a backup after the teacher
# failed, or (on `shadow` rows) the shadowed candidate.
ServedBy = Literal["teacher", "student", "fallback", "shadow", "cache"]

# What a row is: a user's request, or one of the flywheel's own calls made for it.
RowKind = Literal[
    "request",  # the user's request
    "shadow",  # a shadow candidate's copy
    "audit",  # the teacher re-asked what a student answered
    "escalated",  # the student's answer that was not confident enough (kept for review)
    "output_rejected",  # the student's answer that failed output checks (kept for review)
]

RowStatus = Literal[
    "ok",
    "rejected",
    "guardrail_blocked",
    "upstream_error",
    "timeout",
    "client_disconnect",
    "internal_error",
]

# A run's outcome enters the rollout from "" (never trained) or any finished state: a new
# run of the same slot starts its lifecycle again.
_ENTRY: tuple[CandidateState, ...] = ("trained", "failed", "shadow", "canary", "promoted")
TRANSITIONS: dict[CandidateState, tuple[CandidateState, ...]] = {
    "untrained": _ENTRY,
    "trained": _ENTRY,
    "failed": _ENTRY,
    "rolled_back": _ENTRY,
    "retired": _ENTRY,
    "shadow": (*_ENTRY, "failed"),
    "canary": (*_ENTRY, "rolled_back"),
    "promoted": (*_ENTRY, "rolled_back", "retired"),
}

ALL_CANDIDATE_STATES: tuple[CandidateState, ...] = get_args(CandidateState)


def may_move(before: CandidateState, after: CandidateState) -> bool:
    return after in TRANSITIONS[before]


def as_state(value: str) -> CandidateState:
    """A state read back from ClickHouse; an unknown word is treated as never trained."""
    return value if value in ALL_CANDIDATE_STATES else "untrained"
