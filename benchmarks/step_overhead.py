"""What MathSE costs on top of the trainer it runs in, measured side by side in one process.

1. Online: wall time per optimiser step of ``MathSETrainer`` (the MathSE step inside each GRPO
   step) against a plain trl ``GRPOTrainer`` on the same tiny VLM, data, batch, group size ``n``
   and completion length, for each ``reflect_mode`` (replace, add) in the worst case (the random
   tiny model fails every row: every row is critiqued and refined) and a typical one (half the
   rows of each group refined: ``max_refinements_per_group = n/2``). Besides the ratio to the GRPO
   step, the table gives what MathSE adds *besides generating the refinement* two ways: across
   runs (MathSE step − GRPO step − the refinement's own generation, logged per step by the
   trainer; as noisy as the GRPO quartiles printed beside it) and within the same step
   (MathSE's generate hook − trl's generation inside it − the refinement's generation: judging,
   critique, reflection prompts, bookkeeping, gathers), and the loss+backward time of each arm.
   The arms alternate in blocks, so load on a shared machine hits all alike; medians are compared.
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
    """A trainer callback that records the wall time of each optimiser step, and per step the time
    spent in the methods :meth:`clock` wraps."""

    def __init__(self):
        self.times: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self._t0 = 0.0
        self._now: dict[str, float] = {}

    def clock(self, cls: type, name: str, label: str):
        """Time ``cls.name`` (looked up at call time, so ``super()`` calls are timed too); returns an undo."""
        original = cls.__dict__[name]

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._now[label] = self._now.get(label, 0.0) + time.perf_counter() - t0

        setattr(cls, name, timed)
        return lambda: setattr(cls, name, original)

    def __getattr__(self, name):  # every other callback event is a no-op
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_begin(self, args, state, control, **kw):
        self._now = {}
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t0)
        for label in set(self.parts) | set(self._now):
            self.parts.setdefault(label, [0.0] * (len(self.times) - 1)).append(self._now.get(label, 0.0))


# Per-step seconds MathSETrainer logs for its parts: the step module's counters (``mathse/seconds/*``),
# else the trainer's own timers of the earlier layout.
PART_KEYS = {"generate": ("mathse/seconds/generate", "mathse/refine_seconds"),
             "judge": ("mathse/seconds/judge", "mathse/judge_seconds"),
             "critique": ("mathse/seconds/critique", "mathse/critique_seconds")}


def _part(entry: dict, part: str) -> float | None:
    return next((float(entry[k]) for k in PART_KEYS[part] if k in entry), None)


def modes_available() -> list[str]:
    """``reflect_mode`` values this tree's MathSEConfig takes (``replace`` alone before it had the field)."""
    import dataclasses

    from mathse_rl.integrations.trl import MathSEConfig

    fields = {f.name: f for f in dataclasses.fields(MathSEConfig)}
    return ["replace", "add"] if "reflect_mode" in fields else ["replace"]


def online(model_path: str, a, configs: list[tuple[str, str, int | None]]) -> dict:
    """Median step of plain GRPO and of MathSETrainer per (mode, case, refinements per group),
    blocks alternating so load on a shared machine hits every arm alike."""
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
    arms = [("grpo", None, None)] + configs
    steps: dict[tuple, list[float]] = {arm: [] for arm in arms}
    parts: dict[tuple, dict[str, list[float]]] = {arm: {k: [] for k in PART_KEYS} for arm in arms}
    refined: dict[tuple, float] = {arm: 0.0 for arm in arms}
    own: dict[tuple, list[float]] = {arm: [] for arm in arms}
    loss: dict[tuple, list[float]] = {arm: [] for arm in arms}
    for block in range(a.blocks):
        for arm in arms:
            mode, cap = arm[1], arm[2]
            model, proc = load_policy(model_path)
            timer = StepTimer()
            undo = [timer.clock(GRPOTrainer, "_generate", "trl_generate"),
                    timer.clock(GRPOTrainer, "_compute_loss", "loss"),
                    timer.clock(MathSETrainer, "_generate", "mathse_generate")]
            if "_compute_loss" in MathSETrainer.__dict__:
                undo.append(timer.clock(MathSETrainer, "_compute_loss", "loss"))
            data = Dataset.from_list(rows)
            if mode is None:
                args = GRPOConfig(output_dir=str(out / "grpo"), **common)
                trainer = GRPOTrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                                      train_dataset=data, processing_class=proc, callbacks=[timer])
            else:
                extra = {"reflect_mode": mode} if "add" in modes_available() else {}
                args = MathSEConfig(output_dir=str(out / "mathse"), loss="grpo", max_refinements_per_group=cap,
                                    **extra, **common)
                trainer = MathSETrainer(model=model, reward_funcs=make_reward_func("verifier"), args=args,
                                        train_dataset=data, processing_class=proc, callbacks=[timer])
            try:
                trainer.train()
            finally:
                for u in undo:
                    u()
            logs = [h for h in trainer.state.log_history if "loss" in h or any(k.startswith("mathse/") for k in h)]
            first = 1 if block == 0 else 0  # the very first step warms caches
            steps[arm].extend(timer.times[first:])
            loss[arm].extend(timer.parts.get("loss", [])[first:])
            for k, entry in enumerate(logs[:len(timer.times)]):
                gen = _part(entry, "generate")
                for name in PART_KEYS:
                    v = _part(entry, name)
                    if v is not None and k >= first:
                        parts[arm][name].append(v)
                if mode is not None and k >= first and gen is not None:
                    # Same step, same process: MathSE's generate hook minus trl's own generation inside it
                    # and minus the refinement's generation = judging, critique, bookkeeping, gathers.
                    own[arm].append(timer.parts["mathse_generate"][k] - timer.parts["trl_generate"][k] - gen)
                n = next((entry[key] for key in ("mathse/reflected", "mathse/refined") if key in entry), None)
                if k >= first:
                    refined[arm] = float("nan") if n is None else refined[arm] + float(n)
    g = statistics.median(steps[arms[0]])
    q = statistics.quantiles(steps[arms[0]], n=4) if len(steps[arms[0]]) > 1 else [g, g, g]
    result = {"grpo_step_s": g, "grpo_iqr": (q[0], q[2]), "grpo_loss_s": statistics.median(loss[arms[0]]),
              "steps_each": len(steps[arms[0]]), "arms": []}
    own_all = own
    for arm in configs:
        m = statistics.median(steps[arm])
        gen = statistics.median(parts[arm]["generate"]) if parts[arm]["generate"] else float("nan")
        own = sum(statistics.median(parts[arm][k]) for k in ("judge", "critique") if parts[arm][k])
        result["arms"].append({"label": arm[0], "mode": arm[1], "step_s": m, "generate_s": gen, "own_s": own,
                               "refined_per_step": refined[arm] / max(len(steps[arm]), 1),
                               "added_s": m - g - gen, "direct_s": statistics.median(own_all[arm]),
                               "loss_s": statistics.median(loss[arm])})
    return result


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
    p.add_argument("--modes", nargs="+", default=["replace", "add"], help="reflect_mode values to measure")
    p.add_argument("--problems", type=int, default=8, help="training problems in the offline loop")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--skip-offline", action="store_true")
    a = p.parse_args(argv)

    import torch

    from mathse_rl.models.tiny import build_tiny

    torch.set_num_threads(a.threads)
    model_path = build_tiny(Path(tempfile.gettempdir()) / f"mathse-bench-vlm-{a.size}", kind="vlm", size=a.size)
    print(f"# step overhead: tiny VLM {a.size}, batch {a.batch}, n {a.n}, completion {a.max_new_tokens} tokens, "
          f"{a.threads} thread(s), loss grpo, reflection on; the random model fails every row, so the worst "
          f"case refines all of them and the typical one {max(1, a.n // 2)} per group of {a.n}\n")
    modes = [m for m in a.modes if m in modes_available()]
    for m in set(a.modes) - set(modes):
        print(f"reflect_mode {m!r}: not in this tree's MathSEConfig (not measured)")
    typical = max(1, a.n // 2)
    configs = [(f"{m}, worst (every row refined)", m, None) for m in modes] + \
              [(f"{m}, typical (half the rows refined)", m, typical) for m in modes]
    r = online(model_path, a, configs)
    g = r["grpo_step_s"]
    lo, hi = r["grpo_iqr"]
    print(f"plain trl GRPOTrainer: median step {g:.3f} s (quartiles {lo:.3f}-{hi:.3f} s), loss+backward "
          f"{r['grpo_loss_s']:.3f} s ({r['steps_each']} steps timed)\n")
    print("| MathSE arm | median step (s) | / GRPO | refinement generation (s) | rows refined | "
          "step - GRPO - refinement (s) | MathSE's own work in the step (s) | own / GRPO step | loss+backward (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in r["arms"]:
        print(f"| {x['label']} | {x['step_s']:.3f} | {x['step_s'] / g:.2f} | {x['generate_s']:.3f} | "
              f"{x['refined_per_step']:.1f} | {x['added_s']:+.3f} ({x['added_s'] / g:+.1%}) | {x['direct_s']:.3f} | "
              f"**{x['direct_s'] / g:.1%}** | {x['loss_s']:.3f} |")
    print("\nstep - GRPO - refinement: medians of separate runs (noise: the GRPO quartiles above). MathSE's own "
          "work: in the same step, MathSE's generate hook minus trl's generation inside it minus the refinement's "
          "generation (judging, critique, reflection prompts, bookkeeping, gathers); target <= 10% of a GRPO step. "
          "loss+backward: trl's loss (add mode: + the SFT term on refinements) per step.")
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
