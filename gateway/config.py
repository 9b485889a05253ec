"""The gateway's YAML configuration, typed with pydantic.

Infrastructure (data dir, server, ClickHouse, log writer), apps and keys live here; routes
may be written inline or in policy files (`policies:`), see `contracts/policy.py`.

Invariant: a `GatewayConfig` that loaded without error has keys that point at known apps;
whether its routes are servable is checked when the policies load (`load_policy_set`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, model_validator

from contracts.backends import Backend
from contracts.budgets import Budget
from contracts.model_config import ModelConfig, PriceOverride, Strict
from contracts.policy import PolicySet, Route, load_policies
from contracts.yaml_source import (
    ConfigError,
    format_validation_error,
    load_yaml_with_lines,
    strip_lines,
)

__all__ = ["ConfigError", "GatewayConfig", "ModelConfig", "PriceOverride", "load_config"]


Role = Literal["app", "admin", "finance", "reviewer"]


class AppConfig(Strict):
    team: str
    train_on_traffic: bool = False


class KeyConfig(Strict):
    """An API key. Give `key` (usually `${ENV_VAR}`) or its `sha256`; only the hash is kept."""

    id: str
    key: SecretStr | None = None
    sha256: str | None = None
    app: str | None = None
    role: Role = "app"

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


class CorsConfig(Strict):
    """Cross-origin browser access to the model APIs; off while `allow_origins` is empty."""

    allow_origins: list[str] = Field(
        default_factory=list, description='e.g. ["https://app.example.com"]'
    )
    allow_headers: list[str] = Field(
        # What the official openai and anthropic JS SDKs send from a browser page.
        default_factory=lambda: [
            "authorization",
            "content-type",
            "accept",
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "anthropic-dangerous-direct-browser-access",
            "openai-organization",
            "openai-project",
            "openai-beta",
            "idempotency-key",
            "x-stainless-lang",
            "x-stainless-package-version",
            "x-stainless-os",
            "x-stainless-arch",
            "x-stainless-runtime",
            "x-stainless-runtime-version",
            "x-stainless-retry-count",
            "x-stainless-timeout",
            "x-stainless-helper-method",
            "x-flywheel-cache",
        ]
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: [
            "x-request-id",
            "x-flywheel-served-by",
            "x-flywheel-reason",
            "x-flywheel-model",
            "x-flywheel-not-carried",
            "retry-after",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
        ]
    )
    max_age_s: int = 600


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = 8080
    model_api_roles: list[Role] = Field(
        default_factory=lambda: list[Role](["app"]),
        description="key roles that may call the model APIs and post feedback (their rows "
        "carry the key's app, team and id)",
    )
    max_body_bytes: int = 8 * 1024 * 1024
    cors: CorsConfig = Field(default_factory=CorsConfig)
    max_head_bytes: int = Field(
        default=64 * 1024, ge=4096, description="request line and headers; larger is a 431"
    )
    head_timeout_s: float = Field(
        default=30.0, gt=0, description="a connection's request head must arrive within this"
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="a request body must arrive within this (else 408)"
    )
    upstream_connections: int = 512
    session_secret: str | None = Field(
        default=None,
        description="signs dashboard sessions (give the same one to every replica); "
        "default: a random secret kept in <data_dir>/session.key",
    )


class ClickHouseConfig(Strict):
    """`chdb:///path` is the embedded engine (one process owns the path); `http://host:8123`
    a server. Empty means `chdb://<data_dir>/clickhouse`."""

    dsn: str = ""
    timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="longest wait for any ClickHouse call; a store that hangs longer is "
        "treated as down (rows wait in the journal, reads answer 503)",
    )


class LogConfig(Strict):
    """How rows reach ClickHouse: through the local journal (`<data_dir>/journal`)."""

    batch_rows: int = Field(default=2000, gt=0)
    flush_interval_s: float = Field(default=0.5, gt=0)
    replay_interval_s: float = Field(
        default=2.0, gt=0, description="how often a refused or hung ClickHouse is retried"
    )
    journal: bool = Field(
        default=True,
        description="write each row to the journal before answering (a process crash loses "
        "nothing); false keeps rows in memory until ClickHouse takes them",
    )
    journal_segment_bytes: int = Field(default=16 << 20, ge=4096)
    fsync_interval_s: float = Field(
        default=1.0, gt=0, description="what a crash of the whole machine can lose, at most"
    )
    when_unrecordable: Literal["refuse", "answer"] = Field(
        default="refuse",
        description="when the journal cannot take rows (disk full): refuse new requests "
        "(503) or answer them with rows kept in memory only",
    )
    queue_max_rows: int = Field(
        default=200_000, gt=0, description="rows kept in memory while the journal is unavailable"
    )


class RedisConfig(Strict):
    """Redis or Valkey for state shared by workers and replicas: rate-limit buckets and
    budget counters (without it they live in each gateway process)."""

    url: str = Field(description="e.g. redis://127.0.0.1:6379/0; empty: off")
    timeout_s: float = Field(default=0.5, gt=0, description="per call; slower counts as down")
    max_connections: int = Field(
        default=64, ge=1, description="per gateway process; a call waits for a free one"
    )


class RouterConfig(Strict):
    policy_reload_s: float = Field(default=1.0, gt=0, description="how often files are checked")
    state_refresh_s: float = Field(
        default=2.0, gt=0, description="how often candidate states are read from ClickHouse"
    )
    session_pins: int = Field(
        default=100_000,
        ge=0,
        description="agent sessions whose first turn's model this process remembers, so "
        "later turns stay on it (0: off; gateway/session_routing.py)",
    )
    session_ttl_s: float = Field(
        default=3600, gt=0, description="a session idle this long is forgotten"
    )


class DistillerConfig(Strict):
    """The distiller inside `flywheel serve` (the embedded default, where this process owns
    the store); at scale run `flywheel distill` as its own process instead."""

    enabled: bool = False
    interval_s: float = Field(default=60.0, gt=0)
    model_dir: Path | None = Field(default=None, description="default: <data_dir>/models")
    backend: Backend = Field(
        default_factory=Backend, description="where training jobs run: local, ray, kubernetes"
    )


class StudentsConfig(Strict):
    """The local student server as a child of `flywheel serve` (embedded mode). Policies
    reach it as `model: flywheel/<name>`, `api_base: http://127.0.0.1:<port>/v1`."""

    enabled: bool = False
    port: int = 8090
    models: dict[str, Path] = Field(default_factory=dict, description="loaded at start")


class GatewayConfig(Strict):
    data_dir: Path = Path("flywheel-data")
    server: ServerConfig = Field(default_factory=ServerConfig)
    clickhouse: ClickHouseConfig = Field(default_factory=ClickHouseConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    redis: RedisConfig | None = None
    budgets: list[Budget] = Field(
        default_factory=list, description="spend budgets per key, app, team or route"
    )
    router: RouterConfig = Field(default_factory=RouterConfig)
    distiller: DistillerConfig = Field(default_factory=DistillerConfig)
    students: StudentsConfig = Field(default_factory=StudentsConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    apps: dict[str, AppConfig] = Field(default_factory=dict)
    keys: list[KeyConfig] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    policies: list[Path] = Field(
        default_factory=list, description="policy files, relative to this file; hot-reloaded"
    )
    _source: tuple[str, Any] = PrivateAttr(default=("(inline)", None))
    _base_dir: Path = PrivateAttr(default=Path("."))

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for i, key in enumerate(self.keys):
            if key.app is not None and key.app not in self.apps:
                raise ValueError(f"keys.{i}.app: unknown app {key.app!r}")
        return self

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    def model_dir(self) -> Path:
        return self.distiller.model_dir or self.data_dir / "models"

    def guards_dir(self) -> Path:
        """Where trained guardrail detectors live (under the model store)."""
        return self.model_dir() / "guards"

    def watched_paths(self) -> list[Path]:
        """What the policy watcher rebuilds on: the policy files and each trained detector's
        `current.json` (a new version or new thresholds)."""
        return self.policy_paths() + sorted(self.guards_dir().glob("*/current.json"))

    def policy_paths(self) -> list[Path]:
        out: list[Path] = []
        for p in self.policies:
            path = p if p.is_absolute() else self._base_dir / p
            out += sorted(path.parent.glob(path.name)) if "*" in path.name else [path]
        return out


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def load_policy_set(config: GatewayConfig) -> PolicySet:
    """The config's inline routes, then its policy files, checked together."""
    path, tree = config._source
    inline_tree = {"routes": tree.get("routes")} if isinstance(tree, dict) else None
    return load_policies(
        config.policy_paths(), config.models, inline=(path, inline_tree, config.routes)
    )


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        tree = load_yaml_with_lines(path)
    except OSError as e:
        raise ConfigError(f"{path}: {e}") from e
    except ConfigError:
        raise
    except Exception as e:  # yaml errors carry their own position
        raise ConfigError(f"{path}: {e}") from e
    try:
        config = GatewayConfig.model_validate(strip_lines(tree))
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, tree, e)) from e
    config._source = (str(path), tree)
    config._base_dir = path.parent
    return config
