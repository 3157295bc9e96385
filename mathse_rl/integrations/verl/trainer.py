"""The ``mathse`` trainer: verl's synchronous PPO trainer with MathSE's acceptance, objective and metrics.

Select it with ``trainer.v1.trainer_mode=mathse`` (verl 0.9's trainer registry). It differs
from verl's ``sync`` trainer in three places, the first two reading the fields every
``mathse_reflect`` output carries (:mod:`mathse_rl.integrations.verl.agent_loop`):

- **advantages.** With ``algorithm.adv_estimator=mathse_rft``, samples are accepted on the
  judge's verdict (``accepted``), never on the summed token reward, and rejected samples are
  masked out of ``response_mask``/``loss_mask`` so the loss is a mean over accepted tokens
  (:func:`mathse_rl.integrations.verl.algos.rft_batch`). With any other estimator (GRPO, ...)
  verl computes the advantages; then every *added* refinement (``reflect_mode: add``) gets the
  fixed advantage ``mathse.refine_sft_coef`` instead of the one verl's multi-output GRPO copies
  from its session's last output: an off-policy supervised term (see the agent loop's docstring),
  while the policy's own failure keeps its group advantage;
- **metrics.** The per-sample step counters (``mathse_counts``) are summed over the batch and
  logged through :meth:`mathse_rl.step.StepCounters.as_metrics`: ``mathse/refine_rate``,
  ``mathse/refine_verified``, ``mathse/judge_errors``, ``mathse/reflect_too_long``,
  ``mathse/accepted_frac``, ... and the same per data source (``mathse/<source>/...``).
  A broken judge shows as ``mathse/undecidable`` and ``mathse/judge_errors``, not as a silent
  fall back to plain GRPO/RFT;
- **optimizer steps.** verl splits a step's batch into mini-batches of
  ``ppo_mini_batch_size x rollout.n`` outputs, one optimizer step each, after padding it to a
  multiple of that. Refinements added beside their answers make the batch longer than
  ``train_batch_size x rollout.n``: verl would pad it to one more mini-batch, an extra optimizer
  step on the few rows that spilled over (with ``mathse_rft``, a full-size step on one
  refinement alone), so how much a step moves the model would depend on how many refinements
  were verified. This trainer widens the mini-batch for such a step instead
  (:func:`mini_batch_prompts`), keeping ``train_batch_size / ppo_mini_batch_size`` optimizer
  steps per training step; ``mathse/optimizer_steps`` and ``mathse/mini_batch_rows`` log it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from mathse_rl.integrations.verl.fields import ROLE_REFINEMENT, role_of
from mathse_rl.integrations.verl.algos import NAME as RFT, RFTConfig, rft_batch, verdicts_accepted
from mathse_rl.step import StepCounters

TRAINER_NAME = "mathse"


def column(data: Any, key: str) -> list[Any]:
    """A non-tensor column of a TransferQueue TensorDict as a list (verl stores dicts/strings per row)."""
    value = data.get(key, None) if hasattr(data, "get") else data[key]
    if value is None:
        return []
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return list(value)


def step_metrics(extra_fields: Sequence[Any], padding: Sequence[bool]) -> dict[str, float]:
    """``mathse/*`` metrics of a batch: the sum of its samples' step counters."""
    counters = StepCounters()
    for fields, pad in zip(extra_fields, padding):
        if not pad and isinstance(fields, dict) and fields.get("mathse_counts"):
            counters.merge(fields["mathse_counts"])
    return counters.as_metrics() if counters.to_counts() else {}


def verdicts(extra_fields: Sequence[Any], padding: Sequence[bool]) -> list[float | None]:
    """The judge's verdict per output (None for padding rows and undecidable samples)."""
    out: list[float | None] = []
    for fields, pad in zip(extra_fields, padding):
        if pad:
            out.append(None)
            continue
        if not isinstance(fields, dict) or "accepted" not in fields:
            raise ValueError("the mathse trainer accepts samples on the judge's verdict, which only the "
                             "mathse_reflect agent loop writes: set actor_rollout_ref.rollout.agent."
                             "default_agent_loop=mathse_reflect (mathse.reflect.enabled=false for no reflection)")
        out.append(fields["accepted"])
    return out


def refinement_advantages(advantages: torch.Tensor, response_mask: torch.Tensor, extra_fields: Sequence[Any],
                          padding: Sequence[bool], weight: float) -> torch.Tensor:
    """Advantages with every added (``reflect_mode: add``), verified refinement set to ``weight`` on
    its tokens; a replace-mode refinement (role ``replacement``) keeps its group advantage."""
    out = advantages.clone()
    for i, (fields, pad) in enumerate(zip(extra_fields, padding)):
        if not pad and role_of(fields) == ROLE_REFINEMENT and fields.get("accepted") == 1.0:
            out[i] = weight * response_mask[i].to(out.dtype)
    return out


def mini_batch_prompts(rows: int, train_batch_size: int, ppo_mini_batch_size: int, n: int, row_unit: int = 1) -> int:
    """The ``ppo_mini_batch_size`` (in prompts) that fits a batch of ``rows`` outputs into the
    optimizer steps ``train_batch_size`` prompts take (``train_batch_size / ppo_mini_batch_size``).
    A mini-batch's outputs must be a multiple of ``row_unit`` (data-parallel ranks x whole
    micro-batches). The configured size when ``rows`` is the usual ``train_batch_size x n``;
    larger when refinements were added; never smaller.

    >>> mini_batch_prompts(8, 2, 2, 4), mini_batch_prompts(9, 2, 2, 4)   # one step of 8 outputs, of 12
    (2, 3)
    >>> mini_batch_prompts(9, 2, 2, 4, row_unit=8)   # micro-batches of 8: one step of 16
    4
    >>> mini_batch_prompts(1024 + 5, 128, 32, 8, row_unit=8 * 4)   # 4 steps of 288 (1,152 with padding)
    36
    """
    steps = max(1, train_batch_size // ppo_mini_batch_size)
    prompts = max(ppo_mini_batch_size, math.ceil(rows / (steps * n)))
    unit = row_unit // math.gcd(n, row_unit)  # prompts * n must be a multiple of row_unit
    return math.ceil(prompts / unit) * unit


def micro_batch_unit(config: Any, dp_size: int) -> int:
    """Outputs a mini-batch must be a multiple of: ``dp_size`` ranks x the least common multiple of
    the fixed micro-batch sizes the actor, old-log-prob and reference passes use (a pass with
    dynamic batch sizes has none)."""
    ref = config.actor_rollout_ref
    sizes = []
    for section, dynamic, micro in ((ref.actor, "use_dynamic_bsz", "ppo_micro_batch_size_per_gpu"),
                                    (ref.rollout, "log_prob_use_dynamic_bsz", "log_prob_micro_batch_size_per_gpu"),
                                    (ref.get("ref") or {}, "log_prob_use_dynamic_bsz", "log_prob_micro_batch_size_per_gpu")):
        size = section.get(micro)
        if size and not section.get(dynamic, False):
            sizes.append(int(size))
    return dp_size * (math.lcm(*sizes) if sizes else 1)


def _register():
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    class MathSETrainer(PPOTrainerSync):
        """verl's ``sync`` trainer; advantages and metrics as the module docstring says."""

        def _compute_advantage(self, batch, metrics):
            if self.config.algorithm.adv_estimator == RFT:
                return self._rft_advantage(batch)
            batch = super()._compute_advantage(batch, metrics)
            return self._weight_refinements(batch)

        def _get(self, batch, fields: list[str]):
            import transfer_queue as tq

            return tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)

        def _put(self, batch, tensors: dict[str, torch.Tensor], response_mask):
            import transfer_queue as tq
            from tensordict import TensorDict
            from verl.workers.utils.padding import response_to_nested

            out = TensorDict({k: response_to_nested(v, response_mask) for k, v in tensors.items()},
                             batch_size=len(batch))
            # the returned batch handle knows the new fields; later stages read through it
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)

        def _rft_advantage(self, batch):
            data = self._get(batch, ["uid", "response_mask", "extra_fields"])
            nested_mask = data["response_mask"]
            mask = nested_mask.to_padded_tensor(0)
            padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
            accepted = verdicts_accepted(verdicts(column(data, "extra_fields"), padding))
            uid = np.array([str(u) for u in column(data, "uid")], dtype=object)
            advantages, train_mask = rft_batch(accepted, mask, uid, RFTConfig.from_algorithm(self.config.algorithm))
            train_mask = train_mask.to(mask.dtype)
            return self._put(batch, {"advantages": advantages, "returns": advantages, "response_mask": train_mask,
                                     "loss_mask": train_mask}, nested_mask)

        def _weight_refinements(self, batch):
            data = self._get(batch, ["response_mask", "advantages", "extra_fields"])
            extra = column(data, "extra_fields")
            if not any(role_of(f) == ROLE_REFINEMENT for f in extra):
                return batch
            nested_mask = data["response_mask"]
            mask = nested_mask.to_padded_tensor(0)
            advantages = data["advantages"].to_padded_tensor(0.0)
            padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
            weight = float((self.config.get("mathse") or {}).get("refine_sft_coef", 1.0))
            advantages = refinement_advantages(advantages, mask, extra, padding, weight)
            return self._put(batch, {"advantages": advantages}, nested_mask)

        # -- optimizer steps (module docstring) ------------------------------------------------
        _rows: int | None = None  # outputs in the batch being balanced (before verl pads it)
        _mini_prompts: int | None = None  # the mini-batch size (prompts) chosen for that batch

        @contextlib.contextmanager
        def _mini_batch(self, prompts: int | None) -> Iterator[None]:
            """verl reads the mini-batch size from the config where it pads and where it trains:
            hold the chosen size there for that long."""
            from omegaconf import open_dict

            actor = self.config.actor_rollout_ref.actor
            configured = actor.ppo_mini_batch_size
            if prompts is None or prompts == configured:
                yield
                return
            with open_dict(actor):
                actor.ppo_mini_batch_size = prompts
            try:
                yield
            finally:
                with open_dict(actor):
                    actor.ppo_mini_batch_size = configured

        def _balance_batch(self, batch, metrics, *args, **kwargs):
            self._rows = len(batch)
            try:
                return super()._balance_batch(batch, metrics, *args, **kwargs)
            finally:
                self._rows = None

        def _get_required_batch_multiple(self, dp_size: int) -> int:
            config = self.config
            actor_trains = config.trainer.critic_warmup <= self.global_steps
            if self._rows is None or self.use_critic or not actor_trains:  # verl's rule
                return super()._get_required_batch_multiple(dp_size)
            train_batch_size = int(config.data.train_batch_size)
            configured, n = int(config.actor_rollout_ref.actor.ppo_mini_batch_size), int(config.actor_rollout_ref.rollout.n)
            self._mini_prompts = mini_batch_prompts(self._rows, train_batch_size, configured, n,
                                                    micro_batch_unit(config, dp_size))
            # padded to exactly the configured number of mini-batches
            return max(1, train_batch_size // configured) * self._mini_prompts * n

        def _update_actor(self, batch, metrics):
            prompts = self._mini_prompts or int(self.config.actor_rollout_ref.actor.ppo_mini_batch_size)
            rows = prompts * int(self.config.actor_rollout_ref.rollout.n)
            metrics["mathse/mini_batch_rows"] = rows
            metrics["mathse/optimizer_steps"] = math.ceil(len(batch) / rows)
            try:
                with self._mini_batch(self._mini_prompts):
                    return super()._update_actor(batch, metrics)
            finally:
                self._mini_prompts = None

        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            data = self._get(batch, ["extra_fields"])
            padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
            metrics.update(step_metrics(column(data, "extra_fields"), padding))
            return super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)

    MathSETrainer.__name__ = MathSETrainer.__qualname__ = "MathSETrainer"
    existing = TRAINER_REGISTRY.get(TRAINER_NAME)
    if existing is not None and existing.__qualname__ == MathSETrainer.__qualname__:
        del TRAINER_REGISTRY[TRAINER_NAME]  # this module imported again: keep the newest
    register_trainer(TRAINER_NAME)(MathSETrainer)
    return MathSETrainer


MathSETrainer = _register()
