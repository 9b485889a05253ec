"""What the fake provider reads from a request: markers in the last user message
(`[[name:value]]`) and a word count standing in for tokens."""

from __future__ import annotations

import re
from typing import Any

import orjson

MARK = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def words(value: Any) -> int:
    return len(orjson.dumps(value).decode().split())
