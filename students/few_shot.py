"""Few-shot candidates: the curated examples most like a request, put in its prompt.

An index is built by the distiller from one dataset version (its train split) and saved as
a folder: `few_shot.json` (retriever, k, dataset, encoder, a digest of the example ids),
`examples.jsonl` (request id, the users' text, the teacher's answer, one per line) and, for
`minilm-l6`, `vectors.npy`. The distiller evaluates a candidate with the index it saved and
the gateway serves with that same folder, so the prompts that passed the gate are the
prompts that serve.

Invariant: an index never changes once saved (a new dataset makes a new run and folder);
`nearest` is in-memory work (one sparse or dense product), safe on the event loop for
`ngram`; `minilm-l6` encodes the query (~25 ms on one CPU core) and is called off the loop.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.bases import Retriever
from contracts.openai_shapes import prompt_text
from contracts.prompt_index import PromptIndex

MANIFEST = "few_shot.json"
EXAMPLES = "examples.jsonl"
VECTORS = "vectors.npy"


@dataclass(frozen=True, slots=True)
class Shot:
    """One curated example: what the users said and what the teacher answered."""

    request_id: str
    text: str
    answer: str


def _read(location: str, name: str) -> bytes:
    """A file of an index folder: a local path, or a URL of the model store (fsspec)."""
    if "://" not in location or location.startswith("file://"):
        return Path(location.removeprefix("file://"), name).read_bytes()
    import fsspec

    with fsspec.open(f"{location.rstrip('/')}/{name}", "rb") as f:
        data: bytes = f.read()
        return data


def digest(request_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(request_ids)).encode()).hexdigest()[:16]


class FewShotIndex:
    def __init__(
        self,
        shots: list[Shot],
        retriever: Retriever,
        k: int,
        dataset_id: str,
        encoder_path: str = "",
        vectors: Any = None,
    ) -> None:
        self.shots = shots
        self.retriever = retriever
        self.k = k
        self.dataset_id = dataset_id
        self.encoder_path = encoder_path
        self._encoder: Any = None
        self._lock = threading.Lock()
        if vectors is None:
            vectors = self._encode([s.text for s in shots]) if shots else None
        self.vectors = vectors
        # ngram: the same lookup as the novelty index (only the query's n-grams' columns).
        self._ngrams: PromptIndex | None = None
        if retriever == "ngram" and vectors is not None:
            self._ngrams = PromptIndex(vectors, len(shots))

    # --- building and storing ---------------------------------------------------------------

    @classmethod
    def build(
        cls,
        examples: list[tuple[str, list[dict[str, Any]], str]],
        retriever: Retriever,
        k: int,
        dataset_id: str,
        encoder_path: str = "",
    ) -> FewShotIndex:
        """From (request id, prompt messages, teacher answer) triples."""
        shots = [Shot(rid, prompt_text(prompt), answer) for rid, prompt, answer in examples]
        return cls(shots, retriever, k, dataset_id, encoder_path)

    def manifest(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever,
            "k": self.k,
            "dataset_id": self.dataset_id,
            "encoder_path": self.encoder_path,
            "examples": len(self.shots),
            "examples_digest": digest([s.request_id for s in self.shots]),
        }

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        lines = (
            json.dumps({"request_id": s.request_id, "text": s.text, "answer": s.answer})
            for s in self.shots
        )
        (folder / EXAMPLES).write_text("\n".join(lines) + "\n")
        if self.retriever != "ngram" and self.vectors is not None:
            np.save(folder / VECTORS, np.asarray(self.vectors, dtype=np.float32))
        (folder / MANIFEST).write_text(json.dumps(self.manifest(), indent=1))
        return folder

    @classmethod
    def load(cls, location: str) -> FewShotIndex:
        """The folder `save` wrote (local path or model-store URL). Seconds: off the loop."""
        import io

        meta = json.loads(_read(location, MANIFEST))
        shots = [
            Shot(d["request_id"], d["text"], d["answer"])
            for line in _read(location, EXAMPLES).decode().splitlines()
            if line.strip()
            for d in [json.loads(line)]
        ]
        vectors = None
        if meta["retriever"] != "ngram" and shots:
            vectors = np.load(io.BytesIO(_read(location, VECTORS)))
        return cls(
            shots,
            meta["retriever"],
            int(meta["k"]),
            meta["dataset_id"],
            meta["encoder_path"],
            vectors,
        )

    # --- serving ----------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> Any:
        if self.retriever == "ngram":
            return PromptIndex.vectors(texts)
        with self._lock:  # one load, even when the first lookups arrive together
            if self._encoder is None:
                from students.classifier import Encoder

                self._encoder = Encoder(self.encoder_path)
        return self._encoder.embed(texts).numpy()

    def nearest(self, messages: list[dict[str, Any]], k: int | None = None) -> list[Shot]:
        """The k examples most like the request's users' turns, most similar first."""
        k = k or self.k
        if not self.shots:
            return []
        if self._ngrams is not None:
            sims = self._ngrams.similarities(prompt_text(messages))
        else:
            query = self._encode([prompt_text(messages)])
            sims = np.asarray(self.vectors @ query.T).ravel()
        k = min(k, len(self.shots))
        top = np.argpartition(-sims, k - 1)[:k]
        return [self.shots[i] for i in top[np.argsort(-sims[top], kind="stable")]]

    def prompt(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The request's messages with its nearest examples as earlier turns: system
        prompts first, then the examples (the most similar last, nearest the question),
        then the conversation."""
        shots = self.nearest(messages)
        lead = [m for m in messages if m.get("role") in ("system", "developer")]
        rest = [m for m in messages if m.get("role") not in ("system", "developer")]
        turns: list[dict[str, Any]] = []
        for s in reversed(shots):
            turns += [
                {"role": "user", "content": s.text},
                {"role": "assistant", "content": s.answer},
            ]
        return [*lead, *turns, *rest]
