"""Command-line failures a user can cause, each as one line naming the cause and the fix.

Invariant: a command raises `CliError` (or lets a known exception through) and `main` prints
`flywheel <command>: <one line>` and exits 2; a traceback appears only with `--debug`.
Anything unforeseen still exits with one line (status 1) that says `--debug` shows more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from store import StoreUnavailable


class CliError(Exception):
    """A failure the user can fix; its message is the one line they read."""


def first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def gateway_call(
    method: str, url: str, key: str, *, json_body: Any = None, timeout: float = 60.0
) -> Any:
    """One admin call to a running gateway; every way it can fail is a `CliError`."""
    if not key:
        raise CliError("--url needs --key (or FLYWHEEL_KEY): an admin key of that gateway")
    root = url.split("/admin/")[0]
    try:
        reply = httpx.request(
            method, url, json=json_body, headers={"authorization": f"Bearer {key}"}, timeout=timeout
        )
    except httpx.ConnectError as e:
        raise CliError(
            f"no gateway answers at {root}: start it (`flywheel serve --config FILE`) or fix --url"
        ) from e
    except httpx.TimeoutException as e:
        raise CliError(f"the gateway at {root} did not answer within {timeout:g} s") from e
    except httpx.HTTPError as e:
        raise CliError(f"cannot reach {root}: {first_line(e)}") from e
    try:
        body = reply.json()
    except json.JSONDecodeError:
        body = {}
    message = _error_message(body)
    if reply.status_code in (401, 403):
        raise CliError(
            f"the gateway at {root} refused the key ({reply.status_code}: "
            f"{message or reply.reason_phrase}): give an admin key with --key (or FLYWHEEL_KEY)"
        )
    if reply.status_code == 404 and not message:
        raise CliError(f"{root} is not a flywheel gateway (404): check --url")
    if not reply.is_success:
        raise CliError(
            f"the gateway at {root} answered {reply.status_code}: {message or reply.text[:200]}"
        )
    return body


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return ""


def _store_line(e: StoreUnavailable) -> str:
    text = first_line(e)
    if "chdb" in text and ("open" in text.lower() or "lock" in text.lower()):
        # chdb lets one process own a path: here, most often a running gateway.
        return (
            f"{text[:200]} (another process, most likely a running `flywheel serve` or "
            "`flywheel demo --keep-serving`, holds this embedded store: ask that gateway "
            "instead with --url http://127.0.0.1:PORT --key <admin key>)"
        )
    return f"ClickHouse: {text[:300]}"


def existing_store(dsn: str) -> str:
    """The DSN of a store a reading command may open: an embedded path that holds nothing
    is a mistyped one (opening it would create an empty store and report nothing)."""
    if dsn.startswith("chdb://"):
        path = Path(dsn.removeprefix("chdb://"))
        if not path.is_dir() or not any(path.iterdir()):
            raise CliError(
                f"no store at {path}: check --dsn (chdb:///path: a gateway's "
                "<data_dir>/clickhouse) or the config's data_dir"
            )
    return dsn


def describe(e: BaseException) -> tuple[str, int]:
    """The one line and exit status for an exception a command let through."""
    if isinstance(e, CliError):
        return str(e), 2
    if isinstance(e, FileNotFoundError):
        return f"no such file: {e.filename or first_line(e)}", 2
    if isinstance(e, IsADirectoryError | PermissionError):
        return f"cannot read {e.filename}: {e.strerror}", 2
    if isinstance(e, StoreUnavailable):
        return _store_line(e), 2
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    return f"unexpected {type(e).__name__}: {first_line(e)} (--debug shows the traceback)", 1
