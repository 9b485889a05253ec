"""The HTTP edge: bounds what a connection may cost before the app sees a request.

uvicorn's httptools protocol buffers a request head of any size and waits forever for one
that never completes. This subclass answers 431 once the head passes `max_head_bytes`
(measured: a 200 MB header otherwise took the process from 81 to 478 MB), and 408 when a
connection has not completed its head within `head_timeout_s` of connecting or of its
previous response (slow-loris and silent sockets). Bodies are bounded by the app
(`bodies.read_json`: size and time).

Invariant: a connection holds at most `max_head_bytes` plus one read of unparsed head, and
no connection waits for its head longer than `head_timeout_s`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _error(status: int, reason: str, message: str, code: str) -> bytes:
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class BoundedHttpTools(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_done = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._head_done:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            not self._head_done
            and self._head_bytes > self.max_head_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(
                _error(
                    431,
                    "Request Header Fields Too Large",
                    f"The request line and headers exceed {self.max_head_bytes} bytes.",
                    "headers_too_large",
                )
            )

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection starts a new head: bound it the same way.
        self._head_done = False
        self._head_bytes = 0
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_done or self.transport.is_closing():
            return
        if self._head_bytes == 0 and self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written: keep-alive rules apply after it
        self._refuse(
            _error(
                408,
                "Request Timeout",
                f"No complete request head within {self.head_timeout_s:g} s.",
                "request_timeout",
            )
        )

    def _refuse(self, response: bytes) -> None:
        self.transport.write(response)
        self.transport.close()


def bounded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[BoundedHttpTools]:
    """The protocol class with this deployment's bounds (uvicorn takes a class)."""
    return type(
        "GatewayHttp",
        (BoundedHttpTools,),
        {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s},
    )
