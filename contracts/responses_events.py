"""A chat completion stream as OpenAI's Responses event stream.

Events in the order the Responses API sends them: `response.created`, `response.in_progress`,
then per output item `response.output_item.added`, its parts and deltas, its `.done`
events, and `response.completed` (or `response.incomplete` / `error` + `response.failed`),
each with a `sequence_number` counting from 0.

Invariant: one translator per stream; the final response object carries every item the
deltas announced, text and function calls alike.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts.responses_shapes import (
    call_item,
    envelope,
    message_item,
    namespaces_of,
    response_id,
    usage_of,
)


class StreamTranslator:
    """Chat completion chunks in, Responses events out (one translator per stream)."""

    def __init__(self, body: dict[str, Any], request_id: str) -> None:
        self.body = body
        self.rid = response_id(request_id)
        self.msg_id = "msg_" + self.rid[5:]
        self.seq = 0
        self.text = ""
        self.text_open = False
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> item
        self.order: list[tuple[str, Any]] = []  # ("text", None) | ("call", index)
        self.usage: Any = None
        self.finish = ""

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def start(self) -> list[bytes]:
        shell = envelope(self.rid, self.body, "in_progress", [], None)
        return [
            self._event("response.created", response=shell),
            self._event("response.in_progress", response=shell),
        ]

    def _index(self, kind: str, key: Any) -> int:
        return self.order.index((kind, key))

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if not self.text_open:
                    self.text_open = True
                    self.order.append(("text", None))
                    idx = self._index("text", None)
                    out.append(
                        self._event(
                            "response.output_item.added",
                            output_index=idx,
                            item=message_item(self.msg_id, "", "in_progress") | {"content": []},
                        )
                    )
                    out.append(
                        self._event(
                            "response.content_part.added",
                            item_id=self.msg_id,
                            output_index=idx,
                            content_index=0,
                            part={"type": "output_text", "text": "", "annotations": []},
                        )
                    )
                self.text += delta["content"]
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.msg_id,
                        output_index=self._index("text", None),
                        content_index=0,
                        delta=delta["content"],
                        logprobs=[],
                    )
                )
            for call in delta.get("tool_calls") or []:
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _call_delta(self, call: dict[str, Any]) -> list[bytes]:
        i = int(call.get("index", 0))
        fn = call.get("function") or {}
        out = []
        if i not in self.calls:
            item = call_item(
                {"id": call.get("id", f"call_{i}"), "function": {"name": fn.get("name", "")}},
                "in_progress",
                namespaces_of(self.body),
            )
            item["arguments"] = ""
            self.calls[i] = item
            self.order.append(("call", i))
            out.append(
                self._event(
                    "response.output_item.added", output_index=self._index("call", i), item=item
                )
            )
        item = self.calls[i]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._index("call", i),
                    delta=fn["arguments"],
                )
            )
        return out

    def _output(self) -> list[dict[str, Any]]:
        items = []
        for kind, key in self.order:
            items.append(
                message_item(self.msg_id, self.text)
                if kind == "text"
                else {**self.calls[key], "status": "completed"}
            )
        return items

    def finish_events(self) -> list[bytes]:
        out: list[bytes] = []
        for idx, (kind, key) in enumerate(self.order):
            if kind == "text":
                part = {"type": "output_text", "text": self.text, "annotations": []}
                common = {"item_id": self.msg_id, "output_index": idx, "content_index": 0}
                out.append(
                    self._event("response.output_text.done", text=self.text, logprobs=[], **common)
                )
                out.append(self._event("response.content_part.done", part=part, **common))
                out.append(
                    self._event(
                        "response.output_item.done",
                        output_index=idx,
                        item=message_item(self.msg_id, self.text),
                    )
                )
            else:
                item = {**self.calls[key], "status": "completed"}
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=idx,
                        arguments=item["arguments"],
                        name=item["name"],
                    )
                )
                out.append(self._event("response.output_item.done", output_index=idx, item=item))
        status = "incomplete" if self.finish == "length" else "completed"
        final = envelope(self.rid, self.body, status, self._output(), usage_of(self.usage))
        if status == "incomplete":
            final["incomplete_details"] = {"reason": "max_output_tokens"}
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out.append(self._event(kind, response=final))
        return out

    def error(self, error: dict[str, Any]) -> list[bytes]:
        """An upstream failure mid-stream: `error`, then `response.failed`."""
        failed = envelope(self.rid, self.body, "failed", self._output(), usage_of(self.usage))
        failed["error"] = {
            "code": error.get("code") or "server_error",
            "message": error.get("message", ""),
        }
        return [
            self._event(
                "error",
                code=error.get("code"),
                message=error.get("message", ""),
                param=error.get("param"),
            ),
            self._event("response.failed", response=failed),
        ]
