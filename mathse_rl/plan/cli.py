"""``mathse-rl plan``: what a recipe needs per GPU and per node, before it starts.

    mathse-rl plan recipes/trl/qwen2_5_vl_7b.yaml
    mathse-rl plan recipes/trl/qwen2_5_vl_7b.yaml judge=orm critic.backend=local critic.model=/ckpt/orm
    mathse-rl plan recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml --gpu-gb 141 --image-tokens 2048

Exit status 0 when everything fits and every launch line parses, 1 otherwise (the problems are listed).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mathse_rl.plan.run import Assumptions

    a = Assumptions()
    parser.add_argument("recipe", help="an evolve, online (trl) or ORM recipe YAML")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, as the recipe's own command takes")
    parser.add_argument("--model", default=None, help="plan with this model (path or hub id) instead of the recipe's")
    parser.add_argument("--gpu-gb", type=float, default=a.gpu_gb, help="memory of one GPU in GB (default 80)")
    parser.add_argument("--prompt-tokens", type=int, default=a.prompt_tokens, help="text tokens of a prompt")
    parser.add_argument("--image-tokens", type=int, default=a.image_tokens, help="LLM tokens per image")
    parser.add_argument("--images", type=int, default=a.images_per_prompt, help="images per prompt")


def run(args: argparse.Namespace) -> int:
    from mathse_rl.plan.run import Assumptions, plan_recipe

    a = Assumptions(gpu_gb=args.gpu_gb, prompt_tokens=args.prompt_tokens, image_tokens=args.image_tokens,
                    images_per_prompt=args.images)
    try:
        plan = plan_recipe(args.recipe, args.overrides, a, model=args.model)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mathse-rl plan: {exc}", file=sys.stderr)
        return 2
    print(plan.render())
    return 0 if plan.fits else 1
