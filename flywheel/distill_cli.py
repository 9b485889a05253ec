"""`flywheel distill`: the distiller as its own process, or a request to a running gateway.

    flywheel distill --config gw.yaml [--once] [--workload R] [--force]   run the loop here
    flywheel distill --config gw.yaml --status                           runs, with progress
    flywheel distill --url http://gw:8080 --workload R --force           ask a running
                                                                         gateway (its own
                                                                         distiller) to train
    flywheel distill --url http://gw:8080 --status                       the same, remotely

Training jobs run on `distiller.backend` (local, ray or kubernetes); routes train in
parallel up to its `concurrency`, each under a lease (Redis when `redis.url` is set, else
ClickHouse), so two distillers never train the same route at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _key(args: argparse.Namespace) -> str:
    return args.key or os.environ.get("FLYWHEEL_KEY", "")


def _remote(args: argparse.Namespace) -> int:
    from flywheel.cli_errors import CliError, gateway_call

    base = args.url.rstrip("/")
    if args.status:
        body = gateway_call("GET", f"{base}/admin/api/runs", _key(args), timeout=30)
    else:
        if not args.workload:
            raise CliError("--url needs --workload: the route to train")
        body = gateway_call(
            "POST",
            f"{base}/admin/api/distill",
            _key(args),
            json_body={"route": args.workload, "force": args.force},
            timeout=30,
        )
    print(json.dumps(body, indent=2))
    return 0


def leases_for(config: Any, store: Any) -> Any:
    """Redis leases when the gateway config has Redis, else ClickHouse ones."""
    from distiller.leases import RedisLeases, StoreLeases

    if config.redis is not None and config.redis.url:
        return RedisLeases(config.redis.url)
    return StoreLeases(store)


def cmd_distill(args: argparse.Namespace) -> int:
    if args.url:
        return _remote(args)
    if not args.config:
        print("give --config (run here) or --url (a running gateway)", file=sys.stderr)
        return 2
    from distiller.backends import make_backend
    from distiller.runs import TrainingContext
    from distiller.worker import run
    from flywheel.config_file import load_or_exit
    from gateway.config import load_policy_set
    from store import open_store
    from store.runs import latest_runs

    config = load_or_exit(args.config)
    store = open_store(config.clickhouse_dsn)
    try:
        if args.status:
            print(json.dumps(latest_runs(store), indent=2, default=str))
            return 0
        policies = load_policy_set(config)
        if args.workload and args.workload not in {r.name for r in policies.routes}:
            print(f"unknown workload (route) {args.workload!r}", file=sys.stderr)
            return 2
        backend_config = config.distiller.backend
        ctx = TrainingContext(
            store,
            make_backend(backend_config),
            backend_config,
            Path(args.model_dir) if args.model_dir else config.model_dir(),
            leases_for(config, store),
            store_url=backend_config.model_store,
        )
        try:
            out = run(ctx, policies, args.workload, args.once, args.force, args.interval)
        finally:
            ctx.backend.close()
    finally:
        store.close()
    print(json.dumps(out, indent=2, default=str))
    return 0


def add_command(sub: Any) -> None:
    distill = sub.add_parser("distill", help="curate, train, evaluate and promote students")
    distill.add_argument("--config", help="gateway YAML: run the distiller here")
    distill.add_argument("--url", help="a running gateway: ask it (needs an admin key)")
    distill.add_argument("--key", help="admin key for --url (or FLYWHEEL_KEY)")
    distill.add_argument("--workload", help="one route (default: every route with candidates)")
    distill.add_argument("--once", action="store_true", help="one pass, then exit")
    distill.add_argument("--force", action="store_true", help="train even without new data")
    distill.add_argument("--status", action="store_true", help="runs and their progress")
    distill.add_argument("--model-dir", help="model store (default: <data_dir>/models)")
    distill.add_argument("--interval", type=float, default=30.0)
    distill.set_defaults(fn=cmd_distill)
