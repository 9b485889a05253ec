"""The human review queue: items with both answers, labels, and a label winning over the
teacher's answer in the next dataset (lineage records it)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from distiller.curation import curate
from distiller.datasets import build_dataset
from tests.support.dashboard_data import api_get, ask, queue_item
from tests.support.gateway import FINANCE_KEY, REVIEWER_KEY, RunningGateway


def _label(gateway: RunningGateway, **body: Any) -> httpx.Response:
    return httpx.post(
        gateway.base_url.removesuffix("/v1") + "/admin/api/review/labels",
        json=body,
        headers={"authorization": f"Bearer {REVIEWER_KEY}"},
    )


def _examples(gateway: RunningGateway, route: str) -> dict[str, Any]:
    return {e.request_id: e for e in curate(gateway.state.store, route).examples}


def test_review_label_wins_over_the_teacher_in_the_next_dataset(gateway: RunningGateway) -> None:
    # An unsure student: escalated to the teacher, the student's answer kept for review.
    unsure = ask(gateway, "careful", "which card fee applies [[conf:0.2]]")
    # An audited student answer that the teacher disagrees with.
    disputed = ask(gateway, "promoted", "refund for order 7 [[differ]]")
    item = queue_item(gateway, unsure)
    other_app = api_get(gateway, "/admin/api/review", key=REVIEWER_KEY, app="intranet").json()
    assert unsure not in {q["request_id"] for q in other_app["queue"]}, "the app filter"
    assert item["source"] == "low_confidence" and item["score"] == 0.2
    assert item["student_answer"] == "echo: which card fee applies"
    assert item["teacher_answer"] == "echo: which card fee applies"
    audit_item = queue_item(gateway, disputed)
    assert audit_item["source"] == "audit" and audit_item["score"] < 0.5
    assert audit_item["student_answer"] == "student guess: refund for order 7"
    assert audit_item["messages"][0]["content"].startswith("refund for order 7")

    before = _examples(gateway, "careful")
    assert before[unsure].answer == "echo: which card fee applies"
    assert disputed not in _examples(gateway, "promoted"), "a student's answer never teaches"

    fixed = "The foreign card fee is 2.5%."
    assert _label(gateway, request_id=unsure, choice="correction", answer=fixed).status_code == 201
    assert _label(gateway, request_id=disputed, choice="student").status_code == 201

    after = _examples(gateway, "careful")
    assert after[unsure].answer == fixed and after[unsure].answer_source == "review"
    promoted = _examples(gateway, "promoted")
    assert promoted[disputed].answer == "student guess: refund for order 7"

    dataset = build_dataset(gateway.state.store, curate(gateway.state.store, "careful"))
    rows = gateway.rows(
        "SELECT answer_source, label_id FROM dataset_items"
        " WHERE dataset_id = {d:String} AND request_id = {r:UUID}",
        d=dataset.dataset_id,
        r=unsure,
    )
    assert rows and rows[0]["answer_source"] == "review" and rows[0]["label_id"]
    held = [e for e in dataset.train + dataset.eval if e.request_id == unsure]
    assert not held or held[0].answer == fixed

    queue = api_get(gateway, "/admin/api/review", key=REVIEWER_KEY).json()
    assert unsure not in {q["request_id"] for q in queue["queue"]}, "labelled items leave"
    assert any(
        lb["request_id"] == unsure and lb["choice"] == "correction" for lb in queue["labels"]
    )

    # Lineage: a model trained on that dataset traces back to the request and its label.
    gateway.state.store.insert_rows(
        "training_runs",
        [["run-review-test", "careful", "ok", dataset.dataset_id, "local:tiny", datetime.now(UTC)]],
        ["run_id", "route", "candidate", "dataset_id", "base", "created_at"],
    )
    lineage = api_get(gateway, "/admin/api/lineage", route="careful", candidate="ok").json()
    assert lineage["runs"][0]["dataset_id"] == dataset.dataset_id
    traced = [i for i in lineage["items"] if i["request_id"] == unsure]
    assert traced and traced[0]["answer_source"] == "review" and traced[0]["app"] == "shop"
    assert traced[0]["prompt"] == "which card fee applies [[conf:0.2]]"
    # (Other tests label requests of this route too: find the make-up row of this one's split.)
    assert any(
        m["split"] == traced[0]["split"] and m["answer_source"] == "review" and m["examples"] >= 1
        for m in lineage["makeup"]
    )

    # Excluding takes the request out of training altogether.
    assert _label(gateway, request_id=unsure, choice="exclude").status_code == 201
    assert unsure not in _examples(gateway, "careful")


def test_label_errors(gateway: RunningGateway) -> None:
    r = _label(gateway, request_id=str(uuid.uuid4()), choice="teacher")
    assert r.status_code == 404 and r.json()["error"]["param"] == "request_id"
    r = _label(gateway, request_id=str(uuid.uuid4()), choice="correction")
    assert r.status_code == 400 and "correction" in r.json()["error"]["message"]
    r = _label(gateway, request_id="x", choice="maybe")
    assert r.status_code == 400
    r = httpx.post(
        gateway.base_url.removesuffix("/v1") + "/admin/api/review/labels",
        json={"request_id": str(uuid.uuid4()), "choice": "teacher"},
        headers={"authorization": f"Bearer {FINANCE_KEY}"},
    )
    assert r.status_code == 403
    # Seen: a cross-origin `text/plain` post was accepted (CSRF relied on SameSite alone).
    url = gateway.base_url.removesuffix("/v1") + "/admin/api/review/labels"
    body = json.dumps({"request_id": str(uuid.uuid4()), "choice": "teacher"})
    auth = {"authorization": f"Bearer {REVIEWER_KEY}"}
    r = httpx.post(url, content=body, headers={**auth, "content-type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(
        url,
        content=body,
        headers={**auth, "content-type": "application/json", "origin": "https://evil.example"},
    )
    assert r.status_code == 403 and "Cross-origin" in r.json()["error"]["message"]
    page = httpx.get(gateway.base_url.removesuffix("/v1") + "/dashboard")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
