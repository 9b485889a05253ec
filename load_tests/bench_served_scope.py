"""Banking77 with out-of-scope intents, replayed through `flywheel serve` as a user would:
promoted (or not) by the default rollout of a 0.97 selective gate, then what users received,
then a restart.

The route `banking-intents` has 60 of the 77 intents as its label set (17 held out, seed 7,
as in `bench_out_of_scope.py`). The teacher is `flywheel.demo.teacher.LocalTeacher`: an
OpenAI-compatible stand-in on 127.0.0.1 priced like gpt-4o, with 0.3-0.9 s latency, that
answers from the dataset's labels, and `oos` for a query of a held-out intent (a teacher
told the route's labels says so). The candidate is `kind: classifier` on `minilm-l6` with
every CPU default; gate `threshold: 0.97, min_coverage: 0.5`; rollout and audits at their
defaults; `training.min_new_examples` is set so one run trains on the first phase.

Traffic, all with the `openai` SDK against the gateway (`--concurrency` at a time):
1. teacher traffic: train.csv queries whose stable hash falls in the first 75%, of the 60
   intents and of `--labelled` held-out ones (answered `oos`); the others are never seen
   before the rollout;
2. rollout: the other 25% of train.csv, every intent, shuffled, sent in passes until the
   candidate is promoted, fails, or `--max-rollout` requests were sent (passes repeat
   queries: a user's traffic repeats too, but repeated answers are not new evidence);
3. measure: all of test.csv (3,080 queries; 680 of the held-out intents), once;
4. restart: `flywheel serve` is stopped (SIGTERM) and started again, and `--after-restart`
   in-scope test queries are sent: the share the student answers.

    python load_tests/bench_served_scope.py --out load_tests/results/served_scope.json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from contracts.agreement import wilson_bounds  # noqa: E402
from flywheel.demo.config import free_port  # noqa: E402
from flywheel.demo.teacher import LocalTeacher  # noqa: E402

DATA = HERE.parent / "tests" / "data" / "banking77"
SYSTEM = "Name the customer's intent, or answer oos when it is none of the route's intents."
ROUTE, CANDIDATE = "banking-intents", "small"
APP_KEY, ADMIN_KEY = "sk-bench-app", "sk-bench-admin"


def rows(split: str) -> list[tuple[str, str]]:
    with (DATA / f"{split}.csv").open() as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def bucket(text: str) -> float:
    return int(hashlib.sha256(f"phase:{text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def config(tmp: Path, teacher_url: str, port: int, trigger: int, finetune: bool) -> Path:
    student_port = free_port()
    body: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "server": {"port": port},
        "log": {"flush_interval_s": 0.5},
        "router": {"policy_reload_s": 2.0, "state_refresh_s": 2.0},
        "distiller": {"enabled": True, "interval_s": 5.0},
        "students": {"enabled": True, "port": student_port},
        "models": {
            "teacher": {
                "model": "openai/frontier-teacher",
                "api_base": teacher_url,
                "price": {"input_per_million": "2.50", "output_per_million": "10.00"},
            },
            "intents-student": {
                "model": "flywheel/intents-student",
                "api_base": f"http://127.0.0.1:{student_port}/v1",
                "price": {"input_per_million": "0.02", "output_per_million": "0.04"},
            },
        },
        "apps": {"bank": {"team": "support", "train_on_traffic": True}},
        "keys": [
            {"id": "bank-key", "key": APP_KEY, "app": "bank"},
            {"id": "admin", "key": ADMIN_KEY, "role": "admin"},
        ],
        "routes": [
            {
                "name": ROUTE,
                "match": {"models": [ROUTE]},
                "teacher": "teacher",
                "candidates": [
                    {
                        "name": CANDIDATE,
                        "model": "intents-student",
                        "kind": "classifier",
                        "base": "minilm-l6",
                    }
                ],
                "gate": {"metric": "exact_match", "threshold": 0.97, "min_coverage": 0.5},
                "training": {"min_new_examples": trigger}
                | ({"finetune_encoder": True} if finetune else {}),
            }
        ],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def start(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "serve", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"flywheel serve exited {proc.returncode}: see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"flywheel serve did not listen on {port}: see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def candidate(port: int) -> dict[str, Any]:
    got = httpx.get(
        f"http://127.0.0.1:{port}/admin/api/candidates",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    ).json()
    for row in got.get("candidates", []):
        if row.get("route") == ROUTE and row.get("candidate") == CANDIDATE:
            return dict(row)
    return {}


def history(port: int) -> list[dict[str, Any]]:
    got = httpx.get(
        f"http://127.0.0.1:{port}/admin/api/history",
        params={"route": ROUTE},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    ).json()
    return list(got.get("events", []))


async def send(port: int, texts: list[str], concurrency: int) -> list[tuple[str, str, str]]:
    """(text, answer, served_by) for each text."""
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=APP_KEY, max_retries=3, timeout=60
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(text: str) -> tuple[str, str, str]:
        async with sem:
            raw = await client.chat.completions.with_raw_response.create(
                model=ROUTE,
                temperature=0,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                ],
            )
            answer = raw.parse().choices[0].message.content or ""
            return text, answer, raw.headers.get("x-flywheel-served-by", "")

    try:
        return list(await asyncio.gather(*(one(t) for t in texts)))
    finally:
        await client.close()


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    intents = sorted({c for _, c in rows("train")})
    held = random.Random(args.seed).sample(intents, args.held_out)
    outside, answered_oos = set(held), set(held[: args.labelled])
    truth = {t: ("oos" if c in outside else c) for t, c in rows("train") + rows("test")}
    train = rows("train")
    before = [t for t, c in train if bucket(t) < 0.75 and (c not in outside or c in answered_oos)]
    rollout = [t for t, _ in train if bucket(t) >= 0.75]
    test = rows("test")
    if args.limit:  # a smoke run of the mechanics
        before, rollout, test = before[: args.limit], rollout[: args.limit], test[: args.limit]
    teacher = LocalTeacher(truth, (0.3, 0.9))
    teacher_url = teacher.start()
    tmp = Path(tempfile.mkdtemp(prefix="flywheel-served-scope-"))
    log = tmp / "serve.log"
    port = free_port()
    # Curation drops a few duplicates: train once the first phase is (nearly) all in.
    path = config(tmp, teacher_url, port, int(len(before) * 0.95), args.finetune)
    out: dict[str, Any] = {
        "benchmark": "served_scope",
        "intents_in_label_set": len(intents) - len(outside),
        "intents_held_out": sorted(outside),
        "held_out_answered_oos_in_training_traffic": sorted(answered_oos),
        "teacher_traffic": len(before),
        "rollout_pool": len(rollout),
        "dir": str(tmp),
    }
    proc = start(path, port, log)
    t0 = time.monotonic()
    try:
        asyncio.run(send(port, before, args.concurrency))
        out["teacher_traffic_s"] = round(time.monotonic() - t0, 1)
        print(f"teacher traffic sent: {len(before)} in {out['teacher_traffic_s']} s", flush=True)
        deadline = time.monotonic() + args.train_timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = candidate(port)
            if state.get("state") in ("shadow", "canary", "promoted", "failed"):
                break
            time.sleep(5)
        out["after_training"] = state
        print(f"after training: {state.get('state')} {state.get('reason', '')}", flush=True)
        stages: list[dict[str, Any]] = []
        sent, rng = 0, random.Random(args.seed)
        while state.get("state") in ("shadow", "canary") and sent < args.max_rollout:
            batch = rollout[:]
            rng.shuffle(batch)
            for start_at in range(0, len(batch), 500):
                asyncio.run(send(port, batch[start_at : start_at + 500], args.concurrency))
                sent += len(batch[start_at : start_at + 500])
                now = candidate(port)
                if now.get("state") != state.get("state"):
                    stages.append({"sent": sent, "state": now.get("state"), "row": now})
                    print(f"{sent} rollout requests: {now.get('state')}", flush=True)
                state = now
                if state.get("state") not in ("shadow", "canary") or sent >= args.max_rollout:
                    break
        out["rollout_requests"] = sent
        out["stages"] = stages
        out["state_before_measure"] = state
        answers = asyncio.run(send(port, [t for t, _ in test], args.concurrency))
        out["measure"] = measure(answers, test, outside, answered_oos)
        out["events"] = [
            {k: e.get(k) for k in ("at", "kind", "from_state", "to_state", "reason", "evidence")}
            for e in history(port)
        ][:40]
    finally:
        stop(proc)
    proc = start(path, port, log)
    try:
        inside = [t for t, c in test if c not in outside][: args.after_restart]
        again = asyncio.run(send(port, inside, args.concurrency))
        out["after_restart"] = {
            "requests": len(again),
            "served_by_student": share(sum(s == "student" for _, _, s in again), len(again)),
            "state": candidate(port).get("state"),
        }
    finally:
        stop(proc)
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def measure(
    answers: list[tuple[str, str, str]],
    test: list[tuple[str, str]],
    outside: set[str],
    answered_oos: set[str],
) -> dict[str, Any]:
    label = dict(test)
    inside = [(a, s, label[t]) for t, a, s in answers if label[t] not in outside]
    served_in = [(a, c) for a, s, c in inside if s == "student"]
    agree_in = sum(a == c for a, c in served_in)
    lower = wilson_bounds(agree_in, len(served_in))[0] if served_in else 0.0
    oos_known = [s for t, a, s in answers if label[t] in answered_oos]
    oos_new = [s for t, a, s in answers if label[t] in outside - answered_oos]
    all_served = [(a, label[t]) for t, a, s in answers if s == "student"]
    received_ok = sum(a == ("oos" if label[t] in outside else label[t]) for t, a, _ in answers)
    return {
        "test_requests": len(answers),
        "in_scope": len(inside),
        "in_scope_served_by_student": share(len(served_in), len(inside)),
        "in_scope_served_agreement": share(agree_in, len(served_in)),
        "in_scope_served_agreement_wilson_lower": round(lower, 4),
        "out_of_scope": len(oos_known) + len(oos_new),
        "out_of_scope_escalated": share(
            sum(s != "student" for s in oos_known + oos_new), len(oos_known) + len(oos_new)
        ),
        "answered_oos_intents_escalated": share(
            sum(s != "student" for s in oos_known), len(oos_known)
        ),
        "never_seen_intents_escalated": share(sum(s != "student" for s in oos_new), len(oos_new)),
        # Everything the student served, against what the teacher would have said.
        "student_served_agreement": share(
            sum(a == ("oos" if c in outside else c) for a, c in all_served), len(all_served)
        ),
        "student_share_of_all": share(len(all_served), len(answers)),
        "users_received_agreement": share(received_ok, len(answers)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--held-out", type=int, default=17)
    parser.add_argument("--labelled", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-rollout", type=int, default=40_000)
    parser.add_argument("--train-timeout", type=float, default=1200)
    parser.add_argument("--after-restart", type=int, default=300)
    parser.add_argument(
        "--finetune", action="store_true", help="training.finetune_encoder: true (CPU too)"
    )
    parser.add_argument("--limit", type=int, default=0, help="fewer queries, for a smoke run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
