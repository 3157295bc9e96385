"""The evolve loop's ``sft`` backend (trl's SFTTrainer) with and without its per-stage example cache
(``train.cache_mb``), on the demo's M0 stage: the same rows, model and steps, side by side in one run.

Reports wall time and this process's CPU time (CPU time stays meaningful when other jobs share the
cores), the median over ``--repeats`` alternating runs, and checks that both give the same losses.
One thread, tiny Qwen2.5-VL size S, batch 32, 128 teacher-solved seed problems (the demo's M0).

    .venv/bin/python benchmarks/demo_trainer_speed.py --steps 30 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", default="S")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from mathse_rl.data import synthetic, teacher
    from mathse_rl.demo import build_world_model
    from mathse_rl.evolve import get_trainer, load_config
    from mathse_rl.evolve.components import solve_row

    d = tempfile.mkdtemp()
    base = build_world_model(d + "/m", size=args.size)
    probs = synthetic.make_split("seed", args.rows, seed=0, cfg=synthetic.WorldConfig(levels=(1,)))
    rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in probs]
    common = [f"train.max_steps={args.steps}", f"train.per_device_train_batch_size={args.batch}",
              "train.gradient_accumulation_steps=1", "train.use_cpu=true", "train.learning_rate=1e-3",
              "train.save_steps=0"]
    arms = {"sft, cache": load_config(overrides=common), "sft, no cache": load_config(overrides=[*common,
                                                                                               "train.cache_mb=0"])}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    losses: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        for name, cfg in (arms.items() if rep % 2 == 0 else reversed(arms.items())):
            w, c = time.perf_counter(), time.process_time()
            out = get_trainer("sft", cfg).train(rows, base, f"{d}/{name.replace(', ', '-')}-{rep}")
            times[name].append((time.perf_counter() - w, time.process_time() - c))
            losses[name] = json.load(open(out + "/mathse_train.json"))["losses"]
    print(f"| backend | steps x batch | wall s (median) | CPU s (median) | CPU s / step |\n|---|---|---|---|---|")
    for name, ts in times.items():
        wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        print(f"| {name} | {args.steps} x {args.batch} | {wall:.1f} | {cpu:.1f} | {cpu / args.steps:.3f} |")
    a, b = (statistics.median(t[1] for t in times[k]) for k in arms)
    print(f"CPU time ratio no cache / cache: {b / a:.2f}; losses identical: {losses['sft, cache'] == losses['sft, no cache']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
