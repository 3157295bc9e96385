"""``mathse-rl rewards``: list the reward names configs can use.

    mathse-rl rewards            # name, sync/async, extras keys, one-line description
    mathse-rl rewards --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")


def describe_name(name: str) -> dict[str, Any]:
    """What a registered name is, read from its factory without building it (an ORM may load a model)."""
    from mathse_rl.rewards.registry import _resolve

    factory = _resolve(name)
    doc = (inspect.getdoc(factory) or "").splitlines()
    is_class = inspect.isclass(factory)
    return {
        "name": name,
        "async": bool(getattr(factory, "is_async", False)) if is_class else None,
        "extras": list(getattr(factory, "extras_keys", ())) if is_class else None,
        "description": doc[0] if doc else "",
    }


def run(args: argparse.Namespace) -> int:
    from mathse_rl.rewards import list_rewards, unavailable_rewards

    rows = [describe_name(n) for n in list_rewards()]
    missing = unavailable_rewards()
    if args.json:
        print(json.dumps({"rewards": rows, "unavailable": missing}, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        kind = {True: "async", False: "sync", None: "?"}[r["async"]]
        extras = ",".join(r["extras"] or []) or "-"
        print(f"{r['name']:<{width}}  {kind:<5}  extras={extras:<40}  {r['description']}")
    for name, why in sorted(missing.items()):
        print(f"{name:<{width}}  (unavailable: {why})")
    print('Composites: "a+b" (equal weights) or "0.9*a+0.1*b" / {"a": 0.9, "b": 0.1}.')
    return 0
