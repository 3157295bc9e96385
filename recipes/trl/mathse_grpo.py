"""Online MathSE in trl: ``MathSETrainer`` from a YAML recipe (a thin entry point).

    python recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_tiny_cpu.yaml \
        --model /path/to/tiny-vlm --train_data train.jsonl --heldout_data heldout.jsonl
    accelerate launch recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml \
        --train_data train.jsonl

Every ``MathSEConfig`` field (trl's ``GRPOConfig`` plus ``loss``, ``reflect_mode``, ``judge``, ``critic``,
``reflect``, ``reflect_template``, ``reflect_refiner``, ``reflect_openai``, ...) can be set in the YAML or
on the command line. ``--trainer grpo`` runs trl's own ``GRPOTrainer`` on the same data and rewards (the
plain baseline; the MathSE fields are then unused).

**Held-out guard** (``--heldout_data``): the model is scored on the held-out problems before and after
training (greedy; lenient and strict extraction, as the evolve loop reports them), the two scores go to
``<output_dir>/heldout_guard.json``, and the run warns when lenient accuracy falls by more than
``--heldout_margin``, or when strict accuracy falls by more than the margin while lenient holds (the
policy has stopped stating its answer: measured on a colour-grid task at lr 1e-4, held-out answers such
as "There are  red cells and  red cell"). The trained model is still saved; ``delivered`` in the JSON
says which of the two to use.

After a kill, the same command with ``--resume`` continues from the newest checkpoint in
``output_dir`` (``save_steps`` sets how often they are written); ``--resume_from_checkpoint
<dir>`` names one. The final model is saved through ``trainer.save_model`` on every process
(the path that gathers FSDP / ZeRO-3 shards).
"""

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from transformers.trainer_utils import get_last_checkpoint
from trl import TrlParser

from mathse_rl.data.loaders import GOLD_COLUMNS, load_problems
from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
from mathse_rl.integrations.trl.backends import load_model, load_policy
from mathse_rl.integrations.trl.policy import policy_dtype, save_full_model
from mathse_rl.integrations.trl.trainer import online_dataset
from mathse_rl.plan import preflight_online

logger = logging.getLogger("mathse_grpo")
TRAINERS = ("mathse", "grpo")


@dataclass
class ScriptArguments:
    model: str = field(default="", metadata={"help": "policy model path or hub id"})
    train_data: str = field(default="", metadata={"help": "problems: jsonl | parquet | dataset dir | hf:name:split"})
    trainer: str = field(default="mathse", metadata={
        "help": "mathse: MathSETrainer | grpo: trl's own GRPOTrainer (the plain baseline; MathSE fields unused)"})
    reward_funcs: list[str] = field(default_factory=lambda: ["verifier"],
                                    metadata={"help": "reward names from the registry"})
    limit: Optional[int] = field(default=None, metadata={"help": "use only the first N problems"})
    gold_columns: list[str] = field(default_factory=lambda: list(GOLD_COLUMNS), metadata={
        "help": "reference answer columns, per row the first non-empty (default: answer, gold, ground_truth, solution)"})
    heldout_data: str = field(default="", metadata={
        "help": "held-out problems scored before and after training (the guard); empty: no guard"})
    heldout_limit: Optional[int] = field(default=None, metadata={"help": "score only the first N held-out problems"})
    heldout_margin: float = field(default=0.05, metadata={
        "help": "a fall larger than this (accuracy, 0-1) is warned about and delivers the starting model"})
    heldout_max_new_tokens: Optional[int] = field(default=None, metadata={
        "help": "tokens per held-out answer (default: max_completion_length)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: what the machine can give now)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})


def heldout_scores(model_path: str, problems: list, *, max_new_tokens: int, use_cpu: bool) -> dict[str, Any]:
    """Greedy held-out accuracy with lenient and with strict extraction (one generation, two scorings)."""
    from mathse_rl.evolve import Judge, get_generator, load_config
    from mathse_rl.evolve.config import step_config
    from mathse_rl.evolve.evaluate import evaluate

    cfg = load_config(overrides=[f"train.use_cpu={str(use_cpu).lower()}", "generate.batch_size=64"])
    gen = get_generator("hf", cfg, model_path)
    lenient = evaluate(gen, Judge(step_config(cfg, require_final_answer=False)), problems,
                       max_new_tokens=max_new_tokens, batch_size=64)
    strict_judge = Judge(step_config(cfg, require_final_answer=True))
    by_id = {p.id: p for p in problems}
    verdicts = strict_judge.judge([by_id[e["problem_id"]] for e in lenient["examples"]],
                                  [e["response"] for e in lenient["examples"]])
    strict = sum(v.correct is True for v in verdicts) / len(problems)
    return {"accuracy": lenient["accuracy"], "strict_accuracy": strict, "n": len(problems),
            "examples": lenient["examples"][:8]}


def guard_verdict(before: dict[str, Any], after: dict[str, Any], margin: float) -> tuple[str, list[str]]:
    """(``delivered``: ``final`` or ``initial``, warnings) from held-out scores before and after training.

    >>> guard_verdict({"accuracy": 0.30, "strict_accuracy": 0.30}, {"accuracy": 0.31, "strict_accuracy": 0.10}, 0.05)[1]
    ['WARNING: strict held-out accuracy fell 30.0% -> 10.0% while lenient held (30.0% -> 31.0%): the trained model stops stating its answer']
    """
    warnings = []
    fell = after["accuracy"] < before["accuracy"] - margin
    if fell:
        warnings.append(f"WARNING: held-out accuracy fell {100 * before['accuracy']:.1f}% -> "
                        f"{100 * after['accuracy']:.1f}% (margin {100 * margin:.1f} points): the learning rate or the "
                        "number of steps is too high for this task; delivering the starting model")
    elif after["strict_accuracy"] < before["strict_accuracy"] - margin:
        warnings.append(f"WARNING: strict held-out accuracy fell {100 * before['strict_accuracy']:.1f}% -> "
                        f"{100 * after['strict_accuracy']:.1f}% while lenient held ({100 * before['accuracy']:.1f}% -> "
                        f"{100 * after['accuracy']:.1f}%): the trained model stops stating its answer")
    return ("initial" if fell else "final"), warnings


def main() -> None:
    script, args = TrlParser((ScriptArguments, MathSEConfig)).parse_args_and_config()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if script.trainer not in TRAINERS:
        raise SystemExit(f"--trainer must be one of {TRAINERS}, got {script.trainer!r}")
    from mathse_rl.evolve.config import resolve_threads

    import torch

    torch.set_num_threads(resolve_threads(script.threads))
    # The loader resolves each row's reference answer (one rule: mathse_rl.data.loaders.gold_of); the
    # dataset handed to trl carries it in its `solution` column, which the judge and the rewards read.
    problems, bad = load_problems(script.train_data, limit=script.limit, gold_columns=script.gold_columns)
    if bad:
        print(f"skipped {len(bad)} bad rows: {bad[:10]}")
    heldout: list = []
    if script.heldout_data:
        heldout, bad_h = load_problems(script.heldout_data, limit=script.heldout_limit,
                                       gold_columns=script.gold_columns)
        if not heldout:
            raise SystemExit(f"--heldout_data {script.heldout_data}: no usable problems ({bad_h[:3]})")
    checkpoint = args.resume_from_checkpoint
    if script.resume and checkpoint is None:
        checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        print(f"resuming from {checkpoint}" if checkpoint else f"no checkpoint in {args.output_dir}; starting fresh")
    # Refuse a launch that cannot fit (e.g. the 7B recipe under plain DDP) before loading anything.
    preflight_online(vars(args), script.model)
    tokens = script.heldout_max_new_tokens or args.max_completion_length
    before = heldout_scores(script.model, heldout, max_new_tokens=tokens, use_cpu=args.use_cpu) if heldout else None
    # A full fine-tune keeps fp32 master weights (bf16 is the compute dtype); LoRA keeps a bf16 base.
    dtype = policy_dtype(args.bf16, bool(args.lora))
    model, processor = load_policy(script.model, dtype=dtype)
    if checkpoint and os.path.exists(os.path.join(checkpoint, "config.json")):
        # The weights come through from_pretrained: the trainer's own reload matches no key of a
        # Qwen2.5-VL saved in the hub layout and would go on from the base weights. (A sharded FSDP or a
        # LoRA checkpoint holds no loadable model; the trainer restores those itself.)
        model = load_model(checkpoint, dtype=dtype)
    rewards = [make_reward_func(r) for r in script.reward_funcs]
    if script.trainer == "grpo":
        from trl import GRPOTrainer

        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=online_dataset(problems),
                              processing_class=processor)
    else:
        trainer = MathSETrainer(model=model, reward_funcs=rewards, args=args, train_dataset=online_dataset(problems),
                                processing_class=processor)
    trainer.train(resume_from_checkpoint=checkpoint)
    # Every process takes part (FSDP / ZeRO-3 gather their shards, LoRA is merged); the main process
    # writes the weights and the processor parts that generation needs (see load_processing).
    final = f"{args.output_dir}/final"
    save_full_model(trainer, final)
    if before is not None and trainer.accelerator.is_main_process:
        after = heldout_scores(final, heldout, max_new_tokens=tokens, use_cpu=args.use_cpu)
        delivered, warnings = guard_verdict(before, after, script.heldout_margin)
        for w in warnings:
            logger.warning(w)
        report = {"before": before, "after": after, "margin": script.heldout_margin, "warnings": warnings,
                  "delivered": delivered, "model": script.model if delivered == "initial" else final,
                  "trainer": script.trainer, "learning_rate": args.learning_rate, "max_steps": args.max_steps,
                  "steps": trainer.state.global_step,
                  "log_history": [h for h in trainer.state.log_history if "loss" in h or "train_runtime" in h]}
        with open(f"{args.output_dir}/heldout_guard.json", "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"held-out accuracy {100 * before['accuracy']:.1f}% -> {100 * after['accuracy']:.1f}% "
              f"(strict {100 * before['strict_accuracy']:.1f}% -> {100 * after['strict_accuracy']:.1f}%); "
              f"delivered: {delivered}")


if __name__ == "__main__":
    main()
