"""The `flywheel` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from flywheel.config_file import load_or_exit as _load
from gateway.config import ConfigError


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import os

    import uvicorn

    from flywheel.serve import build_gateway, build_worker
    from flywheel.workers import AUTHKEY_ENV, SOCKET_ENV, Supervisor, usable_cores
    from gateway.http_protocol import bounded_protocol
    from store.remote import RemoteStore

    config = _load(args.config)
    if args.host:
        config.server.host = args.host
    if args.port:
        config.server.port = args.port
    if args.worker_index is None:
        from contracts.model_config import missing_key_variables

        for variable, models in missing_key_variables(config.models).items():
            print(
                f"flywheel serve: {variable} is not set: {', '.join(models)} will answer 502 "
                f"upstream_auth_failed; export {variable} and restart",
                file=sys.stderr,
            )
    shared = config.redis is not None and bool(config.redis.url)
    if args.workers is None:
        # Without Redis, N workers would each enforce a key's limit and budget alone.
        workers = usable_cores() if shared else 1
    else:
        workers = args.workers if args.workers > 0 else usable_cores()
    if workers > 1 and args.worker_index is None:
        if not shared:
            logging.getLogger("flywheel").warning(
                "%d workers without redis.url: each enforces rate limits and budgets alone",
                workers,
            )
        try:
            return asyncio.run(Supervisor(args.config, config, workers, args.log_level).run())
        except ConfigError as e:
            print(f"config error:\n{e}", file=sys.stderr)
            return 2
    try:
        if args.worker_index is not None:
            remote = RemoteStore(
                config.clickhouse_dsn,
                os.environ[SOCKET_ENV],
                os.environ[AUTHKEY_ENV].encode(),
                config.clickhouse.timeout_s,
            )
            state, app = build_worker(config, args.worker_index, remote)
        else:
            state, app = build_gateway(config)
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return 2
    # The log writer thread does pure-Python batch work; with the default 5 ms GIL switch
    # interval the event loop can wait that long for it (measured: p99 overhead 4.5 ms).
    sys.setswitchinterval(0.0001)
    try:
        uvicorn.run(
            app,
            host=config.server.host,
            port=config.server.port,
            fd=args.fd,
            loop="uvloop",
            http=bounded_protocol(config.server.max_head_bytes, config.server.head_timeout_s),
            access_log=False,
            log_level=args.log_level,
            timeout_graceful_shutdown=10,
        )
    finally:
        state.store.close()
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """Run SQL against the configured store (the embedded one only while no gateway holds it)."""
    from rich.console import Console
    from rich.table import Table

    from flywheel.cli_errors import CliError, existing_store, gateway_call
    from store import open_store

    if sum(map(bool, (args.config, args.dsn, args.url))) != 1:
        raise CliError("give one of --config, --dsn or --url (a running gateway, with --key)")
    if args.url:
        # The live store, read through the gateway that holds it (read-only, bounded).
        body = gateway_call(
            "POST",
            f"{args.url.rstrip('/')}/admin/api/query",
            args.key or os.environ.get("FLYWHEEL_KEY", ""),
            json_body={"sql": args.sql, "limit": args.limit},
        )
        columns, rows, cut = body["columns"], body["rows"], body["truncated"]
    else:
        store = open_store(existing_store(args.dsn or _load(args.config).clickhouse_dsn))
        try:
            found = store.query_table(args.sql)
        finally:
            store.close()
        columns, rows = found[0], [list(r) for r in found[1][: args.limit]]
        cut = len(found[1]) > args.limit
    table = Table(*(columns or ["(no rows)"]))
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)
    if cut:
        print(f"(the first {args.limit} rows; --limit shows more)", file=sys.stderr)
    return 0


def cmd_students_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from students.generation import load_student
    from students.server import StudentServer, build_student_app

    server = StudentServer(max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000)
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            print(f"--model wants NAME=PATH, got {spec!r}", file=sys.stderr)
            return 2
        server.put(load_student(name, path))
    uvicorn.run(
        build_student_app(server),
        host=args.host,
        port=args.port,
        loop="uvloop",
        access_log=False,
        log_level="warning",
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flywheel.demo.runner import DemoError, Options, run_demo

    try:
        return run_demo(
            Options(
                quick=args.quick,
                data_dir=Path(args.data_dir),
                report=Path(args.report) if args.report else None,
                keep_serving=args.keep_serving,
                port=args.port,
                verbose=args.verbose,
                trigger=args.trigger,
                phase_bound=args.phase_bound,
            )
        )
    except DemoError as e:
        print(f"flywheel demo: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="on a failure, the traceback as well as its line"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="gateway YAML file")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gateway processes on the port (0: one per usable core). Default: one per "
        "usable core when redis.url is set (limits and budgets are shared there), else 1",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(fn=cmd_serve)

    query = sub.add_parser("query", help="run SQL against the configured ClickHouse")
    query.add_argument("--config", help="gateway YAML: its ClickHouse")
    query.add_argument("--dsn", help="chdb:///path or http://host:8123")
    query.add_argument(
        "--url", help="a running gateway (read-only SQL through it; its embedded store too)"
    )
    query.add_argument("--key", help="an admin key of that gateway (or FLYWHEEL_KEY)")
    query.add_argument("--limit", type=int, default=1000, help="rows shown at most")
    query.add_argument("sql")
    query.set_defaults(fn=cmd_query)

    from flywheel.distill_cli import add_command as add_distill

    add_distill(sub)

    students = sub.add_parser("students", help="serve student models")
    ssub = students.add_subparsers(dest="students_command", required=True)
    sserve = ssub.add_parser("serve", help="the local OpenAI-compatible student server")
    sserve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model to load at start (more via POST /admin/models)",
    )
    sserve.add_argument("--host", default="127.0.0.1")
    sserve.add_argument("--port", type=int, default=8090)
    sserve.add_argument("--max-batch", type=int, default=16)
    sserve.add_argument("--batch-wait-ms", type=float, default=5.0)
    sserve.set_defaults(fn=cmd_students_serve)

    demo = sub.add_parser("demo", help="the whole flywheel on this machine, offline")
    demo.add_argument("--quick", action="store_true", help="about 2 minutes")
    demo.add_argument("--report", help="write the summary as JSON")
    demo.add_argument("--keep-serving", action="store_true")
    demo.add_argument("--data-dir", default="flywheel-demo")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--verbose", action="store_true", help="library logs on the screen")
    demo.add_argument(
        "--phase-bound", type=float, metavar="SECONDS", help="lower every phase's time bound"
    )
    demo.add_argument(
        "--trigger",
        type=int,
        help="curated examples before training (default 200 quick, 300 full); "
        "one traffic cannot reach shows the phase-bound message",
    )
    demo.set_defaults(fn=cmd_demo)

    from flywheel.policy_cli import add_commands

    add_commands(sub)
    from flywheel.report_cli import add_command

    add_command(sub)
    from flywheel.bases_cli import add_command as add_bases

    add_bases(sub)
    from flywheel.guard_cli import add_command as add_guard

    add_guard(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say to it.
        sys.stderr.close()
        return 0
    except Exception as e:
        if args.debug:
            raise
        from flywheel.cli_errors import describe

        line, code = describe(e)
        print(f"flywheel {args.command}: {line}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"flywheel {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
