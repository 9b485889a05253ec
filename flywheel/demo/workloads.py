"""Seeded traffic for the demo: what apps send, and the answer a frontier model would give.

- `intents`: banking messages to JSON `{"intent": ...}` (routine: a student can learn it);
- `assistant`: open-ended writing requests (varied: stays on the teacher).
The generator keeps the ground truth per prompt, which the local teacher answers from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

INTENTS = {
    "lost_card": [
        "I lost my card",
        "my card was stolen",
        "I can't find my debit card",
        "someone took my wallet with my card",
    ],
    "refund": [
        "I want a refund",
        "please give me my money back",
        "refund the last charge",
        "I was charged twice, refund me",
    ],
    "balance": [
        "what is my balance",
        "how much money do I have",
        "show my account balance",
        "tell me my balance please",
    ],
    "transfer": [
        "send money to my sister",
        "I need to make a transfer",
        "wire funds abroad",
        "move money to my savings",
    ],
    "card_arrival": [
        "my new card has not arrived",
        "when will my card come",
        "still waiting for my card",
        "card delivery is late",
    ],
}
INTENT_SYSTEM = (
    "You classify a bank customer's message. Answer with JSON: "
    '{"intent": one of lost_card, refund, balance, transfer, card_arrival}.'
)
ASSISTANT_SYSTEM = "You are a helpful writing assistant."
TOPICS = [
    "a product launch",
    "a team offsite",
    "a late delivery",
    "a new hire",
    "a price change",
    "an outage",
    "a holiday schedule",
    "a customer thank-you",
]
FORMS = [
    "a short email about",
    "a tweet announcing",
    "three bullet points on",
    "a friendly reminder about",
]
OPENERS = ["", "Hi, ", "Hello! ", "Quick one: ", "Hey, "]
CLOSERS = ["", ".", "?", " please", " thanks", "!"]


@dataclass(frozen=True)
class Call:
    workload: str
    model: str
    messages: list[dict[str, str]]
    answer: str


class Traffic:
    def __init__(self, seed: int = 0) -> None:
        self.rnd = random.Random(seed)
        self.truth: dict[str, str] = {}

    def next(self) -> Call:
        r = self.rnd
        if r.random() < 0.75:
            intent = r.choice(list(INTENTS))
            text = r.choice(OPENERS) + r.choice(INTENTS[intent]) + r.choice(CLOSERS)
            answer = json.dumps({"intent": intent})
            call = Call(
                "intents",
                "intents",
                [{"role": "system", "content": INTENT_SYSTEM}, {"role": "user", "content": text}],
                answer,
            )
        else:
            topic, form = r.choice(TOPICS), r.choice(FORMS)
            text = f"Write {form} {topic} for team {r.randint(1, 999)}."
            answer = (
                f"Here is {form} {topic}: thank you all for your work; details follow "
                f"in the next message (ref {r.getrandbits(24):06x})."
            )
            call = Call(
                "assistant",
                "assistant",
                [
                    {"role": "system", "content": ASSISTANT_SYSTEM},
                    {"role": "user", "content": text},
                ],
                answer,
            )
        self.truth[call.messages[-1]["content"]] = call.answer
        return call
