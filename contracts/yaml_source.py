"""YAML with line numbers and `${VAR}` expansion, for config and policy files.

Invariant: every error about a loaded file can be reported as `file:line: field: message`,
because each mapping keeps the line of each of its keys under `__lines__` until stripped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A config file that cannot be served; the message names file, line and field."""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is None:
                raise ConfigError(f"environment variable {m.group(1)} is not set")
            return m.group(2)
        return value

    return _ENV.sub(sub, text)


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping key so errors can point at it."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[str(key)] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_lines(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [strip_lines(v) for v in obj]
    return obj


def line_of(tree: Any, path: tuple[str | int, ...]) -> int | None:
    """The YAML line of the deepest key on `path` that exists in `tree`."""
    line = None
    node = tree
    for part in path:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(str(part), line)
            node = node.get(str(part)) if str(part) in node else node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def _expand_tree(obj: Any) -> Any:
    """Expand `${VAR}` in string values only (never in comments or keys)."""
    if isinstance(obj, dict):
        return {k: v if k == "__lines__" else _expand_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_tree(v) for v in obj]
    return expand_env(obj) if isinstance(obj, str) else obj


def load_yaml_with_lines(path: Path) -> Any:
    return _expand_tree(yaml.load(path.read_text(), Loader=_LineLoader))


def format_validation_error(path: Path, tree: Any, err: ValidationError) -> str:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, str) or not p.startswith("function"))
        line = line_of(tree, loc)
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in loc) or "(top)"
        out.append(f"{where}: {field}: {e['msg']}")
    return "\n".join(out)
