"""Loading a model for generation or training: hub id or local path, through
`from_pretrained`, with a tokenizer that can pad and render chats.

Invariant: this is the only way a model reaches training, evaluation or serving, so a
student is loaded the same way everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# A chat template with no model-specific markup: `<|role|>` headers and an end token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def load(path_or_id: str | Path) -> tuple[Any, Any]:
    """The model and tokenizer, by hub id or local path, through `from_pretrained`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model, tokenizer


def threads_by_load() -> int:
    """CPU threads for torch now: the cores the machine's load leaves free, at least one.
    Measured here: on a busy 2-core machine two torch threads ran 4-10x slower than one."""
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - busy)))


def use_threads_by_load() -> int:
    import torch

    threads = threads_by_load()
    torch.set_num_threads(threads)
    return threads
