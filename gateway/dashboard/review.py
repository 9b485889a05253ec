"""The human review queue: where the system is unsure, a person decides.

Three sources:
- `audit`: a sampled teacher audit scored the student's answer below `DISAGREE_BELOW`;
- `low_confidence`: the student's answer fell under its route's confidence bar and the
  request was escalated to the teacher (the gateway kept the student's answer);
- `guardrail`: a jailbreak or prompt-attack rail in `flag` mode fired on the request.

For the first two a reviewer picks the student's answer, the teacher's, writes a correction,
or excludes the request from training; for a guardrail flag, says `attack` or `not_attack`
(the prompt-attack detector retrains on these). The label is stored against the user's
request id.

Invariant: the latest label per request is the one curation uses; its answer text comes
from the stored answers (or the reviewer's correction), never from the browser's copy.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.errors import ApiError
from contracts.openai_shapes import answer_text
from gateway.dashboard.filters import Filters
from store import Store

DISAGREE_BELOW = 0.5

# `{which}` selects: the unlabelled items of a date range (the queue), or one request's.
_AUDITS = """
SELECT toString(a.request_id) AS request_id, 'audit' AS source, route, candidate, at,
       agreement AS score, student_answer, teacher_answer
FROM audits AS a
WHERE agreement < {below:Float64} AND {which}
ORDER BY score, at DESC
LIMIT {limit:UInt32}
"""
# (Columns are qualified where an alias shares their name: ClickHouse would read the alias.)
_QUEUED_AUDITS = (
    "at >= {start:DateTime} AND at < {end:DateTime}"
    " AND a.request_id NOT IN (SELECT request_id FROM review_labels)"
)
_ONE_AUDIT = "a.request_id = toUUID({rid:String})"

_ESCALATED = """
SELECT parent_id AS request_id, 'low_confidence' AS source, route, candidate,
       started_at AS at, confidence AS score, response AS student_response
FROM requests
WHERE kind = 'escalated' AND status = 'ok' AND {which}
ORDER BY score, at DESC
LIMIT {limit:UInt32}
"""
_QUEUED_ESCALATED = (
    "started_at >= {start:DateTime} AND started_at < {end:DateTime}"
    " AND toUUIDOrZero(parent_id) NOT IN (SELECT request_id FROM review_labels)"
)
_ONE_ESCALATED = "parent_id = {rid:String}"

_FLAGGED = """
SELECT toString(request_id) AS request_id, 'guardrail' AS source, route, '' AS candidate,
       started_at AS at, arrayMax(arrayMap(v -> JSONExtractFloat(v, 'score'), flags)) AS score,
       arrayStringConcat(arrayMap(
           v -> concat(JSONExtractString(v, 'rail'), ': ', JSONExtractString(v, 'detail')), flags
       ), '; ') AS detail
FROM (
    SELECT request_id, route, started_at,
           arrayFilter(v -> JSONExtractBool(v, 'hit') AND JSONExtractString(v, 'action') = 'flag'
                            AND JSONExtractString(v, 'rail') IN ('prompt_attack', 'jailbreak'),
                       JSONExtractArrayRaw(guardrails)) AS flags
    FROM requests
    WHERE kind = 'request' AND guardrail_flagged AND {which}
)
WHERE notEmpty(flags)
ORDER BY score DESC, at DESC
LIMIT {limit:UInt32}
"""
_QUEUED_FLAGGED = (
    "started_at >= {start:DateTime} AND started_at < {end:DateTime}"
    " AND request_id NOT IN (SELECT request_id FROM review_labels)"
)
_ONE_FLAGGED = "request_id = toUUID({rid:String})"

GUARDRAIL_CHOICES = ("attack", "not_attack", "exclude")

_REQUESTS = """
SELECT toString(r.request_id) AS request_id, app, team, messages, response, served_model
FROM requests AS r
WHERE kind = 'request' AND r.request_id IN {ids:Array(UUID)}
"""


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    choice: Literal["student", "teacher", "correction", "exclude", "attack", "not_attack"]
    answer: str = Field(default="", description="the correct answer, for `correction`")
    note: str = ""

    @model_validator(mode="after")
    def _correction_has_text(self) -> LabelRequest:
        if self.choice == "correction" and not self.answer.strip():
            raise ValueError("a correction needs its `answer` text")
        try:
            uuid.UUID(self.request_id)
        except ValueError:
            raise ValueError("`request_id` must be a request id (a UUID)") from None
        return self


def _attach_requests(store: Store, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [i["request_id"] for i in items if i["request_id"]]
    if not ids:
        return []
    by_id = {r["request_id"]: r for r in store.query_dicts(_REQUESTS, {"ids": ids})}
    out = []
    for item in items:
        req = by_id.get(item["request_id"])
        if req is None:  # the request was erased since
            continue
        if item["source"] == "guardrail":
            item["student_answer"] = ""
            item["teacher_answer"] = answer_text(orjson.loads(req["response"] or "{}") or {})
        elif item["source"] == "low_confidence":
            student = orjson.loads(item.pop("student_response") or "{}") or {}
            item["student_answer"] = answer_text(student)
            item["teacher_answer"] = answer_text(orjson.loads(req["response"] or "{}") or {})
        item.update(
            app=req["app"],
            team=req["team"],
            messages=orjson.loads(req["messages"] or "[]"),
            at=item["at"].replace(tzinfo=UTC).isoformat(),
            score=round(float(item["score"]), 4),
        )
        out.append(item)
    return out


def _items(
    store: Store, which: tuple[str, str, str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    """`which`: the filters for audits, escalations and guardrail flags."""
    params = {"below": DISAGREE_BELOW, **params}
    items = store.query_dicts(_AUDITS.replace("{which}", which[0]), params)
    items += store.query_dicts(_ESCALATED.replace("{which}", which[1]), params)
    items += store.query_dicts(_FLAGGED.replace("{which}", which[2]), params)
    return _attach_requests(store, items)


def review_queue(store: Store, f: Filters, limit: int = 50) -> list[dict[str, Any]]:
    """Unlabelled audit disagreements (least agreement first), then the least confident
    escalated student answers."""
    which = (_QUEUED_AUDITS, _QUEUED_ESCALATED, _QUEUED_FLAGGED)
    items = _items(store, which, {**f.params(), "limit": limit})
    return [
        item
        for item in items
        if (not f.apps or item["app"] in f.apps) and (not f.teams or item["team"] in f.teams)
    ]


def queue_item(store: Store, request_id: str) -> dict[str, Any] | None:
    """The request's review item, labelled or not; None when it never needed review."""
    items = _items(
        store, (_ONE_AUDIT, _ONE_ESCALATED, _ONE_FLAGGED), {"rid": request_id, "limit": 1}
    )
    return items[0] if items else None


def save_label(store: Store, label: LabelRequest, reviewer: str) -> dict[str, Any]:
    """Store the reviewer's verdict; 404 when the request is not in the review queue."""
    item = queue_item(store, label.request_id)
    if item is None:
        raise ApiError(
            404,
            f"Request {label.request_id} is not in the review queue (no audit disagreement, "
            "escalated student answer or guardrail flag recorded for it).",
            code="not_found",
            param="request_id",
        )
    if (item["source"] == "guardrail") != (label.choice in GUARDRAIL_CHOICES[:2]) and (
        label.choice != "exclude"
    ):
        allowed = (
            GUARDRAIL_CHOICES
            if item["source"] == "guardrail"
            else ("student", "teacher", "correction", "exclude")
        )
        raise ApiError(
            400,
            f"A {item['source']} item takes one of: {', '.join(allowed)}.",
            code="invalid_choice",
            param="choice",
        )
    answer = {
        "student": item["student_answer"],
        "teacher": item["teacher_answer"],
        "correction": label.answer,
        "exclude": "",
        "attack": "",
        "not_attack": "",
    }[label.choice]
    row = {
        "label_id": str(uuid.uuid4()),
        "request_id": label.request_id,
        "at": datetime.now(UTC),
        "route": item["route"],
        "reviewer": reviewer,
        "source": item["source"],
        "choice": label.choice,
        "answer": answer,
        "note": label.note,
    }
    store.insert_rows("review_labels", [list(row.values())], list(row))
    return {**row, "at": row["at"].isoformat()}


def recent_labels(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    rows = store.query_dicts(
        "SELECT toString(label_id) AS label_id, toString(request_id) AS request_id, at, route,"
        " reviewer, source, choice, answer, note FROM review_labels ORDER BY at DESC"
        " LIMIT {n:UInt32}",
        {"n": limit},
    )
    for r in rows:
        r["at"] = r["at"].replace(tzinfo=UTC).isoformat()
    return rows
