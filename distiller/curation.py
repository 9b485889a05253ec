"""Curation: which logged requests of a workload may teach a student.

Kept: chat requests of the route that the teacher answered successfully, from apps that
consented, not flagged by a guardrail, not rated down, and not a duplicate (exact after
normalisation, or near: character n-gram cosine ≥ 0.9 between the users' text and that of an
earlier kept prompt). The text
is what ClickHouse holds, i.e. already PII-masked on masking routes.

A reviewer's label (the review queue) wins: a labelled request is kept with the label's
answer whoever served it and however it was rated (consent and guardrails still apply),
labelled rows are considered before unlabelled duplicates of the same prompt, and an
`exclude` label drops the request. Every excluded row is
counted under its first failing reason; the counts are stored with the dataset.

Invariant: `curate` reads the rows in a fixed order (time, then id), so the same rows give
the same examples and counts.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.openai_shapes import answer_text, content_text, prompt_text
from distiller.examples import Example
from store import Store

REASONS = (
    "not_teacher",
    "failed",
    "no_consent",
    "guardrail_flagged",
    "negative_feedback",
    "empty",
    "duplicate",
    "near_duplicate",
    "review_excluded",
)
NEGATIVE_SCORE = 0.5  # feedback scores below this (thumbs down = 0) exclude a request

# (An IN subquery rather than a LEFT JOIN: ClickHouse fills unmatched joins with 0, not NULL,
# unless join_use_nulls is set, and a missing rating must not read as a bad one.)
ROWS_SQL = """
SELECT toString(request_id) AS id, served_by, status, consent, guardrail_flagged,
       messages, response,
       request_id IN (SELECT request_id FROM feedback WHERE score < {negative:Float64})
           AS rated_down
FROM requests
WHERE route = {route:String} AND kind = 'request' AND endpoint = 'chat.completions'
ORDER BY started_at, request_id
"""


@dataclass
class Curated:
    route: str
    examples: list[Example]
    keys: list[str]  # normalised prompt per example (drives the stable split)
    excluded: Counter[str] = field(default_factory=Counter)
    source_rows: int = 0


_WS = re.compile(r"\s+")


def normalise_prompt(messages: list[dict[str, Any]]) -> str:
    """Case- and whitespace-blind text of the whole prompt (system + user turns)."""
    parts = [f"{m.get('role')}: {content_text(m.get('content'))}" for m in messages]
    return _WS.sub(" ", "\n".join(parts)).strip().lower()


def prompt_key(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def _near_duplicates(texts: list[str], threshold: float = 0.9) -> list[bool]:
    """True for each text whose cosine (character 3-4-grams) to an earlier kept text is at
    least `threshold`. Blockwise sparse products: fine to ~10^5 prompts on one machine."""
    if not texts:
        return []
    from contracts.prompt_index import PromptIndex

    matrix = PromptIndex.vectors(texts)
    dropped = [False] * len(texts)
    kept_rows: list[int] = []
    block = 512
    for start in range(0, len(texts), block):
        rows = list(range(start, min(start + block, len(texts))))
        sims_prev = (matrix[rows] @ matrix[kept_rows].T).toarray() if kept_rows else None
        sims_self = (matrix[rows] @ matrix[rows].T).toarray()
        kept_here: list[int] = []
        for i, row in enumerate(rows):
            near = sims_prev is not None and sims_prev[i].max() >= threshold
            near = near or any(sims_self[i, j - start] >= threshold for j in kept_here)
            if near:
                dropped[row] = True
            else:
                kept_here.append(row)
        kept_rows += kept_here
    return dropped


def _exclusion(row: dict[str, Any], label: tuple[str, str, str] | None) -> str | None:
    if label is not None and label[1] == "exclude":
        return "review_excluded"
    if label is None and row["served_by"] != "teacher":
        return "not_teacher"
    if row["status"] != "ok":
        return "failed"
    if not row["consent"]:
        return "no_consent"
    if row["guardrail_flagged"]:
        return "guardrail_flagged"
    if label is None and row["rated_down"]:
        return "negative_feedback"
    return None


def labels_of_route(store: Store, route: str) -> dict[str, tuple[str, str, str]]:
    """request id -> (label_id, choice, answer) of the latest review label of each
    request (`gateway/dashboard/review.py` writes them)."""
    rows = store.query_rows(
        "SELECT toString(request_id), toString(argMax(label_id, at)), argMax(choice, at), "
        "argMax(answer, at) FROM review_labels WHERE route = {r:String} GROUP BY request_id",
        {"r": route},
    )
    return {str(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}


def curate(store: Store, route: str, near_duplicate_threshold: float = 0.9) -> Curated:
    rows = store.query_dicts(ROWS_SQL, {"route": route, "negative": NEGATIVE_SCORE})
    labels = labels_of_route(store, route)
    # Labelled rows first (stable otherwise): a person's answer beats a duplicate's teacher.
    rows.sort(key=lambda r: r["id"] not in labels)
    out = Curated(route=route, examples=[], keys=[], source_rows=len(rows))
    seen: set[str] = set()
    candidates: list[tuple[Example, str]] = []
    for row in rows:
        label = labels.get(row["id"])
        reason = _exclusion(row, label)
        if reason is None:
            messages = orjson.loads(row["messages"] or "null") or []
            if label is not None:
                answer = label[2]
            else:
                answer = answer_text(orjson.loads(row["response"] or "{}") or {})
            if not messages or not answer.strip():
                reason = "empty"
            else:
                key = prompt_key(normalise_prompt(messages))
                if key in seen:
                    reason = "duplicate"
                else:
                    seen.add(key)
                    ex = Example(row["id"], messages, answer)
                    if label is not None:
                        ex.answer_source, ex.label_id = "review", label[0]
                    candidates.append((ex, key))
        if reason is not None:
            out.excluded[reason] += 1
    # Near-duplicates are judged on the users' text: a workload's shared system prompt would
    # make every pair look alike.
    near = _near_duplicates(
        [_WS.sub(" ", prompt_text(ex.prompt)).strip().lower() for ex, _ in candidates],
        near_duplicate_threshold,
    )
    for (ex, key), is_near in zip(candidates, near, strict=True):
        if is_near:
            out.excluded["near_duplicate"] += 1
        else:
            out.examples.append(ex)
            out.keys.append(key)
    return out
