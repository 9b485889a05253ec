"""Seeded traffic for the demo: what apps send, and the answer a frontier model would give.

- `intents`: a bank's customer messages to JSON `{"intent": ...}` (routine: the teacher's
  answers form a closed set a student can learn);
- `assistant`: open-ended writing requests (varied: stays on the teacher).

Messages are composed from several independent parts (what happened, where, when, how much,
how it is said), so nearly every message is new text: curation keeps most of them instead of
dropping them as near-duplicates, and the training trigger is reached in the first minute
whatever the machine. The generator keeps the ground truth per prompt, which the local
teacher answers from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

# Per intent: what the customer says happened, with a slot for a detail.
INTENTS: dict[str, list[str]] = {
    "lost_card": [
        "I lost my card {where}",
        "my card was stolen {where}",
        "I can't find my debit card since {when}",
        "someone took my wallet with my card {where}",
        "I think I left my credit card {where}",
        "my card went missing {when}",
        "please block my card, it was taken {where}",
    ],
    "refund": [
        "I want a refund for the {amount} charge from {merchant}",
        "please give me back the {amount} {merchant} took",
        "refund the {amount} payment to {merchant} from {when}",
        "I was charged twice by {merchant}, refund me {amount}",
        "{merchant} never delivered, I need my {amount} back",
        "can I get the {amount} from {merchant} returned to my account",
    ],
    "balance": [
        "what is my balance {when}",
        "how much money do I have left after paying {merchant}",
        "show my account balance please, I spent {amount} {when}",
        "tell me my balance before I pay {merchant}",
        "do I have {amount} available on my account",
        "how much is on my savings account {when}",
    ],
    "transfer": [
        "send {amount} to my sister {when}",
        "I need to transfer {amount} to {merchant}",
        "wire {amount} abroad {when}",
        "move {amount} to my savings account",
        "how do I pay {amount} to my landlord {when}",
        "make a bank transfer of {amount} to my brother",
    ],
    "card_arrival": [
        "my new card has not arrived {when}",
        "when will my replacement card come, I ordered it {when}",
        "still waiting for the card you sent {when}",
        "card delivery is late, it was posted {when}",
        "the card I requested {when} never reached me",
        "where is my new debit card, ordered {when}",
    ],
}
WHERE = [
    "at the train station",
    "in a taxi",
    "at the supermarket",
    "on holiday in Spain",
    "at the gym",
    "in a restaurant last night",
    "on the bus",
    "at the airport",
    "outside the cinema",
    "at work",
    "in a shop in Leeds",
    "at a concert",
]
WHEN = [
    "yesterday",
    "last week",
    "two weeks ago",
    "on Monday",
    "this morning",
    "three days ago",
    "at the weekend",
    "last month",
    "on Friday evening",
    "ten days ago",
]
MERCHANTS = [
    "Tesco",
    "Amazon",
    "Uber",
    "Netflix",
    "the electricity company",
    "a hotel in Rome",
    "Spotify",
    "the dentist",
    "an online shop",
    "Ryanair",
    "my phone provider",
    "the council",
]
OPENERS = ["", "Hi, ", "Hello! ", "Quick one: ", "Hey, ", "Good morning, ", "Sorry to bother you, "]
CLOSERS = ["", ".", "?", " please", " thanks", "!", ", can you help?", ", it's urgent"]

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


@dataclass(frozen=True)
class Call:
    workload: str
    model: str
    messages: list[dict[str, str]]
    answer: str


class Traffic:
    def __init__(self, seed: int = 0, intents_share: float = 0.75) -> None:
        self.rnd = random.Random(seed)
        self.intents_share = intents_share
        self.truth: dict[str, str] = {}

    def _intent_message(self) -> tuple[str, str]:
        r = self.rnd
        intent = r.choice(list(INTENTS))
        body = r.choice(INTENTS[intent]).format(
            where=r.choice(WHERE),
            when=r.choice(WHEN),
            merchant=r.choice(MERCHANTS),
            amount=f"£{r.randint(3, 900)}.{r.randint(0, 99):02d}",
        )
        return intent, r.choice(OPENERS) + body + r.choice(CLOSERS)

    def next(self) -> Call:
        r = self.rnd
        if r.random() < self.intents_share:
            intent, text = self._intent_message()
            call = Call(
                "intents",
                "intents",
                [{"role": "system", "content": INTENT_SYSTEM}, {"role": "user", "content": text}],
                json.dumps({"intent": intent}),
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
