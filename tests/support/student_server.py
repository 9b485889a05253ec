"""The local student server (`students.server`) on a free port of 127.0.0.1, in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.net import free_port
from tests.support.wait import eventually


@contextlib.contextmanager
def running_student_server() -> Iterator[str]:
    """Yields its OpenAI base URL (`http://127.0.0.1:<port>/v1`)."""
    import uvicorn

    from students.server import StudentServer, build_student_app

    port = free_port()
    server = StudentServer(max_batch=8, batch_wait_s=0.01)
    uv = uvicorn.Server(
        uvicorn.Config(build_student_app(server), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=lambda: asyncio.run(uv.serve()), daemon=True)
    thread.start()
    assert eventually(lambda: uv.started, 30)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        uv.should_exit = True
        thread.join(10)
