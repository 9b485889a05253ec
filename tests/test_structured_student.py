"""Structured students on real data (a SNIPS slice from tests/data/snips): the student
trains on the teacher's JSON answers (an intent label and slots copied from the text),
writes answers in the teacher's exact JSON, passes a selective gate on parsed structures,
and published to a student server it answers through the gateway with its confidence,
escalating what it is unsure of."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from contracts.model_config import ModelConfig
from contracts.training import Training
from distiller.evaluation import evaluate
from distiller.examples import Example
from tests.support.gateway import APP_KEY, RunningGateway
from tests.support.states import write_state
from tests.support.student_server import running_student_server
from tests.support.wait import eventually

pytestmark = pytest.mark.slow  # trains a real model

SNIPS = Path(__file__).resolve().parent / "data" / "snips"
INTENTS = ("GetWeather", "BookRestaurant", "AddToPlaylist")  # a slice: trains in ~a minute
SYSTEM = "Reply with the request as JSON: its intent and its slots."


def _examples(split: str, limit: int) -> list[Example]:
    rows = [json.loads(line) for line in (SNIPS / f"{split}.jsonl").open()]
    rows = [r for r in rows if r["intent"] in INTENTS]
    random.Random(5).shuffle(rows)
    return [
        Example(
            f"{split}-{i}",
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["text"]}],
            json.dumps({"intent": r["intent"], "slots": r["slots"]}),
        )
        for i, r in enumerate(rows[:limit])
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Example]]]:
    from distiller.bases import resolve
    from distiller.structured import train_structured

    store = tmp_path_factory.mktemp("store")
    train = _examples("train", 1200)
    result = train_structured(resolve("minilm-l6", store), train, store / "run", Training(epochs=4))
    log = json.loads((store / "run" / "training_log.json").read_text())
    assert log["kind"] == "structured" and log["finetuned"] is True
    assert log["fields"]["intent"] == "label" and log["fields"]["slots.city"] == "span"
    assert log["unlearnable"] == {} and log["examples_unreadable"] <= 5
    yield result.merged, _examples("test", 300)


def test_answers_are_the_teachers_json_and_pass_a_selective_gate(trained) -> None:
    from students.structured import Structured

    merged, test = trained
    student = Structured.load(merged)
    answers = student.predict([ex.prompt[-1]["content"] for ex in test])
    exact = [text == ex.answer for (text, _), ex in zip(answers, test, strict=True)]
    assert all(json.loads(text)["intent"] in INTENTS for text, _ in answers)
    assert sum(exact) / len(exact) >= 0.7, sum(exact) / len(exact)  # 0.75 measured
    # Confidence ranks answers: the surest half agrees more than the rest.
    ranked = [e for _, e in sorted(zip([c for _, c in answers], exact, strict=True))]
    half = len(ranked) // 2
    assert sum(ranked[half:]) > sum(ranked[:half])
    # The gate compares parsed structures; a selective gate keeps the surest answers.
    report = evaluate(merged, "s", "eval", test, "json_field_match", 0.95, 50, None, None, 0.5)
    assert report.agreement == pytest.approx(sum(exact) / len(exact), abs=0.02)
    chosen = report.selection()
    assert chosen is not None and chosen.agreement >= 0.95, chosen


def test_structured_student_serves_json_through_the_gateway(
    trained, gateway: RunningGateway, hot_policy: Path
) -> None:
    from distiller.publishing import publish

    merged, test = trained
    with running_student_server() as url:
        note = publish(
            ModelConfig(model="flywheel/frames", api_base=url, price={"input_per_million": "0"}),
            merged.parent,
        )
        assert note.startswith("loaded as frames")
        hot_policy.write_text(
            hot_policy.read_text()
            + "  - name: hot-frames\n"
            + "    match: {models: [hot-frames]}\n"
            + "    teacher: teacher\n"
            + "    candidates: [{name: s, model: frames-student, kind: structured}]\n"
            + "models:\n"
            + "  frames-student:\n"
            + f"    model: flywheel/frames\n    api_base: {url}\n"
            + '    price: {input_per_million: "0.005", output_per_million: "0.005"}\n'
        )
        write_state(gateway.state.store, "hot-frames", "s", "promoted", 0.5)
        eventually(lambda: gateway.state.router.states.thresholds.get(("hot-frames", "s")), 20)
        client = openai.OpenAI(base_url=gateway.base_url, api_key=APP_KEY, max_retries=0)
        served = escalated = 0
        for ex in test[:20]:
            resp = client.chat.completions.create(model="hot-frames", messages=ex.prompt)
            row = gateway.row(resp.id)
            if row["served_by"] == "student":
                served += 1
                answer = json.loads(resp.choices[0].message.content or "")
                assert set(answer) == {"intent", "slots"} and answer["intent"] in INTENTS
                assert row["confidence"] >= 0.5
            else:
                escalated += 1
                assert row["route_reason"].startswith("escalated: confidence "), row
        assert served >= 10, (served, escalated)
