"""How fast a tiny Qwen2.5-VL learns the synthetic bar-chart world on this CPU.

Trains from random weights on teacher solutions (a fresh problem per example, or a fixed
seed set of N problems) with a plain torch loop, and prints held-out greedy accuracy,
the share of fully correct step chains, and pass@k at the end, per difficulty level.

    .venv/bin/python benchmarks/demo_learnability.py --size S --steps 300 --eval-every 100
    .venv/bin/python benchmarks/demo_learnability.py --size S --steps 300 --seed-set 200
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
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed-set", type=int, default=0, help="train on N fixed problems (0: fresh each step)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--pass-k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", default="1,2,3")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from mathse_rl.data import synthetic, teacher
    from mathse_rl.demo import Encoder, build_world_model, generate, train_steps
    from mathse_rl.models.tiny import load_tiny

    cfg = synthetic.WorldConfig(levels=tuple(int(x) for x in args.levels.split(",")))
    path = build_world_model(tempfile.mkdtemp() + "/m", size=args.size, seed=args.seed)
    model, proc = load_tiny(path)
    enc = Encoder(proc)
    held = synthetic.make_split("heldout", args.eval_n, seed=args.seed, cfg=cfg)
    n_train = args.seed_set or args.steps * args.batch
    train = synthetic.make_split("train", n_train, seed=args.seed, cfg=cfg)
    pairs = [(p, teacher.teacher_solution(p)) for p in train]
    print(f"params {sum(p.numel() for p in model.parameters())/1e6:.2f}M; prompt tokens "
          f"{len(enc.prompt(held[0])['ids'])}; solution tokens "
          f"{len(enc.tok(teacher.teacher_solution(held[0]))['input_ids'])}", flush=True)

    def evaluate(tag: str, k: int = 1) -> None:
        t = time.time()
        outs = generate(model, enc, held, n=1)
        acc = sum(teacher.extract_answer(o[0]) == p.gold for p, o in zip(held, outs)) / len(held)
        full = sum(teacher.check_steps(p, o[0]).all_correct for p, o in zip(held, outs)) / len(held)
        by_level = {}
        for p, o in zip(held, outs):
            by_level.setdefault(p.meta["level"], []).append(teacher.extract_answer(o[0]) == p.gold)
        lv = " ".join(f"L{k_}={sum(v)/len(v):.2f}" for k_, v in sorted(by_level.items()))
        line = f"[{tag}] greedy acc {acc:.3f} all-steps {full:.3f} ({lv}) eval {time.time()-t:.1f}s"
        if k > 1:
            samples = generate(model, enc, held[:100], n=k, temperature=1.0)
            pk = sum(any(teacher.extract_answer(s) == p.gold for s in ss) for p, ss in zip(held, samples)) / 100
            s_acc = sum(teacher.extract_answer(s) == p.gold for p, ss in zip(held, samples) for s in ss) / (100 * k)
            ok = [teacher.check_steps(p, s).all_correct for p, ss in zip(held, samples) for s in ss
                  if teacher.extract_answer(s) == p.gold]
            line += (f" | pass@{k} {pk:.2f} sample-acc {s_acc:.2f} "
                     f"correct-answer samples fully right {sum(ok)/max(1,len(ok)):.2f}")
        print(line, flush=True)

    t0 = time.time()
    done = 0
    while done < args.steps:
        chunk = min(args.eval_every, args.steps - done)
        # one cosine phase over the whole run: schedule by total steps via offset seeds
        train_steps(model, enc, pairs, chunk, batch_size=args.batch, lr=args.lr, seed=args.seed + done)
        done += chunk
        evaluate(f"step {done} t={time.time()-t0:.0f}s", k=args.pass_k if done == args.steps else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
