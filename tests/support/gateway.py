"""The gateway under test: keys, the routing policy the shared gateway serves, a config
factory, and a gateway running in this process on a real socket.

The gateway runs in the test process (uvicorn in a thread) because the embedded ClickHouse
is owned by one process: a test reads the same store the gateway writes, through the
gateway's own `Store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel.serve import GatewayThread
from gateway.config import GatewayConfig
from tests.support.net import free_port
from tests.support.wait import eventually

APP_KEY = "sk-test-app"
OTHER_KEY = "sk-test-other"
ADMIN_KEY = "sk-test-admin"
FINANCE_KEY = "sk-test-finance"
REVIEWER_KEY = "sk-test-reviewer"
CORS_ORIGIN = "https://app.example.com"  # the one browser origin the test gateway allows


# Routes the routing tests exercise, in a policy file the gateway hot-reloads.
ROUTING_POLICY = """
models:
  student-ok: {model: openai/student-ok, api_base: "%(up)s",
               price: {input_per_million: "0.01", output_per_million: "0.02"}}
  student-dear: {model: openai/student-dear, api_base: "%(up)s",
                 price: {input_per_million: "0.50", output_per_million: "1.00"}}
  student-broken: {model: openai/broken-student, api_base: "%(up)s",
                   price: {input_per_million: "0.01", output_per_million: "0.02"}}
  student-slow: {model: openai/slow-student, api_base: "%(up)s",
                 price: {input_per_million: "0.01", output_per_million: "0.02"}}
  native-responses: {model: openai/gpt-4o, api_base: "%(up)s", responses_api: true}
  fewshot-small: {model: openai/fewshot-small, api_base: "%(up)s",
                  price: {input_per_million: "0.15", output_per_million: "0.60"}}
  fewshot-blind: {model: openai/fewshot-blind, api_base: "%(up)s",
                  price: {input_per_million: "0.15", output_per_million: "0.60"}}
routes:
  - name: fewshot
    match: {models: [fewshot]}
    teacher: teacher
    candidates:
      - {name: fs, model: fewshot-small, kind: few_shot, examples: 4}
      - {name: blind, model: fewshot-blind, kind: few_shot, examples: 4, canary_share: 0.1}
    gate: {metric: json_field_match, fields: [intent], threshold: 0.8, min_examples: 20}
  - name: native
    match: {models: [native-responses]}
    teacher: native-responses
  - name: promoted
    match: {models: [promoted]}
    teacher: teacher
    candidates: [{name: dear, model: student-dear}, {name: ok, model: student-ok}]
    audit: {share: 1.0}
  - name: judged
    match: {models: [judged]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
    gate: {metric: llm_judge, threshold: 0.8, min_examples: 20}
    audit: {share: 1.0}
  - name: student-crash
    match: {models: [student-crash]}
    teacher: teacher
    candidates: [{name: broken, model: student-broken}]
  - name: student-hang
    match: {models: [student-hang]}
    teacher: teacher
    candidates: [{name: slow, model: student-slow}]
    retries: {student_timeout_s: 0.5}
  - name: shadowed
    match: {models: [shadowed]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
    rollout: {shadow_share: 1.0}
  - name: shadowed-selective
    match: {models: [shadowed-selective]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
    rollout: {shadow_share: 1.0}
    escalation: {min_confidence: 0.6}
  - name: teacher-down
    match: {models: [teacher-down]}
    teacher: dead
    fallbacks: [teacher]
  - name: limited
    match: {models: [limited]}
    teacher: teacher
    rate_limit: {requests_per_minute: 3}
  - name: cached
    match: {models: [cached]}
    teacher: teacher
    cache: {ttl_s: 1.5, max_entries: 100}
  - name: cached-semantic
    match: {models: [cached-semantic]}
    teacher: teacher
    cache: {ttl_s: 60, semantic: {threshold: 0.8}}
    audit: {share: 1.0, window: 3, min_agreement: 0.9}
    rollout: {canary_min_examples: 3}
  - name: cached-logmask
    match: {models: [cached-logmask]}
    teacher: teacher
    cache: {}
    guardrails:
      input: [{rail: pii, action: mask, mask_upstream: false}]
  - name: paced
    match: {models: [paced]}
    teacher: teacher
    rate_limit: {requests_per_minute: 30}
  - name: intranet-only
    match: {models: [intranet-model], apps: [intranet]}
    teacher: teacher
  - name: sessions
    match: {models: [sessions]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok, canary_share: 0.5}]
  - name: careful
    match: {models: [careful]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
    escalation: {min_confidence: 0.6}
  - name: fitted
    match: {models: [fitted]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
  - name: novel
    match: {models: [novel]}
    teacher: teacher
    candidates: [{name: ok, model: student-ok}]
    escalation: {max_prompt_distance: 0.6}
  - name: guarded-mask
    match: {models: [guarded-mask]}
    teacher: teacher
    guardrails:
      input: [{rail: pii, action: mask}]
      output: [{rail: pii, action: mask}]
  - name: guarded-logmask
    match: {models: [guarded-logmask]}
    teacher: teacher
    guardrails:
      input: [{rail: pii, action: mask, mask_upstream: false}]
  - name: guarded-block
    match: {models: [guarded-block]}
    teacher: teacher
    guardrails:
      input: [{rail: jailbreak, action: block}]
  - name: guarded-refuse
    match: {models: [guarded-refuse]}
    teacher: teacher
    guardrails:
      block_with: refusal
      refusal_message: "Sorry, I can't discuss that."
      input: [{rail: deny_topics, topics: {politics: [election, senator]}}]
  - name: guarded-flag
    match: {models: [guarded-flag]}
    teacher: teacher
    guardrails:
      input: [{rail: pii, action: flag}]
      output: [{rail: deny_topics, action: flag, topics: {weather: [rain]}}]
  - name: guarded-selfcheck
    match: {models: [guarded-selfcheck]}
    teacher: teacher
    guardrails:
      input: [{rail: self_check, action: block}]
  - name: guarded-attack-flag
    match: {models: [guarded-attack-flag]}
    teacher: teacher
    guardrails:
      input: [{rail: prompt_attack, action: flag, target_fpr: 0.02}]
  - name: guarded-attack-block
    match: {models: [guarded-attack-block]}
    teacher: teacher
    guardrails:
      input: [{rail: jailbreak, action: flag}, {rail: prompt_attack, action: block}]
"""

# The route the hot-reload test edits, in a file of its own: no other test routes through it.
HOT_POLICY = """
routes:
  - name: hot
    match: {models: [hot]}
    teacher: teacher
"""

# (route, candidate) -> state for the routes above, written where the distiller writes them.
ROUTING_STATES = {
    ("promoted", "dear"): "promoted",
    ("promoted", "ok"): "promoted",
    ("student-crash", "broken"): "promoted",
    ("judged", "ok"): "promoted",
    ("student-hang", "slow"): "promoted",
    ("shadowed", "ok"): "shadow",
    ("shadowed-selective", "ok"): "shadow",
    ("careful", "ok"): "promoted",
    ("sessions", "ok"): "canary",
    ("novel", "ok"): "promoted",
}


def gateway_config(data_dir: Path, upstream_url: str, **overrides: Any) -> GatewayConfig:
    policy = data_dir / "routing.policy.yaml"
    policy.write_text(ROUTING_POLICY % {"up": upstream_url})
    hot = data_dir / "hot.policy.yaml"
    hot.write_text(HOT_POLICY)
    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "server": {"port": free_port(), "cors": {"allow_origins": [CORS_ORIGIN]}},
        "log": {"flush_interval_s": 0.05, "replay_interval_s": 0.2},
        "router": {"policy_reload_s": 0.1, "state_refresh_s": 0.1},
        "policies": [str(policy), str(hot)],
        "models": {
            "teacher": {
                "model": "openai/gpt-4o",
                "api_base": upstream_url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
                "timeout_s": 2,
            },
            "cheap": {
                "model": "openai/local-cheap",
                "api_base": upstream_url,
                "price": {"input_per_million": "0.10", "output_per_million": "0.20"},
            },
            "embedder": {"model": "openai/text-embedding-3-small", "api_base": upstream_url},
            # Nothing listens on port 9: an upstream that is down.
            "dead": {"model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1"},
        },
        "apps": {
            "shop": {"team": "retail", "train_on_traffic": True},
            "intranet": {"team": "it", "train_on_traffic": False},
        },
        "keys": [
            {"id": "shop-key", "key": APP_KEY, "app": "shop"},
            {"id": "intranet-key", "key": OTHER_KEY, "app": "intranet"},
            {"id": "admin", "key": ADMIN_KEY, "role": "admin"},
            {"id": "finance", "key": FINANCE_KEY, "role": "finance"},
            {"id": "reviewer", "key": REVIEWER_KEY, "role": "reviewer"},
        ],
        "routes": [
            {"name": "support", "match": {"models": ["gpt-4o", "support"]}, "teacher": "teacher"},
            {"name": "cheap", "match": {"models": ["cheap"]}, "teacher": "cheap"},
            {
                "name": "embed",
                "match": {"models": ["text-embedding-3-small"]},
                "teacher": "embedder",
            },
            {"name": "dead", "match": {"models": ["dead"]}, "teacher": "dead"},
        ],
    }
    raw.update(overrides)
    return GatewayConfig.model_validate(raw)


class RunningGateway(GatewayThread):
    """A gateway in this process, with the reads tests make of the store it owns."""

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        self.state.writer.flush()
        return self.state.store.query_dicts(sql, params)

    def row(self, request_id: str, within_s: float = 10.0) -> dict[str, Any]:
        """The request's row. A stream's row is written just after its last chunk reaches
        the client, so it may trail the client by a moment: wait for it."""
        sql = "SELECT * FROM requests WHERE request_id = {id:UUID}"
        rows = eventually(lambda: self.rows(sql, id=request_id), within_s)
        assert len(rows) == 1, f"expected one row for {request_id}, got {len(rows)}"
        return rows[0]

    def rows_eventually(
        self, sql: str, count: int, within_s: float = 10.0, **params: Any
    ) -> list[dict[str, Any]]:
        """`count` rows of `sql` once they have all been written (background rows trail)."""
        rows = eventually(
            lambda: self.rows(sql, **params), within_s, until=lambda r: len(r) >= count
        )
        assert len(rows) == count, f"expected {count} rows, got {len(rows)}: {rows}"
        return rows


def with_anthropic_route(config: GatewayConfig, upstream_url: str) -> GatewayConfig:
    """`config` plus model and route `claude`: an `anthropic/` teacher on the fake upstream
    (its key from `$FAKE_ANTHROPIC_KEY`), which the gateway calls natively."""
    config.models["claude"] = config.models["teacher"].model_copy(
        update={
            "model": "anthropic/claude-sonnet-4-5",
            "api_base": upstream_url.removesuffix("/v1"),
            "api_key_env": "FAKE_ANTHROPIC_KEY",
        }
    )
    route = config.routes[0].model_copy(
        update={
            "name": "claude",
            "teacher": "claude",
            "match": config.routes[0].match.model_copy(update={"models": ["claude"]}),
        }
    )
    config.routes.append(route)
    return config


def start_gateway(config: GatewayConfig) -> RunningGateway:
    """A gateway (with its embedded companions) in this process, on a real socket."""
    gw = RunningGateway(config)
    gw.start(30)
    return gw
