"""Calls to the model behind a route.

OpenAI-compatible upstreams (OpenAI, vLLM, the student server) take the fast path: one
pooled aiohttp session, bytes streamed through untouched. Every other provider goes through
`litellm` and comes back in OpenAI's shapes. litellm is imported lazily, once, and only when
a configured model needs it (its import costs ~4 s).

Invariant: a call either returns an OpenAI-shaped body / event stream or raises
`UpstreamError` whose message is safe to show a client (redacted).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from contracts.errors import redact
from gateway.config import ModelConfig

ENDPOINT_PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",  # only for models with `responses_api: true`
    "messages": "/v1/messages",  # Anthropic's own API, for `anthropic/...` models
}
_ANTHROPIC_BASE = "https://api.anthropic.com"
_ANTHROPIC_VERSION = "2023-06-01"

_OPENAI_BASE = "https://api.openai.com/v1"


class UpstreamError(Exception):
    """kind is `timeout`, `connect` or `http`; status is the upstream's HTTP status if any."""

    def __init__(
        self,
        kind: str,
        message: str,
        status: int = 0,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = redact(message)
        self.param = param  # the upstream's own `param` and `code`, kept for the client
        self.code = code
        self.headers = headers or {}  # its Retry-After and rate-limit state, relayed


_RELAYED = ("retry-after", "retry-after-ms")


def rate_headers(headers: Any) -> dict[str, str]:
    """The upstream's own rate-limit state, which the gateway relays when it has none."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}


def _http_error(body: bytes, status: int, headers: Any) -> UpstreamError:
    relayed = {
        k.lower(): v
        for k, v in headers.items()
        if k.lower() in _RELAYED or k.lower().startswith("x-ratelimit-")
    }
    param = code = None
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            param = err.get("param") if isinstance(err.get("param"), str) else None
            code = err.get("code") if isinstance(err.get("code"), str) else None
    except orjson.JSONDecodeError:
        pass
    return UpstreamError("http", _error_message(body), status, param, code, relayed)


class UpstreamStream:
    """An open upstream event stream; `close()` is synchronous so it is safe in a cancelled
    task (a client that disconnects mid-stream must free the pooled connection at once)."""

    def __init__(self, chunks: AsyncIterator[bytes], closer: Any = None) -> None:
        self._chunks = chunks
        self._closer = closer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    def close(self) -> None:
        if self._closer is not None:
            self._closer()


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except orjson.JSONDecodeError:
        pass
    return body[:300].decode("utf-8", "replace")


class Upstreams:
    """Owns the pooled HTTP session; created and closed with the app."""

    def __init__(self, max_connections: int = 512) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._litellm: Any = None

    async def start(self, models: dict[str, ModelConfig]) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            skip_auto_headers=("User-Agent",),
        )
        await self.prepare(models)

    async def prepare(self, models: dict[str, ModelConfig]) -> None:
        """Ready the client libraries these models need (at start, and before a reloaded
        policy is swapped in: a provider new to this process must not fail its first call)."""
        if self._litellm is None and any(not m.openai_compatible for m in models.values()):
            await asyncio.to_thread(self._import_litellm)

    def _import_litellm(self) -> Any:
        if self._litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.telemetry = False
            litellm.drop_params = False
            self._litellm = litellm
        return self._litellm

    async def _litellm_module(self) -> Any:
        return self._litellm or await asyncio.to_thread(self._import_litellm)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstreams.start() was not awaited"
        return self._session

    # --- fast path -----------------------------------------------------------------------

    def _url(self, model: ModelConfig, endpoint: str) -> str:
        if endpoint == "messages":  # litellm's api_base for Anthropic has no /v1
            base = (model.api_base or _ANTHROPIC_BASE).rstrip("/").removesuffix("/v1")
            return base + ENDPOINT_PATHS[endpoint]
        return (model.api_base or _OPENAI_BASE).rstrip("/") + ENDPOINT_PATHS[endpoint]

    def _headers(
        self, model: ModelConfig, endpoint: str = "", client: dict[str, str] | None = None
    ) -> dict[str, str]:
        """`client`: the app's own API headers on a pass-through (`anthropic-version`,
        `anthropic-beta`): the body it sent may need the betas it named."""
        headers = {"Content-Type": "application/json"}
        key = model.api_key()
        if endpoint == "messages":
            headers["anthropic-version"] = _ANTHROPIC_VERSION
            headers.update(client or {})
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @staticmethod
    def _native(model: ModelConfig, endpoint: str) -> bool:
        """Served by the pooled HTTP path: OpenAI-compatible upstreams, and Anthropic's
        own API when a Messages request passes through."""
        return model.openai_compatible or endpoint == "messages"

    async def call(
        self,
        model: ModelConfig,
        endpoint: str,
        body: dict[str, Any],
        timeout_s: float | None = None,
        relay: dict[str, str] | None = None,
        client_headers: dict[str, str] | None = None,
    ) -> bytes:
        """A whole (non-streamed) answer as the upstream's JSON bytes."""
        timeout = timeout_s or model.timeout_s
        if not self._native(model, endpoint):
            return await self._litellm_call(model, endpoint, body, timeout)
        try:
            async with self.session.post(
                self._url(model, endpoint),
                data=orjson.dumps(body),
                headers=self._headers(model, endpoint, client_headers),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise _http_error(data, resp.status, resp.headers)
                if relay is not None:
                    relay.update(rate_headers(resp.headers))
                return data
        except TimeoutError as e:
            raise UpstreamError("timeout", f"upstream did not answer in {timeout}s") from e
        except aiohttp.ClientError as e:
            raise UpstreamError("connect", f"cannot reach upstream: {type(e).__name__}") from e

    async def stream(
        self,
        model: ModelConfig,
        endpoint: str,
        body: dict[str, Any],
        timeout_s: float | None = None,
        relay: dict[str, str] | None = None,
        client_headers: dict[str, str] | None = None,
    ) -> UpstreamStream:
        """An open event stream; errors before the first byte raise here."""
        timeout = timeout_s or model.timeout_s
        if not self._native(model, endpoint):
            return await self._litellm_stream(model, endpoint, body, timeout)
        try:
            resp = await self.session.post(
                self._url(model, endpoint),
                data=orjson.dumps(body),
                headers=self._headers(model, endpoint, client_headers),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout),
            )
        except TimeoutError as e:
            raise UpstreamError("timeout", f"upstream did not answer in {timeout}s") from e
        except aiohttp.ClientError as e:
            raise UpstreamError("connect", f"cannot reach upstream: {type(e).__name__}") from e
        if resp.status >= 400:
            data = await resp.read()
            resp.release()
            raise _http_error(data, resp.status, resp.headers)
        if relay is not None:
            relay.update(rate_headers(resp.headers))

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            except TimeoutError as e:
                raise UpstreamError("timeout", "upstream stalled mid-stream") from e
            except aiohttp.ClientError as e:
                raise UpstreamError("connect", f"upstream dropped: {type(e).__name__}") from e
            finally:
                resp.release()

        return UpstreamStream(chunks(), resp.close)

    async def reachable(self, model: ModelConfig) -> bool | None:
        """GET {api_base}/models; None when the provider has no such probe we can use."""
        if not model.openai_compatible or not model.api_base:
            return None
        try:
            async with self.session.get(
                model.api_base.rstrip("/") + "/models",
                headers=self._headers(model),
                timeout=aiohttp.ClientTimeout(total=2),
            ) as resp:
                return resp.status < 500
        except (TimeoutError, aiohttp.ClientError):
            return False

    # --- litellm path --------------------------------------------------------------------

    def _litellm_kwargs(
        self, model: ModelConfig, body: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k != "model"}
        kwargs["model"] = model.model
        kwargs["timeout"] = timeout
        if model.api_base:
            kwargs["api_base"] = model.api_base
        key = model.api_key()
        if key:
            kwargs["api_key"] = key
        return kwargs

    def _litellm_error(self, e: Exception) -> UpstreamError:
        status = int(getattr(e, "status_code", 0) or 0)
        name = type(e).__name__
        if "Timeout" in name or status in (408, 504):
            return UpstreamError("timeout", str(e), 504)
        if "Connection" in name and status in (0, 500):
            return UpstreamError("connect", f"cannot reach upstream: {name}", 502)
        return UpstreamError("http", str(e), status or 502)

    async def _litellm_call(
        self, model: ModelConfig, endpoint: str, body: dict[str, Any], timeout_s: float
    ) -> bytes:
        litellm = await self._litellm_module()
        fn = {
            "chat.completions": litellm.acompletion,
            "completions": litellm.atext_completion,
            "embeddings": litellm.aembedding,
        }[endpoint]
        try:
            result = await fn(**self._litellm_kwargs(model, body, timeout_s))
        except Exception as e:  # litellm raises provider-specific types
            raise self._litellm_error(e) from e
        return orjson.dumps(result.model_dump(exclude_none=True))

    async def _litellm_stream(
        self, model: ModelConfig, endpoint: str, body: dict[str, Any], timeout_s: float
    ) -> UpstreamStream:
        litellm = await self._litellm_module()
        fn = litellm.acompletion if endpoint == "chat.completions" else litellm.atext_completion
        try:
            result = await fn(**self._litellm_kwargs(model, body, timeout_s))
        except Exception as e:
            raise self._litellm_error(e) from e

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in result:
                    yield b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"
            except Exception as e:
                raise self._litellm_error(e) from e
            yield b"data: [DONE]\n\n"

        return UpstreamStream(chunks())


def monotonic_us(start: float) -> int:
    return int((time.perf_counter() - start) * 1_000_000)
