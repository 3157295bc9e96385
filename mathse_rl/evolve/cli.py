"""``mathse-rl evolve``: run the self-evolving rounds from a recipe.

    mathse-rl evolve --config recipes/trl/tiny_cpu.yaml model=/path/to/model data.train=train.jsonl
    mathse-rl evolve --config recipes/trl/tiny_cpu.yaml output_dir=runs/a --resume   # after a kill
    mathse-rl evolve --config recipes/trl/qwen2_5_vl_7b.yaml judge=orm critic.backend=local \\
        critic.model=/ckpt/orm reflect.refiner=openai

Overrides are ``key=value`` in OmegaConf dot-list form; bad keys fail before any work starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help="YAML recipe (see recipes/trl/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir at the first unfinished stage")
    parser.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rounds=3 generate.n=4")


def run(args: argparse.Namespace) -> int:
    """Run the loop; a bad setting (config key, missing model or file, empty eval set, a run
    already holding the output directory) is one line on stderr and exit status 2."""
    from mathse_rl.evolve.config import ConfigError
    from mathse_rl.evolve.lock import RunLockedError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ConfigError, RunLockedError) as exc:
        print(f"mathse-rl evolve: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from mathse_rl.data.loaders import load_problems, load_seed_attempts
    from mathse_rl.eval.data import load_eval_set
    from mathse_rl.evolve.config import check_paths, load_config, to_yaml
    from mathse_rl.evolve.loop import run_evolve

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"overrides must be key=value, got {bad}", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg))
        return 0
    if not cfg.model:
        print("no model: set model=<path or hub id>", file=sys.stderr)
        return 2
    if not cfg.data.train:
        print("no training problems: set data.train=<jsonl | parquet | dir | hf:name:split>", file=sys.stderr)
        return 2
    check_paths(cfg)  # model, data files, image root: before anything is loaded or written
    cols = tuple(cfg.data.gold_columns)
    train, bad_train = load_problems(cfg.data.train, image_root=cfg.data.image_root, limit=cfg.data.limit,
                                     gold_columns=cols)
    # data.eval may name a benchmark's release (mathvista:testmini:PATH): its prompt and scoring rules apply.
    heldout, bad_eval = (load_eval_set(cfg.data.eval, image_root=cfg.data.image_root, gold_columns=cols)
                         if cfg.data.eval else ([], []))
    seed, bad_seed = load_seed_attempts(cfg.data.seed) if cfg.data.seed else ([], [])
    skipped = []
    for name, rows in (("train", bad_train), ("eval", bad_eval), ("seed", bad_seed)):
        if rows:
            print(f"skipped {len(rows)} bad {name} rows: " + ", ".join(f"{r['id']} ({r['reason']})" for r in rows[:10]),
                  file=sys.stderr)
        skipped.extend({"id": str(r["id"]), "split": name, "reason": str(r["reason"])} for r in rows)
    if not train:
        print("no usable training problems", file=sys.stderr)
        return 2
    result = run_evolve(cfg, train, heldout if cfg.data.eval else None, seed_attempts=seed, resume=args.resume,
                        skipped=skipped)
    summary = {"output_dir": result.output_dir, "pool": result.pool_counts, "delivered": result.final_checkpoint,
               "delivered_stage": result.delivered_stage, "best_accuracy": result.best_accuracy,
               "made_worse": [w["stage"] for w in result.worse_stages],
               "skipped_problems": len(result.skipped_problems),
               "heldout": [{k: h.get(k) for k in ("stage", "accuracy")} for h in result.heldout]}
    print(json.dumps(summary, indent=1))
    return 0
