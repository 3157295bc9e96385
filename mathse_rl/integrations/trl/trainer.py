"""``MathSETrainer``: MathSE's judge → critique → reflect → re-judge inside each trl GRPO step.

For every generation batch, the sampled completions are judged (a reward from the
registry, ``verifier`` by default). Failed ones get a critique from the critic (an ORM
backend: ``verifier`` on CPU, ``local``/``openai`` otherwise) and a refinement written by
the same engine from MathSE's reflection prompt. A refinement the judge verifies *replaces*
the failed completion in place, under the row's original prompt ids, so the batch keeps its
shape; refined rows are trained as answers to the original question.

``loss="grpo"`` keeps trl's GRPO loss: refined rows sit in their group and are scored by
the reward functions like any other completion. ``loss="rft"`` trains a masked NLL on the
accepted rows only (correct samples and verified refinements); rejected rows weigh zero.

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer
    args = MathSEConfig(output_dir="out", loss="rft", judge="verifier", num_generations=4, beta=0.0)
    trainer = MathSETrainer(model=path, reward_funcs=verifier, args=args, train_dataset=ds,
                            processing_class=processor)
    trainer.train()

The dataset is trl's conversational format with a reference answer column (``solution`` or
``answer``; set ``gold_column``) and optional ``images``/``question``/``choices`` columns.

Private trl hooks overridden (trl 1.16, pinned): ``_generate_and_score_completions`` (keeps
the batch's rows for the judge and adds per-row weights), ``_generate`` (judges and refines),
``_compute_loss`` (the ``rft`` loss); used: ``_tokenize_prompts``, ``_generate_single_turn``,
``_get_per_token_logps_and_entropies``. Each is exercised by ``tests/integrations/trl/test_trainer.py``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import trl
from trl import GRPOConfig, GRPOTrainer

from mathse_rl.evolve.components import Critic, Judge
from mathse_rl.prompts import build_reflect_messages
from mathse_rl.integrations.trl.rewards import GOLD_COLUMNS, completion_text, prompt_text
from mathse_rl.types import Judgment, Problem

logger = logging.getLogger(__name__)

LOSSES = ("grpo", "rft")
# The private hooks below are those of this trl line (see the module docstring).
SUPPORTED_TRL = "1.16."


@dataclass
class MathSEConfig(GRPOConfig):
    """trl's ``GRPOConfig`` plus the MathSE options (one line each)."""

    loss: str = field(default="grpo", metadata={"help": "grpo: trl's GRPO loss with refined rows in their group; "
                                                          "rft: masked NLL on accepted rows only"})
    judge: str = field(default="verifier", metadata={"help": "reward name that decides correct/failed"})
    judge_threshold: float = field(default=0.5, metadata={"help": "a completion passes at this judge score"})
    judge_options: Optional[dict] = field(default=None, metadata={
        "help": "options of the judge reward (an orm* judge defaults to the critic's ORM config)"})
    critic_backend: str = field(default="verifier", metadata={"help": "ORM backend that writes critiques"})
    critic_options: Optional[dict] = field(default=None, metadata={"help": "extra orm.load_judge config"})
    reflect: bool = field(default=True, metadata={"help": "refine failed completions with the reflection prompt"})
    reflect_template: str = field(default="paper", metadata={"help": "reflection prompt: paper | short | format"})
    max_refinements_per_group: Optional[int] = field(default=None, metadata={
        "help": "failed completions refined per prompt group (None: all); fewer refinements, cheaper steps"})
    gold_column: Optional[str] = field(default=None, metadata={"help": "reference answer column "
                                                                      "(default: solution, then answer)"})
    question_column: str = field(default="question", metadata={"help": "question text column (default: the "
                                                                      "prompt's last user text)"})

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")


class MathSETrainer(GRPOTrainer):
    """GRPO with MathSE's reflection-rejection sampling inside each generation batch."""

    def __init__(self, *args: Any, judge: Judge | None = None, critic: Any = None, **kwargs: Any):
        if not trl.__version__.startswith(SUPPORTED_TRL):
            raise RuntimeError(f"MathSETrainer overrides private hooks of trl {SUPPORTED_TRL}x; found trl "
                               f"{trl.__version__}. Install mathse-rl[trl] (trl==1.16.*).")
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, MathSEConfig):
            raise TypeError("MathSETrainer needs args=MathSEConfig(...)")
        critic_config = {"backend": self.args.critic_backend, **(self.args.critic_options or {})}
        options = self.args.judge_options or (critic_config if "orm" in self.args.judge else {})
        self.judge = judge or Judge(self.args.judge, self.args.judge_threshold, **options)
        self.critic = critic or Critic(critic_config)
        self._mathse_inputs: list[dict[str, Any]] | None = None
        self._mathse_rows: dict[str, list[Any]] | None = None
        # Time spent in MathSE's own work, for benchmarks/step_overhead.py.
        self.mathse_seconds: dict[str, float] = {"judge": 0.0, "critique": 0.0, "refine": 0.0}

    # ------------------------------------------------------------------ hook 1: keep the rows, add weights
    def _generate_and_score_completions(self, inputs):
        self._mathse_inputs = list(inputs)
        output = super()._generate_and_score_completions(inputs)
        rows = self._mathse_rows
        self._mathse_inputs, self._mathse_rows = None, None
        device = output["completion_ids"].device
        n = output["completion_ids"].size(0)
        if rows is None or len(rows["accepted"]) != n:  # _generate was bypassed (e.g. a rollout_func)
            rows = {"accepted": [True] * n, "refined": [False] * n}
        output["mathse_weight"] = torch.tensor(rows["accepted"], dtype=torch.float32, device=device)
        output["mathse_refined"] = torch.tensor(rows["refined"], dtype=torch.bool, device=device)
        return output

    # ------------------------------------------------------------------ hook 2: judge, critique, refine, replace
    def _generate(self, prompts: list):
        result = list(super()._generate(prompts))
        inputs = self._mathse_inputs
        if inputs is None or len(inputs) != len(prompts):
            return tuple(result)
        prompt_ids, completion_ids, tool_mask, completions, logprobs = result[:5]
        mode = "train" if self.model.training else "eval"
        problems = [self._problem(x, p) for x, p in zip(inputs, prompts)]
        texts = [completion_text(c) for c in completions]

        spent0 = dict(self.mathse_seconds)
        originals = [""] * len(prompts)  # the failed completion a verified refinement replaced
        critique_texts = [""] * len(prompts)
        t0 = time.perf_counter()
        verdicts = [r.correct for r in self.judge.judge(problems, texts)]
        self.mathse_seconds["judge"] += time.perf_counter() - t0
        accepted = list(verdicts)
        refined = [False] * len(prompts)
        failed = [i for i, ok in enumerate(verdicts) if not ok]
        cap = self.args.max_refinements_per_group
        if cap is not None:  # a group's rows are consecutive (trl's RepeatSampler)
            group = self.num_generations if mode == "train" else self.num_generations_eval
            taken: dict[int, int] = {}
            kept = []
            for i in failed:
                if taken.get(i // group, 0) < cap:
                    kept.append(i)
                    taken[i // group] = taken.get(i // group, 0) + 1
            failed = kept

        n_refined = n_verified = 0
        # Evaluation measures the policy as it is: no refinement outside training.
        if self.args.reflect and mode == "train" and self._any_process(len(failed) > 0):
            t0 = time.perf_counter()
            critiques = self._critique([problems[i] for i in failed], [texts[i] for i in failed])
            self.mathse_seconds["critique"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            todo = failed if failed else [0]  # every process must join a distributed generate call
            crit = critiques if failed else [None]
            reflect_prompts = [self._reflect_prompt(prompts[i], problems[i], texts[i], c) for i, c in zip(todo, crit)]
            r_prompt_ids, r_images, r_fields = self._tokenize_prompts(reflect_prompts)
            r_ids, _ = self._generate_single_turn(r_prompt_ids, r_images, r_fields, 1)
            r_texts = self.processing_class.batch_decode(r_ids, skip_special_tokens=True)
            self.mathse_seconds["refine"] += time.perf_counter() - t0
            if failed:
                t0 = time.perf_counter()
                ok = [r.correct for r in self.judge.judge([problems[i] for i in failed], r_texts)]
                self.mathse_seconds["judge"] += time.perf_counter() - t0
                n_refined = len(failed)
                for k, i in enumerate(failed):
                    if not ok[k]:
                        continue
                    # The verified refinement becomes row i's completion; row i keeps its original prompt ids.
                    completion_ids[i] = list(r_ids[k])
                    completions[i] = self._like(completions[i], r_texts[k])
                    if logprobs is not None:
                        # Sampled under the reflection prompt: no valid behaviour logprob under the original
                        # prompt, so NaN, which trl's importance sampling treats as "no correction".
                        logprobs[i] = [math.nan] * len(completion_ids[i])
                    accepted[i] = True
                    refined[i] = True
                    originals[i] = texts[i]
                    critique_texts[i] = critiques[k].error_analysis if critiques[k] is not None else ""
                    n_verified += 1
        if tool_mask is not None:
            for i in range(len(prompts)):
                if refined[i]:
                    tool_mask[i] = [1] * len(completion_ids[i])
        if self.args.loss == "rft":
            self._pending_extra_logs["mathse_weight"].extend(float(a) for a in accepted)
        self._pending_extra_logs["mathse_refined"].extend(refined)
        # With log_completions, trl's completions table shows what a refinement replaced and why.
        self._pending_extra_logs["mathse_wrong_path"].extend(originals)
        self._pending_extra_logs["mathse_critique"].extend(critique_texts)

        n = max(len(prompts), 1)
        metrics = self._metrics[mode]
        metrics["mathse/correct_rate"].append(sum(verdicts) / n)
        metrics["mathse/accept_rate"].append(sum(accepted) / n)
        metrics["mathse/refined"].append(float(n_refined))
        metrics["mathse/refinement_verified"].append(float(n_verified))
        metrics["mathse/reflection_success_rate"].append(n_verified / n_refined if n_refined else 0.0)
        for k, v in self.mathse_seconds.items():
            metrics[f"mathse/{k}_seconds"].append(v - spent0[k])
        self._mathse_rows = {"accepted": accepted, "refined": refined}
        result[1], result[2], result[3], result[4] = completion_ids, tool_mask, completions, logprobs
        return tuple(result)

    # ------------------------------------------------------------------ hook 3: the rft loss
    def _compute_loss(self, model, inputs):
        if self.args.loss != "rft":
            return super()._compute_loss(model, inputs)
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1),
            pixel_values=inputs.get("pixel_values"), image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"), pixel_attention_mask=inputs.get("pixel_attention_mask"),
            spatial_shapes=inputs.get("spatial_shapes"), num_tiles=inputs.get("num_tiles"),
            image_sizes=inputs.get("image_sizes"), token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"), image_position_ids=inputs.get("image_position_ids"),
        )
        return rft_loss(per_token_logps, mask, inputs["mathse_weight"])

    # ------------------------------------------------------------------ helpers
    def _any_process(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([1 if flag else 0], device=self.accelerator.device)
        return bool(self.accelerator.gather(t).sum().item() > 0)

    def _problem(self, row: dict[str, Any], prompt: list) -> Problem:
        gold_cols = (self.args.gold_column,) if self.args.gold_column else GOLD_COLUMNS
        gold = next((row[c] for c in gold_cols if row.get(c) is not None), None)
        question = row.get(self.args.question_column) or prompt_text(prompt)
        choices = row.get("choices")
        images = tuple(part["image"] for m in prompt if isinstance(m.get("content"), list)
                       for part in m["content"] if part.get("type") == "image" and part.get("image") is not None)
        return Problem(id=str(row.get("id", "")), question=str(question), gold=None if gold is None else str(gold),
                       images=images, choices=tuple(choices) if choices else None)

    def _critique(self, problems: list[Problem], texts: list[str]) -> list[Judgment | None]:
        if not problems:
            return []
        try:
            return list(self.critic.critique(problems, texts))
        except Exception as exc:  # a broken critic must not stop training: reflect without a critique
            logger.warning("critic failed on %d completions (%s); reflecting without critique", len(problems), exc)
            return [None] * len(problems)

    def _reflect_prompt(self, prompt: list, problem: Problem, wrong: str, critique: Judgment | None) -> list:
        system = [m for m in prompt if m.get("role") == "system"]
        messages = build_reflect_messages(problem, wrong, critique, template=self.args.reflect_template)
        images = iter(problem.images)
        for m in messages:
            if isinstance(m["content"], list):
                m["content"] = [{**part, "image": next(images)} if part.get("type") == "image" else part
                                for part in m["content"]]
        return system + messages

    @staticmethod
    def _like(completion: Any, text: str) -> Any:
        """A completion with ``text`` in the same shape trl produced (plain string or assistant turn)."""
        if isinstance(completion, str):
            return text
        return [{"role": "assistant", "content": text}]


def rft_loss(per_token_logps: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Masked NLL over accepted rows: mean of ``-log p`` over the tokens of rows with weight > 0.

    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.1]]))
    >>> round(rft_loss(lp, torch.ones(2, 2), torch.tensor([1.0, 0.0])).item(), 4)
    0.6931
    """
    w = weight.to(per_token_logps.dtype).unsqueeze(1) * mask.to(per_token_logps.dtype)
    denom = w.sum().clamp(min=1.0)
    return -(per_token_logps * w).sum() / denom


def online_dataset(problems):
    """trl rows for ``MathSETrainer`` from problems: solve prompt, images, reference answer, question.

    Images given as paths decode lazily (datasets' Image feature); PIL images are kept as they are.
    """
    from datasets import Dataset, Image, Sequence as HFSequence

    from mathse_rl.prompts import build_solve_messages

    data = {"id": [p.id for p in problems], "prompt": [build_solve_messages(p) for p in problems],
            "solution": [p.gold for p in problems], "question": [p.question for p in problems]}
    if any(p.images for p in problems):
        data["images"] = [list(p.images) for p in problems]
    ds = Dataset.from_dict(data)
    if "images" in data and all(isinstance(i, str) for p in problems for i in p.images):
        ds = ds.cast_column("images", HFSequence(Image()))
    return ds
