"""The shape of a structured route's answers, and how a structured student writes one.

A structured route's teacher answers with a JSON object (the content of a chat answer, or
the arguments of a tool call). Its shape is a list of fields, each at a path of keys from
the root object, and each of a kind a small model can learn:

- `label`: one of a closed set of JSON values (strings, numbers, booleans, null), or absent
  when the field is optional: a classification head;
- `span`: a string copied word for word from the user's text (a number when the teacher
  wrote one: `number: true`): a tagged span of the text; a field whose key may repeat holds
  a list (`as_list`: "multiple" when one value stays a plain string, "always" when the
  teacher always wrote a list).

Anything else (free text the user never wrote, lists of objects) is `unlearnable`: the shape
names it, and a request whose answer would need it is the teacher's.

Answers are written the way the teacher writes them: its key order (an object's keys in a
fixed order, or in the order their spans occur in the text when that is what the teacher
does), its separators and indentation, and whether it escapes non-ASCII characters.

Invariant: for every answer a shape was inferred from and that uses only learnable fields,
`render(shape, values, text)` with the answer's own values gives back the answer's text
byte for byte (tests/test_structure.py checks it on SNIPS).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

FieldKind = Literal["label", "span"]
ListForm = Literal["never", "multiple", "always"]
ABSENT = "<absent>"  # the label of an optional field the answer leaves out


class AnswerField(BaseModel):
    path: list[str]
    kind: FieldKind
    optional: bool = False
    labels: list[Any] = Field(default_factory=list)  # label: the values seen, and ABSENT
    number: bool = False  # span: the teacher wrote it as a JSON number
    as_list: ListForm = "never"  # span

    @property
    def name(self) -> str:
        return ".".join(self.path)


class AnswerShape(BaseModel):
    fields: list[AnswerField]
    # "/"-joined object path → its keys in the teacher's fixed order, or "text": by where
    # each key's span starts in the user's text (fixed-order keys first).
    key_order: dict[str, list[str] | Literal["text"]] = Field(default_factory=dict)
    objects: list[list[str]] = Field(default_factory=list)  # nested objects always written
    indent: int | None = None
    separators: tuple[str, str] = (", ", ": ")
    ensure_ascii: bool = False
    unlearnable: dict[str, float] = Field(default_factory=dict)  # field → share of answers

    def field(self, name: str) -> AnswerField:
        return next(f for f in self.fields if f.name == name)

    @property
    def labels(self) -> list[AnswerField]:
        return [f for f in self.fields if f.kind == "label"]

    @property
    def spans(self) -> list[AnswerField]:
        return [f for f in self.fields if f.kind == "span"]


Spans = dict[str, list[tuple[int, int]]]  # span field name → character ranges in the text


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def build(shape: AnswerShape, labels: dict[str, Any], spans: Spans, text: str) -> dict[str, Any]:
    """The answer object from each field's value: a label field's chosen label, a span
    field's character ranges in `text`."""
    root: dict[str, Any] = {}
    for path in shape.objects:
        node = root
        for key in path:
            node = node.setdefault(key, {})
    starts: dict[str, int] = {}
    for f in shape.fields:
        value: Any
        if f.kind == "label":
            value = labels.get(f.name, ABSENT)
            if value == ABSENT:
                continue
        else:
            ranges = sorted(spans.get(f.name) or [])
            if not ranges:
                continue
            words = [text[a:b] for a, b in ranges]
            values: list[Any] = [_number(w) for w in words] if f.number else words
            starts[f.name] = ranges[0][0]
            many = len(values) > 1 or f.as_list == "always"
            value = values if many and f.as_list != "never" else values[0]
        node = root
        for key in f.path[:-1]:
            node = node.setdefault(key, {})
        node[f.path[-1]] = value
    return _ordered(shape, root, [], starts)


def _ordered(
    shape: AnswerShape, node: dict[str, Any], path: list[str], starts: dict[str, int]
) -> dict[str, Any]:
    order = shape.key_order.get("/".join(path))
    keys = list(node)
    if order == "text":
        keys.sort(key=lambda k: starts.get(".".join([*path, k]), -1))
    elif order:
        rank = {k: i for i, k in enumerate(order)}
        keys.sort(key=lambda k: rank.get(k, len(rank)))
    return {
        k: _ordered(shape, node[k], [*path, k], starts) if isinstance(node[k], dict) else node[k]
        for k in keys
    }


def dumps(shape: AnswerShape, answer: dict[str, Any]) -> str:
    """An answer object as the teacher writes JSON."""
    return json.dumps(
        answer,
        indent=shape.indent,
        separators=shape.separators,
        ensure_ascii=shape.ensure_ascii,
    )


def render(shape: AnswerShape, labels: dict[str, Any], spans: Spans, text: str) -> str:
    return dumps(shape, build(shape, labels, spans, text))
