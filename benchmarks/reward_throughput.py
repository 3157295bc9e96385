"""Reward throughput inside the frameworks, side by side.

1. verl: N samples through verl 0.9's real reward loop (``RewardLoopManager``, Ray workers),
   with our ``mathse`` reward manager (micro-batched) and with verl's ``naive`` manager
   calling our ``compute_score`` through ``reward.custom_reward_function.path``.
2. trl: the same N samples through the ``make_reward_func`` callable, in one call (as
   ``GRPOTrainer`` makes it) and one call per sample.
3. The share of a tiny GRPO step (tiny Qwen2.5-VL, CPU) spent inside the reward callable.

    .venv/bin/python benchmarks/reward_throughput.py                 # N=1024, reward=verifier
    .venv/bin/python benchmarks/reward_throughput.py --reward verifier+format --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

PROMPT_LEN, RESPONSE_LEN = 16, 96


def make_samples(n: int, seed: int = 0) -> list[tuple[str, str, list[str] | None]]:
    """(response, gold, choices): right and wrong answers in several forms, about half right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        right = rng.random() < 0.5
        kind = i % 5
        if kind == 0:
            gold, said = str(a + b), str(a + b if right else a + b + 1)
            out.append((f"Step 1: {a} + {b} = {said}. The answer to this problem is {said}.", gold, None))
        elif kind == 1:
            gold, said = f"{a}/{b}", (f"{2 * a}/{2 * b}" if right else f"{a + 1}/{b}")
            out.append((f"Step 1: simplify. The answer to this problem is {said}.", gold, None))
        elif kind == 2:
            gold, said = f"{a / 4:g}", (f"\\frac{{{a}}}{{4}}" if right else f"{a / 4 + 1:g}")
            out.append((f"Dividing gives $\\boxed{{{said}}}$", gold, None))
        elif kind == 3:
            options = [str(a), str(a + 1), str(a + 2), str(a + 3)]
            pick = 2 if right else 1
            out.append((f"Step 1: compare. The answer to this problem is {options[pick]}.", "C", options))
        else:
            gold, said = f"{a} cm", (f"{a * 10} mm" if right else f"{a + 1} cm")
            out.append((f"Step 1: measure. The answer to this problem is {said}.", gold, None))
    return out


def _batch(tokenizer, samples):
    import numpy as np
    import torch
    from verl import DataProto

    n = len(samples)
    pad = tokenizer.pad_token_id
    prompts = torch.full((n, PROMPT_LEN), pad, dtype=torch.long)
    responses = torch.full((n, RESPONSE_LEN), pad, dtype=torch.long)
    mask = torch.zeros(n, PROMPT_LEN + RESPONSE_LEN, dtype=torch.long)
    p_ids = tokenizer("Solve the problem.", add_special_tokens=False)["input_ids"][:PROMPT_LEN]
    for i, (response, _, _) in enumerate(samples):
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"][:RESPONSE_LEN - 1] + [tokenizer.eos_token_id]
        prompts[i, PROMPT_LEN - len(p_ids):] = torch.tensor(p_ids)
        mask[i, PROMPT_LEN - len(p_ids):PROMPT_LEN] = 1
        responses[i, :len(r_ids)] = torch.tensor(r_ids)
        mask[i, PROMPT_LEN:PROMPT_LEN + len(r_ids)] = 1
    raw = np.empty(n, dtype=object)
    for i in range(n):
        raw[i] = [{"role": "user", "content": "Solve the problem."}]
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], 1)},
        non_tensors={
            "data_source": np.array(["bench"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": g, "style": "rule"} for _, g, _ in samples], dtype=object),
            "extra_info": np.array([{"index": i, "choices": c} for i, (_, _, c) in enumerate(samples)], dtype=object),
            "raw_prompt": raw,
        },
    )


def _verl_config(model_path: str, workers: int, overrides: list[str]):
    import verl
    from hydra import compose, initialize_config_dir
    from verl.experimental.reward_loop.reward_loop import migrate_legacy_reward_impl

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={model_path}", f"reward.num_workers={workers}", *overrides])
    return migrate_legacy_reward_impl(cfg)


def bench_verl(model_path, samples, reward: str, workers: int, repeats: int) -> list[tuple[str, float, float]]:
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    from mathse_rl.models.tiny import load_processor, tokenizer_of

    batch = _batch(tokenizer_of(load_processor(model_path)), samples)
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    rows = []
    configs = [
        ("verl reward loop, manager=mathse", ["reward.reward_manager.name=mathse", f"+reward.reward_kwargs.reward={reward}"]),
        ("verl reward loop, naive + compute_score", [
            "reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl",
            f"+reward.custom_reward_function.reward_kwargs.reward={reward}"]),
    ]
    for label, overrides in configs:
        manager = RewardLoopManager(_verl_config(model_path, workers, overrides))
        manager.compute_rm_score(batch[:8])  # workers up, reward built
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = manager.compute_rm_score(batch)
            times.append(time.perf_counter() - t)
        mean_score = float(out.batch["rm_scores"].sum(-1).mean())
        rows.append((label, len(samples) / min(times), mean_score))
        for w in manager.reward_loop_workers:
            ray.kill(w)
        time.sleep(2.0)  # worker names are global; let them go before the next manager
    return rows


def bench_trl(samples, reward: str, repeats: int) -> list[tuple[str, float, float]]:
    from mathse_rl.integrations.trl import make_reward_func

    func = make_reward_func(reward)
    kwargs = dict(prompts=["Solve the problem."] * len(samples),
                  completions=[[{"role": "assistant", "content": r}] for r, _, _ in samples],
                  solution=[g for _, g, _ in samples], choices=[c for _, _, c in samples])
    rows = []
    best, scores = float("inf"), []
    for _ in range(repeats):
        t = time.perf_counter()
        scores = func(**kwargs, log_extra=lambda *a: None, log_metric=lambda *a: None)
        best = min(best, time.perf_counter() - t)
    rows.append(("trl callable, one call per batch", len(samples) / best, sum(scores) / len(scores)))
    t = time.perf_counter()
    one = [func(prompts=[kwargs["prompts"][i]], completions=[kwargs["completions"][i]],
                solution=[kwargs["solution"][i]], choices=[kwargs["choices"][i]])[0] for i in range(len(samples))]
    rows.append(("trl callable, one call per sample", len(samples) / (time.perf_counter() - t), sum(one) / len(one)))
    return rows


class _Timed:
    """Wraps a trl reward callable and adds up the time spent inside it."""

    def __init__(self, func):
        self.func, self.__name__, self.seconds, self.calls = func, func.__name__, 0.0, 0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1


def bench_grpo_step(vlm_path, reward: str, steps: int, batch: int) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from PIL import Image
    from trl import GRPOConfig, GRPOTrainer

    from mathse_rl.integrations.trl import make_reward_func
    from mathse_rl.models.tiny import load_processor, load_tiny

    torch.set_num_threads(1)
    model, _ = load_tiny(vlm_path)
    rows = [{"image": Image.new("RGB", (56, 56), (20 * i % 255, 40, 90)),
             "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"How many? {i}"}]}],
             "solution": str(i)} for i in range(batch)]
    timed = _Timed(make_reward_func(reward))
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                          per_device_train_batch_size=batch, num_generations=2, max_completion_length=16,
                          max_steps=steps, logging_steps=1, save_strategy="no", seed=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[timed], args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=load_processor(vlm_path))
        t = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t
    return {"steps": steps, "step_s": total / steps, "reward_s": timed.seconds / steps,
            "reward_frac": timed.seconds / total, "completions_per_step": batch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="samples scored per measurement")
    ap.add_argument("--reward", default="verifier", help="registry name or composite")
    ap.add_argument("--workers", type=int, default=1, help="verl reward-loop workers")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--grpo-batch", type=int, default=8, help="completions per GRPO step")
    ap.add_argument("--skip-verl", action="store_true")
    ap.add_argument("--skip-grpo", action="store_true")
    args = ap.parse_args()

    from mathse_rl.models.tiny import build_tiny

    samples = make_samples(args.n)
    tmp = tempfile.mkdtemp(prefix="reward-bench-")
    rows = bench_trl(samples, args.reward, args.repeats)
    if not args.skip_verl:
        lm = build_tiny(os.path.join(tmp, "lm"), kind="lm", size="XS")
        rows = bench_verl(lm, samples, args.reward, args.workers, args.repeats) + rows

    print(f"\nreward={args.reward}  samples={args.n}  verl workers={args.workers}  cpus={os.cpu_count()}")
    print(f"{'path':<42} {'samples/s':>10} {'mean reward':>12}")
    for label, rate, mean in rows:
        print(f"{label:<42} {rate:>10.0f} {mean:>12.3f}")

    if not args.skip_grpo:
        vlm = build_tiny(os.path.join(tmp, "vlm"), kind="vlm", size="XS")
        g = bench_grpo_step(vlm, args.reward, args.grpo_steps, args.grpo_batch)
        print(f"\ntiny GRPO step (Qwen2.5-VL XS, CPU, {g['completions_per_step']} completions, {g['steps']} steps)")
        print(f"{'step s':>8} {'reward s':>9} {'reward share':>13}")
        print(f"{g['step_s']:>8.3f} {g['reward_s']:>9.4f} {100 * g['reward_frac']:>12.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
