"""Loading the gateway config for a command: a config error is printed and exits 2."""

from __future__ import annotations

import sys

from gateway.config import ConfigError, GatewayConfig, load_config


def load_or_exit(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        raise SystemExit(2) from e
