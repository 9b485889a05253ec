"""A generated banking-intents workload, as rows a teacher-served route would have left in
ClickHouse (built with the gateway's own row builder, `RequestRecord.to_row`)."""

from __future__ import annotations

import json
import random
import uuid

from gateway.request_log import RequestRecord
from tests.support.gateway import RunningGateway

SYSTEM = "Classify the customer's banking request. Answer with JSON."
PHRASES = {
    "lost_card": ["I lost my card", "my card was stolen", "cannot find my debit card"],
    "refund": ["I want a refund", "please give my money back", "refund the charge"],
    "balance": ["what is my balance", "how much money is in my account", "show my balance"],
    "transfer": ["send money to my sister", "make a transfer", "wire funds abroad"],
}
NAMES = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]


def intent_row(
    text: str,
    intent: str,
    *,
    served_by: str = "teacher",
    status: str = "ok",
    consent: bool = True,
    flagged: bool = False,
    route: str = "distill-intents",
) -> tuple[str, dict]:
    rec = RequestRecord(
        request_id=str(uuid.uuid4()),
        endpoint="chat.completions",
        app="bank",
        team="retail",
        key_id="k",
        consent=consent,
        route=route,
        served_model="teacher",
        teacher_model="teacher",
        served_by=served_by,
    )
    rec.request = {
        "model": route,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
    }
    rec.response = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": json.dumps({"intent": intent})},
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 6},
    }
    rec.guardrail_flagged = flagged
    rec.finish(status, 200 if status == "ok" else 502)
    return rec.request_id, rec.to_row({})


def insert_requests(gw: RunningGateway, rows: list[dict]) -> None:
    body = b"\n".join(json.dumps(r).encode() for r in rows)
    gw.state.store.insert_json_rows("requests", body, uuid.uuid4().hex)


def generate(n: int, seed: int) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        intent = rnd.choice(list(PHRASES))
        text = (
            f"{rnd.choice(NAMES)} here, {rnd.choice(PHRASES[intent])} "
            f"(ref {rnd.getrandbits(32):08x})"
        )
        out.append((text, intent))
    return out
