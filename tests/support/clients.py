"""The real client libraries pointed at a test gateway, and the shared tool definitions."""

from __future__ import annotations

import anthropic
import openai

from tests.support.gateway import APP_KEY, RunningGateway

TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Find an order",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
]
ANTHROPIC_TOOLS = [
    {"name": "lookup", "description": "Find an order", "input_schema": TOOLS[0]["parameters"]}
]


def openai_client(gw: RunningGateway, key: str = APP_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def anthropic_client(gw: RunningGateway, key: str = APP_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url.removesuffix("/v1"), api_key=key, max_retries=0)


def request_id_of(resp_id: str) -> str:
    raw = resp_id.split("_", 1)[1]
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
