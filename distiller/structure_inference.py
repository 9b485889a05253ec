"""Infer a structured route's answer shape (`students.structure.AnswerShape`) from the
teacher's answers, and read each answer back as the values a student learns.

A field whose values are copied word for word from the user's text (in at least
`COPIED_SHARE` of its occurrences) is a span: copying generalises to values never seen. A
field that is not copied but takes few values is a label. Anything else is unlearnable and
named with the share of answers that use it. The writing style (separators, indentation,
ASCII escapes) is the one that reproduces the most answers exactly.

Invariant: `targets` returns values for an answer only when `render` of them reproduces the
answer's text exactly; otherwise None (the example cannot teach the student as written).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from distiller.examples import Example
from students.classifier import input_text
from students.structure import ABSENT, AnswerField, AnswerShape, ListForm, Spans, render

COPIED_SHARE = 0.95
MIN_OBJECT_SHARE = 0.9  # of answers that must be JSON objects for a structured route
STYLES: list[tuple[int | None, tuple[str, str]]] = [
    (None, (", ", ": ")),
    (None, (",", ":")),
    (2, (",", ": ")),
    (4, (",", ": ")),
]


class NotStructured(ValueError):
    """The route's answers are not JSON objects a structured student can learn."""


def parse_object(answer: str) -> dict[str, Any] | None:
    text = answer.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _leaves(obj: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in obj.items():
        if isinstance(value, dict):
            out += _leaves(value, (*path, key))
        else:
            out.append(((*path, key), value))
    return out


def _objects(obj: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in obj.items():
        if isinstance(value, dict):
            out += [(*path, key), *_objects(value, (*path, key))]
    return out


def _items(value: Any) -> list[Any]:
    """A field's values: a repeated key's list, or the one value."""
    return value if isinstance(value, list) else [value]


def _as_text(value: Any) -> str | None:
    """How a span value is written in the user's text (None: it cannot be a span)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def locate(text: str, values: list[str], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each value's first occurrence in `text` on word boundaries that overlaps nothing
    already `taken` (updated); a value not found is left out."""
    found = []
    for value in values:
        start = 0
        while value and (i := text.find(value, start)) >= 0:
            j = i + len(value)
            bounded = (i == 0 or not text[i - 1].isalnum()) and (
                j == len(text) or not text[j].isalnum()
            )
            if bounded and not any(a < j and i < b for a, b in taken):
                taken.append((i, j))
                found.append((i, j))
                break
            start = i + 1
    return found


def infer_shape(examples: list[Example], max_labels: int = 500) -> AnswerShape:
    parsed = [(input_text(ex.prompt), ex.answer, parse_object(ex.answer)) for ex in examples]
    objs = [(text, raw, obj) for text, raw, obj in parsed if obj is not None]
    if not objs or len(objs) < MIN_OBJECT_SHARE * len(examples):
        raise NotStructured(
            f"{len(objs)} of {len(examples)} answers are JSON objects: a structured student "
            f"needs at least {MIN_OBJECT_SHARE:.0%}"
        )
    values: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    copied: Counter[tuple[str, ...]] = Counter()
    present: Counter[tuple[str, ...]] = Counter()
    lists: Counter[tuple[str, ...]] = Counter()
    singles: Counter[tuple[str, ...]] = Counter()
    object_present: Counter[tuple[str, ...]] = Counter()
    for text, _, obj in objs:
        for path in _objects(obj):
            object_present[path] += 1
        for path, value in _leaves(obj):
            present[path] += 1
            items = _items(value)
            (lists if isinstance(value, list) else singles)[path] += 1
            values[path].append(value)
            words = [_as_text(v) for v in items]
            if items and all(w is not None and locate(text, [w], []) for w in words):
                copied[path] += 1
    fields: list[AnswerField] = []
    unlearnable: dict[str, float] = {}
    n = len(objs)
    for path in sorted(present, key=lambda p: -present[p]):
        optional = present[path] < n
        seen = values[path]
        if copied[path] >= COPIED_SHARE * present[path]:
            flat = [v for value in seen for v in _items(value)]
            as_list: ListForm = "never"
            if lists[path]:
                as_list = "multiple" if singles[path] else "always"
            fields.append(
                AnswerField(
                    path=list(path),
                    kind="span",
                    optional=optional,
                    number=all(isinstance(v, int | float) for v in flat),
                    as_list=as_list,
                )
            )
            continue
        hashable = [json.dumps(v, sort_keys=True) for v in seen]
        distinct = Counter(hashable)
        if not lists[path] and len(distinct) <= max_labels and len(distinct) * 3 <= len(seen):
            labels = [json.loads(v) for v in sorted(distinct)] + ([ABSENT] if optional else [])
            fields.append(
                AnswerField(path=list(path), kind="label", optional=optional, labels=labels)
            )
            continue
        unlearnable[".".join(path)] = round(present[path] / n, 4)
    shape = AnswerShape(
        fields=fields,
        objects=[list(p) for p, c in sorted(object_present.items()) if c == n],
        key_order=_key_orders(objs, {f.name for f in fields if f.kind == "span"}),
        unlearnable=unlearnable,
    )
    _choose_style(shape, [obj for _, _, obj in objs], [raw for _, raw, _ in objs])
    return shape


def _key_orders(
    objs: list[tuple[str, str, dict[str, Any]]], span_names: set[str]
) -> dict[str, list[str] | Any]:
    """Per object path: "text" when its span keys follow the text in nearly every answer
    that has two or more, else the keys by their mean position."""
    positions: dict[str, defaultdict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    text_order: Counter[str] = Counter()
    multi: Counter[str] = Counter()

    def walk(text: str, node: dict[str, Any], path: tuple[str, ...]) -> None:
        name = "/".join(path)
        keys = list(node)
        for i, key in enumerate(keys):
            positions[name][key].append(i / max(1, len(keys) - 1))
            if isinstance(node[key], dict):
                walk(text, node[key], (*path, key))
        spans = [k for k in keys if ".".join([*path, k]) in span_names]
        if len(spans) >= 2:
            multi[name] += 1
            taken: list[tuple[int, int]] = []
            starts = []
            for k in spans:
                first = node[k][0] if isinstance(node[k], list) and node[k] else node[k]
                word = _as_text(first)
                hit = locate(text, [word], taken) if word is not None else []
                starts.append(hit[0][0] if hit else -1)
            if starts == sorted(starts):
                text_order[name] += 1

    for text, _, obj in objs:
        walk(text, obj, ())
    orders: dict[str, list[str] | Any] = {}
    for name, keys in positions.items():
        if multi[name] and text_order[name] >= COPIED_SHARE * multi[name]:
            orders[name] = "text"
        else:
            orders[name] = sorted(keys, key=lambda k: sum(keys[k]) / len(keys[k]))
    return orders


def _choose_style(shape: AnswerShape, objs: list[dict[str, Any]], raws: list[str]) -> None:
    best = (-1, STYLES[0], False)
    for indent, separators in STYLES:
        for ascii_ in (False, True):
            hits = sum(
                json.dumps(o, indent=indent, separators=separators, ensure_ascii=ascii_)
                == raw.strip()
                for o, raw in zip(objs, raws, strict=True)
            )
            if hits > best[0]:
                best = (hits, (indent, separators), ascii_)
    shape.indent, shape.separators = best[1]
    shape.ensure_ascii = best[2]


def targets(shape: AnswerShape, example: Example) -> tuple[dict[str, Any], Spans] | None:
    """What the student learns from one answer: each label field's label and each span
    field's character ranges; None when the answer cannot be written from them."""
    obj = parse_object(example.answer)
    if obj is None:
        return None
    text = input_text(example.prompt)
    leaves = dict(_leaves(obj))
    labels: dict[str, Any] = {}
    spans: Spans = {}
    taken: list[tuple[int, int]] = []
    # Longer values first, so a value inside another's span finds its own occurrence.
    by_length = sorted(
        (f for f in shape.spans if tuple(f.path) in leaves),
        key=lambda f: -max(len(str(v)) for v in _items(leaves[tuple(f.path)])),
    )
    for f in by_length:
        words = [_as_text(v) for v in _items(leaves[tuple(f.path)])]
        if any(w is None for w in words):
            return None
        spans[f.name] = locate(text, [w for w in words if w is not None], taken)
    for f in shape.labels:
        labels[f.name] = leaves.get(tuple(f.path), ABSENT)
        if labels[f.name] not in f.labels:
            return None
    known = {tuple(f.path) for f in shape.fields}
    if any(path not in known for path in leaves):
        return None
    if render(shape, labels, spans, text) != example.answer.strip():
        return None
    return labels, spans
