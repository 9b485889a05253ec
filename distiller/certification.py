"""What a gate certified a run on: the teacher whose answers it was measured against, the
judge that scored them, the eval set and a digest of its rows, and a digest of the artifact
that was measured. Kept with the run's eval report, so a certified figure can be traced to
exactly what produced it and a later change of teacher or judge is seen.

Invariant: the digests are of content, not of paths: the same eval rows or the same
artifact files give the same digest wherever they lie, and any changed byte changes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from contracts.policy import PolicySet, Route
from distiller.examples import Example
from distiller.promotion import State, current, note_once
from store import Store


@dataclass(frozen=True)
class Certification:
    teacher: str  # the teacher's model, as the gateway calls it
    judge: str  # who scored agreement: the metric, or `llm_judge:<model>`
    eval_set_id: str
    data_digest: str
    artifact_digest: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_of(route: Route, teacher_model: str) -> str:
    gate = route.gate
    if gate.metric == "llm_judge":
        return f"llm_judge:{teacher_model}"
    return gate.metric + (f"({','.join(gate.fields)})" if gate.fields else "")


def data_digest(examples: list[Example]) -> str:
    """The eval rows: each request id with the reference answer it was scored against."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.request_id):
        h.update(ex.request_id.encode())
        h.update(b"\0")
        h.update(ex.answer.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def artifact_digest(path: str | Path) -> str:
    """Every file under the artifact (its relative path and bytes); '' when it is not a
    local folder (a remote store's artifact is digested where it is written)."""
    root = Path(path)
    if not root.is_dir():
        return ""
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(file.relative_to(root).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def certified(store: Store, run_id: str) -> Certification | None:
    """The certification stored with a run's latest eval report."""
    rows = store.query_dicts(
        "SELECT teacher, judge, eval_set_id, data_digest, artifact_digest FROM eval_reports "
        "WHERE run_id = {r:String} ORDER BY created_at DESC LIMIT 1",
        {"r": run_id},
    )
    return Certification(**{k: str(v) for k, v in rows[0].items()}) if rows else None


def changed_since(cert: Certification, teacher: str, judge: str) -> list[str]:
    """What differs between a certification and the route as it is now ('' fields are of
    reports written before certifications were recorded: unknown, not changed)."""
    out = []
    if cert.teacher and cert.teacher != teacher:
        out.append(f"teacher {cert.teacher} → {teacher}")
    if cert.judge and cert.judge != judge:
        out.append(f"judge {cert.judge} → {judge}")
    return out


def stale_certifications(
    store: Store, route: Route, policies: PolicySet
) -> list[tuple[str, State, Certification, list[str]]]:
    """(candidate, its state, its certification, what changed) for each run in the rollout
    certified against another teacher or judge than the route's now."""
    teacher = policies.models[route.teacher].model
    judge = judge_of(route, teacher)
    out = []
    for cand in route.candidates:
        st = current(store, route.name, cand.name)
        if st is None or st.state not in ("shadow", "canary", "promoted"):
            continue
        cert = certified(store, st.version)
        if cert is not None and (changed := changed_since(cert, teacher, judge)):
            out.append((cand.name, st, cert, changed))
    return out


def flag_stale_certifications(store: Store, route: Route, policies: PolicySet) -> list[str]:
    """A serving candidate certified against another teacher or judge than the route's now:
    its certified figure no longer says what users get. An event once per run (the audits,
    which ask the new teacher, go on holding what it serves; `distiller/recertify.py` then
    gates it again, unless the route's `gate.recertify` is off)."""
    teacher = policies.models[route.teacher].model
    judge = judge_of(route, teacher)
    out = []
    for candidate, st, cert, changed in stale_certifications(store, route, policies):
        why = f"certified on another {' and '.join(changed)}: its certified figure is the old one's"
        evidence = {"certified_on": cert.as_dict(), "teacher": teacher, "judge": judge}
        note_once(store, route.name, candidate, "certification_stale", st.version, why, evidence)
        out.append(f"{candidate}: {why}")
    return out
