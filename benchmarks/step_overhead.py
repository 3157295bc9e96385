"""What MathSE costs on top of the trainer it runs in, measured side by side in one process.

1. Online: wall time per optimiser step of ``MathSETrainer`` (judge → critique → reflect →
   re-judge inside each step) against a plain trl ``GRPOTrainer`` on the same tiny VLM, data,
   batch, group size ``n`` and completion length. The two trainers alternate in blocks, so
   load on a shared machine hits both alike; the median step of each is compared. The random
   tiny model fails every question, so *every* row is critiqued and refined: the worst case.
   MathSE's own time is split into judging, critique and refinement.
2. Offline: one run of the evolve loop (trl generate + SFTTrainer) with time per stage and
   the share spent on bookkeeping (durable files and stage records).

    python benchmarks/step_overhead.py                 # tiny S model, ~2-4 minutes on 2 CPU cores
    python benchmarks/step_overhead.py --size XS --blocks 2 --steps 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def problems(n: int, prefix: str = "q"):
    from PIL import Image

    from mathse_rl.types import Problem

    return [Problem(id=f"{prefix}{i}", question=f"What is {i + 2} + {2 * i + 3}?", gold=str(3 * i + 5),
                    images=(Image.new("RGB", (56, 56), ((40 * i) % 255, 90, 160)),)) for i in range(n)]


class StepTimer:
    """A trainer callback that records the wall time of each optimiser step."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def __getattr__(self, name):  # every other callback event is a no-op
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)


def online(model_path: str, a) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mathse_rl.prompts import build_solve_messages
    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy

    rows = [{"prompt": build_solve_messages(p), "images": list(p.images), "solution": p.gold, "question": p.question}
            for p in problems(max(8, a.batch))]
    common = dict(use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                  per_device_train_batch_size=a.batch, num_generations=a.n, max_completion_length=a.max_new_tokens,
                  max_steps=a.steps, temperature=1.0, beta=0.0, logging_steps=1, save_strategy="no",
                  learning_rate=1e-5, seed=0, disable_tqdm=True)
    out = Path(tempfile.mkdtemp(prefix="step-overhead-"))
    times = {"grpo": [], "mathse": []}
    shares = {"judge": 0.0, "critique": 0.0, "refine": 0.0}
    mathse_total = 0.0
    refined = verified = 0.0
    for block in range(a.blocks):
        for kind in ("grpo", "mathse"):
            model, proc = load_policy(model_path)
            timer = StepTimer()
            if kind == "grpo":
                args = GRPOConfig(output_dir=str(out / kind), **common)
                trainer = GRPOTrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                                      train_dataset=Dataset.from_list(rows), processing_class=proc, callbacks=[timer])
            else:
                args = MathSEConfig(output_dir=str(out / kind), loss=a.loss,
                                    max_refinements_per_group=a.max_refinements_per_group, **common)
                trainer = MathSETrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                                        train_dataset=Dataset.from_list(rows), processing_class=proc,
                                        callbacks=[timer])
            trainer.train()
            steps = timer.times[1:] if block == 0 else timer.times  # the very first step warms caches
            times[kind].extend(steps)
            if kind == "mathse":
                mathse_total += sum(timer.times)
                for k in shares:
                    shares[k] += trainer.mathse_seconds[k]
                hist = [h for h in trainer.state.log_history if "mathse/refined" in h]
                refined += sum(h["mathse/refined"] for h in hist)
                verified += sum(h["mathse/refinement_verified"] for h in hist)
    g, m = statistics.median(times["grpo"]), statistics.median(times["mathse"])
    return {"grpo_step_s": g, "mathse_step_s": m, "ratio": m / g, "steps_each": len(times["grpo"]),
            "shares": {k: v / mathse_total for k, v in shares.items()}, "refined": refined, "verified": verified}


def offline(model_path: str, a) -> list[dict]:
    from mathse_rl.evolve import load_config, run_evolve
    from mathse_rl.types import Attempt

    train, heldout = problems(a.problems), problems(4, prefix="h")
    seed = [Attempt(train[0].id, f"Step 1: add. The answer to this problem is {train[0].gold}.", "distilled")]
    out = Path(tempfile.mkdtemp(prefix="evolve-bench-"))
    cfg = load_config(**{
        "model": model_path, "output_dir": str(out), "rounds": 2,
        "generate": {"n": a.n, "temperature": 1.0, "max_new_tokens": a.max_new_tokens, "batch_size": 8},
        "train": {"use_cpu": True, "max_steps": a.steps, "per_device_train_batch_size": 4,
                  "gradient_accumulation_steps": 1, "learning_rate": 1e-4},
        "eval": {"k": 0}, "tracking": {"report_to": ["none"], "progress": False}})
    result = run_evolve(cfg, train, heldout, seed_attempts=seed)
    rows = [{"stage": s, "seconds": r["seconds"], "bookkeeping": r["bookkeeping_seconds"]}
            for s, r in result.stages.items()]
    rows.append({"stage": "whole run (incl. stage records)", "seconds": result.wall_seconds,
                 "bookkeeping": result.bookkeeping_seconds})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="S", choices=["XS", "S", "L"], help="tiny model size")
    p.add_argument("--batch", type=int, default=8, help="rows per step (prompts x n)")
    p.add_argument("--n", type=int, default=4, help="completions per prompt (GRPO group size)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="completion length")
    p.add_argument("--steps", type=int, default=3, help="optimiser steps per block (and SFT steps offline)")
    p.add_argument("--blocks", type=int, default=3, help="alternating GRPO/MathSE blocks")
    p.add_argument("--loss", default="grpo", choices=["grpo", "rft"], help="MathSETrainer loss")
    p.add_argument("--max-refinements-per-group", type=int, default=None,
                   help="MathSEConfig.max_refinements_per_group (default: refine every failed completion)")
    p.add_argument("--problems", type=int, default=8, help="training problems in the offline loop")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--skip-offline", action="store_true")
    a = p.parse_args(argv)

    import torch

    from mathse_rl.models.tiny import build_tiny

    torch.set_num_threads(a.threads)
    model_path = build_tiny(Path(tempfile.gettempdir()) / f"mathse-bench-vlm-{a.size}", kind="vlm", size=a.size)
    print(f"# step overhead: tiny VLM {a.size}, batch {a.batch}, n {a.n}, completion {a.max_new_tokens} tokens, "
          f"{a.threads} thread(s), loss {a.loss}, reflection on, refinements per group "
          f"{a.max_refinements_per_group or 'all'}\n")
    r = online(model_path, a)
    print("| trainer | median step (s) | steps timed |")
    print("|---|---|---|")
    print(f"| trl GRPOTrainer | {r['grpo_step_s']:.3f} | {r['steps_each']} |")
    print(f"| MathSETrainer | {r['mathse_step_s']:.3f} | {r['steps_each']} |")
    print(f"\nratio MathSE / GRPO: **{r['ratio']:.2f}** (target <= 2.0); rows refined {r['refined']:.0f}, "
          f"verified {r['verified']:.0f}")
    print("share of MathSETrainer step time: " + ", ".join(f"{k} {v:.1%}" for k, v in r["shares"].items()))
    if a.skip_offline:
        return 0
    rows = offline(model_path, a)
    print("\n| stage | seconds | bookkeeping (s) | share |")
    print("|---|---|---|---|")
    for x in rows:
        print(f"| {x['stage']} | {x['seconds']:.2f} | {x['bookkeeping']:.3f} | {x['bookkeeping'] / max(x['seconds'], 1e-9):.1%} |")
    for i in (1, 2):
        rs = [x for x in rows if x["stage"].startswith(f"r{i}.")]
        tot, bk = sum(x["seconds"] for x in rs), sum(x["bookkeeping"] for x in rs)
        print(f"\nround {i}: {tot:.2f} s, bookkeeping {bk:.3f} s = **{bk / tot:.1%}** of the round (target <= 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
