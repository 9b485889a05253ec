"""Registering LoRA students with a vLLM OpenAI server at run time.

vLLM serves LoRA adapters next to its base model when started with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`; adapters are then added and removed with
`POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and
`POST /v1/unload_lora_adapter {"lora_name"}`, and called by `model = lora_name` on
`/v1/chat/completions` like any model. A merged student needs no registration: serve its
directory as its own vLLM model.

Invariant: `load` returns only after vLLM answered 200; any other answer raises with
vLLM's message.
"""

from __future__ import annotations

import httpx


class VllmAdapterError(RuntimeError):
    pass


class VllmAdapters:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120) -> None:
        self.base = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def _post(self, path: str, body: dict[str, str]) -> str:
        r = self._client.post(f"{self.base}{path}", json=body)
        if r.status_code != 200:
            raise VllmAdapterError(f"vLLM {path} answered {r.status_code}: {r.text[:300]}")
        return r.text

    def load(self, name: str, path: str) -> str:
        """Register the adapter at `path` (a directory vLLM can read) as model `name`."""
        return self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    def unload(self, name: str) -> str:
        return self._post("/v1/unload_lora_adapter", {"lora_name": name})

    def models(self) -> list[str]:
        r = self._client.get(f"{self.base}/v1/models")
        r.raise_for_status()
        return [m["id"] for m in r.json()["data"]]

    def close(self) -> None:
        self._client.close()
