"""Making a trained student callable: load it where its candidate slot is served.

A candidate's serving model (`models:` in the policy) says where: `flywheel/<name>` is the
project's student server (`POST /admin/models` loads or hot-swaps it), `hosted_vllm/<name>`
a vLLM server (a LoRA run's adapter is registered at run time; a merged student must be
deployed as its own vLLM model); any other endpoint is run outside Flywheel, and the note
says which artifact to load there.

Invariant: a candidate enters shadow or canary only after its endpoint answered that the
model is loaded; a failed publish leaves it `trained`, not serving. A student server that
starts again (with `flywheel serve`, or after it died) gets every shadow, canary and promoted
candidate's run loaded again (`restore`) before the gateway routes to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from contracts.model_config import ModelConfig
from contracts.policy import PolicySet
from distiller.events import record_event
from store import Store


class PublishError(RuntimeError):
    pass


def publish(model: ModelConfig, run_dir: str | Path, timeout_s: float = 300) -> str:
    """Load the run's student under the name the gateway calls it by; returns a note.
    `run_dir`: a local path, or a URL in the model store (the server downloads it)."""
    run_dir = str(run_dir).rstrip("/")
    if not model.api_base:
        raise PublishError(f"{model.model}: no api_base to publish to")
    name = model.upstream_name
    if model.provider == "flywheel":
        return _load(model.api_base, name, f"{run_dir}/merged", timeout_s)
    if model.provider in ("hosted_vllm", "vllm"):
        adapter = f"{run_dir}/adapter"
        if "://" not in adapter and not Path(adapter).exists():
            raise PublishError("vLLM serves LoRA runs at run time; deploy a merged run as a model")
        from students.vllm_client import VllmAdapters

        client = VllmAdapters(model.api_base, model.api_key())
        try:
            client.load(name, adapter)
        finally:
            client.close()
        return f"LoRA adapter registered with vLLM as {name}"
    # Any other OpenAI-compatible endpoint is run outside Flywheel: say where the model is.
    return f"served outside Flywheel ({model.model}); load {run_dir}/merged there"


def _load(api_base: str, name: str, path: str, timeout_s: float) -> str:
    r = httpx.post(
        api_base.removesuffix("/v1") + "/admin/models",
        json={"name": name, "path": path},
        timeout=timeout_s,
    )
    if r.status_code != 200:
        raise PublishError(f"student server answered {r.status_code}: {r.text[:200]}")
    return f"loaded as {name} (version {r.json()['version']})"


# Each candidate's current state and version (its run), with that run's artifact.
_SERVING_RUNS = """
SELECT s.route, s.candidate, s.state, s.version, r.artifact
FROM (
    SELECT route, candidate, argMax(state, updated_at) AS state,
           argMax(version, updated_at) AS version
    FROM candidate_states GROUP BY route, candidate
) AS s
INNER JOIN (
    SELECT run_id, argMax(artifact_path, updated_at) AS artifact
    FROM training_runs WHERE status = 'succeeded' GROUP BY run_id
) AS r ON r.run_id = s.version
WHERE s.state IN ('shadow', 'canary', 'promoted') AND r.artifact != ''
"""


@dataclass(frozen=True)
class Restored:
    route: str
    candidate: str
    run_id: str
    note: str  # "loaded as ..." or why it could not be loaded
    ok: bool


def _same_server(api_base: str, port: int) -> bool:
    parts = urlsplit(api_base)
    return parts.port == port and parts.hostname in ("127.0.0.1", "localhost", "0.0.0.0")


def restore(
    store: Store,
    policies: PolicySet,
    port: int,
    why: str,
    timeout_s: float = 300,
    log: Callable[[str], None] | None = None,
    before: Callable[[], bool] | None = None,
) -> list[Restored]:
    """Load every shadow, canary and promoted candidate's run into the student server on
    this machine's `port` again (it starts empty). `before`, called only when there is
    something to load, waits for the server and says whether it came up. Each load is an
    event with `why`, and so is a run that cannot be loaded (the History view and
    `flywheel report` show both)."""
    routes = {r.name: r for r in policies.routes}
    targets: list[tuple[str, str, str, str, str, ModelConfig]] = []
    for route, candidate, state, run_id, artifact in store.query_rows(_SERVING_RUNS):
        declared = routes.get(route)
        cand = (
            next((c for c in declared.candidates if c.name == candidate), None)
            if declared
            else None
        )
        if cand is None or cand.kind == "few_shot":
            continue
        model = policies.models.get(cand.model)
        if model is None or model.provider != "flywheel" or not model.api_base:
            continue
        if not _same_server(model.api_base, port):
            continue  # another machine's student server, restored by its own gateway
        targets.append((route, candidate, state, run_id, artifact, model))
    up = not targets or before is None or before()
    out: list[Restored] = []
    for route, candidate, state, run_id, artifact, model in targets:
        if not up:
            note, ok = "the student server did not start", False
        else:
            try:
                note, ok = (
                    _load(model.api_base or "", model.upstream_name, artifact, timeout_s),
                    True,
                )
            except (PublishError, httpx.HTTPError) as e:
                note, ok = f"cannot load {artifact}: {e}", False
        out.append(Restored(route, candidate, run_id, note, ok))
        record_event(
            store,
            route,
            candidate,
            "student_reloaded" if ok else "student_reload_failed",
            f"{why}: {note}",
            {"run_id": run_id, "artifact": artifact, "state": state},
        )
        if log is not None:
            log(f"{route}/{candidate} ({state}, run {run_id}): {note}")
    return out
