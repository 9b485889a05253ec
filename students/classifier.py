"""Classifier students: an encoder (or LM backbone), mean-pooled, and a linear head over a
closed label set; the answer is the label's text, its calibrated probability the confidence.

A classifier's artifact directory holds `flywheel_classifier.json` (labels, temperature,
where the encoder is, how text is read), `head.safetensors` (weight, bias) and, when the
backbone was fine-tuned, `encoder/`. Training (`distiller/classifier.py`) and serving read
it through this module, so a classifier is scored exactly the way it serves.

Invariant: probabilities are softmax(logits / temperature) with the temperature fitted on
held-out data, so a confidence threshold chosen on the eval set means the same on traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.openai_shapes import prompt_text

MANIFEST = "flywheel_classifier.json"


def is_classifier(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).exists()


def input_text(messages: list[dict[str, Any]]) -> str:
    """What a classifier reads: the users' turns (the system prompt is the same for every
    request of a route and carries no signal)."""
    return prompt_text(messages)


class Encoder:
    """A transformer backbone with attention-masked mean pooling, L2-normalised."""

    def __init__(self, path: str | Path, max_length: int = 128) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(str(path))
        self.max_length = max_length
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def pooled(self, texts: list[str]) -> Any:
        """Differentiable pooled features of one batch (for fine-tuning)."""
        import torch

        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(mean, dim=-1)

    def embed(self, texts: list[str], batch_size: int = 64) -> Any:
        """Pooled features of many texts, without gradients, as one float32 tensor."""
        import torch

        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                out.append(self.pooled(texts[start : start + batch_size]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)


@dataclass
class Classifier:
    labels: list[str]
    temperature: float
    encoder: Encoder
    weight: Any  # torch tensor [labels, dim]
    bias: Any  # torch tensor [labels]

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        from safetensors.torch import load_file

        root = Path(path)
        manifest = json.loads((root / MANIFEST).read_text())
        encoder_path = Path(manifest["encoder"])
        if not encoder_path.is_absolute():
            encoder_path = root / encoder_path
        head = load_file(str(root / "head.safetensors"))
        return cls(
            labels=list(manifest["labels"]),
            temperature=float(manifest["temperature"]),
            encoder=Encoder(encoder_path, int(manifest.get("max_length", 128))),
            weight=head["weight"],
            bias=head["bias"],
        )

    def logits(self, features: Any) -> Any:
        return features @ self.weight.T + self.bias

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """The most probable label of each text, with its calibrated probability."""
        import torch

        probs = torch.softmax(self.logits(self.encoder.embed(texts)) / self.temperature, -1)
        best = probs.max(-1)
        return [
            (self.labels[int(i)], float(p)) for p, i in zip(best.values, best.indices, strict=True)
        ]


def save(
    out: Path,
    labels: list[str],
    temperature: float,
    encoder_ref: str,
    weight: Any,
    bias: Any,
    max_length: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": weight.detach().float().cpu().contiguous(), "bias": bias.detach().float().cpu()},
        str(out / "head.safetensors"),
    )
    manifest = {
        "labels": labels,
        "temperature": temperature,
        "encoder": encoder_ref,
        "max_length": max_length,
        "text": "users' turns",
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out
