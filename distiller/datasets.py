"""Dataset versions, the stable train/eval split, frozen eval sets, and lineage.

- A prompt's split comes from a hash of its normalised text, so an example never moves
  between train and eval as data grows, and a duplicate prompt can never sit on both sides.
- A dataset version is a set of request ids with their split (`dataset_items`), plus a row in
  `datasets` with the exclusion counts: any model traces back to the exact requests it
  learned from.
- Eval sets are versioned and frozen: a new version is written only when the eval split has
  grown by `grow_fraction` over the last one; otherwise the last version is reused.
- Deleting requests records a `lineage` event against every candidate trained on them.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from distiller.curation import Curated
from distiller.events import record_event
from distiller.examples import Example
from store import Store


def split_of(prompt_key: str, eval_fraction: float) -> str:
    bucket = int(hashlib.sha256(f"split:{prompt_key}".encode()).hexdigest()[:8], 16) / 2**32
    return "eval" if bucket < eval_fraction else "train"


@dataclass
class DatasetVersion:
    dataset_id: str
    route: str
    train: list[Example]
    eval: list[Example]
    eval_set_id: str
    eval_set_version: int


def _now() -> datetime:
    return datetime.now(UTC)


def _eval_set(
    store: Store, route: str, eval_ids: list[str], grow_fraction: float
) -> tuple[str, int]:
    """The eval set to report against: the latest frozen version, or a new one when the eval
    split has grown enough. Returns (eval_set_id, version)."""
    last = store.query_rows(
        "SELECT eval_set_id, version, size FROM eval_sets WHERE route = {r:String} "
        "ORDER BY version DESC LIMIT 1",
        {"r": route},
    )
    if last and len(eval_ids) < int(last[0][2]) * (1 + grow_fraction):
        return str(last[0][0]), int(last[0][1])
    version = int(last[0][1]) + 1 if last else 1
    eval_set_id = f"{route}-eval-v{version}"
    store.insert_rows(
        "eval_set_items", [[eval_set_id, rid] for rid in eval_ids], ["eval_set_id", "request_id"]
    )
    store.insert_rows(
        "eval_sets",
        [[eval_set_id, route, version, _now(), len(eval_ids)]],
        ["eval_set_id", "route", "version", "created_at", "size"],
    )
    return eval_set_id, version


def eval_set_ids(store: Store, eval_set_id: str) -> set[str]:
    rows = store.query_rows(
        "SELECT toString(request_id) FROM eval_set_items WHERE eval_set_id = {e:String}",
        {"e": eval_set_id},
    )
    return {str(r[0]) for r in rows}


def build_dataset(
    store: Store, curated: Curated, eval_fraction: float = 0.2, grow_fraction: float = 0.25
) -> DatasetVersion:
    train: list[Example] = []
    evals: list[Example] = []
    for ex, key in zip(curated.examples, curated.keys, strict=True):
        (evals if split_of(key, eval_fraction) == "eval" else train).append(ex)
    eval_set_id, version = _eval_set(
        store, curated.route, [e.request_id for e in evals], grow_fraction
    )
    frozen = eval_set_ids(store, eval_set_id)
    # Report on the frozen set; eval examples newer than it are still never trained on.
    frozen_evals = [e for e in evals if e.request_id in frozen]
    dataset_id = f"{curated.route}-ds-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"
    items = [[dataset_id, e.request_id, "train", e.answer_source, e.label_id] for e in train]
    items += [[dataset_id, e.request_id, "eval", e.answer_source, e.label_id] for e in evals]
    store.insert_rows(
        "dataset_items",
        items,
        ["dataset_id", "request_id", "split", "answer_source", "label_id"],
    )
    store.insert_rows(
        "datasets",
        [
            [
                dataset_id,
                curated.route,
                _now(),
                len(train),
                len(evals),
                eval_set_id,
                orjson.dumps(dict(curated.excluded)).decode(),
                curated.source_rows,
            ]
        ],
        [
            "dataset_id",
            "route",
            "created_at",
            "train_size",
            "eval_size",
            "eval_set_id",
            "excluded",
            "source_rows",
        ],
    )
    return DatasetVersion(dataset_id, curated.route, train, frozen_evals, eval_set_id, version)


def reload_dataset(store: Store, curated: Curated, dataset_id: str) -> DatasetVersion:
    """A dataset version built before, from today's curated examples of its requests (a
    run that died is trained again on the same requests and evaluated on the same frozen
    eval set; requests erased since are left out, reviewers' newer labels win)."""
    rows = store.query_rows(
        "SELECT toString(request_id), split FROM dataset_items WHERE dataset_id = {d:String}",
        {"d": dataset_id},
    )
    split = {str(r[0]): str(r[1]) for r in rows}
    meta = store.query_rows(
        "SELECT eval_set_id FROM datasets WHERE dataset_id = {d:String} LIMIT 1",
        {"d": dataset_id},
    )
    eval_set_id = str(meta[0][0]) if meta else ""
    version = store.query_rows(
        "SELECT version FROM eval_sets WHERE eval_set_id = {e:String} LIMIT 1",
        {"e": eval_set_id},
    )
    frozen = eval_set_ids(store, eval_set_id)
    train = [e for e in curated.examples if split.get(e.request_id) == "train"]
    evals = [e for e in curated.examples if e.request_id in frozen]
    return DatasetVersion(
        dataset_id, curated.route, train, evals, eval_set_id, int(version[0][0]) if version else 0
    )


# --- lineage -----------------------------------------------------------------------------


def requests_of_candidate(store: Store, route: str, candidate: str) -> list[str]:
    """The request ids the candidate's latest training run learned from."""
    rows = store.query_rows(
        "SELECT toString(request_id) FROM dataset_items WHERE split = 'train' AND dataset_id = ("
        " SELECT argMax(dataset_id, updated_at) FROM training_runs"
        " WHERE route = {r:String} AND candidate = {c:String} AND status = 'succeeded')",
        {"r": route, "c": candidate},
    )
    return [str(r[0]) for r in rows]


def candidates_trained_on(store: Store, request_ids: list[str]) -> list[tuple[str, str, str]]:
    """(route, candidate, run_id) of every training run whose data holds any of the ids."""
    rows = store.query_rows(
        "SELECT DISTINCT route, candidate, run_id FROM training_runs WHERE dataset_id IN ("
        " SELECT dataset_id FROM dataset_items"
        " WHERE split = 'train' AND request_id IN {ids:Array(UUID)})",
        {"ids": request_ids},
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def delete_requests(store: Store, request_ids: list[str], reason: str) -> list[tuple[str, str]]:
    """Delete requests (a user's erasure), and flag every candidate trained on them with a
    `lineage` event. Returns the flagged (route, candidate) pairs."""
    affected = candidates_trained_on(store, request_ids)
    store.command(
        "ALTER TABLE requests DELETE WHERE request_id IN {ids:Array(UUID)}",
        {"ids": request_ids},
    )
    flagged = sorted({(route, cand) for route, cand, _ in affected})
    for route, cand in flagged:
        runs = [r for rt, c, r in affected if (rt, c) == (route, cand)]
        record_event(
            store,
            route,
            cand,
            "lineage",
            f"trained on {len(request_ids)} deleted request(s): {reason}; retrain required",
            {"request_ids": request_ids, "runs": runs},
        )
    return flagged
