"""The gateway's YAML configuration, typed with pydantic.

Invariant: a `GatewayConfig` that loaded without error can serve every route it names:
each route's models exist, each model has a known price, each app key points at an app.
Errors are reported as `file:line: field.path: message` so an admin can fix them.
"""

from __future__ import annotations

import hashlib
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class PriceOverride(Strict):
    """USD per million tokens; overrides litellm's table for this model."""

    input_per_million: Decimal
    output_per_million: Decimal = Decimal(0)


class ModelConfig(Strict):
    """One upstream model. `model` is a litellm model string such as `openai/gpt-4o-mini`."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    price: PriceOverride | None = None
    timeout_s: float = Field(default=120.0, gt=0)

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    @property
    def upstream_name(self) -> str:
        """The name the provider knows the model by (litellm's prefix removed)."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def openai_compatible(self) -> bool:
        """OpenAI-compatible upstreams (OpenAI, vLLM, our student server) take the fast path."""
        return self.provider in ("openai", "hosted_vllm", "vllm", "flywheel")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class AppConfig(Strict):
    team: str
    train_on_traffic: bool = False


class KeyConfig(Strict):
    """An API key. Give `key` (usually `${ENV_VAR}`) or its `sha256`; only the hash is kept."""

    id: str
    key: SecretStr | None = None
    sha256: str | None = None
    app: str | None = None
    role: Literal["app", "admin", "finance"] = "app"

    @model_validator(mode="after")
    def _one_secret(self) -> KeyConfig:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of `key` or `sha256`")
        if self.role == "app" and not self.app:
            raise ValueError("an app key needs `app`")
        return self

    def digest(self) -> str:
        if self.sha256 is not None:
            return self.sha256.lower()
        assert self.key is not None
        return hash_key(self.key.get_secret_value())


class RouteConfig(Strict):
    """A workload. Apps call it by any of `aliases` (default: its name); `teacher` serves it
    and is the baseline its cost is compared with."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    teacher: str

    def called_as(self) -> list[str]:
        return self.aliases or [self.name]


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connections: int = 512


class ClickHouseConfig(Strict):
    """`chdb:///path` is the embedded engine (one process owns the path); `http://host:8123`
    a server. Empty means `chdb://<data_dir>/clickhouse`."""

    dsn: str = ""


class LogConfig(Strict):
    batch_rows: int = Field(default=2000, gt=0)
    flush_interval_s: float = Field(default=0.5, gt=0)
    queue_max_rows: int = Field(default=200_000, gt=0)
    replay_interval_s: float = Field(default=2.0, gt=0)


class GatewayConfig(Strict):
    data_dir: Path = Path("flywheel-data")
    server: ServerConfig = Field(default_factory=ServerConfig)
    clickhouse: ClickHouseConfig = Field(default_factory=ClickHouseConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    models: dict[str, ModelConfig]
    apps: dict[str, AppConfig] = Field(default_factory=dict)
    keys: list[KeyConfig] = Field(default_factory=list)
    routes: list[RouteConfig]

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for i, route in enumerate(self.routes):
            if route.teacher not in self.models:
                raise ValueError(f"routes.{i}.teacher: unknown model {route.teacher!r}")
        seen: dict[str, str] = {}
        for route in self.routes:
            for alias in route.called_as():
                if alias in seen:
                    raise ValueError(
                        f"routes: alias {alias!r} used by both {seen[alias]!r} and {route.name!r}"
                    )
                seen[alias] = route.name
        for i, key in enumerate(self.keys):
            if key.app is not None and key.app not in self.apps:
                raise ValueError(f"keys.{i}.app: unknown app {key.app!r}")
        return self

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


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


def _strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k != "__lines__"}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
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
    return _expand_tree(yaml.load(path.read_text(), Loader=_LineLoader))  # noqa: S506


def format_validation_error(path: Path, tree: Any, err: ValidationError) -> str:
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, str) or not p.startswith("function"))
        line = line_of(tree, loc)
        where = f"{path}:{line}" if line else str(path)
        field = ".".join(str(p) for p in loc) or "(top)"
        out.append(f"{where}: {field}: {e['msg']}")
    return "\n".join(out)


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        tree = load_yaml_with_lines(path)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        return GatewayConfig.model_validate(_strip_lines(tree))
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, tree, e)) from e
