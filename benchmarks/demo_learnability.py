"""How fast a tiny Qwen2.5-VL learns the synthetic bar-chart world on this CPU, through the
project's own parts (the evolve loop's ``sft`` trainer backend and ``hf`` generator).

Each budget in ``--steps`` trains from the same random weights on teacher solutions (a fresh
problem per example, or a fixed seed set of N problems) with cosine decay to zero, then prints
held-out greedy accuracy, the share of fully correct step chains per difficulty level, and
pass@k for the largest budget.

    .venv/bin/python benchmarks/demo_learnability.py --size S --steps 100,200,300
    .venv/bin/python benchmarks/demo_learnability.py --size S --steps 150 --seed-set 128
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
    ap.add_argument("--size", default="S")
    ap.add_argument("--steps", default="300", help="comma-separated step budgets, each trained from scratch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed-set", type=int, default=0, help="train on N fixed problems (0: fresh each example)")
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--pass-k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", default="1,2,3")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mathse_rl.data import synthetic, teacher
    from mathse_rl.demo import build_world_model
    from mathse_rl.evolve import get_generator, get_trainer, load_config
    from mathse_rl.evolve.components import solve_row
    from mathse_rl.prompts import build_solve_messages

    cfg = synthetic.WorldConfig(levels=tuple(int(x) for x in args.levels.split(",")))
    work = tempfile.mkdtemp()
    path = build_world_model(work + "/m", size=args.size, seed=args.seed)
    held = synthetic.make_split("heldout", args.eval_n, seed=args.seed, cfg=cfg)
    budgets = [int(s) for s in args.steps.split(",")]

    def evaluate(gen, tag: str, k: int = 1) -> None:
        t = time.time()
        msgs, imgs = [build_solve_messages(p) for p in held], [p.images for p in held]
        outs = gen.generate(msgs, imgs, n=1, temperature=0.0, max_new_tokens=96)
        acc = sum(teacher.extract_answer(o[0]) == p.gold for p, o in zip(held, outs)) / len(held)
        full = sum(teacher.check_steps(p, o[0]).all_correct for p, o in zip(held, outs)) / len(held)
        by_level: dict[int, list[bool]] = {}
        for p, o in zip(held, outs):
            by_level.setdefault(p.meta["level"], []).append(teacher.extract_answer(o[0]) == p.gold)
        lv = " ".join(f"L{k_}={sum(v)/len(v):.2f}" for k_, v in sorted(by_level.items()))
        line = f"[{tag}] greedy acc {acc:.3f} all-steps {full:.3f} ({lv}) eval {time.time()-t:.1f}s"
        if k > 1:
            samples = gen.generate(msgs[:100], imgs[:100], n=k, temperature=1.0, max_new_tokens=96)
            pk = sum(any(teacher.extract_answer(s) == p.gold for s in ss) for p, ss in zip(held, samples)) / 100
            s_acc = sum(teacher.extract_answer(s) == p.gold for p, ss in zip(held, samples) for s in ss) / (100 * k)
            ok = [teacher.check_steps(p, s).all_correct for p, ss in zip(held, samples) for s in ss
                  if teacher.extract_answer(s) == p.gold]
            line += (f" | pass@{k} {pk:.2f} sample-acc {s_acc:.2f} "
                     f"correct-answer samples fully right {sum(ok)/max(1,len(ok)):.2f}")
        print(line, flush=True)

    for steps in budgets:
        n_train = args.seed_set or steps * args.batch
        rows = [solve_row(p, teacher.teacher_solution(p), "distilled")
                for p in synthetic.make_split("train", n_train, seed=args.seed, cfg=cfg)]
        ecfg = load_config(overrides=[f"train.max_steps={steps}", f"train.per_device_train_batch_size={args.batch}",
                                      "train.gradient_accumulation_steps=1", "train.use_cpu=true",
                                      f"train.learning_rate={args.lr}", "train.weight_decay=0.0", "train.save_steps=0",
                                      f"train.seed={args.seed}", "generate.batch_size=64"])
        t0 = time.time()
        ckpt = get_trainer("sft", ecfg).train(rows, path, f"{work}/s{steps}")
        evaluate(get_generator("hf", ecfg, ckpt), f"{steps} steps, train {time.time()-t0:.0f}s",
                 k=args.pass_k if steps == budgets[-1] else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
