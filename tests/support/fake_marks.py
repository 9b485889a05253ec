"""What the fake provider reads from a request: markers in the last user message
(`[[name:value]]`) and a word count standing in for tokens."""

from __future__ import annotations

import re
from typing import Any

import orjson

MARK = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def words(value: Any) -> int:
    return len(orjson.dumps(value).decode().split())


def cached_tokens(body: dict[str, Any]) -> int:
    """`[[cached:N]]` anywhere in the messages: the provider says N prompt tokens were read
    from its prompt cache."""
    found = re.search(r"\[\[cached:(\d+)\]\]", orjson.dumps(body.get("messages")).decode())
    return int(found.group(1)) if found else 0
