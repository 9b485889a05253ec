"""`flywheel policy check | explain | fingerprint`: the admin's tools for routing policies."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from contracts.policy import PolicyFile, PolicySet, load_policies
from contracts.yaml_source import ConfigError
from distiller.evidence import rollout_notes
from gateway.config import GatewayConfig, load_config, load_policy_set

# Keys only a gateway config has: a file with any of them is checked as one.
_GATEWAY_KEYS = set(GatewayConfig.model_fields) - set(PolicyFile.model_fields)


def _is_gateway_config(path: Path) -> bool:
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(tree, dict) and bool(_GATEWAY_KEYS & set(tree))


def check_files(files: list[Path]) -> PolicySet:
    """Gateway configs are checked with their own policies; bare policy files together,
    with the models of any gateway config given alongside."""
    configs = [f for f in files if _is_gateway_config(f)]
    policies = [f for f in files if f not in configs]
    result: PolicySet | None = None
    models = {}
    named: set[Path] = set()  # policy files a given config loads: checked with it, once
    for path in configs:
        config = load_config(path)
        result = load_policy_set(config)
        models.update(result.models)
        named |= {p.resolve() for p in config.policy_paths()}
    # A shell glob (`policy check router_policies/*.yaml`) names the config's own policy
    # files too: checked alone they would report another policy version than the config's.
    policies = [f for f in policies if f.resolve() not in named]
    if policies or result is None:
        result = load_policies(policies, models)
    return result


def _configs_naming(policy: Path) -> list[Path]:
    """Gateway configs near a policy file (its folder and the two above) that load it."""
    target = policy.resolve()
    out: list[Path] = []
    for folder in [target.parent, *list(target.parents)[1:3]]:
        for candidate in sorted(folder.glob("*.y*ml")):
            if candidate.resolve() == target or not _is_gateway_config(candidate):
                continue
            try:
                paths = load_config(candidate).policy_paths()
            except (ConfigError, OSError):
                continue
            if target in {p.resolve() for p in paths}:
                out.append(candidate)
    return out


def cmd_check(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    try:
        policy = check_files(files)
    except ConfigError as e:
        print(e, file=sys.stderr)
        lone = [f for f in files if not _is_gateway_config(f)]
        if "unknown model" in str(e) and len(lone) == len(files):
            # Models are often declared in the gateway config that loads the policy.
            configs = sorted({c for f in lone for c in _configs_naming(f)})
            names = " ".join(os.path.relpath(c) for c in configs) or "<gateway.yaml>"
            print(
                "hint: models declared in a gateway config are known only when it is checked "
                f"too: flywheel policy check {names} (it loads the policy files it names)"
                + ("" if configs else "; no gateway config near these files loads them"),
                file=sys.stderr,
            )
        return 1
    print(
        f"ok: {len(policy.routes)} routes, {len(policy.models)} models, "
        f"policy version {policy.version}"
    )
    for route in policy.routes:
        for note in rollout_notes(route):
            kind = "warning" if note.startswith("cannot pass") else "note"
            print(f"{kind}: route {route.name}: {note}")
    return 0


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def cmd_explain(args: argparse.Namespace) -> int:
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    if args.message:
        messages.append({"role": "user", "content": args.message})
    request = {
        "model": args.model,
        "app": args.app or "",
        "team": args.team or "",
        "headers": _pairs(args.header),
        "metadata": _pairs(args.metadata),
        "tags": args.tag,
        "messages": messages,
        **({"key": args.key} if args.key else {}),
    }
    if args.gateway:
        import httpx

        r = httpx.post(
            f"{args.gateway.rstrip('/')}/admin/route/explain",
            json=request,
            headers={"Authorization": f"Bearer {args.admin_key}"},
            timeout=10,
        )
        print(json.dumps(r.json(), indent=2))
        return 0 if r.status_code == 200 else 1
    from contracts.errors import ApiError
    from gateway.admin import ExplainRequest, facts_for
    from gateway.app import build_state

    try:
        state = build_state(load_config(args.config))
        result = state.router.explain(facts_for(state, ExplainRequest.model_validate(request)))
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except ApiError as e:
        print(e.message, file=sys.stderr)
        return 1
    result["note"] = (
        "candidate states are not read offline: every candidate shows as "
        "untrained; pass --gateway to ask a running gateway"
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from contracts.openai_shapes import fingerprint_system_prompt

    print(fingerprint_system_prompt([{"role": "system", "content": args.text}]))
    return 0


def add_commands(sub: Any) -> None:
    policy = sub.add_parser("policy", help="check and explain routing policies")
    psub = policy.add_subparsers(dest="policy_command", required=True)

    check = psub.add_parser("check", help="validate policy files (exit 0 when valid)")
    check.add_argument("files", nargs="+", help="gateway configs and/or *.policy.yaml files")
    check.set_defaults(fn=cmd_check)

    explain = psub.add_parser("explain", help="which route and model a request would get")
    explain.add_argument("--config", default="router_policies/gateway.yaml")
    explain.add_argument("--model", required=True)
    explain.add_argument("--key", help="an app key (app and team come from it)")
    explain.add_argument("--app")
    explain.add_argument("--team")
    explain.add_argument("--header", action="append", default=[], metavar="NAME=VALUE")
    explain.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    explain.add_argument("--tag", action="append", default=[])
    explain.add_argument("--system", help="the system prompt")
    explain.add_argument("--message", help="the user message")
    explain.add_argument("--gateway", help="ask a running gateway (URL) instead")
    explain.add_argument("--admin-key")
    explain.set_defaults(fn=cmd_explain)

    fp = psub.add_parser("fingerprint", help="the fingerprint of a system prompt")
    fp.add_argument("text")
    fp.set_defaults(fn=cmd_fingerprint)
