"""``MathSETrainer``: MathSE's judge → critique → reflect → re-judge inside each trl GRPO step.

For every generation batch the trainer hands its sampled completions to the MathSE step
(:mod:`mathse_rl.step`: one judge with tri-state verdicts, critique, reflect-and-rejudge within a
token budget, counters) and converts the outcome back into trl's batch; it judges and reflects
nothing itself. Refinements are written by trl's own engine (transformers or vLLM) from the
reflection prompt. The step's options are flat fields here, one for each step name: ``judge``,
``judge_options``, ``judge_threshold`` (``threshold``), ``critic``, ``reflect`` (``reflect.enabled``),
``reflect_template`` / ``reflect_attempts`` / ``reflect_temperature`` / ``reflect_max_tokens``
(``reflect.*``), ``require_final_answer``, ``undecidable_as_wrong``. Undecidable completions (no gold,
timeout, judge failure) are never accepted; they are left out (reward None) unless ``undecidable_as_wrong``.

One verdict per path: the GRPO reward of a completion is derived from the step judge's verdict on it
(:class:`mathse_rl.integrations.trl.rewards.JudgeRewardFunc`; ``reward_funcs=None`` uses it alone);
a reward function that would decide differently is refused at start (:func:`bind_judge_rewards`).

What is trained (one line per mode; the default is the first of each):

* ``loss="grpo"``, ``reflect_mode="add"``: trl's GRPO loss on the policy's own samples, failures
  included with their (negative) advantage; every verified refinement adds a supervised term,
  ``refine_sft_coef`` × mean NLL of the refinement under the row's *original* prompt, normalised
  over the refinement tokens of the whole optimizer step. The refinement is text the policy did
  not sample for that prompt, so it is trained off-policy on purpose (no ratio, no advantage).
  A group that reflection makes all-correct still teaches: its refinements carry the SFT term.
* ``loss="grpo"``, ``reflect_mode="replace"``: a verified refinement takes its failure's place
  in the group and is scored like an on-policy sample (the older behaviour, kept as an option:
  the failure's negative advantage is lost and the refinement's ratio is computed as if sampled).
* ``loss="rft"``: rejection-sampling fine-tuning, i.e. supervised learning on accepted paths
  (correct samples and verified refinements, the latter under the original prompt): the NLL summed
  over accepted tokens and divided by the number of accepted tokens of the whole optimizer step
  (all processes, all accumulated micro-batches). Its scale does not depend on rejected samples,
  gradient accumulation, ``steps_per_generation``, ``num_iterations`` or the number of processes.
  No KL or entropy term (``beta`` is ignored); ``reflect_mode`` does not change what rft trains.

Token normalisation is exact when ``steps_per_generation`` is a multiple of
``gradient_accumulation_steps`` (trl's default makes them equal); otherwise an optimizer step
spans generation batches not sampled yet and the count is estimated as trl's ``dapo`` loss does
(the generation batch's count × accumulation / steps_per_generation), with a warning.

    from mathse_rl.integrations.trl import MathSEConfig, MathSETrainer
    args = MathSEConfig(output_dir="out", loss="rft", judge="verifier", num_generations=4, beta=0.0)
    trainer = MathSETrainer(model=path, reward_funcs=verifier, args=args, train_dataset=ds,
                            processing_class=processor)
    trainer.train()

The dataset is trl's conversational format with a reference answer (per row the first non-empty of
``answer``, ``gold``, ``ground_truth``, ``solution``, or ``gold_column``) and optional
``images``/``question``/``choices``/``data_source`` columns.

Several processes: each reflection round gathers every process's refinement requests and shares them out
evenly, so every process joins each generate call with the same row count (trl's vLLM server and
tensor-parallel colocate modes hand results back by ``process_index * len(prompts)``) and a round costs
``ceil(total / processes)`` rows per process, not the largest request count everywhere; ``max_refinements_per_group`` counts over global groups, which
may span processes; the step's counters (``mathse/refine_rate``, ``refine_verified``, ``judge_errors``,
``reflect_too_long``, ``truncated``, ``generate_errors``, ``accepted_frac``, per data source from a
``data_source`` column, seconds per part) are summed over all processes before trl logs them. A
reflection call that raises is counted (``generate_errors``) and training goes on; with vLLM server
mode an exception on the main process inside trl's broadcast cannot be recovered by the others.

Private trl hooks overridden (trl 1.16, pinned): ``_generate_and_score_completions`` (keeps
the batch's rows for the judge and adds per-row tensors), ``_generate`` (judges and refines),
``_prepare_inputs`` (per-step token counts), ``_compute_loss`` (the rft loss, the refinement SFT
term), ``_get_per_token_logps_and_entropies`` (refinements scored in the GRPO forward pass); used:
``_tokenize_prompts``, ``_generate_single_turn``, ``_buffered_inputs``, ``generation_config``. Each is exercised by ``tests/integrations/trl/``.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import trl
from trl import GRPOConfig, GRPOTrainer

from mathse_rl.data.loaders import GOLD_COLUMNS, gold_of
from mathse_rl.integrations.trl.rewards import JudgeRewardFunc, bind_judge_rewards, completion_text, prompt_text
from mathse_rl.step import (Critic, Generation, Judge, ReflectItem, ReflectRequest, StepConfig, StepCounters,
                            TokenBudget, critique, reflect_and_rejudge, step_config)
from mathse_rl.types import Problem

logger = logging.getLogger(__name__)

LOSSES = ("grpo", "rft")
REFLECT_MODES = ("add", "replace")
# The private hooks below are those of this trl line (see the module docstring).
SUPPORTED_TRL = "1.16."


@dataclass
class MathSEConfig(GRPOConfig):
    """trl's ``GRPOConfig`` plus the MathSE options (one line each)."""

    loss: str = field(default="grpo", metadata={"help": "grpo: trl's GRPO loss (+ refinement SFT term in add mode); "
                                                          "rft: NLL on accepted paths, normalised per optimizer step"})
    # The MathSE step's options (mathse_rl.step.StepConfig), flat: reflect_<x> is the step's reflect.<x>.
    judge: str = field(default="verifier", metadata={"help": "step judge: reward name that decides correctness"})
    judge_options: Optional[dict] = field(default=None, metadata={
        "help": "step judge_options: options of the judge reward (orm*: default the critic's config)"})
    judge_threshold: float = field(default=0.5, metadata={
        "help": "step threshold: a custom judge reward with no verdict of its own passes at this score"})
    critic: Optional[dict] = field(default=None, metadata={
        "help": "step critic: orm.load_judge config writing critiques (default {backend: verifier})"})
    reflect: bool = field(default=True, metadata={"help": "step reflect.enabled: refine failed completions"})
    reflect_template: str = field(default="paper", metadata={"help": "step reflect.template: paper | short | format"})
    reflect_attempts: int = field(default=1, metadata={"help": "step reflect.attempts: refinements per failure"})
    reflect_temperature: Optional[float] = field(default=None, metadata={
        "help": "step reflect.temperature: refinement sampling temperature (None: temperature)"})
    reflect_max_tokens: Optional[int] = field(default=None, metadata={
        "help": "step reflect.max_tokens: new tokens per refinement (None: max_completion_length)"})
    reflect_refiner: str = field(default="policy", metadata={
        "help": "who writes refinements: policy (trl's engine, the policy itself) | openai (a teacher behind an "
                "OpenAI-compatible endpoint, reflect_openai; the offline loop's reflect.refiner=openai)"})
    reflect_openai: Optional[Union[dict, str]] = field(default=None, metadata={
        "help": "the endpoint of reflect_refiner=openai, the offline loop's reflect.openai keys: model, base_url, "
                "api_key_env, max_tokens, concurrency, timeout (a JSON string on the command line)"})
    require_final_answer: bool = field(default=True, metadata={
        "help": "step require_final_answer: the verifier judge accepts only a stated final answer"})
    undecidable_as_wrong: bool = field(default=False, metadata={
        "help": "step undecidable_as_wrong: an undecidable completion (no gold, timeout, judge failure) is rewarded "
                "0.0 and reflected on like a wrong one (default: reward None, left out of the group)"})
    reflect_mode: str = field(default="add", metadata={
        "help": "grpo only. add: keep the failure in its group, train the verified refinement by an SFT term; "
                "replace: the refinement takes the failure's place as an on-policy sample"})
    refine_sft_coef: float = field(default=1.0, metadata={
        "help": "weight of the SFT term on verified refinements (loss=grpo, reflect_mode=add)"})
    max_refinements_per_group: Optional[int] = field(default=None, metadata={
        "help": "failed completions refined per prompt group, counted over all processes (None: all)"})
    gold_column: Optional[str] = field(default=None, metadata={
        "help": "reference answer column (default: per row the first non-empty of answer, gold, ground_truth, "
                "solution)"})
    question_column: str = field(default="question", metadata={"help": "question text column (default: the "
                                                                      "prompt's last user text)"})
    lora: Optional[dict] = field(default=None, metadata={
        "help": "LoRA adapters instead of a full fine-tune: peft.LoraConfig fields, e.g. {r: 64, lora_alpha: 128} "
                "(target_modules all-linear: the language model's linear layers); the frozen base loads in bf16"})
    launch_config: Optional[str] = field(default=None, metadata={
        "help": "the accelerate config this recipe is launched with (FSDP / ZeRO-3; relative to the recipe): "
                "mathse-rl plan reads it and prints the launch line"})
    launch_processes: int = field(default=1, metadata={"help": "processes (GPUs) of the launch, for mathse-rl plan"})
    check_memory: bool = field(default=True, metadata={
        "help": "refuse at start a launch whose memory plan does not fit the GPUs (mathse-rl plan's numbers)"})

    def step_config(self) -> StepConfig:
        """The step module's config from the flat fields (unknown or bad values fail here)."""
        reflect = {"enabled": self.reflect, "template": self.reflect_template, "attempts": self.reflect_attempts,
                   "temperature": self.reflect_temperature, "max_tokens": self.reflect_max_tokens}
        return step_config({"judge": self.judge, "judge_options": self.judge_options or {},
                            "critic": self.critic or {"backend": "verifier"}, "reflect": reflect,
                            "require_final_answer": self.require_final_answer, "threshold": self.judge_threshold,
                            "undecidable_as_wrong": self.undecidable_as_wrong})

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.reflect_mode not in REFLECT_MODES:
            raise ValueError(f"reflect_mode must be one of {REFLECT_MODES}, got {self.reflect_mode!r}")
        if self.refine_sft_coef < 0:
            raise ValueError(f"refine_sft_coef must be >= 0, got {self.refine_sft_coef}")
        if isinstance(self.reflect_openai, str):
            import json

            self.reflect_openai = json.loads(self.reflect_openai)
        if self.reflect_refiner not in ("policy", "openai"):
            raise ValueError(f"reflect_refiner must be policy or openai, got {self.reflect_refiner!r}")
        if self.reflect_refiner == "openai" and not (self.reflect_openai or {}).get("base_url"):
            raise ValueError("reflect_refiner=openai needs reflect_openai={'base_url': ..., 'model': ...}")
        if self.reflect_refiner != "policy" and self.reflect_attempts > 1:
            # A later attempt reflects on the previous refinement; the refiner protocol is handed the original
            # wrong path, so only one attempt is exact through a refiner.
            raise ValueError("reflect_attempts > 1 is supported with reflect_refiner=policy only")
        self.step_config()  # fail on bad step options before any work starts


class MathSETrainer(GRPOTrainer):
    """GRPO with MathSE's reflection-rejection sampling inside each generation batch."""

    def __init__(self, *args: Any, judge: Judge | None = None, critic: Any = None, refiner: Any = None,
                 **kwargs: Any):
        """``judge``/``critic``: step objects to use instead of those built from ``args``; ``refiner``: an
        evolve-loop refiner (``refine(problems, wrong, critiques, ...)``) writing the refinements instead of
        the policy (default: the one ``reflect_refiner`` names; ``policy``: trl's own engine)."""
        if not trl.__version__.startswith(SUPPORTED_TRL):
            raise RuntimeError(f"MathSETrainer overrides private hooks of trl {SUPPORTED_TRL}x; found trl "
                               f"{trl.__version__}. Install mathse-rl[trl] (trl==1.16.*).")
        # One verdict per path: the GRPO reward is derived from the step's judge; a reward that would
        # decide differently is refused here, before the model loads (mathse_rl.integrations.trl.rewards).
        bound = inspect.signature(GRPOTrainer.__init__).bind(None, *args, **kwargs)
        config = bound.arguments.get("args")
        if not isinstance(config, MathSEConfig):
            raise TypeError("MathSETrainer needs args=MathSEConfig(...)")
        step = config.step_config()
        judge = judge or Judge(step)
        funcs = bound.arguments.get("reward_funcs")
        bound.arguments["reward_funcs"] = JudgeRewardFunc(judge) if funcs is None else bind_judge_rewards(funcs, judge)
        if config.lora and bound.arguments.get("peft_config") is None:
            from mathse_rl.integrations.trl.policy import lora_config

            bound.arguments["peft_config"] = lora_config(config.lora)  # trl wraps the policy and syncs merged weights to vLLM
        super().__init__(*bound.args[1:], **bound.kwargs)
        self.step = step
        self.judge = judge
        self.critic = critic or Critic(self.step.critic)
        self.refiner = refiner if refiner is not None else self._configured_refiner()
        self._mathse_inputs: list[dict[str, Any]] | None = None
        self._mathse_rows: dict[str, list[Any]] | None = None
        # Refinement rows scored in the GRPO loss's forward pass (add mode), and their log-probabilities.
        self._mathse_ride_along: tuple[torch.Tensor, torch.Tensor] | None = None
        self._mathse_ride_along_logps: torch.Tensor | None = None
        if self.args.loss == "rft" and self.beta != 0.0:
            logger.warning("loss=rft has no KL term: beta=%s only costs a reference forward pass", self.beta)
        if self.args.steps_per_generation % self.args.gradient_accumulation_steps:
            logger.warning("steps_per_generation (%d) is not a multiple of gradient_accumulation_steps (%d): the "
                           "token count of an optimizer step is estimated, not counted",
                           self.args.steps_per_generation, self.args.gradient_accumulation_steps)

    @property
    def _adds_refinements(self) -> bool:
        return self.args.loss == "grpo" and self.args.reflect_mode == "add"

    # ------------------------------------------------------------------ hook 1: keep the rows, add per-row tensors
    def _generate_and_score_completions(self, inputs):
        self._mathse_inputs = list(inputs)
        with _mixed_images_accepted(self):
            output = super()._generate_and_score_completions(inputs)
        rows = self._mathse_rows
        self._mathse_inputs, self._mathse_rows = None, None
        device = output["completion_ids"].device
        n = output["completion_ids"].size(0)
        if rows is None or len(rows["accepted"]) != n:  # _generate was bypassed (e.g. a rollout_func)
            rows = {"accepted": [True] * n, "refined": [False] * n, "refinement": [None] * n}
        output["mathse_weight"] = torch.tensor(rows["accepted"], dtype=torch.float32, device=device)
        output["mathse_refined"] = torch.tensor(rows["refined"], dtype=torch.bool, device=device)
        if self._adds_refinements:
            # Row i's verified refinement (if any), trained under row i's prompt by the SFT term.
            width = max([1] + [len(r) for r in rows["refinement"] if r])
            ids = torch.full((n, width), self._tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for i, r in enumerate(rows["refinement"]):
                if r:
                    ids[i, : len(r)] = torch.tensor(r)
                    mask[i, : len(r)] = 1
            output["mathse_refinement_ids"], output["mathse_refinement_mask"] = ids.to(device), mask.to(device)
        return output

    # ------------------------------------------------------------------ hook 2: the MathSE step on this batch
    def _generate(self, prompts: list):
        result = list(super()._generate(prompts))
        inputs = self._mathse_inputs
        if inputs is None or len(inputs) != len(prompts):
            return tuple(result)
        prompt_ids, completion_ids, tool_mask, completions, logprobs = result[:5]
        mode = "train" if self.model.training else "eval"
        n = len(prompts)
        problems = [self._problem(x, p) for x, p in zip(inputs, prompts)]
        texts = [completion_text(c) for c in completions]
        counters = StepCounters()

        # Judge → critique → reflect → re-judge: mathse_rl.step; this adapter only converts rows.
        verdicts = self.judge.judge(problems, texts, counters=counters)
        accepted = [v.correct is True for v in verdicts]
        refined = [False] * n
        originals = [""] * n  # the failed completion a verified refinement replaced
        critique_texts = [""] * n
        refinements: list[list[int] | None] = [None] * n  # add mode: row i's verified refinement
        # Evaluation measures the policy as it is: no refinement outside training.
        final = list(verdicts)  # the verdict on each row's completion as trained (a replacement's own)
        if self.step.reflect.enabled and mode == "train":
            # judged wrong (or undecidable with undecidable_as_wrong, where the gold is usable)
            failed = self._capped([self.judge.reflects_on(v) for v in verdicts], mode)
            critiques = critique(self.critic, [problems[i] for i in failed], [texts[i] for i in failed],
                                 verdicts=[verdicts[i] for i in failed], counters=counters)
            items = [ReflectItem(problems[i], texts[i], c, system=tuple(m for m in prompts[i] if m.get("role") ==
                                                                        "system"), key=i)
                     for i, c in zip(failed, critiques)]
            budget = self._reflect_budget()
            with self._reflection_sampling(budget.max_tokens):
                generate = (self._generate_aligned_with(prompts[0]) if self.refiner is None
                            else self._generate_with_refiner(self.refiner))
                outcomes = reflect_and_rejudge(self.judge, items, generate, budget, critic=self.critic,
                                               counters=counters)
                self._finish_generation_rounds(prompts[0])
            for o in outcomes:
                if not o.accepted:
                    continue
                i, ids = o.item.key, list(o.generation.output)
                refined[i] = True
                critique_texts[i] = o.item.critique.error_analysis if o.item.critique is not None else ""
                if self._adds_refinements:
                    refinements[i] = ids
                    continue
                # replace (grpo) and rft: the verified refinement becomes row i's completion under row i's
                # original prompt ids; for rft this is what "train the accepted refinement" means.
                completion_ids[i] = ids
                completions[i] = self._like(completions[i], o.generation.text)
                if logprobs is not None:
                    # Sampled under the reflection prompt: no valid behaviour logprob under the original
                    # prompt, so NaN, which trl's importance sampling treats as "no correction".
                    logprobs[i] = [math.nan] * len(ids)
                if tool_mask is not None:
                    tool_mask[i] = [1] * len(ids)
                accepted[i] = True
                originals[i] = texts[i]
                final[i] = o.verdict
        if self.args.loss == "rft":
            self._pending_extra_logs["mathse_weight"].extend(float(a) for a in accepted)
        self._pending_extra_logs["mathse_refined"].extend(refined)
        # With log_completions, trl's completions table shows what a refinement replaced and why.
        self._pending_extra_logs["mathse_wrong_path"].extend(originals)
        self._pending_extra_logs["mathse_critique"].extend(critique_texts)
        self._log_counters(mode, counters)
        for f in self.reward_funcs:  # the GRPO reward of each row is derived from these verdicts
            if isinstance(f, JudgeRewardFunc) and f.judge is self.judge:
                f.remember([completion_text(c) for c in completions], final)
        self._mathse_rows = {"accepted": accepted, "refined": refined, "refinement": refinements}
        result[1], result[2], result[3], result[4] = completion_ids, tool_mask, completions, logprobs
        return tuple(result)

    # ------------------------------------------------------------------ hook 3: token counts of each optimizer step
    def _prepare_inputs(self, generation_batch):
        if not self.model.training:  # eval: one local batch, no accumulation
            inputs = super()._prepare_inputs(generation_batch)
            self._set_token_counts([inputs], world=False)
            return inputs
        before = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if self._buffered_inputs is not before:  # a new generation batch was sampled and split into micro-batches
            self._set_token_counts(self._buffered_inputs, world=True)
        return inputs

    def _set_token_counts(self, chunks: list[dict[str, Any]], world: bool) -> None:
        """Give every micro-batch the token counts of its optimizer step (all processes, all micro-batches).

        ``mathse_sft_tokens``: accepted tokens (rft); ``mathse_refinement_tokens``: verified refinement tokens
        (grpo, add mode). Summing ``-log p / count`` over an optimizer step then gives the mean NLL per token of
        that step, whatever the layout (DDP averages gradients, so each process scales by the process count).
        """
        local = torch.tensor([[self._masked(c, "sft"), self._masked(c, "refinement")] for c in chunks],
                             dtype=torch.float64, device=self.accelerator.device)
        total = self.accelerator.reduce(local, reduction="sum") if world else local
        if world:
            accumulation, spg = self.args.gradient_accumulation_steps, self.args.steps_per_generation
            if spg % accumulation == 0:  # each optimizer step uses `accumulation` consecutive micro-batches
                window = total.view(-1, accumulation, 2).sum(dim=1).repeat_interleave(accumulation, dim=0)
            else:  # an optimizer step spans generation batches not sampled yet: trl's dapo estimate
                window = total.sum(dim=0, keepdim=True).expand_as(total) * accumulation / spg
        else:
            window = total
        for chunk, (sft, refinement) in zip(chunks, window.tolist()):
            chunk["mathse_sft_tokens"] = torch.tensor(sft, device=self.accelerator.device)
            chunk["mathse_refinement_tokens"] = torch.tensor(refinement, device=self.accelerator.device)

    @staticmethod
    def _masked(chunk: dict[str, Any], kind: str) -> float:
        if kind == "sft":
            mask = chunk["completion_mask"] * chunk["tool_mask"] if "tool_mask" in chunk else chunk["completion_mask"]
            return float((mask * chunk["mathse_weight"].unsqueeze(1)).sum())
        return float(chunk["mathse_refinement_mask"].sum()) if "mathse_refinement_mask" in chunk else 0.0

    # ------------------------------------------------------------------ hook 4: the losses
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        processes = self.accelerator.num_processes if mode == "train" else 1
        if self.args.loss == "rft":
            mask = inputs["completion_mask"]
            if "tool_mask" in inputs:
                mask = mask * inputs["tool_mask"]
            logps = self._completion_logps(model, inputs, inputs["completion_ids"], inputs["completion_mask"])
            tokens = inputs.get("mathse_sft_tokens", (mask * inputs["mathse_weight"].unsqueeze(1)).sum())
            return rft_loss(logps, mask, inputs["mathse_weight"], tokens) * processes
        if not self._adds_refinements or self.args.refine_sft_coef == 0 or "mathse_refinement_mask" not in inputs:
            return super()._compute_loss(model, inputs)
        r_ids, r_mask = inputs["mathse_refinement_ids"], inputs["mathse_refinement_mask"]
        # The refinement rows ride along in the GRPO loss's own forward pass (see
        # _get_per_token_logps_and_entropies): one forward per micro-batch on every process, as DDP requires.
        self._mathse_ride_along = (r_ids, r_mask) if r_mask.any() else None
        try:
            loss = super()._compute_loss(model, inputs)
            logps = self._mathse_ride_along_logps
        finally:
            self._mathse_ride_along, self._mathse_ride_along_logps = None, None
        if logps is None:  # no refinement in this micro-batch
            return loss
        rows = r_mask.any(dim=1).to(logps.dtype)
        tokens = inputs.get("mathse_refinement_tokens", r_mask.sum())
        term = rft_loss(logps, r_mask, rows, tokens) * processes
        return loss + self.args.refine_sft_coef * term

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        ride = getattr(self, "_mathse_ride_along", None)
        if ride is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        # Score each verified refinement after its row's prompt (and images) in the same forward pass as the
        # micro-batch: the micro-batch's rows, then one more row per refinement (only the rows that have one).
        # One forward per micro-batch on every process (as trl's loss does), whatever each process refined:
        # FSDP and ZeRO-3 gather parameters per forward, so every process must run the same number of them.
        self._mathse_ride_along = None
        r_ids, r_mask = ride
        rows, prompt_len = input_ids.size(0), input_ids.size(1) - logits_to_keep
        width = max(logits_to_keep, r_ids.size(1))

        def widen(x: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, prompt_len + width - x.size(1)), value=value)

        params = inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
        named = dict(zip(list(params)[5:], args), **kwargs)
        named["batch_size"] = None  # one forward pass, as trl's loss forward
        sel = r_mask.any(dim=1).nonzero(as_tuple=True)[0]
        extra = _rows_of(named, sel.tolist(), rows)
        if extra is None:  # an image layout we cannot split by row: the whole micro-batch rides along
            sel = torch.arange(rows, device=r_ids.device)
            extra = _rows_of(named, sel.tolist(), rows, whole=True)
        pad = self._tokenizer.pad_token_id
        both_ids = torch.cat([widen(input_ids, pad),
                              widen(torch.cat([input_ids[sel, :prompt_len], r_ids[sel]], 1), pad)])
        both_mask = torch.cat([widen(attention_mask, 0),
                               widen(torch.cat([attention_mask[sel, :prompt_len], r_mask[sel]], 1), 0)])
        for key, value in list(named.items()):
            if key in extra:
                if key in ("token_type_ids", "mm_token_type_ids"):  # per-token fields follow the widened rows
                    named[key] = torch.cat([widen(value, 0), widen(extra[key], 0)])
                elif isinstance(value, list):
                    named[key] = value + extra[key]
                else:
                    named[key] = torch.cat([value, extra[key]])
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(model, both_ids, both_mask, width,
                                                                             **named)
        ride_logps = logps.new_zeros(rows, r_ids.size(1))
        ride_logps[sel] = logps[rows:, : r_ids.size(1)]  # rows without a refinement: masked out by r_mask
        self._mathse_ride_along_logps = ride_logps
        self._mathse_ride_along_rows = int(sel.numel())
        return (logps[:rows, :logits_to_keep], None if entropies is None else entropies[:rows, :logits_to_keep],
                aux)

    def _completion_logps(self, model, inputs, completion_ids: torch.Tensor, completion_mask: torch.Tensor):
        """Per-token log-probabilities of ``completion_ids`` after the row's prompt (and images)."""
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1),
            pixel_values=inputs.get("pixel_values"), image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"), pixel_attention_mask=inputs.get("pixel_attention_mask"),
            spatial_shapes=inputs.get("spatial_shapes"), num_tiles=inputs.get("num_tiles"),
            image_sizes=inputs.get("image_sizes"), token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"), image_position_ids=inputs.get("image_position_ids"),
        )
        return logps

    # ------------------------------------------------------------------ multi-process helpers
    def _capped(self, failed: list[bool], mode: str) -> list[int]:
        """Local indices of failed rows to refine, at most ``max_refinements_per_group`` per *global* group.

        trl's sampler puts a group's completions on consecutive global rows, and process p holds global rows
        ``p * n .. (p + 1) * n - 1`` (every process has the same n), so a group may span processes.
        """
        cap = self.args.max_refinements_per_group
        if cap is None:
            return [i for i, f in enumerate(failed) if f]
        n = len(failed)
        flags = torch.tensor(failed, dtype=torch.long, device=self.accelerator.device)
        everyone = self.accelerator.gather(flags).tolist()
        group = self.num_generations if mode == "train" else self.num_generations_eval
        offset = self.accelerator.process_index * n
        taken: dict[int, int] = defaultdict(int)
        kept = []
        for g, f in enumerate(everyone):
            if f and taken[g // group] < cap:
                taken[g // group] += 1
                if offset <= g < offset + n:
                    kept.append(g - offset)
        return kept

    def _generate_aligned_with(self, filler: list):
        """The step's generate function: one round of trl generation per call (see :meth:`_generation_round`)."""

        def generate(requests: list[ReflectRequest]) -> list[Generation | BaseException]:
            return self._generation_round([r.messages for r in requests], filler, active=True)

        return generate

    def _configured_refiner(self) -> Any:
        """The evolve loop's refiner named by ``reflect_refiner`` (None: the policy through trl's engine)."""
        if self.args.reflect_refiner == "policy":
            return None
        from types import SimpleNamespace

        from mathse_rl.evolve.components import get_refiner

        config = SimpleNamespace(reflect=SimpleNamespace(openai=dict(self.args.reflect_openai or {})))
        return get_refiner(self.args.reflect_refiner, config, None)

    def _generate_with_refiner(self, refiner: Any):
        """The step's generate function over a refiner (a teacher endpoint): the refinement text is tokenised
        with the policy's tokenizer and ends with its end token, as a sampled completion does, so the add-mode
        SFT term and rft train it like one. A refinement longer than ``max_tokens`` counts as truncated."""
        eos = (getattr(self, "eos_token_ids", None) or [self._tokenizer.eos_token_id])[0]

        def generate(requests: list[ReflectRequest]) -> list[Generation | BaseException]:
            if not requests:
                return []
            first = requests[0]
            outs = refiner.refine([r.item.problem for r in requests], [r.item.wrong for r in requests],
                                  [r.item.critique for r in requests], n=1,
                                  temperature=first.temperature if first.temperature is not None else self.temperature,
                                  max_new_tokens=first.max_tokens, template=self.step.reflect.template)
            results: list[Generation | BaseException] = []
            for r, refs in zip(requests, outs):
                g = refs[0] if refs else Generation("", "error")
                g = g if isinstance(g, Generation) else Generation(str(g))
                if g.finish_reason == "error":
                    results.append(RuntimeError("the refiner returned no refinement"))
                    continue
                ids = self._tokenizer(g.text, add_special_tokens=False)["input_ids"] + [eos]
                reason = "length" if g.finish_reason == "length" or len(ids) > r.max_tokens else "stop"
                results.append(Generation(g.text, reason, len(ids), ids))
            return results

        return generate

    def _finish_generation_rounds(self, filler: list) -> None:
        """Join the other processes' generation rounds until every process is done with its reflections."""
        if self.accelerator.num_processes > 1:
            while self._generation_round([], filler, active=False) is not None:
                pass

    def _generation_round(self, prompts: list, filler: list, active: bool) -> list | None:
        """One generate call that every process joins, the round's rows shared out evenly.

        trl's vLLM server gathers every process's prompts, generates them in one call and hands process p the
        rows ``p * len(prompts) .. (p + 1) * len(prompts) - 1``; colocate with tensor parallelism does the same
        inside a TP group; sharded models generate in lockstep. So every process must join each round with the
        same number of rows. The round's requests of all processes are gathered and split into equal
        contiguous shares (``ceil(total / processes)`` rows each; the last share is topped up with copies of the
        first request, fewer than one row per process in all), each process generates its share, and every
        process takes back the rows it asked for. A round costs ``ceil(total / processes)`` rows per process
        instead of the largest request count on every process. A process whose step made no (more) request
        joins with none (``active=False``) until no process is active. Returns None when no process was
        active; an exception of the engine comes back as each row's result (the step counts it), never raised.
        """
        n = len(prompts)
        processes = self.accelerator.num_processes
        if processes == 1:
            if not active:
                return None
            return self._generate_rows(list(prompts), n) if n else []
        from accelerate.utils import gather_object

        everyone = gather_object([(list(prompts), bool(active))])
        if not any(a for _, a in everyone):
            return None
        counts = [len(p) for p, _ in everyone]
        total = sum(counts)
        if total == 0:
            return []
        flat = [m for p, _ in everyone for m in p]
        share = -(-total // processes)
        start = self.accelerator.process_index * share
        mine = flat[start:start + share]
        mine += [flat[0]] * (share - len(mine))
        done = self._generate_rows(mine, len(mine), raw=True)
        results = gather_object([done])
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        offset = sum(counts[: self.accelerator.process_index])
        if failed is not None:
            return [failed] * n
        rows = [ids for part in results for ids in part][offset: offset + n]
        return self._as_generations(rows)

    def _generate_rows(self, prompts: list, n: int, raw: bool = False):
        """trl's single-turn generation of ``prompts``: token ids per row (``raw``) or :class:`Generation`s;
        an engine exception is returned (as each row's result), never raised."""
        try:
            r_prompt_ids, r_images, r_fields = self._tokenize_prompts(list(prompts))
            r_ids, _ = self._generate_single_turn(r_prompt_ids, r_images, r_fields, 1)
        except Exception as exc:  # a failed reflection call must not stop training: the step counts it
            logger.warning("reflection generation failed for %d rows (%s: %s)", n, type(exc).__name__, exc)
            return exc if raw else [exc] * n
        ids = [list(x) for x in r_ids[:n]]
        return ids if raw else self._as_generations(ids)

    def _as_generations(self, rows: list[list[int]]) -> list[Generation]:
        texts = self.processing_class.batch_decode(rows, skip_special_tokens=True)
        return [Generation(t, "stop" if self._finished(ids) else "length", len(ids), ids)
                for t, ids in zip(texts, rows)]

    def _reflect_budget(self) -> TokenBudget:
        """What the engine grants a refinement: ``reflect.max_tokens`` (default ``max_completion_length``) new
        tokens; with vLLM, prompts are checked against ``vllm_max_model_length`` (vLLM refuses longer ones)."""
        max_tokens = self.step.reflect.max_tokens or self.max_completion_length
        limit = (getattr(self.args, "vllm_max_model_length", None) or self._vllm_context_limit()) if self.use_vllm \
            else None
        if not limit:
            return TokenBudget(max_tokens=max_tokens, engine="vllm" if self.use_vllm else "hf")

        def count_tokens(messages: list, images: tuple) -> int:
            return len(self._tokenize_prompts([messages])[0][0])

        return TokenBudget(max_tokens=max_tokens, context_limit=limit, count_tokens=count_tokens, engine="vllm")

    def _vllm_context_limit(self) -> int | None:
        """The engine's ``max_model_len`` when ``vllm_max_model_length`` is not set: what the vLLM server reports
        (``/server_info``, asked by the main process and shared) or the colocated engine's own; the model's
        ``max_position_embeddings`` (vLLM's default) when neither can be read. Read once."""
        if hasattr(self, "_mathse_context_limit"):
            return self._mathse_context_limit
        limit, gen = None, getattr(self, "vllm_generation", None)
        server = getattr(self.args, "vllm_mode", "server") == "server"
        if gen is not None and (self.accelerator.is_main_process or not server):
            try:
                if server:
                    limit = int(gen.vllm_client.get_server_info()["model_config"]["max_model_len"])
                else:
                    limit = int(gen.llm.llm_engine.model_config.max_model_len)
            except Exception as exc:  # an older server without /server_info, or another engine layout
                logger.warning("could not read vLLM's max_model_len (%s: %s)", type(exc).__name__, exc)
        if server and self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            limit = broadcast_object_list([limit], from_process=0)[0]
        if limit is None:
            config = getattr(getattr(self.model, "config", None), "text_config", None) or getattr(self.model, "config",
                                                                                              None)
            limit = getattr(config, "max_position_embeddings", None)
            logger.warning("reflection prompts are checked against the model's max_position_embeddings (%s); set "
                           "vllm_max_model_length to the engine's --max-model-len", limit)
        self._mathse_context_limit = limit
        return limit

    @contextmanager
    def _reflection_sampling(self, max_tokens: int):
        """Refinements are sampled with ``reflect.max_tokens`` and ``reflect.temperature`` (when set)."""
        temperature = self.step.reflect.temperature
        targets = [self.generation_config] if getattr(self, "generation_config", None) is not None else []
        if self.use_vllm:
            targets.append(self.vllm_generation)
        saved = []
        for t in targets:
            length_key = "max_new_tokens" if t is getattr(self, "generation_config", None) else "max_completion_length"
            saved.append((t, length_key, getattr(t, length_key), getattr(t, "temperature", None)))
            setattr(t, length_key, max_tokens)
            if temperature is not None:
                t.temperature = temperature
        try:
            yield
        finally:
            for t, length_key, length, temp in saved:
                setattr(t, length_key, length)
                if temperature is not None:
                    t.temperature = temp

    def _log_counters(self, mode: str, counters: StepCounters) -> None:
        """Sum the step's counters over all processes (overall and per data source); log them as ``mathse/*``."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            merged = StepCounters()
            for part in gather_object([counters.to_counts()]):
                merged.merge(part)
            counters = merged
        for key, value in counters.as_metrics().items():
            self._metrics[mode][key].append(value)

    # ------------------------------------------------------------------ helpers
    def _finished(self, ids: list[int]) -> bool:
        """Whether a generated row ended on its own (EOS) rather than at the token budget (trl's rule)."""
        return bool(ids) and ids[-1] in (*self.eos_token_ids, self._tokenizer.pad_token_id)

    def _problem(self, row: dict[str, Any], prompt: list) -> Problem:
        gold = gold_of(row, (self.args.gold_column,) if self.args.gold_column else GOLD_COLUMNS)
        question = row.get(self.args.question_column) or prompt_text(prompt)
        choices = row.get("choices")
        images = tuple(part["image"] for m in prompt if isinstance(m.get("content"), list)
                       for part in m["content"] if part.get("type") == "image" and part.get("image") is not None)
        return Problem(id=str(row.get("id", "")), question=str(question), gold=gold, images=images,
                       choices=tuple(choices) if choices else None, data_source=str(row.get("data_source") or ""))

    @staticmethod
    def _like(completion: Any, text: str) -> Any:
        """A completion with ``text`` in the same shape trl produced (plain string or assistant turn)."""
        if isinstance(completion, str):
            return text
        return [{"role": "assistant", "content": text}]


@contextmanager
def _mixed_images_accepted(trainer: Any):
    """A batch mixing image and text-only prompts: trl 1.16 gives a text-only prompt ``images=None`` (right for
    its vLLM path) and then hands the whole list to the processor for the forward pass's image inputs, which
    refuses ``None``. For that call, a text-only row's images are ``[]``, which the processor takes."""
    proc = trainer.processing_class
    if getattr(proc, "image_processor", None) is None:
        yield
        return
    base = type(proc)

    def call(self, *args, images=None, **kwargs):
        if isinstance(images, list) and any(i is None for i in images) and not all(i is None for i in images):
            images = [[] if i is None else i for i in images]
        return base.__call__(self, *args, images=images, **kwargs)

    view = object.__new__(type(base.__name__, (base,), {"__call__": call}))
    view.__dict__ = proc.__dict__  # the same processor, only its __call__ differs
    trainer.processing_class = view
    try:
        yield
    finally:
        trainer.processing_class = proc


def _rows_of(named: dict[str, Any], rows: list[int], total: int, whole: bool = False) -> dict[str, Any] | None:
    """The multimodal fields of trl's forward for the rows ``rows`` of a micro-batch of ``total`` rows (the
    images of those rows again), or None for a layout that cannot be split by row (tiles, spatial shapes)."""
    if not whole and any(named.get(k) is not None for k in ("spatial_shapes", "num_tiles", "image_position_ids")):
        return None
    out: dict[str, Any] = {}
    num_images = named.get("num_images")
    pixel_values, grid = named.get("pixel_values"), named.get("image_grid_thw")
    for key in ("token_type_ids", "mm_token_type_ids", "pixel_attention_mask"):
        value = named.get(key)
        if isinstance(value, torch.Tensor) and value.size(0) == total:
            out[key] = value[rows]
    if whole:  # every row once more: each field repeated as it is
        for key, value in named.items():
            if key not in out and key != "batch_size" and (isinstance(value, list) or
                                                             (isinstance(value, torch.Tensor) and value.dim() > 0)):
                out[key] = value if isinstance(value, list) else value
        return out
    if pixel_values is None:
        return out
    if num_images is None:
        return None
    first = [sum(num_images[:i]) for i in range(total + 1)]  # image index where each row starts
    images = [k for r in rows for k in range(first[r], first[r + 1])]
    out["num_images"] = [num_images[r] for r in rows]
    if grid is not None:
        per_image = grid.prod(dim=-1).tolist()
        start = [sum(per_image[:k]) for k in range(len(per_image) + 1)]
        patches = [j for k in images for j in range(start[k], start[k + 1])]
        out["pixel_values"] = pixel_values[patches]
        out["image_grid_thw"] = grid[images]
    elif pixel_values.size(0) == sum(num_images):
        out["pixel_values"] = pixel_values[images]
    else:
        return None
    if named.get("image_sizes") is not None:
        out["image_sizes"] = named["image_sizes"][images]
    return out


def rft_loss(per_token_logps: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
             tokens: torch.Tensor | float) -> torch.Tensor:
    """NLL summed over the tokens of rows with weight > 0, divided by ``tokens`` (the step's accepted tokens).

    Divide by the accepted tokens of the *whole optimizer step* (not of this micro-batch) so that accumulated
    micro-batches and processes add up to one mean; rejected rows (weight 0) add nothing to sum or count.

    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.1]]))
    >>> round(rft_loss(lp, torch.ones(2, 2), torch.tensor([1.0, 0.0]), tokens=2.0).item(), 4)
    0.6931
    """
    w = weight.to(per_token_logps.dtype).unsqueeze(1) * mask.to(per_token_logps.dtype)
    tokens = torch.as_tensor(tokens, dtype=per_token_logps.dtype, device=per_token_logps.device)
    return -(per_token_logps * w).sum() / tokens.clamp(min=1.0)


def online_dataset(problems):
    """trl rows for ``MathSETrainer`` from problems: solve prompt, images, reference answer, question, options.

    Images given as paths decode lazily (datasets' Image feature); PIL images are kept as they are;
    text-only and image problems may be mixed (:mod:`mathse_rl.integrations.trl.conversational`).
    """
    from mathse_rl.integrations.trl.conversational import conversational_dataset
    from mathse_rl.prompts import build_solve_messages

    data = {"id": [p.id for p in problems], "prompt": [build_solve_messages(p) for p in problems],
            "solution": [p.gold for p in problems], "question": [p.question for p in problems]}
    if any(p.choices for p in problems):  # the judge, the rewards and the reflection prompt read the options
        data["choices"] = [list(p.choices) if p.choices else None for p in problems]
    return conversational_dataset(data, [list(p.images) for p in problems])
