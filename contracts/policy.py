"""Routing policies: the YAML admins edit in `router_policies/`, typed and checked.

A policy file holds `routes` (and may add `models`). Routes from all loaded files are tried
in order (the gateway config's inline routes first, then files in the order given); the
first match wins. A route with an empty `match` is a default route.

Invariant: a `PolicySet` that loaded without `PolicyError` is servable: every model it names
exists and is priced, every share is a fraction and shares that split the same traffic sum to
at most 100%, and no route is unreachable behind an earlier one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts.bases import CandidateKind, Retriever, base_problem, default_base
from contracts.budgets import Budget
from contracts.model_config import ModelConfig
from contracts.rails import Guardrails
from contracts.training import Training
from contracts.yaml_source import (
    ConfigError,
    format_validation_error,
    line_of,
    load_yaml_with_lines,
    strip_lines,
)

Share = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    """All given conditions must hold; an empty list or map means "any"."""

    models: list[str] = Field(default_factory=list)
    apps: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    system_prompts: list[str] = Field(
        default_factory=list,
        description="fingerprints (`flywheel policy fingerprint`) of the system prompt",
    )

    @model_validator(mode="after")
    def _lower_headers(self) -> Match:
        self.headers = {k.lower(): v for k, v in self.headers.items()}
        return self

    def is_default(self) -> bool:
        return not any(
            (
                self.models,
                self.apps,
                self.teams,
                self.headers,
                self.metadata,
                self.tags,
                self.system_prompts,
            )
        )

    def covers(self, other: Match) -> bool:
        """True when every request `other` matches is also matched by this one."""

        def lists(mine: list[str], theirs: list[str]) -> bool:
            return not mine or (bool(theirs) and set(theirs) <= set(mine))

        return (
            lists(self.models, other.models)
            and lists(self.apps, other.apps)
            and lists(self.teams, other.teams)
            and lists(self.system_prompts, other.system_prompts)
            and self.headers.items() <= other.headers.items()
            and self.metadata.items() <= other.metadata.items()
            and set(self.tags) <= set(other.tags)
        )


class Candidate(_Strict):
    """A student slot: the distiller trains it from `base`, `model` serves it.

    `kind: lm` generates answers (SFT: LoRA on a pretrained base, full fine-tuning on a tiny
    one); `kind: classifier` answers with one of the labels the teacher's answers form (a
    classification head on an encoder or LM backbone), for routes whose answers are a
    closed set; `kind: structured` answers JSON whose fields are labels or spans copied from
    the user's text (a label head per field and a token tagger on an encoder), for routes
    whose answers are JSON objects; `kind: few_shot` is not trained: `model` (a small
    upstream, or a base on a student server) is prompted with the `examples` curated
    examples most like the request, found by `retriever` in an index the distiller builds
    from the route's dataset."""

    name: str
    model: str
    kind: CandidateKind = "lm"
    base: str = Field(
        default="", description="a named base (`flywheel bases`), a hub id or a local path"
    )
    canary_share: Share | None = Field(
        default=None, ge=0, le=1, description="this candidate's canary share (default: route's)"
    )
    examples: int = Field(
        default=8, ge=1, le=64, description="few_shot: curated examples put in each prompt"
    )
    retriever: Retriever = Field(
        default="ngram",
        description="few_shot: how examples are found: `ngram` (hashed character n-grams, "
        "sub-millisecond) or `minilm-l6` (sentence embeddings, ~25 ms a query on one core)",
    )

    @field_validator("base")
    @classmethod
    def _known_base(cls, base: str, info: ValidationInfo) -> str:
        problem = base_problem(base, info.data.get("kind", "lm"))
        if problem is not None:
            raise ValueError(problem)
        return base

    @model_validator(mode="after")
    def _few_shot_fields(self) -> Candidate:
        stray = {"examples", "retriever"} & self.model_fields_set
        if self.kind != "few_shot" and stray:
            raise ValueError(f"{', '.join(sorted(stray))}: only for `kind: few_shot` candidates")
        return self

    @property
    def prompts_per_request(self) -> int:
        """A request's prompt length in questions: a few-shot prompt also carries `examples`
        questions and their answers (what ranks candidates by the cost of one request)."""
        return 2 * self.examples + 1 if self.kind == "few_shot" else 1

    @property
    def resolved_base(self) -> str:
        """What the job starts from: a base to train, or a few-shot candidate's retriever."""
        if self.kind == "few_shot":
            return self.retriever
        return self.base or default_base(self.kind)


class Gate(_Strict):
    """Plain gate: the Wilson lower bound of agreement over the whole eval set reaches
    `threshold`. Selective gate (`min_coverage` set): at the confidence threshold the eval
    set picks for `threshold`, the lower bound over the answers the candidate keeps reaches
    `threshold` and it keeps at least `min_coverage` of them; the router then escalates
    below that confidence (no hand-set `escalation.min_confidence` needed). The threshold is
    chosen on part of the eval set and certified on the rest (`certify_share`)."""

    metric: Literal["exact_match", "json_field_match", "chrf", "llm_judge"] = "exact_match"
    fields: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.9, ge=0, le=1)
    min_examples: int = Field(default=100, ge=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    min_coverage: float | None = Field(
        default=None, gt=0, le=1, description="selective gate: least share of traffic kept"
    )
    certify_share: float | None = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="selective gate: share of the eval set (by a stable hash of the request) "
        "that certifies the threshold the rest chose: the certified figure is measured on rows "
        "the choice never saw, and the gate fails when they agree or keep significantly less "
        "than the target (null: one set chooses and certifies)",
    )
    recertify: bool = Field(
        default=True,
        description="when the route's teacher or judge changes, ask the new teacher the "
        "eval prompts of each run in the rollout and gate it again (false: only flag it)",
    )


class Rollout(_Strict):
    """After the gate: shadow (copies only), canary (a share served), promoted (all)."""

    shadow_share: Share = Field(default=0.1, ge=0, le=1)
    canary_share: Share = Field(default=0.1, ge=0, le=1)
    shadow_min_examples: int = Field(default=50, ge=0)
    canary_min_examples: int = Field(default=100, ge=0)
    stage_timeout_h: float = Field(
        default=72,
        gt=0,
        description="how long a stage waits for the evidence its target needs before it "
        "fails, saying how many answers it needed (a selective canary is first recalibrated "
        "to a threshold its audits prove, when one keeps gate.min_coverage)",
    )
    max_p99_ratio: float | None = Field(
        default=1.0,
        gt=0,
        description="canary → promoted is held while the student's p99 latency exceeds the "
        "teacher's times this (1.0: no slower than the teacher; 3: a slower, far cheaper "
        "student is fine; null: no ratio)",
    )
    max_p99_ms: float | None = Field(
        default=None, gt=0, description="held while the student's p99 exceeds this (null: none)"
    )
    latency_window_h: float = Field(
        default=1,
        gt=0,
        description="latencies judged over this recent window (early slow answers age out)",
    )


class Audit(_Strict):
    share: Share = Field(default=0.05, ge=0, le=1)
    canary_share: Share = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share audited while in canary: the evidence promotion needs, sooner (at "
        "a 0.97 target a perfect record needs 125 audits: 2,500 requests at canary_share "
        "0.1, against 25,000 at the steady share 0.05); `share` once promoted",
    )
    min_agreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="the agreement audits hold the served answers to (default: the gate's "
        "threshold, the figure the gate certified)",
    )
    window: int = Field(default=200, ge=1)


class Escalation(_Strict):
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    max_prompt_distance: float | None = Field(default=None, ge=0)


class Retries(_Strict):
    attempts: int = Field(default=1, ge=1, le=10)
    student_timeout_s: float = Field(default=10, gt=0)


class RateLimit(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    when_redis_down: Literal["open", "closed"] = Field(
        default="open",
        description="with `redis.url` set: admit (open) or refuse with 503 (closed) while the "
        "shared buckets cannot be read",
    )


class SemanticCache(_Strict):
    """Opt-in similarity matching: the last user turn may differ (cosine similarity of hashed
    character n-grams at least `threshold`), everything else must match exactly. Its hits
    are audited by the teacher at the route's `audit.share` and rolled back (exact matching
    goes on) when audit agreement falls below `audit.min_agreement`, as a student would be;
    a changed threshold starts it again."""

    threshold: float = Field(default=0.9, gt=0, le=1)

    @property
    def name(self) -> str:
        """What its audits, state and events go by: a new threshold is a fresh start."""
        return f"semantic-cache@{self.threshold:g}"


class Cache(_Strict):
    """Exact-match response cache for a route: a repeated request (same model, messages,
    tools, response_format and sampling parameters) is answered without an upstream call.
    Only `temperature: 0` requests (and embeddings) are cached, or a request that opts in
    with the header `x-flywheel-cache: allow`; `x-flywheel-cache: skip` bypasses it."""

    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    semantic: SemanticCache | None = Field(
        default=None, description="off unless given: near-identical questions hit too"
    )


class Route(_Strict):
    name: str
    match: Match = Field(default_factory=Match)
    teacher: str
    fallbacks: list[str] = Field(default_factory=list, description="tried in order on error")
    candidates: list[Candidate] = Field(default_factory=list)
    gate: Gate = Field(default_factory=Gate)
    rollout: Rollout = Field(default_factory=Rollout)
    audit: Audit = Field(default_factory=Audit)
    escalation: Escalation = Field(default_factory=Escalation)
    retries: Retries = Field(default_factory=Retries)
    rate_limit: RateLimit | None = None
    cache: Cache | None = Field(default=None, description="off unless given")
    guardrails: Guardrails = Field(default_factory=Guardrails)
    training: Training = Field(default_factory=Training, description="read by the distiller")

    def escalation_threshold(self, fitted: float | None) -> float | None:
        """The confidence below which a student's answer escalates: the route's hand-set
        `escalation.min_confidence` when set, else the threshold its selective gate
        `fitted` (the router, the shadows and the distiller read it alike)."""
        hand_set = self.escalation.min_confidence
        return fitted if hand_set is None else hand_set

    def audit_target(self) -> float:
        """What audits hold served answers to: `audit.min_agreement`, else the gate's."""
        if self.audit.min_agreement is None:
            return self.gate.threshold
        return self.audit.min_agreement

    def canary_share(self, candidate: Candidate) -> float:
        """The candidate's own `canary_share` when set (0 included: it skips canary), else
        the route's: the one reading the router, the distiller and the checks share."""
        if candidate.canary_share is None:
            return self.rollout.canary_share
        return candidate.canary_share


class PolicyFile(_Strict):
    description: str = ""
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    budgets: list[Budget] = Field(
        default_factory=list, description="spend budgets, hot-reloaded with the file"
    )


class PolicyError(ConfigError):
    """One or more problems, each as `file:line: field.path: message`."""


@dataclass
class PolicySet:
    """Routes in matching order, the models they use, and a content hash as version."""

    routes: list[Route]
    models: dict[str, ModelConfig]
    version: str
    files: list[str] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)


@dataclass
class _Source:
    path: str
    tree: Any
    base_path: tuple[str | int, ...] = ()


def _problem(src: _Source, path: tuple[str | int, ...], message: str) -> str:
    line = line_of(src.tree, src.base_path + path)
    where = f"{src.path}:{line}" if line else src.path
    dotted = ".".join(str(p) for p in src.base_path + path)
    return f"{where}: {dotted}: {message}"


def _check(routes: list[tuple[_Source, int, Route]], models: dict[str, ModelConfig]) -> list[str]:
    problems: list[str] = []
    for src, i, route in routes:
        at = ("routes", i)
        for key, name in [("teacher", route.teacher)] + [("fallbacks", f) for f in route.fallbacks]:
            if name not in models:
                problems.append(_problem(src, (*at, key), f"unknown model {name!r}"))
        for j, cand in enumerate(route.candidates):
            if cand.model not in models:
                problems.append(
                    _problem(src, (*at, "candidates", j, "model"), f"unknown model {cand.model!r}")
                )
        shares = [route.canary_share(c) for c in route.candidates]
        if sum(shares) > 1:
            problems.append(
                _problem(
                    src,
                    (*at, "candidates"),
                    "shares over 100%: canary shares of the candidates add up to "
                    f"{sum(shares):.0%} ({' + '.join(f'{x:.0%}' for x in shares)})",
                )
            )
        if route.escalation.max_prompt_distance is not None and not route.candidates:
            problems.append(
                _problem(src, (*at, "escalation"), "escalation needs at least one candidate")
            )
    seen: dict[str, int] = {}
    for n, (src, i, route) in enumerate(routes):
        if route.name in seen:
            problems.append(_problem(src, ("routes", i, "name"), f"duplicate route {route.name!r}"))
        seen[route.name] = n
        for src_e, _, earlier in routes[:n]:
            if earlier.match.covers(route.match):
                problems.append(
                    _problem(
                        src,
                        ("routes", i, "match"),
                        f"route {route.name!r} can never match: route {earlier.name!r} "
                        f"({src_e.path}) comes first and matches everything it does",
                    )
                )
                break
    return problems


def _version(blobs: list[bytes]) -> str:
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()[:12]


def load_policies(
    files: list[Path],
    base_models: dict[str, ModelConfig] | None = None,
    inline: tuple[str, Any, list[Route]] | None = None,
) -> PolicySet:
    """Load and check policy files together. `inline` is (path, yaml tree, routes) of routes
    written in the gateway config itself; they come first."""
    problems: list[str] = []
    routes: list[tuple[_Source, int, Route]] = []
    budgets: list[Budget] = []
    models = dict(base_models or {})
    blobs: list[bytes] = []
    if inline is not None:
        src = _Source(inline[0], inline[1])
        routes += [(src, i, r) for i, r in enumerate(inline[2])]
        blobs.append(repr([r.model_dump() for r in inline[2]]).encode())
    for path in files:
        try:
            raw = path.read_bytes()
            tree = load_yaml_with_lines(path)
        except (OSError, ConfigError) as e:
            problems.append(f"{path}: {e}")
            continue
        except Exception as e:  # yaml.YAMLError and friends carry their own line
            problems.append(f"{path}: {e}")
            continue
        blobs.append(raw)
        try:
            policy = PolicyFile.model_validate(strip_lines(tree or {}))
        except ValidationError as e:
            problems.append(format_validation_error(path, tree, e))
            continue
        src = _Source(str(path), tree)
        for name, model in policy.models.items():
            models[name] = model
        routes += [(src, i, r) for i, r in enumerate(policy.routes)]
        budgets += policy.budgets
    if not problems:
        problems = _check(routes, models)
    if problems:
        raise PolicyError("\n".join(problems))
    return PolicySet(
        routes=[r for _, _, r in routes],
        models=models,
        version=_version(blobs),
        files=[str(p) for p in files],
        budgets=budgets,
    )
