"""A fake Kubernetes API server for the `kubernetes` training backend: it checks the shapes
of the requests the backend sends (path, bearer token, a batch/v1 Job), and plays the
kubelet for a Job by running its container's command on this machine, with the model store
volume's mount path mapped to a local folder.

What each Job does is set per test by name prefix in `outcomes`: `run` (run the command,
then Complete or Failed by its exit code), `fail:<Reason>` (Failed with that reason),
`vanish` (404 from the first status read).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "fake-kube-token"


class FakeKube:
    def __init__(self, namespace: str, mount: str, local_store: Path) -> None:
        self.namespace = namespace
        self.mount = mount
        self.local_store = local_store
        self.outcomes: dict[str, str] = {}
        self.created: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()

    def _outcome(self, name: str) -> str:
        for prefix, outcome in self.outcomes.items():
            if name.startswith(prefix):
                return outcome
        return "run"

    def _kubelet(self, name: str, manifest: dict[str, Any]) -> None:
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        command = [a.replace(self.mount, str(self.local_store)) for a in container["command"]]
        command[0] = sys.executable if command[0] == "python" else command[0]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        condition = (
            {"type": "Complete", "status": "True"}
            if proc.returncode == 0
            else {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": proc.stderr[-300:],
            }
        )
        with self._lock:
            self._status[name] = {"conditions": [condition]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self
        jobs = f"/apis/batch/v1/namespaces/{fake.namespace}/jobs"

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("authorization") != f"Bearer {TOKEN}":
                    fake.problems.append(f"{self.command} {self.path}: no bearer token")
                    self._reply(401, {"kind": "Status", "message": "Unauthorized"})
                    return False
                return True

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path != jobs or body.get("kind") != "Job":
                    fake.problems.append(f"POST {self.path}: {body.get('kind')}")
                    self._reply(400, {"kind": "Status", "message": "not a Job"})
                    return
                if body.get("apiVersion") != "batch/v1":
                    fake.problems.append(f"apiVersion {body.get('apiVersion')}")
                name = body["metadata"]["name"]
                fake.created.append(body)
                outcome = fake._outcome(name)
                with fake._lock:
                    fake._status[name] = {"active": 1}
                if outcome == "run":
                    threading.Thread(target=fake._kubelet, args=(name, body), daemon=True).start()
                elif outcome.startswith("fail:"):
                    reason = outcome.split(":", 1)[1]
                    condition = {
                        "type": "Failed",
                        "status": "True",
                        "reason": reason,
                        "message": "Job was active longer than specified deadline",
                    }
                    with fake._lock:
                        fake._status[name] = {"conditions": [condition]}
                self._reply(201, {**body, "status": {}})

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                name = self.path.removeprefix(jobs + "/")
                with fake._lock:
                    status = fake._status.get(name)
                if status is None or fake._outcome(name) == "vanish":
                    self._reply(404, {"kind": "Status", "reason": "NotFound"})
                    return
                self._reply(200, {"kind": "Job", "metadata": {"name": name}, "status": status})

        return Handler
