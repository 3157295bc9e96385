"""Helpers of the MathSETrainer tests: the taught questions, a vLLM-server stand-in, a two-process worker.

``python -m torch.distributed.run --nproc_per_node 2 trl_parts.py MODEL OUT`` runs one optimizer step per
scenario on every process (gloo, CPU) and writes what rank 0 saw to ``OUT`` (see ``main``).
"""

from __future__ import annotations

from PIL import Image

from mathse_rl.types import Problem

GOLDS = {"three": "3", "seven": "7", "five": "5"}
SOLVE_ANSWER = "The answer to this problem is 3."
REFLECT_ANSWER = "The answer to this problem is 7."


def problem(key: str) -> Problem:
    colour = {"three": (200, 20, 20), "seven": (20, 200, 20), "five": (20, 20, 200)}[key]
    return Problem(id=key, question=f"How many {key} bars?", gold=GOLDS[key],
                   images=(Image.new("RGB", (56, 56), colour),))


def solve_prompt(p: Problem) -> list[dict]:
    # A short solve prompt keeps the tiny model's sequences short on CPU.
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": p.question}]}]


def rows(keys=tuple(GOLDS)) -> list[dict]:
    """trl dataset rows, one per key (keys may repeat)."""
    return [{"id": k, "prompt": solve_prompt(problem(k)), "images": list(problem(k).images),
             "solution": GOLDS[k], "question": problem(k).question} for k in keys]



# One optimizer step measured by SGD with lr 1 and no clipping: the parameter change is minus the gradient.
STEP_ARGS = dict(optim="sgd", learning_rate=1.0, max_grad_norm=0.0, lr_scheduler_type="constant", weight_decay=0.0,
                 max_steps=1)


def make_trainer(path, out_dir, loss: str, keys=tuple(GOLDS), cls=None, **kw):
    """A MathSETrainer on the taught VLM over ``keys`` (in this order: no dataset shuffling)."""
    from datasets import Dataset

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer, make_reward_func
    from mathse_rl.integrations.trl.backends import load_policy

    model, processor = load_policy(str(path))
    options = dict(output_dir=str(out_dir), use_cpu=True, bf16=False, gradient_checkpointing=False,
                   report_to="none", per_device_train_batch_size=6, num_generations=2, max_completion_length=12,
                   max_steps=2, temperature=0.05, logging_steps=1, save_strategy="no", learning_rate=1e-4, seed=0,
                   beta=0.0, loss=loss, reflect_template="short", shuffle_dataset=False, disable_tqdm=True)
    options.update(kw)
    return (cls or MathSETrainer)(model=model, reward_funcs=make_reward_func("verifier"),
                                  args=MathSEConfig(**options), train_dataset=Dataset.from_list(rows(keys)),
                                  processing_class=processor)


def one_step_delta(trainer):
    """Run ``trainer.train()`` (one optimizer step) and return the flat parameter change."""
    import torch

    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    return torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.model.parameters(), before)])


def server_split_trainer():
    """MathSETrainer whose generation hands results back the way trl's vLLM server mode does.

    In server mode trl gathers every process's prompts (``gather_object``, rank order), generates them in one
    call and gives process p the rows ``p * len(prompts) .. (p + 1) * len(prompts) - 1`` of the result. Here each
    process generates its own rows with transformers, then the same gather and slice apply, so a process that
    sends fewer rows than another receives someone else's completions, as it would from the server.
    """
    from accelerate.utils import gather_object

    from mathse_rl.integrations.trl import MathSETrainer

    class ServerSplitTrainer(MathSETrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                          has_tool_images)
            # rows per generate call on this process: the step's own generation first, then reflection rounds
            self.generate_calls = getattr(self, "generate_calls", []) + [len(prompt_ids)]
            everyone = gather_object([list(x) for x in ids]) if self.accelerator.num_processes > 1 else ids
            start = self.accelerator.process_index * len(prompt_ids)
            return everyone[start: start + len(prompt_ids)], logprobs

    return ServerSplitTrainer


# Two-process scenarios: name -> (loss, keys, per-process batch, extra options). With 2 processes and no
# shuffling, process 0 gets the first half of the rows (both "three" groups: no failures) and process 1 the
# second half ("seven" and "five": every row fails). The one-process reference runs twice the batch.
SCENARIOS = {
    "rft": ("rft", ("three", "three", "seven", "five"), 4, {}),
    "grpo_add": ("grpo", ("three", "three", "seven", "five"), 4, {"reflect_mode": "add"}),
    # One "seven" group (2 rows) split over the 2 processes, one refinement allowed per group.
    "cap": ("rft", ("seven",), 1, {"max_refinements_per_group": 1}),
}


def run_scenario(name: str, path, out_dir, processes: int):
    """One optimizer step of a scenario; returns (parameter change, what the logs say)."""
    loss, keys, batch, extra = SCENARIOS[name]
    trainer = make_trainer(path, out_dir, loss, keys=keys, cls=server_split_trainer(),
                           per_device_train_batch_size=batch * 2 // processes, **STEP_ARGS, **extra)
    delta = one_step_delta(trainer)
    logged = next(h for h in trainer.state.log_history if "mathse/reflected" in h)
    seen = {"metrics": {k: v for k, v in logged.items() if k.startswith("mathse/") and "seconds" not in k},
            "refined": [bool(x) for x in trainer._logs["extra"]["mathse_refined"]],
            "prompts": [str(p) for p in trainer._logs["prompt"]],
            "completions": [str(c) for c in trainer._logs["completion"]]}
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # rows each process generated in reflection rounds
        from accelerate.utils import gather_object

        seen["reflection_rows"] = gather_object([sum(getattr(trainer, "generate_calls", [0])[1:])])
    return delta, seen


def main(model_path: str, out: str) -> None:
    import json
    from pathlib import Path

    import torch
    import torch.distributed as dist

    out_dir = Path(out)
    results = {}
    for name in SCENARIOS:
        delta, seen = run_scenario(name, model_path, out_dir / name, processes=2)
        if dist.get_rank() == 0:
            torch.save(delta, out_dir / f"{name}.pt")
            results[name] = seen
    if dist.get_rank() == 0:
        (out_dir / "seen.json").write_text(json.dumps(results))


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:3])
