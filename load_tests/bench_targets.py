"""What `bench_gateway.py` measures against: the request bodies, and the configs of the
gateway and of LiteLLM's proxy (each in front of the same fake upstream)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

KEY = "sk-bench-5f1c2a9e7b3d4f6a8c0e1b2d3f4a5c6e"  # also LiteLLM's master key
BODY = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You classify customer messages."},
        {"role": "user", "content": "My card has not arrived yet, what should I do?"},
    ],
    "temperature": 0,
}


# The same question in the two translated APIs (the gateway turns both into BODY's chat form).
SURFACE_BODIES: dict[str, dict[str, Any]] = {
    "/chat/completions": BODY,
    "/responses": {
        "model": "gpt-4o",
        "instructions": "You classify customer messages.",
        "input": "My card has not arrived yet, what should I do?",
        "temperature": 0,
    },
    "/messages": {
        "model": "gpt-4o",
        "system": "You classify customer messages.",
        "messages": [{"role": "user", "content": "My card has not arrived yet, what should I do?"}],
        "max_tokens": 256,
        "temperature": 0,
    },
}


def gateway_config(tmp: Path, upstream: str, port: int, journal: bool = True) -> Path:
    name = "gw" if journal else "gw-no-journal"
    config = {
        "data_dir": str(tmp / name),
        "server": {"port": port},
        "log": {"journal": journal},
        "models": {"teacher": {"model": "openai/gpt-4o", "api_base": upstream}},
        "apps": {"bench": {"team": "bench", "train_on_traffic": True}},
        "keys": [{"id": "bench", "key": KEY, "app": "bench"}],
        "routes": [
            {"name": "bench", "match": {"models": ["gpt-4o"]}, "teacher": "teacher"},
            {
                "name": "bench-cached",
                "match": {"models": ["gpt-4o-cached"]},
                "teacher": "teacher",
                "cache": {"ttl_s": 3600},
            },
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def litellm_config(tmp: Path, upstream: str) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o",
                "litellm_params": {"model": "openai/gpt-4o", "api_base": upstream, "api_key": "x"},
            }
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": KEY},
    }
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
