"""Classifier students: an encoder (or LM backbone), mean-pooled, and a linear head over a
closed label set; the answer is the label's text, its calibrated probability the confidence.

A classifier's artifact directory holds `flywheel_classifier.json` (labels, temperature,
where the encoder is, how text is read, the scope gate's threshold), `head.safetensors`
(weight, bias), `scope.safetensors` (the training examples' features: the scope gate)
and, when the backbone was fine-tuned, `encoder/`. Training
(`distiller/classifier.py`) and serving read it through this module, so a classifier is
scored exactly the way it serves.

Invariant: probabilities are softmax(logits / temperature) with the temperature fitted on
held-out data, so a confidence threshold chosen on the eval set means the same on traffic.
A request whose features lie farther from every label than the scope threshold (fitted on
held-out in-scope data), or whose label is one by which the teacher says "out of scope"
(`training.out_of_scope_labels`, learned like any other), is out of scope: its confidence
is 0, whatever the head says, so it is escalated at any threshold, in evaluation exactly as
in serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.openai_shapes import prompt_text

MANIFEST = "flywheel_classifier.json"
SCOPE = "scope.safetensors"


def catch_all_key(label: str) -> str:
    """How an out-of-scope label is matched: `OOS`, `out-of-scope` and `out of scope` are
    the same answer."""
    return label.strip().casefold().replace("-", "_").replace(" ", "_")


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

    @classmethod
    def named_in(cls, root: Path, manifest: dict[str, Any]) -> Encoder:
        """The encoder an artifact's manifest names: its own tuned copy (a path relative to
        the artifact) or the base it was trained on."""
        path = Path(manifest["encoder"])
        return cls(
            path if path.is_absolute() else root / path, int(manifest.get("max_length", 128))
        )

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

    def embed(
        self,
        texts: list[str],
        batch_size: int = 64,
        done: Callable[[int, int], None] | None = None,
    ) -> Any:
        """Pooled features of many texts, without gradients, as one float32 tensor;
        `done(n, total)` after each batch (progress)."""
        import torch

        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                out.append(self.pooled(texts[start : start + batch_size]).float().cpu())
                if done is not None:
                    done(min(start + batch_size, len(texts)), len(texts))
        return torch.cat(out) if out else torch.zeros(0, self.dim)


@dataclass
class Scope:
    """How far a request lies from what the student learned: the cosine distance from its
    features to the nearest training example's (features are L2-normalised). Measured on
    Banking77 against a Mahalanobis distance to the label means (shared Ledoit-Wolf
    covariance), the nearest neighbour flagged more held-out intents at the same in-scope
    cost (see load_tests/RESULTS.md)."""

    features: Any  # torch tensor [examples, dim], the training split's
    threshold: float

    def distances(self, features: Any, batch: int = 1024) -> Any:
        import torch

        known = self.features.float()
        out = [
            1 - (features[i : i + batch] @ known.T).max(-1).values
            for i in range(0, len(features), batch)
        ]
        return torch.cat(out) if out else torch.zeros(0)

    @classmethod
    def fit(cls, features: Any, held_out: Any, quantile: float) -> Scope:
        """The training features; the threshold: `quantile` of the held-out in-scope
        distances (so about 1 - quantile of in-scope traffic is escalated by it)."""
        import torch

        scope = cls(features.half(), float("inf"))
        scope.threshold = float(torch.quantile(scope.distances(held_out), quantile))
        return scope


@dataclass
class Classifier:
    labels: list[str]
    temperature: float
    encoder: Encoder
    weight: Any  # torch tensor [labels, dim]
    bias: Any  # torch tensor [labels]
    scope: Scope | None = None
    out_of_scope_labels: frozenset[str] = frozenset()  # labels meaning "not this route's"

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        from safetensors.torch import load_file

        root = Path(path)
        manifest = json.loads((root / MANIFEST).read_text())
        head = load_file(str(root / "head.safetensors"))
        scope = None
        if manifest.get("scope_threshold") is not None and (root / SCOPE).exists():
            parts = load_file(str(root / SCOPE))
            scope = Scope(parts["features"], float(manifest["scope_threshold"]))
        return cls(
            labels=list(manifest["labels"]),
            temperature=float(manifest["temperature"]),
            encoder=Encoder.named_in(root, manifest),
            weight=head["weight"],
            bias=head["bias"],
            scope=scope,
            out_of_scope_labels=frozenset(manifest.get("out_of_scope_labels") or ()),
        )

    def outside(self, label: str, distance: float | None) -> bool:
        """Out of scope: a catch-all label, or farther than the scope gate's threshold."""
        if label in self.out_of_scope_labels:
            return True
        return self.scope is not None and distance is not None and distance > self.scope.threshold

    def logits(self, features: Any) -> Any:
        return features @ self.weight.T + self.bias

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """The most probable label of each text, with its calibrated probability (0 for a
        text out of scope)."""
        return [(label, prob) for label, prob, _ in self.predict_scoped(texts)]

    def predict_scoped(self, texts: list[str]) -> list[tuple[str, float, float | None]]:
        """(label, confidence, scope distance or None without a scope gate) of each text."""
        import torch

        features = self.encoder.embed(texts)
        probs = torch.softmax(self.logits(features) / self.temperature, -1)
        best = probs.max(-1)
        far: list[float | None] = [None] * len(texts)
        if self.scope is not None and len(texts):
            far = [float(d) for d in self.scope.distances(features)]
        out = []
        for p, i, d in zip(best.values, best.indices, far, strict=True):
            label = self.labels[int(i)]
            out.append((label, 0.0 if self.outside(label, d) else float(p), d))
        return out


def save(
    out: Path,
    labels: list[str],
    temperature: float,
    encoder_ref: str,
    weight: Any,
    bias: Any,
    max_length: int,
    extra: dict[str, Any] | None = None,
    scope: Scope | None = None,
    out_of_scope_labels: list[str] | None = None,
) -> Path:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": weight.detach().float().cpu().contiguous(), "bias": bias.detach().float().cpu()},
        str(out / "head.safetensors"),
    )
    if scope is not None:
        save_file({"features": scope.features.contiguous()}, str(out / SCOPE))
    manifest = {
        "labels": labels,
        "temperature": temperature,
        "encoder": encoder_ref,
        "max_length": max_length,
        "text": "users' turns",
        "scope_threshold": None if scope is None else scope.threshold,
        "out_of_scope_labels": out_of_scope_labels or [],
        **(extra or {}),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out
