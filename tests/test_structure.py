"""Structured answers: the shape inferred from a route's answers (fields that are labels,
spans copied from the user's text, numbers, optional keys, repeated keys, nested objects,
free text that cannot be learned) and answers written back exactly as the teacher wrote
them. On SNIPS (tests/data/snips, a copy of ../shared/datasets/snips) and on small
hand-written answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distiller.examples import Example
from distiller.structure_inference import NotStructured, infer_shape, targets
from students.structure import ABSENT, render

SNIPS = Path(__file__).resolve().parent / "data" / "snips"


def _example(i: int, text: str, answer: str) -> Example:
    return Example(f"r{i}", [{"role": "user", "content": text}], answer)


def _snips(split: str) -> list[Example]:
    rows = [json.loads(line) for line in (SNIPS / f"{split}.jsonl").open()]
    return [
        _example(i, r["text"], json.dumps({"intent": r["intent"], "slots": r["slots"]}))
        for i, r in enumerate(rows)
    ]


def test_snips_answers_are_an_intent_label_and_slots_copied_from_the_text() -> None:
    train = _snips("train")
    shape = infer_shape(train)
    intent = shape.field("intent")
    assert intent.kind == "label" and not intent.optional and len(intent.labels) == 7
    spans = {f.name for f in shape.spans}
    assert len(spans) == 39 and all(name.startswith("slots.") for name in spans)
    assert shape.field("slots.artist").optional and shape.field("slots.artist").as_list == "never"
    assert shape.field("slots.restaurant_type").as_list == "multiple"  # twice in 19 requests
    assert not shape.unlearnable
    assert shape.objects == [["slots"]]  # written even when empty
    assert shape.key_order[""] == ["intent", "slots"] and shape.key_order["slots"] == "text"
    # json.dumps's defaults: "50 cl\u00e1sicos", as the teacher wrote it.
    assert (shape.indent, shape.separators, shape.ensure_ascii) == (None, (", ", ": "), True)
    # Every answer, read back as labels and spans, is written again byte for byte, on the
    # split the shape was inferred from and on the test split it never saw.
    for split in (train, _snips("test")):
        read = [targets(shape, ex) for ex in split]
        assert sum(t is None for t in read) <= len(split) * 0.005
        for ex, t in zip(split, read, strict=True):
            if t is not None:
                assert render(shape, *t, ex.prompt[-1]["content"]) == ex.answer


def test_labels_numbers_nesting_optional_keys_style_and_free_text() -> None:
    rows = [
        ("ship 3 boxes to Lyon by Friday", "Lyon", 3, "express", "Friday"),
        ("send 12 crates to Porto", "Porto", 12, "standard", None),
        ("please ship 7 pallets to New York by Monday", "New York", 7, "express", "Monday"),
        ("move 2 boxes to Oslo", "Oslo", 2, "standard", None),
    ] * 3
    examples = []
    for i, (text, city, qty, speed, day) in enumerate(rows):
        answer: dict[str, object] = {"order": {"city": city, "quantity": qty}, "speed": speed}
        if day:
            answer["deadline"] = day
        answer["note"] = f"free text {i}"  # never in the user's text, never repeated
        examples.append(_example(i, text, json.dumps(answer, separators=(",", ":"))))
    shape = infer_shape(examples)
    assert shape.field("order.city").kind == "span" and not shape.field("order.city").optional
    assert shape.field("order.quantity").number
    assert shape.field("speed").labels == ["express", "standard"]
    assert shape.field("deadline").kind == "span" and shape.field("deadline").optional
    assert shape.unlearnable == {"note": 1.0}
    assert shape.separators == (",", ":")
    # An answer with the unlearnable field cannot be written from what a student learns.
    assert targets(shape, examples[0]) is None
    labels = {"speed": "express"}
    text = "ship 5 boxes to Rome by Sunday"
    spans = {"order.city": [(16, 20)], "order.quantity": [(5, 6)], "deadline": [(24, 30)]}
    assert render(shape, labels, spans, text) == (
        '{"order":{"city":"Rome","quantity":5},"speed":"express","deadline":"Sunday"}'
    )
    # An optional label left out is absent from the answer, not null.
    shape.field("speed").labels.append(ABSENT)
    assert '"speed"' not in render(shape, {"speed": ABSENT}, spans, text)


def test_answers_that_are_not_json_objects_are_not_structured() -> None:
    examples = [_example(i, "hi", "hello there") for i in range(20)]
    with pytest.raises(NotStructured, match="0 of 20 answers are JSON objects"):
        infer_shape(examples)


def test_tags_become_whole_word_spans() -> None:
    from students.structured import decode_spans, word_starts

    text = "play 50 clásicos by westbam now"
    # Tokens as a WordPiece tokenizer splits them: "clásicos" in three pieces.
    offsets = [(0, 0), (0, 4), (5, 7), (8, 10), (10, 13), (13, 16), (17, 19), (20, 27)]
    offsets += [(28, 31), (0, 0)]
    assert word_starts(text, offsets) == [False, True, True, True, False, False] + [True] * 3 + [
        False
    ]
    tags = ["O", "O", "B-playlist", "I-playlist", "B-artist", "O", "O", "B-artist", "O", "O"]
    # A word's pieces follow its first token's tag, whatever they were given.
    assert decode_spans(text, offsets, tags) == {"playlist": [(5, 16)], "artist": [(20, 27)]}
    # An I- tag that continues nothing opens a span; a second span of a field is kept.
    tags = ["O", "I-artist", "O", "O", "O", "O", "O", "B-artist", "I-artist", "O"]
    assert decode_spans(text, offsets, tags) == {"artist": [(0, 4), (20, 31)]}
