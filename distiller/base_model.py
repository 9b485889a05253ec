"""Base models: a user's (hub id or local path), or a small one built here from traffic.

No model hub is reachable on these machines, and users without GPUs want the loop too, so a
base can be built locally: a byte-level BPE tokenizer trained on the workload's own logged
text, a small Llama-style config, and a short domain-adaptive pretraining on that text. It is
saved with `save_pretrained` and every later step loads it with `from_pretrained`, the same
path a user's Qwen or Llama takes.

Invariant: `students.loading.load(path_or_id)` is the only way a base reaches training,
evaluation or serving.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from students.loading import CHAT_TEMPLATE

log = logging.getLogger("flywheel.base_model")

SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a locally built base (defaults: ~1M parameters)."""

    vocab_size: int = 2000
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_base(
    texts: list[str],
    out_dir: Path,
    spec: TinySpec = TinySpec(),
    pretrain_steps: int = 200,
    seed: int = 0,
) -> Path:
    """Tokenizer + Llama-style model from scratch, briefly pretrained on `texts`, saved to
    `out_dir` (config, weights, tokenizer, chat template)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    log.info("built a %.2fM-parameter base", sum(p.numel() for p in model.parameters()) / 1e6)
    losses = _pretrain(model, tokenizer, texts, pretrain_steps) if pretrain_steps else []
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "flywheel_base.json").write_text(
        json.dumps(
            {
                "kind": "tiny-local",
                "spec": spec.__dict__,
                "pretrain_steps": pretrain_steps,
                "pretrain_loss": losses[-1] if losses else None,
                "texts": len(texts),
            }
        )
    )
    return out_dir


def _pretrain(model: Any, tokenizer: Any, texts: list[str], steps: int) -> list[float]:
    """Domain-adaptive pretraining: next-token prediction on the logged text itself."""
    import torch

    eos = tokenizer.eos_token
    ids = tokenizer("".join(t + eos for t in texts))["input_ids"]
    block = 128
    if len(ids) < block + 1:
        ids = ids * math.ceil((block + 1) / max(1, len(ids)))
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    losses = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - block - 1, (16,), generator=gen)
        batch = torch.stack([data[s : s + block] for s in starts])
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
    return losses


def is_local_tiny(path: str | Path) -> bool:
    return (Path(path) / "flywheel_base.json").exists()
