"""Structured students: an encoder read once per request, a label head per label field on
its pooled features, and a tag head that marks each token `O`, `B-<field>` or `I-<field>`
for the span fields; the answer is the shape's JSON (`students.structure`) written from
the chosen labels and the tagged spans, each span widened to whole words of the text.

A structured student's artifact directory holds `flywheel_structured.json` (the shape, the
tag names, the temperatures, where the encoder is), `heads.safetensors` and, when the
backbone was fine-tuned, `encoder/`. Training (`distiller/structured.py`) and serving read
it through this module, so a student is scored exactly the way it serves.

Invariant: the confidence is the product of every decision's calibrated probability (each
label field's chosen label, each token's tag), temperatures fitted on held-out data; one
unsure decision makes the whole answer unsure, so the selective gate's threshold bounds the
share of answers with any field wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from students.classifier import Encoder
from students.structure import AnswerShape, Spans, render

MANIFEST = "flywheel_structured.json"
HEADS = "heads.safetensors"


def is_structured(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).exists()


def tag_names(shape: AnswerShape) -> list[str]:
    return ["O"] + [f"{p}-{f.name}" for f in shape.spans for p in ("B", "I")]


def heads_module(dim: int, label_sizes: list[int], tags: int) -> Any:
    """The trainable heads: one linear layer per label field on the pooled features, and
    one on each token's features beside its neighbours' (a token's tag depends on the
    words around it)."""
    import torch

    class Heads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.labels = torch.nn.ModuleList(torch.nn.Linear(dim, n) for n in label_sizes)
            self.tags = torch.nn.Linear(3 * dim, tags)

        def forward(self, hidden: Any, mask: Any) -> tuple[list[Any], Any]:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            h = hidden * m
            before = torch.nn.functional.pad(h, (0, 0, 1, 0))[:, :-1]
            after = torch.nn.functional.pad(h, (0, 0, 0, 1))[:, 1:]
            window = torch.cat([before, h, after], -1)
            return [head(pooled) for head in self.labels], self.tags(window)

    return Heads()


def encode(encoder: Encoder, texts: list[str]) -> Any:
    """The tokenizer's batch with character offsets (special tokens at (0, 0))."""
    return encoder.tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=encoder.max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )


def hidden_states(encoder: Encoder, batch: Any) -> Any:
    inputs = {k: v.to(encoder.device) for k, v in batch.items() if k != "offset_mapping"}
    return encoder.model(**inputs).last_hidden_state


def word_starts(text: str, offsets: list[tuple[int, int]]) -> list[bool]:
    """Which tokens begin a word: the word's tag is its first token's (a word split into
    pieces is tagged once, so its pieces never disagree); special tokens begin none."""
    return [a != b and (a == 0 or not text[a - 1].isalnum()) for a, b in offsets]


def decode_spans(text: str, offsets: list[tuple[int, int]], tags: list[str]) -> Spans:
    """Character ranges per field from the tags of the tokens that begin words: a span
    opens at `B-f` (or an `I-f` that does not continue one) and runs over the `I-f` words
    after it; each is widened to the whole words it touches."""
    spans: Spans = {}
    current: list[Any] | None = None
    for (a, b), tag, starts in zip(offsets, tags, word_starts(text, offsets), strict=True):
        if not starts:
            if current is not None and a != b:
                current[1] = b
            continue
        if tag == "O":
            current = None
            continue
        kind, name = tag.split("-", 1)
        if kind == "I" and current is not None and current[2] == name:
            current[1] = b
            continue
        current = [a, b, name]
        spans.setdefault(name, []).append(current)  # type: ignore[arg-type]
    out: Spans = {}
    for name, ranges in spans.items():
        for a, b, _ in ranges:  # type: ignore[misc]
            while a > 0 and text[a - 1].isalnum():
                a -= 1
            while b < len(text) and text[b].isalnum():
                b += 1
            if not out.get(name) or out[name][-1][1] < a:
                out.setdefault(name, []).append((a, b))
    return out


@dataclass
class Structured:
    shape: AnswerShape
    encoder: Encoder
    heads: Any
    temperatures: list[float]  # one per label field, then the tag head's

    @classmethod
    def load(cls, path: str | Path) -> Structured:
        from safetensors.torch import load_file

        root = Path(path)
        manifest = json.loads((root / MANIFEST).read_text())
        shape = AnswerShape.model_validate(manifest["shape"])
        encoder = Encoder.named_in(root, manifest)
        heads = heads_module(
            encoder.dim, [len(f.labels) for f in shape.labels], len(tag_names(shape))
        )
        heads.load_state_dict(load_file(str(root / HEADS)))
        heads.to(encoder.device).eval()
        return cls(shape, encoder, heads, list(manifest["temperatures"]))

    def save(self, out: Path, encoder_ref: str, extra: dict[str, Any] | None = None) -> Path:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in self.heads.state_dict().items()
        }
        save_file(state, str(out / HEADS))
        manifest = {
            "shape": self.shape.model_dump(mode="json"),
            "tags": tag_names(self.shape),
            "temperatures": self.temperatures,
            "encoder": encoder_ref,
            "max_length": self.encoder.max_length,
            "text": "users' turns",
            **(extra or {}),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return out

    def predict(self, texts: list[str], batch_size: int = 64) -> list[tuple[str, float]]:
        """Each text's answer as the teacher would write it, with its confidence."""
        import torch

        tags = tag_names(self.shape)
        out: list[tuple[str, float]] = []
        self.encoder.model.eval()
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                batch = encode(self.encoder, chunk)
                hidden = hidden_states(self.encoder, batch).float()
                mask = batch["attention_mask"].to(hidden.device)
                label_logits, tag_logits = self.heads(hidden, mask)
                label_probs = [
                    torch.softmax(lg / t, -1).cpu()
                    for lg, t in zip(label_logits, self.temperatures, strict=False)
                ]
                tag_probs = torch.softmax(tag_logits / self.temperatures[-1], -1).cpu()
                for i, text in enumerate(chunk):
                    conf = 1.0
                    labels: dict[str, Any] = {}
                    for f, probs in zip(self.shape.labels, label_probs, strict=True):
                        p, k = probs[i].max(-1)
                        labels[f.name], conf = f.labels[int(k)], conf * float(p)
                    offsets = [(o[0], o[1]) for o in batch["offset_mapping"][i].tolist()]
                    best = tag_probs[i].max(-1)
                    for j, starts in enumerate(word_starts(text, offsets)):
                        if starts:
                            conf *= float(best.values[j])
                    chosen = [tags[int(best.indices[j])] for j in range(len(offsets))]
                    spans = decode_spans(text, offsets, chosen)
                    out.append((render(self.shape, labels, spans, text), conf))
        return out
