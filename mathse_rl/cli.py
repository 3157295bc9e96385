"""The ``mathse-rl`` command line.

Each subcommand lives beside the code it drives, in a module that exposes
``add_arguments(parser)`` and ``run(args) -> int``; the modules are imported
only when their subcommand runs, so ``mathse-rl --help`` stays fast.

    mathse-rl --version
    mathse-rl verify --gold 7 --response "The answer to this problem is 7."
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from mathse_rl import __version__

# name -> (module with add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("mathse_rl.verify.cli", "check answers with the rule-based verifier"),
    "orm": ("mathse_rl.orm.cli", "build data for, train and evaluate the outcome reward model"),
    "evolve": ("mathse_rl.evolve.cli", "run the self-evolving rounds with reflection from a recipe"),
    "demo": ("mathse_rl.demo", "run the whole method on the embedded synthetic task (CPU, minutes)"),
    "rewards": ("mathse_rl.rewards.cli", "list the registered rewards"),
    "plan": ("mathse_rl.plan.cli", "what a recipe needs per GPU and per node (memory, disk, launch lines), before it runs"),
    "eval": ("mathse_rl.eval.cli", "evaluate a checkpoint (or existing outputs) on MathVista, MathVerse, MATH-Vision, ..."),
}


def _module(name: str):
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mathse-rl",
        description="MathSE: self-evolving reflection training for multimodal math, on trl and verl.",
    )
    parser.add_argument("--version", action="version", version=f"mathse-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported to fill in its arguments.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(_module(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
