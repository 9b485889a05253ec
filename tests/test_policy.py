"""Policy files: what loads, what is rejected (with file, line and field), how routes match,
and how candidates share traffic."""

from __future__ import annotations

import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contracts.errors import ApiError
from contracts.model_config import ModelConfig
from contracts.openai_shapes import fingerprint_system_prompt
from contracts.policy import PolicyError, Route, load_policies
from contracts.pricing import price_table
from gateway.routing import CandidateStates, RequestFacts, Router

MODELS = {
    "teacher": ModelConfig(model="openai/gpt-4o"),
    "backup": ModelConfig(model="openai/gpt-4o-mini"),
    "small": ModelConfig(model="openai/s", price={"input_per_million": "0.1"}),
    "tiny": ModelConfig(model="openai/t", price={"input_per_million": "0.05"}),
}


def _write(tmp_path: Path, text: str, name: str = "p.policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _router(tmp_path: Path, text: str, states: dict | None = None, seed: int = 7) -> Router:
    policies = load_policies([_write(tmp_path, text)], MODELS)
    return Router(
        policies, price_table(policies.models), CandidateStates(states or {}), random.Random(seed)
    )


def _facts(model: str = "m", app: str = "shop", team: str = "retail", **kw) -> RequestFacts:
    return RequestFacts(
        app=app,
        team=team,
        model=model,
        headers=kw.get("headers", {}),
        metadata=kw.get("metadata", {}),
        tags=tuple(kw.get("tags", ())),
        system_fingerprint=kw.get("fp", ""),
    )


# --- rejected edits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "routes:\n  - name: a\n    teacher: teacher\n    colour: red\n",
            4,
            "routes.0.colour: Extra inputs are not permitted",
        ),
        (
            "routes:\n  - name: a\n    teacher: teacher\n    audit: {share: lots}\n",
            4,
            "routes.0.audit.share: Input should be a valid number",
        ),
        (
            "routes:\n  - name: a\n    teacher: gpt-7\n",
            3,
            "routes.0.teacher: unknown model 'gpt-7'",
        ),
        (
            "routes:\n  - name: a\n    teacher: teacher\n"
            "    candidates: [{name: c, model: nope}]\n",
            4,
            "unknown model 'nope'",
        ),
        (
            "routes:\n  - name: a\n    teacher: teacher\n    candidates:\n"
            "      - {name: c1, model: small, canary_share: 0.6}\n"
            "      - {name: c2, model: tiny, canary_share: 0.5}\n",
            4,
            "shares over 100%: canary shares of the candidates add up to 110% (60% + 50%)",
        ),
        (
            "routes:\n  - name: a\n    teacher: teacher\n    rollout: {shadow_share: 1.5}\n",
            4,
            "routes.0.rollout.shadow_share: Input should be less than or equal to 1",
        ),
        (
            "routes:\n  - name: a\n    match: {apps: [shop]}\n    teacher: teacher\n"
            "  - name: b\n    match: {apps: [shop], models: [m]}\n    teacher: teacher\n",
            6,
            "route 'b' can never match: route 'a'",
        ),
        (
            "routes:\n  - name: all\n    teacher: teacher\n  - name: later\n"
            "    match: {models: [m]}\n    teacher: teacher\n",
            5,
            "route 'later' can never match",
        ),
        (
            "routes:\n  - name: a\n    teacher: teacher\n  - name: a\n    match: {models: [x]}\n"
            "    teacher: teacher\n",
            4,
            "duplicate route 'a'",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "unknown-teacher",
        "unknown-candidate-model",
        "shares-over-100",
        "share-over-1",
        "shadowed-route",
        "after-default",
        "duplicate",
    ],
)
def test_invalid_edit_is_rejected_with_line(tmp_path: Path, text, line, fragment) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policies([path], MODELS)
    message = str(info.value)
    assert f"{path}:{line}:" in message, message
    assert fragment in message, message


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"p\.policy\.yaml"):
        load_policies([_write(tmp_path, "routes: [\n")], MODELS)


def test_example_policies_are_valid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "policy", "check", "router_policies/gateway.yaml"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ")


def test_policy_check_says_what_each_stage_needs_and_which_cannot_pass() -> None:
    from distiller.evidence import rollout_notes

    route = Route.model_validate(
        {
            "name": "r",
            "teacher": "teacher",
            "candidates": [{"name": "c", "model": "small"}],
            "gate": {"threshold": 0.97, "min_coverage": 0.5},
            "rollout": {"shadow_share": 0.1, "canary_min_examples": 300},
            "audit": {"window": 200},
        }
    )
    shadow, canary = rollout_notes(route)
    assert rollout_notes(
        route.model_copy(
            update={"rollout": route.rollout.model_copy(update={"canary_min_examples": 10})}
        )
    )[1] == (
        "canary needs ≥ 125 audits for a lower bound ≥ the audit target 0.97 (a perfect "
        "record): about 5000 requests at canary_share 0.1 and audit.canary_share 0.5, within "
        "stage_timeout_h 72"
    )
    assert shadow.startswith("shadow needs ≥ 125 answers kept (min_coverage 0.5)")
    assert "about 2500 requests at shadow_share 0.1" in shadow
    # The canary reads every audit since it entered the stage, however many its target needs.
    assert canary.startswith("canary needs ≥ 300 audits"), canary
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "policy", "check", "router_policies/gateway.yaml"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "note: route banking-intents: shadow needs ≥ 125 answers kept" in out.stdout


def test_a_lone_policy_file_check_names_the_gateway_config_it_needs() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "policy",
            "check",
            "router_policies/support-triage.policy.yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "unknown model 'gpt-4o-mini'" in out.stderr
    assert (
        "hint: " in out.stderr
        and "flywheel policy check router_policies/gateway.yaml" in out.stderr
    )


def test_policy_check_cli_fails_with_location(tmp_path: Path) -> None:
    bad = _write(tmp_path, "routes:\n  - name: a\n    teacher: teacher\n    colour: red\n")
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "policy", "check", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert f"{bad}:4: routes.0.colour" in out.stderr


def test_a_catch_all_route_lists_its_teacher_and_answers_any_name(tmp_path: Path) -> None:
    router = _router(
        tmp_path,
        """
        routes:
          - name: named
            match: {models: [x], apps: [shop]}
            teacher: teacher
          - name: rest
            match: {teams: [retail]}
            teacher: small
            fallbacks: [backup]
        """,
    )
    assert router.aliases("shop", "retail") == ["backup", "small", "x"]
    assert router.aliases("intranet", "finance") == []
    assert router.answers("nope-model", "shop", "retail"), "the catch-all serves it"
    assert not router.answers("nope-model", "intranet", "finance")
    assert router.answers("x", "shop", "ops") and not router.answers("y", "shop", "ops")


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    text = "routes:\n  - name: a\n    teacher: teacher\n"
    v1 = load_policies([_write(tmp_path, text)], MODELS).version
    assert load_policies([_write(tmp_path, text)], MODELS).version == v1
    v2 = load_policies([_write(tmp_path, text.replace("teacher\n", "backup\n"))], MODELS).version
    assert v2 != v1


# --- matching --------------------------------------------------------------------------------

ROUTES = """
routes:
  - name: by-header
    match: {headers: {X-Flywheel-Workload: triage}}
    teacher: teacher
  - name: by-prompt
    match: {system_prompts: [%(fp)s]}
    teacher: teacher
  - name: by-app-and-model
    match: {apps: [shop], models: [gpt-4o]}
    teacher: teacher
  - name: by-team
    match: {teams: [it]}
    teacher: backup
  - name: by-meta-and-tags
    match: {metadata: {feature: faq}, tags: [beta]}
    teacher: teacher
  - name: default
    teacher: backup
"""
FP = fingerprint_system_prompt([{"role": "system", "content": "You  triage TICKETS."}])


@pytest.mark.parametrize(
    ("facts", "route"),
    [
        (_facts(headers={"x-flywheel-workload": "triage"}), "by-header"),
        (_facts(fp=FP), "by-prompt"),
        (_facts(model="gpt-4o", headers={"x-flywheel-workload": "triage"}), "by-header"),
        (_facts(model="gpt-4o"), "by-app-and-model"),
        (_facts(model="gpt-4o", app="crm", team="it"), "by-team"),
        (_facts(metadata={"feature": "faq"}, tags=["beta", "x"]), "by-meta-and-tags"),
        (_facts(metadata={"feature": "faq"}), "default"),
        (_facts(model="gpt-4o", app="crm"), "default"),
    ],
)
def test_first_match_wins(tmp_path: Path, facts, route) -> None:
    router = _router(tmp_path, ROUTES % {"fp": FP})
    assert router.match(facts).name == route


def test_fingerprint_ignores_case_and_spacing() -> None:
    again = fingerprint_system_prompt([{"role": "system", "content": "you triage\ntickets."}])
    assert again == FP
    assert fingerprint_system_prompt([{"role": "user", "content": "hi"}]) == ""


def test_no_match_is_model_not_found(tmp_path: Path) -> None:
    router = _router(
        tmp_path, "routes:\n  - name: a\n    match: {models: [x]}\n    teacher: teacher\n"
    )
    with pytest.raises(ApiError) as info:
        router.decide(_facts(model="y"))
    assert info.value.status == 404 and info.value.code == "model_not_found"


def test_explain_says_why(tmp_path: Path) -> None:
    router = _router(tmp_path, ROUTES % {"fp": FP})
    out = router.explain(_facts(model="gpt-4o", app="crm", team="it"))
    assert out["route"] == "by-team"
    assert out["matched_because"] == ["team 'it' in ['it']"]
    assert [s["route"] for s in out["skipped_routes"]] == [
        "by-header",
        "by-prompt",
        "by-app-and-model",
    ]
    assert "app 'crm' not in ['shop']" in out["skipped_routes"][2]["why_not"]
    assert out["would_serve"] == {
        "model": "backup",
        "served_by": "teacher",
        "why": "no candidate is in canary or promoted",
        "shares": [],
    }


# --- candidates and shares -------------------------------------------------------------------

CANDIDATES = """
routes:
  - name: r
    teacher: teacher
    fallbacks: [backup]
    candidates: [{name: small, model: small}, {name: tiny, model: tiny}]
    rollout: {canary_share: %(canary)s, shadow_share: %(shadow)s}
    audit: {share: %(audit)s}
"""


def _within(count: int, n: int, p: float) -> bool:
    """Inside 4.5 standard deviations of a binomial: fails by chance ~1 in 150,000 runs."""
    return abs(count - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))


def test_two_canaries_split_by_their_shares(tmp_path: Path) -> None:
    text = CANDIDATES.replace(
        "candidates: [{name: small, model: small}, {name: tiny, model: tiny}]",
        "candidates: [{name: small, model: small, canary_share: 0.3}, "
        "{name: tiny, model: tiny, canary_share: 0.2}]",
    )
    router = _router(
        tmp_path,
        text % {"canary": 0.1, "shadow": 0, "audit": 0},
        {("r", "small"): "canary", ("r", "tiny"): "canary"},
    )
    n = 4000
    served = [router.decide(_facts()).primary.model_name for _ in range(n)]
    assert _within(served.count("tiny"), n, 0.2) and _within(served.count("small"), n, 0.3)
    assert _within(served.count("teacher"), n, 0.5)


def test_no_passed_candidate_means_teacher(tmp_path: Path) -> None:
    router = _router(
        tmp_path,
        CANDIDATES % {"canary": 0.5, "shadow": 0, "audit": 0},
        {("r", "small"): "failed", ("r", "tiny"): "trained"},
    )
    d = router.decide(_facts())
    assert d.primary.model_name == "teacher"
    assert d.primary.reason == "teacher: no candidate has passed its gate"
    assert [f.model_name for f in d.fallbacks] == ["backup"]


def test_cheapest_promoted_serves_and_falls_back_to_teacher(tmp_path: Path) -> None:
    router = _router(
        tmp_path,
        CANDIDATES % {"canary": 0.1, "shadow": 0, "audit": 0},
        {("r", "small"): "promoted", ("r", "tiny"): "promoted"},
    )
    d = router.decide(_facts())
    assert (d.primary.model_name, d.primary.served_by) == ("tiny", "student")
    assert d.primary.reason == "promoted: tiny"
    assert [f.model_name for f in d.fallbacks] == ["teacher", "backup"]


def test_cheapest_is_per_request_so_a_few_shot_prompt_pays_for_its_examples(
    tmp_path: Path,
) -> None:
    """`tiny` is half `small`'s price per token, but shown 8 examples its prompt is 17
    questions long: the fine-tuned `small` is the cheaper request and serves. A fine-tuned
    `tiny` is cheaper and serves."""
    text = CANDIDATES % {"canary": 0.1, "shadow": 0, "audit": 0}
    promoted = {("r", "small"): "promoted", ("r", "tiny"): "promoted"}
    few_shot = text.replace(
        "{name: tiny, model: tiny}", "{name: tiny, model: tiny, kind: few_shot}"
    )
    assert few_shot != text
    assert _router(tmp_path, few_shot, promoted).decide(_facts()).primary.model_name == "small"
    assert _router(tmp_path, text, promoted).decide(_facts()).primary.model_name == "tiny"
    prices = price_table(MODELS)
    assert prices["tiny"].nominal_request(17) > prices["small"].nominal_request(1)


def test_shares_are_within_statistical_bounds(tmp_path: Path) -> None:
    n = 4000
    router = _router(
        tmp_path,
        CANDIDATES % {"canary": 0.1, "shadow": 0.25, "audit": 0.2},
        {("r", "small"): "canary", ("r", "tiny"): "shadow"},
    )
    decisions = [router.decide(_facts()) for _ in range(n)]
    students = [d for d in decisions if d.primary.served_by == "student"]
    assert all(d.primary.model_name == "small" for d in students), "shadow never serves"
    assert all(d.primary.reason == "canary 10%: small" for d in students)
    assert _within(len(students), n, 0.1)
    shadows = sum(1 for d in decisions if d.shadow is not None)
    assert all(d.shadow.model_name == "tiny" for d in decisions if d.shadow)
    assert _within(shadows, n, 0.25)
    audits = sum(1 for d in students if d.audit)
    assert _within(audits, len(students), 0.5), "canary answers: audit.canary_share (0.5)"
    assert not any(d.audit for d in decisions if d.primary.served_by == "teacher")


# --- the typed training section and explain = decide -----------------------------------------


def test_training_section_rejects_unknown_keys_with_line(tmp_path: Path) -> None:
    text = """
routes:
  - name: r
    teacher: teacher
    training:
      min_new_examples: 50
      epoch: 3
"""
    path = _write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policies([path], MODELS)
    assert f"{path}:6: routes.0.training.epoch" in str(info.value)
    good = load_policies(
        [_write(tmp_path, text.replace("epoch:", "epochs:"), "ok.policy.yaml")], MODELS
    )
    assert good.routes[0].training.epochs == 3 and good.routes[0].training.min_new_examples == 50


PROMOTED_AND_CANARY = """
routes:
  - name: r
    teacher: teacher
    candidates:
      - {name: dear, model: small}
      - {name: cheap, model: tiny, canary_share: 0.3}
"""


def test_explain_names_who_decide_sends_to(tmp_path: Path) -> None:
    """A promoted candidate takes every request even when a cheaper one is in canary:
    explain must say so, because it reads the same plan decide draws from."""
    router = _router(
        tmp_path, PROMOTED_AND_CANARY, {("r", "dear"): "promoted", ("r", "cheap"): "canary"}
    )
    served = {router.decide(_facts()).primary.reason for _ in range(200)}
    assert served == {"promoted: dear"}
    would = router.explain(_facts())["would_serve"]
    assert would["model"] == "small" and would["served_by"] == "student"
    assert would["shares"] == [{"candidate": "dear", "model": "small", "share": 1.0}]
    # With only the canary left, explain reports its real share and the teacher's rest.
    router = _router(tmp_path, PROMOTED_AND_CANARY, {("r", "cheap"): "canary"})
    would = router.explain(_facts())["would_serve"]
    assert "cheap 30%" in would["why"] and "the rest (70%) to teacher" in would["why"]
    draws = [router.decide(_facts()).primary.served_by for _ in range(2000)]
    assert _within(draws.count("student"), 2000, 0.3)


def test_a_config_checked_with_its_own_policy_files_reports_its_version() -> None:
    """`policy check router_policies/*.yaml` names the config and the files it loads: one
    check, the same policy version as checking the config alone."""
    from flywheel.policy_cli import check_files

    alone = check_files([Path("router_policies/gateway.yaml")])
    globbed = check_files(sorted(Path("router_policies").glob("*.yaml")))
    assert globbed.version == alone.version
    assert [r.name for r in globbed.routes] == [r.name for r in alone.routes]
