"""A small training job of intent examples, as the distiller hands one to a backend."""

from __future__ import annotations

import json
import uuid

from contracts.model_config import ModelConfig
from contracts.policy import Gate
from contracts.training import Resources, Training
from distiller.examples import Example
from distiller.jobs import TrainJob
from tests.support.intents import SYSTEM, generate


def intent_job(run_id: str, route: str = "k8s-route", **resources: float) -> TrainJob:
    examples = [
        Example(
            str(uuid.uuid4()),
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
            json.dumps({"intent": intent}),
        )
        for text, intent in generate(40, 21)
    ]
    return TrainJob(
        run_id,
        route,
        "tiny",
        f"{route}/tiny/{run_id}",
        Resources(**resources),
        "generator",
        "local:tiny",
        [SYSTEM] + [t for t, _ in generate(40, 21)],
        examples[:30],
        examples[30:],
        Training(epochs=1, pretrain_steps=5, max_steps=4),
        "eval-k8s",
        Gate(metric="json_field_match", fields=["intent"], threshold=0.0, min_examples=1),
        ModelConfig(model="openai/teacher", api_base="http://127.0.0.1:9/v1"),
    )


def dies_in_the_worker(root: str, rel_dir: str) -> None:
    """A job's worker that says something and is then killed (as the OOM killer would)."""
    import os
    import signal
    import sys

    print(f"loading the base for {rel_dir}", flush=True)
    sys.stderr.write("CUDA out of memory pretend: tried to allocate 2.00 GiB\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def writes_nothing(root: str, rel_dir: str) -> None:
    """A job's worker that runs and returns without a result (the backend says so)."""
