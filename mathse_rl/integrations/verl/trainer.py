"""The ``mathse`` trainer: verl's synchronous PPO trainer with MathSE's acceptance, objective and metrics.

Select it with ``trainer.v1.trainer_mode=mathse`` (verl 0.9's trainer registry). It differs
from verl's ``sync`` trainer in two places, both reading the fields every ``mathse_reflect``
output carries (:mod:`mathse_rl.integrations.verl.agent_loop`):

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
  fall back to plain GRPO/RFT.
"""

from __future__ import annotations

from typing import Any, Sequence

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
