"""`/openapi.json`: a valid OpenAPI 3.1 document whose every endpoint answers, fuzzed by
schemathesis from the document itself (no 5xx, errors in the API's own shape)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from tests.support.gateway import APP_KEY, RunningGateway

# One valid body per POST endpoint of the document.
EXAMPLES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "gpt-4o", "prompt": "hi"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/responses": {"model": "gpt-4o", "input": "hi"},
    "/v1/messages": {
        "model": "gpt-4o",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/feedback": {"request_id": "00000000-0000-0000-0000-000000000000", "score": 1},
}
AUTH = {"Authorization": f"Bearer {APP_KEY}"}


def _root(gw: RunningGateway) -> str:
    return gw.base_url.removesuffix("/v1")


def test_the_document_is_openapi_31_and_every_endpoint_answers(gateway: RunningGateway) -> None:
    doc = httpx.get(_root(gateway) + "/openapi.json").json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for path, operations in doc["paths"].items():
        for method in operations:
            url = _root(gateway) + path.replace("{model}", "gpt-4o")
            if method == "post":
                r = httpx.post(url, json=EXAMPLES[path], headers=AUTH, timeout=30)
                # Feedback on an id nobody logged is a 404: it answered, in shape.
                assert r.status_code == (404 if path == "/v1/feedback" else 200), (path, r.text)
            else:
                r = httpx.get(url, headers=AUTH, timeout=30)
                assert r.status_code == 200, (path, r.text)


def _check(case: Any) -> None:
    response = case.call(headers=AUTH, timeout=30)
    assert response.status_code < 500, (case.path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        if case.path == "/v1/messages":
            assert body.get("type") == "error" and body["error"]["message"], (
                case.method,
                response.request.method,
                body,
            )
        else:
            assert body["error"]["message"] and body["error"]["type"], body


@pytest.mark.slow
def test_fuzzed_from_the_document(gateway: RunningGateway) -> None:
    """Each operation's cases from schemathesis's strategies, driven by hypothesis directly:
    schemathesis's pytest plugin (`from_fixture`) reaches into pytest internals that pytest
    9.2 renamed, while strategies are its public API."""
    api = schemathesis.openapi.from_url(_root(gateway) + "/openapi.json")
    api.config.update(base_url=_root(gateway))
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            _check(case)

        try:
            fuzz()
        except Exception as e:  # one operation's failure must not hide the others'
            failures.append(f"{operation.method.upper()} {operation.path}: {e!r}"[:600])
    assert operations >= len(EXAMPLES)
    assert not failures, "\n".join(failures)
