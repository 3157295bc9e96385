"""trl's SFTTrainer (the evolve loop's ``sft`` backend) vs the demo's plain torch loop
(``torch`` backend) on the same rows, model and steps.

Reports wall time and this process's CPU time (CPU time stays meaningful when other jobs
share the cores). One thread, tiny Qwen2.5-VL size S, batch 32.

    .venv/bin/python benchmarks/demo_trainer_speed.py --steps 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="S")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from mathse_rl.data import synthetic, teacher
    from mathse_rl.demo import TorchSFTTrainer, build_world_model, register_demo_trainer
    from mathse_rl.evolve import get_trainer, load_config
    from mathse_rl.evolve.components import solve_row

    d = tempfile.mkdtemp()
    base = build_world_model(d + "/m", size=args.size)
    probs = synthetic.make_split("seed", args.batch * 4, seed=0, cfg=synthetic.WorldConfig(levels=(1, 2)))
    rows = [solve_row(p, teacher.teacher_solution(p), "distilled") for p in probs]
    cfg = load_config(overrides=[f"train.max_steps={args.steps}", f"train.per_device_train_batch_size={args.batch}",
                                 "train.gradient_accumulation_steps=1", "train.use_cpu=true",
                                 "train.learning_rate=1e-3", "tracking.progress=false"])
    register_demo_trainer()
    print(f"| backend | steps x batch | wall s | CPU s | CPU s / step |\n|---|---|---|---|---|")
    for name in ("sft", "torch"):
        trainer = get_trainer(name, cfg)
        w, c = time.perf_counter(), time.process_time()
        trainer.train(rows, base, f"{d}/{name}")
        w, c = time.perf_counter() - w, time.process_time() - c
        print(f"| {name} | {args.steps} x {args.batch} | {w:.1f} | {c:.1f} | {c / args.steps:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
