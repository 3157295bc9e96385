"""Online MathSE in trl: ``MathSETrainer`` from a YAML recipe (a thin entry point).

    python recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_tiny_cpu.yaml \
        --model /path/to/tiny-vlm --train_data train.jsonl
    accelerate launch recipes/trl/mathse_grpo.py --config recipes/trl/mathse_grpo_qwen2_5_vl_7b.yaml \
        --train_data train.jsonl

Every ``MathSEConfig`` field (trl's ``GRPOConfig`` plus ``loss``, ``judge``, ``critic_backend``,
``reflect``, ``reflect_template``, ...) can be set in the YAML or on the command line.
"""

from dataclasses import dataclass, field
from typing import Optional

from trl import TrlParser

from mathse_rl.data.loaders import GOLD_COLUMNS, load_problems
from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
from mathse_rl.integrations.trl.backends import load_policy, save_policy
from mathse_rl.integrations.trl.trainer import online_dataset


@dataclass
class ScriptArguments:
    model: str = field(default="", metadata={"help": "policy model path or hub id"})
    train_data: str = field(default="", metadata={"help": "problems: jsonl | parquet | dataset dir | hf:name:split"})
    reward_funcs: list[str] = field(default_factory=lambda: ["verifier"],
                                    metadata={"help": "reward names from the registry"})
    limit: Optional[int] = field(default=None, metadata={"help": "use only the first N problems"})
    gold_columns: list[str] = field(default_factory=lambda: list(GOLD_COLUMNS), metadata={
        "help": "reference answer columns, per row the first non-empty (default: answer, gold, ground_truth, solution)"})


def main() -> None:
    script, args = TrlParser((ScriptArguments, MathSEConfig)).parse_args_and_config()
    # The loader resolves each row's reference answer (one rule: mathse_rl.data.loaders.gold_of); the
    # dataset handed to trl carries it in its `solution` column, which the judge and the rewards read.
    problems, bad = load_problems(script.train_data, limit=script.limit, gold_columns=script.gold_columns)
    if bad:
        print(f"skipped {len(bad)} bad rows: {bad[:10]}")
    model, processor = load_policy(script.model, dtype="bfloat16" if args.bf16 else "float32")
    trainer = MathSETrainer(model=model, reward_funcs=[make_reward_func(r) for r in script.reward_funcs], args=args,
                            train_dataset=online_dataset(problems), processing_class=processor)
    trainer.train()
    if trainer.accelerator.is_main_process:  # model plus the processor parts generation needs
        save_policy(trainer.accelerator.unwrap_model(trainer.model), processor, f"{args.output_dir}/final")


if __name__ == "__main__":
    main()
