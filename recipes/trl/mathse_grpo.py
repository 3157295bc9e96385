"""Online MathSE in trl: ``MathSETrainer`` from a YAML recipe (a thin entry point).

    python recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_tiny_cpu.yaml \
        --model /path/to/tiny-vlm --train_data train.jsonl
    accelerate launch recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml \
        --train_data train.jsonl

Every ``MathSEConfig`` field (trl's ``GRPOConfig`` plus ``loss``, ``reflect_mode``, ``judge``, ``critic``,
``reflect``, ``reflect_template``, ...) can be set in the YAML or on the command line.

After a kill, the same command with ``--resume`` continues from the newest checkpoint in
``output_dir`` (``save_steps`` sets how often they are written); ``--resume_from_checkpoint
<dir>`` names one. The final model is saved through ``trainer.save_model`` on every process
(the path that gathers FSDP / ZeRO-3 shards).
"""

import os
from dataclasses import dataclass, field
from typing import Optional

from transformers.trainer_utils import get_last_checkpoint
from trl import TrlParser

from mathse_rl.data.loaders import GOLD_COLUMNS, load_problems
from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
from mathse_rl.integrations.trl.backends import load_model, load_policy
from mathse_rl.integrations.trl.policy import policy_dtype, save_full_model
from mathse_rl.integrations.trl.trainer import online_dataset
from mathse_rl.plan import preflight_online


@dataclass
class ScriptArguments:
    model: str = field(default="", metadata={"help": "policy model path or hub id"})
    train_data: str = field(default="", metadata={"help": "problems: jsonl | parquet | dataset dir | hf:name:split"})
    reward_funcs: list[str] = field(default_factory=lambda: ["verifier"],
                                    metadata={"help": "reward names from the registry"})
    limit: Optional[int] = field(default=None, metadata={"help": "use only the first N problems"})
    gold_columns: list[str] = field(default_factory=lambda: list(GOLD_COLUMNS), metadata={
        "help": "reference answer columns, per row the first non-empty (default: answer, gold, ground_truth, solution)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})


def main() -> None:
    script, args = TrlParser((ScriptArguments, MathSEConfig)).parse_args_and_config()
    # The loader resolves each row's reference answer (one rule: mathse_rl.data.loaders.gold_of); the
    # dataset handed to trl carries it in its `solution` column, which the judge and the rewards read.
    problems, bad = load_problems(script.train_data, limit=script.limit, gold_columns=script.gold_columns)
    if bad:
        print(f"skipped {len(bad)} bad rows: {bad[:10]}")
    checkpoint = args.resume_from_checkpoint
    if script.resume and checkpoint is None:
        checkpoint = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
        print(f"resuming from {checkpoint}" if checkpoint else f"no checkpoint in {args.output_dir}; starting fresh")
    # Refuse a launch that cannot fit (e.g. the 7B recipe under plain DDP) before loading anything.
    preflight_online(vars(args), script.model)
    # A full fine-tune keeps fp32 master weights (bf16 is the compute dtype); LoRA keeps a bf16 base.
    dtype = policy_dtype(args.bf16, bool(args.lora))
    model, processor = load_policy(script.model, dtype=dtype)
    if checkpoint and os.path.exists(os.path.join(checkpoint, "config.json")):
        # The weights come through from_pretrained: the trainer's own reload matches no key of a
        # Qwen2.5-VL saved in the hub layout and would go on from the base weights. (A sharded FSDP or a
        # LoRA checkpoint holds no loadable model; the trainer restores those itself.)
        model = load_model(checkpoint, dtype=dtype)
    trainer = MathSETrainer(model=model, reward_funcs=[make_reward_func(r) for r in script.reward_funcs], args=args,
                            train_dataset=online_dataset(problems), processing_class=processor)
    trainer.train(resume_from_checkpoint=checkpoint)
    # Every process takes part (FSDP / ZeRO-3 gather their shards, LoRA is merged); the main process
    # writes the weights and the processor parts that generation needs (see load_processing).
    save_full_model(trainer, f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
