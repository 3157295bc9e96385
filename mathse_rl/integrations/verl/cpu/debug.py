"""Everything a CPU debug run of ``verl.trainer.main_ppo`` needs besides verl itself.

- :func:`write_parquet`: a few multimodal problems (PIL-drawn bars, question, gold answer)
  in verl's RL parquet format (``prompt`` with ``<image>``, ``images``, ``reward_model``).
- :func:`length_parity`: a ``compute_score`` for verl's custom-reward hook that varies
  inside a GRPO group even for a random model (1 for an even response length in
  characters, else 0), so a smoke run shows non-zero advantages and gradients.
  The same score is the reward ``length_parity`` in our rewards registry while the CPU
  backend is enabled (for ``reward.reward_manager.name=mathse``).
- :func:`main_ppo_command`: the full ``python -m verl.trainer.main_ppo`` command line with
  the CPU overrides, for a tiny model and a few steps.

Run ``python -m mathse_rl.integrations.verl.cpu.debug --help`` (what
``scripts/verl_cpu_debug.sh`` calls).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from mathse_rl.integrations.verl.cpu import cpu_overrides

DATA_SOURCE = "mathse_cpu_debug"
_COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}


def _bars_png(red: int, blue: int, size: int = 56) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    unit = size // 10
    for column, (colour, height) in enumerate(((_COLOURS["red"], red), (_COLOURS["blue"], blue))):
        x0 = 8 + column * (size // 2)
        draw.rectangle([x0, size - 2 - height * unit, x0 + size // 4, size - 2], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def debug_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` problems "red bar + blue bar" with the heights drawn only in the image."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        red, blue = rng.randint(1, 9), rng.randint(1, 9)
        question = "What is the sum of the red bar and the blue bar?"
        rows.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": "<image>" + question}],
            "images": [{"bytes": _bars_png(red, blue)}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(red + blue)},
            "extra_info": {"index": i, "question": question, "split": "train"},
        })
    return rows


def write_parquet(path: str | os.PathLike, n: int = 8, seed: int = 0) -> str:
    """Write :func:`debug_rows` to ``path`` (parquet) and return the path."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(debug_rows(n, seed)).to_parquet(path)
    return str(path)


def length_parity(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None,
                  **_kwargs: Any) -> float:
    """1.0 when the response has an even number of characters, else 0.0 (a smoke-test reward).

    >>> length_parity("d", "ab", "3"), length_parity("d", "abc", "3")
    (1.0, 0.0)
    """
    return 1.0 if len(solution_str) % 2 == 0 else 0.0


def _length_parity_reward():
    from mathse_rl.rewards.base import Reward
    from mathse_rl.types import RewardOutput

    class LengthParityReward(Reward):
        """1.0 for a response with an even number of characters, else 0.0 (smoke tests only)."""

        name = "length_parity"
        extras_keys = ("chars",)

        def score(self, samples):
            return [RewardOutput(length_parity("", s.response, s.gold or ""), {"chars": len(s.response)})
                    for s in samples]

    return LengthParityReward


def LengthParityReward(**options: Any):
    """Factory for the registry name ``length_parity`` (registered while the CPU backend is on)."""
    return _length_parity_reward()(**options)


def main_ppo_command(model_path: str, train_file: str, out_dir: str, *, steps: int = 2, batch_size: int = 2,
                     group_size: int = 2, response_length: int = 16, prompt_length: int = 96,
                     reward_file: str | None = None, reward_name: str = "length_parity",
                     extra: Sequence[str] = ()) -> list[str]:
    """The ``main_ppo`` command (argv) for a CPU debug run; ``extra`` overrides come last."""
    reward_file = reward_file or __file__
    return [
        sys.executable, "-m", "verl.trainer.main_ppo",
        *cpu_overrides(1),
        f"data.train_files={train_file}", f"data.val_files={train_file}",
        f"data.train_batch_size={batch_size}", f"data.max_prompt_length={prompt_length}",
        f"data.max_response_length={response_length}", "data.image_key=images",
        "data.filter_overlong_prompts=False", "data.dataloader_num_workers=0", "data.shuffle=False",
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch_size * group_size}",
        "actor_rollout_ref.actor.use_kl_loss=False", "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch_size * group_size}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={batch_size * group_size}",
        f"actor_rollout_ref.rollout.n={group_size}",
        f"actor_rollout_ref.rollout.response_length={response_length}",
        f"actor_rollout_ref.rollout.prompt_length={prompt_length}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.max_model_len=512",
        "actor_rollout_ref.rollout.max_num_batched_tokens=4096",
        "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False",
        f"reward.custom_reward_function.path={reward_file}",
        f"reward.custom_reward_function.name={reward_name}",
        "reward.num_workers=1",
        "trainer.logger=[console,file]", "trainer.val_before_train=False", "trainer.test_freq=-1",
        "trainer.save_freq=-1", f"trainer.total_training_steps={steps}", "trainer.total_epochs=100",
        "trainer.project_name=mathse_cpu_debug", "trainer.experiment_name=run",
        f"trainer.default_local_dir={out_dir}/checkpoints",
        *extra,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run verl's main_ppo for a few steps on CPU with a tiny VLM.")
    parser.add_argument("--out", default="mathse_runs/verl_cpu_debug", help="work folder (model, data, logs)")
    parser.add_argument("--model", default=None, help="model path (default: build a tiny Qwen2.5-VL in --out)")
    parser.add_argument("--steps", type=int, default=2, help="training steps")
    parser.add_argument("--problems", type=int, default=8, help="problems in the generated parquet")
    parser.add_argument("--print-only", action="store_true", help="print the command instead of running it")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, applied last")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    model = args.model
    if model is None:
        from mathse_rl.models.tiny import build_tiny

        model = build_tiny(out / "tiny-vlm", kind="vlm", size="XS")
    train = write_parquet(out / "train.parquet", n=args.problems)
    cmd = main_ppo_command(model, train, str(out), steps=args.steps, extra=args.overrides)
    env = dict(os.environ, VERL_PLATFORM="cpu", VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"),
               HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    if args.print_only:
        print("VERL_PLATFORM=cpu " + " ".join(cmd))
        return 0
    print(f"metrics: {out / 'metrics.jsonl'}", flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
