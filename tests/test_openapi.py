"""`/openapi.json`: a valid OpenAPI 3.1 document whose every endpoint answers, fuzzed by
schemathesis from the document itself (no 5xx, errors in the API's own shape)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
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


@pytest.fixture
def api_schema(gateway: RunningGateway) -> Any:
    schema = schemathesis.openapi.from_url(_root(gateway) + "/openapi.json")
    schema.config.update(base_url=_root(gateway))
    schema.config.generation.update(max_examples=25)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
def test_fuzzed_from_the_document(case: Any) -> None:
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
