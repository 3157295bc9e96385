"""Which learning rate the online CPU recipe can ship: held-out accuracy before and after the recipe's
GRPO steps, per learning rate, on the demo's bar-chart world and on a task nobody tuned it for
(:mod:`mathse_rl.data.tiles`), from an M0 distilled the way the demo distils it.

Each run is ``recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_tiny_cpu.yaml`` as a user
runs it (with its held-out guard), only ``--learning_rate`` and ``--max_steps`` changed; two runs go
side by side, one thread each.

    python benchmarks/demo_online_lr.py --task tiles --lrs 1e-4,5e-5,2e-5 --steps 60 --out mathse_runs/lr-tiles
    python benchmarks/demo_online_lr.py --task bars --trainer mathse --teacher --lrs 1e-4,2e-5 --out mathse_runs/lr-bars
    python benchmarks/demo_online_lr.py --table mathse_runs/lr-*            # the table of finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def task_problems(task: str, seed: int, n_seed: int, n_pool: int, n_heldout: int):
    """(seed set, pool, held-out, vocabulary text) of a task."""
    if task == "bars":
        from mathse_rl.data import synthetic, teacher

        world = synthetic.WorldConfig(levels=(1,), mc_rate=0.25)
        return (synthetic.make_split("seed", n_seed, seed=seed, cfg=world),
                synthetic.make_split("train", n_pool, seed=seed, cfg=world),
                synthetic.make_split("heldout", n_heldout, seed=seed, cfg=world),
                synthetic.vocabulary_text(), teacher.teacher_solution)
    if task == "tiles":
        from mathse_rl.data import tiles

        return (tiles.make_split("seed", n_seed, seed), tiles.make_split("pool", n_pool, seed),
                tiles.make_split("heldout", n_heldout, seed), tiles.vocabulary_text(seed), tiles.teacher_solution)
    raise SystemExit(f"unknown task {task!r}: bars | tiles")


def prepare(args) -> dict[str, str]:
    """The task's data files and an M0 (the demo's recipe: seed set, ``--m0-steps`` of batch 32 at lr 1e-3)."""
    from mathse_rl.data.synthetic import write_problems
    from mathse_rl.evolve import get_trainer, load_config
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.models.tiny import build_tiny

    out = Path(args.out)
    seed_set, pool, heldout, vocab, solve = task_problems(args.task, args.seed, args.seed_problems, args.pool,
                                                          args.heldout)
    data = {"pool": write_problems(out / "data" / "pool.jsonl", pool),
            "heldout": write_problems(out / "data" / "heldout.jsonl", heldout)}
    m0 = out / "m0"
    if not (m0 / "config.json").exists():
        base = build_tiny(out / "base", kind="vlm", size=args.size, seed=args.seed, extra_text=vocab,
                          vocab_size=768, tag=f"{args.task}-v1")
        cfg = load_config(overrides=[f"train.max_steps={args.m0_steps}", "train.per_device_train_batch_size=32",
                                     "train.gradient_accumulation_steps=1", "train.use_cpu=true",
                                     "train.learning_rate=1e-3", "train.weight_decay=0.0", "train.save_steps=0",
                                     f"train.seed={args.seed}"])
        get_trainer("sft", cfg).train([solve_row(p, solve(p), "distilled") for p in seed_set], base, str(m0))
    return {**data, "m0": str(m0)}


def run(args) -> int:
    files = prepare(args)
    lrs = [s.strip() for s in args.lrs.split(",") if s.strip()]
    procs: list[tuple[str, subprocess.Popen]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    teacher, refiner = None, []
    if args.teacher:  # the bar world's teacher endpoint writes the refinements (what the demo's MathSE arm uses)
        from mathse_rl.data.teacher_server import MODEL_NAME, serve_teacher
        from mathse_rl.integrations.trl.backends import load_processing

        if args.task != "bars":
            raise SystemExit("--teacher: only the bar world has a teacher endpoint")
        teacher = serve_teacher(tokenizer=getattr(load_processing(files["m0"]), "tokenizer", None))
        refiner = ["--reflect_refiner", "openai", "--reflect_openai",
                   json.dumps({"base_url": teacher.url + "/v1", "model": MODEL_NAME, "max_tokens": 96})]
    t0 = time.time()
    for lr in lrs:
        while sum(p.poll() is None for _, p in procs) >= args.jobs:
            time.sleep(2)
        out = Path(args.out) / f"{args.trainer}{'-teacher' if args.teacher else ''}-lr{lr}"
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(ROOT / "recipes/trl/mathse_grpo.py"), "--config",
               str(ROOT / "recipes/trl/mathse_grpo_tiny_cpu.yaml"), "--model", files["m0"],
               "--train_data", files["pool"], "--heldout_data", files["heldout"], "--output_dir", str(out),
               "--learning_rate", lr, "--max_steps", str(args.steps), "--seed", str(args.seed), "--threads", "1",
               "--trainer", args.trainer, *refiner, *args.extra]
        procs.append((lr, subprocess.Popen(cmd, stdout=open(out / "run.log", "w"), stderr=subprocess.STDOUT,
                                           env=env, cwd=str(ROOT))))
    for lr, p in procs:
        print(f"lr {lr}: exit {p.wait()}", flush=True)
    if teacher is not None:
        teacher.stop()
    print(f"{time.time() - t0:.0f}s for {len(lrs)} runs")
    print(table([Path(args.out)]))
    return 0


def table(dirs: list[Path]) -> str:
    lines = ["| task | trainer | learning rate | steps | held-out before (lenient / strict) | after | change "
             "(points) | delivered | warning |", "|---|---|---|---|---|---|---|---|---|"]
    for d in dirs:
        for g in sorted(d.glob("*-lr*/heldout_guard.json")):
            r = json.loads(g.read_text())
            r["trainer"] = g.parent.name.rsplit("-lr", 1)[0]
            b, a = r["before"], r["after"]
            lines.append(f"| {d.name} | {r['trainer']} | {r['learning_rate']:g} | {r['steps']} | "
                         f"{100 * b['accuracy']:.1f} / {100 * b['strict_accuracy']:.1f} | "
                         f"{100 * a['accuracy']:.1f} / {100 * a['strict_accuracy']:.1f} | "
                         f"{100 * (a['accuracy'] - b['accuracy']):+.1f} | {r['delivered']} | "
                         f"{'yes' if r['warnings'] else '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="tiles")
    ap.add_argument("--lrs", default="1e-4,5e-5,2e-5")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--trainer", default="mathse", help="mathse (the recipe as shipped) | grpo")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="S")
    ap.add_argument("--seed-problems", type=int, default=128)
    ap.add_argument("--pool", type=int, default=256)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--m0-steps", type=int, default=150)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--teacher", action="store_true", help="bars only: reflect through the teacher endpoint")
    ap.add_argument("--table", nargs="*", default=None, help="print the table of these finished output folders")
    args, extra = ap.parse_known_args(argv)
    args.extra = extra  # further recipe flags, passed as given
    if args.table is not None:
        print(table([Path(t) for t in args.table]))
        return 0
    if not args.out:
        raise SystemExit("--out is required")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
