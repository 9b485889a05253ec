"""Load from several threads against a running gateway, keeping what it answered."""

from __future__ import annotations

import threading

import httpx

from tests.support.gateway import APP_KEY


class Load:
    """Requests from several threads until stopped; keeps the ids of every 200."""

    def __init__(self, port: int, threads: int = 8) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.answered: list[str] = []
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {APP_KEY}"}) as c:
            i = 0
            while not self._stop.is_set():
                i += 1
                body = {
                    "model": "gpt-4o",
                    "messages": [{"role": "user", "content": f"w{worker} {i}"}],
                }
                try:
                    r = c.post(self.url, json=body)
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                if r.status_code == 200:
                    self.answered.append(r.json()["id"])
                else:
                    self.failures += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
