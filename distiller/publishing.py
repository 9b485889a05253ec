"""Making a trained student callable: load it where its candidate slot is served.

A candidate's serving model (`models:` in the policy) says where: `flywheel/<name>` is the
project's student server (`POST /admin/models` loads or hot-swaps it), `hosted_vllm/<name>`
a vLLM server (a LoRA run's adapter is registered at run time; a merged student must be
deployed as its own vLLM model); any other endpoint is run outside Flywheel, and the note
says which artifact to load there.

Invariant: a candidate enters shadow or canary only after its endpoint answered that the
model is loaded; a failed publish leaves it `trained`, not serving.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from contracts.model_config import ModelConfig


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
        r = httpx.post(
            model.api_base.removesuffix("/v1") + "/admin/models",
            json={"name": name, "path": f"{run_dir}/merged"},
            timeout=timeout_s,
        )
        if r.status_code != 200:
            raise PublishError(f"student server answered {r.status_code}: {r.text[:200]}")
        return f"loaded as {name} (version {r.json()['version']})"
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
