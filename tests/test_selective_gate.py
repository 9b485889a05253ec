"""Named bases are checked in policies; the selective gate passes a student that is right
where it is confident and fails one that is not; the router escalates below the threshold
the gate fitted, with no `escalation.min_confidence` in the policy."""

from __future__ import annotations

import random
from pathlib import Path

import openai
import pytest

from contracts.bases import base_problem
from contracts.model_config import ModelConfig
from contracts.policy import PolicyError, load_policies
from distiller.evaluation import EvalReport, ExampleResult
from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.states import write_state
from tests.support.wait import eventually

MODELS = {"teacher": ModelConfig(model="openai/gpt-4o"), "s": ModelConfig(model="openai/s")}


@pytest.mark.parametrize(
    ("kind", "base", "problem"),
    [
        ("lm", "local:tiny-llama", "unknown local base 'local:tiny-llama'"),
        ("lm", "smollm2", "unknown base 'smollm2'"),
        ("lm", "minilm-l6", "is an encoder"),
    ],
)
def test_unknown_or_unfit_bases_are_policy_errors_with_lines(
    tmp_path: Path, kind: str, base: str, problem: str
) -> None:
    path = tmp_path / "p.policy.yaml"
    path.write_text(
        "routes:\n"
        "  - name: r\n"
        "    teacher: teacher\n"
        "    candidates:\n"
        f"      - {{name: c, model: s, kind: {kind}, base: {base}}}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policies([path], MODELS)
    assert f"{path}:5: routes.0.candidates.0.base" in str(info.value)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("kind", "base"),
    [
        ("lm", ""),
        ("lm", "local:tiny"),
        ("lm", "smollm2-135m"),
        ("lm", "HuggingFaceTB/SmolLM2-360M-Instruct"),
        ("lm", "/models/my-qwen"),
        ("classifier", "minilm-l6"),
        ("classifier", "smollm2-135m"),
    ],
)
def test_named_bases_hub_ids_and_paths_are_accepted(kind: str, base: str) -> None:
    assert base_problem(base, kind) is None  # type: ignore[arg-type]


def _report(results: list[tuple[float, bool]], threshold: float, min_coverage: float | None):
    report = EvalReport("r", "e", "exact_match", threshold, 100, [], min_coverage)
    report.results = [
        ExampleResult(str(i), float(ok), ok, conf, "s", "t") for i, (conf, ok) in enumerate(results)
    ]
    return report


def test_selective_gate_passes_a_student_right_where_it_is_sure() -> None:
    """80% right overall, but ≥97% right on its most confident 60%: the plain gate fails it;
    the selective gate passes it, keeps about 60%, and names the threshold to serve with."""
    rng = random.Random(3)
    sure = [(0.9 + rng.random() * 0.1, i >= 8) for i in range(600)]  # 592/600 right
    unsure = [(rng.random() * 0.5, i < 208) for i in range(400)]  # 208/400 right
    results = sure + unsure
    assert sum(ok for _, ok in results) / len(results) == 0.8
    plain = _report(results, 0.95, None)
    assert not plain.passed()
    selective = _report(results, 0.95, 0.55)
    assert selective.passed()
    chosen = selective.selection()
    assert chosen is not None and 0.55 <= chosen.coverage <= 0.65
    assert chosen.agreement >= 0.96 and chosen.wilson_lower >= 0.95
    assert selective.serving_threshold() == chosen.min_confidence
    assert chosen.kept - 600 < 0.25 * 400  # most of the unsure tail is escalated
    # Asking for more coverage than it can keep at that agreement fails it.
    assert not _report(results, 0.95, 0.8).passed()


def test_selective_gate_fails_a_student_whose_confidence_says_nothing() -> None:
    """80% right at every confidence: no threshold reaches 95%, so no share is safe."""
    rng = random.Random(5)
    results = [(rng.random(), rng.random() < 0.8) for _ in range(1000)]
    report = _report(results, 0.95, 0.3)
    assert report.selection() is None and not report.passed()
    assert report.serving_threshold() is None


def test_ties_are_kept_or_escalated_together() -> None:
    results = [(0.9, True)] * 300 + [(0.5, False)] * 5 + [(0.5, True)] * 95
    chosen = _report(results, 0.9, 0.5).selection()
    assert chosen is not None and chosen.kept in (300, 400)


def test_router_escalates_below_the_fitted_threshold(gateway: RunningGateway) -> None:
    """The `fitted` route sets no `escalation.min_confidence`: the threshold comes from the
    candidate's state, written where the distiller writes it after a selective gate."""
    write_state(gateway.state.store, "fitted", "ok", "promoted", 0.6, "v2")
    thresholds = eventually(
        lambda: gateway.state.router.states.thresholds, 10, lambda t: ("fitted", "ok") in t
    )
    assert thresholds[("fitted", "ok")] == 0.6
    client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
    sure = client.chat.completions.create(
        model="fitted", messages=[{"role": "user", "content": "sure [[conf:0.9]]"}]
    )
    row = gateway.row(sure.id)
    assert (row["served_by"], row["route_reason"]) == ("student", "promoted: ok")
    assert abs(row["confidence"] - 0.9) < 1e-6
    unsure = client.chat.completions.create(
        model="fitted", messages=[{"role": "user", "content": "unsure [[conf:0.3]]"}]
    )
    row = gateway.row(unsure.id)
    assert row["served_by"] == "teacher"
    assert row["route_reason"] == "escalated: confidence 0.30 < 0.60"


def _split_report(results: list[tuple[float, bool]], threshold: float, min_coverage: float):
    report = _report(results, threshold, min_coverage)
    report.certify_share = 0.5
    return report


def test_the_threshold_is_chosen_on_calibrate_rows_and_certified_on_the_others() -> None:
    """Half the eval set (by a stable hash) chooses the threshold, the other half measures
    what it keeps: the certified figure comes from rows the choice never saw, the curve too."""
    rng = random.Random(11)
    sure = [(0.9 + rng.random() * 0.1, rng.random() < 0.99) for _ in range(1200)]
    unsure = [(rng.random() * 0.5, rng.random() < 0.5) for _ in range(800)]
    report = _split_report(sure + unsure, 0.95, 0.5)
    roles = [report.role(r) for r in report.results]
    assert 900 < roles.count("certify") < 1100 and roles.count("") == 0
    # The same request has the same role in every report (a stable hash of its id).
    assert [report.role(r) for r in _split_report(sure + unsure, 0.95, 0.5).results] == roles
    chosen = report.selection()
    assert chosen is not None and chosen.kept < 1100  # chosen on the calibrate half
    cert = report.certified()
    assert cert is not None and cert.examples == roles.count("certify")
    certify = [r for r in report.results if report.role(r) == "certify"]
    kept = [r for r in certify if r.confidence >= chosen.min_confidence]
    assert (cert.kept, cert.agree) == (len(kept), sum(r.agree for r in kept))
    assert cert.lower < cert.agreement < cert.upper and 0.55 < cert.coverage < 0.65
    assert report.passed() and report.contradicted() == ""
    assert sum(p["coverage"] == 1.0 for p in report.coverage_curve()) == 1
    assert report.coverage_curve()[-1]["agreement"] == sum(r.agree for r in certify) / len(certify)
    # Unsplit (the plain gate, or certify_share null), every row does both.
    assert {_report(sure + unsure, 0.95, 0.5).role(r) for r in report.results} == {""}


def test_a_threshold_the_certify_rows_contradict_fails_the_gate() -> None:
    """A threshold tuned to rows that happen to agree: on the certify rows the kept answers
    agree significantly less than the target, so the gate fails and says why."""
    results = [(0.9, True)] * 1000 + [(0.2, False)] * 200
    good = _split_report(results, 0.95, 0.5)
    assert good.passed()
    # Make every certify row at high confidence wrong half the time.
    bad = _split_report(results, 0.95, 0.5)
    flip = True
    for r in bad.results:
        if bad.role(r) == "certify" and r.confidence == 0.9:
            r.agree, flip = flip, not flip
    assert bad.selection() is not None  # the calibrate rows still choose 0.9 ...
    assert not bad.passed()  # ... but the rows that never saw the choice contradict it
    assert "certify rows:" in bad.contradicted() and "< 0.95" in bad.contradicted()
