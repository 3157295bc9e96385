"""The ``mathse`` trainer: verl's synchronous PPO trainer plus MathSE, and nothing else.

Select it with ``trainer.v1.trainer_mode=mathse`` (verl 0.9's trainer registry). To verl it *is*
the ``sync`` trainer: verl's base class takes its asynchronous paths for any mode other than
``sync`` (``ReplayBufferAsync``, ``data.gen_batch_size`` forced to 1, the TransferQueue saved in
checkpoints and restored on resume); this class answers ``sync`` wherever verl asks
(:attr:`MathSETrainer.trainer_mode`). With MathSE adding nothing (reflection off, or no
refinement verified in a step) a step runs verl's own code on the same rows: the same update,
optimizer steps and metrics (``tests/integrations/verl/test_conformance.py``). What it adds:

- **Rows.** Each output of the ``mathse_reflect`` agent loop says what it is
  (:mod:`mathse_rl.integrations.verl.fields`): the policy's own sample, a verified refinement
  added beside it (``reflect_mode: add``), or one returned in its place (``replace``). With
  ``algorithm.adv_estimator=mathse_rft`` only the judge-accepted rows are trained (first answers
  and verified refinements); the rejected ones skip the old-log-prob, reference and update passes
  altogether and are kept aside for the step's metrics. In effect a verified refinement takes
  its failure's place in training.
- **Advantages.** ``mathse_rft``: the accepted rows' weights (:func:`~.algos.rft_batch`), on the
  judge's verdict, never on a summed reward. Any verl estimator (GRPO, RLOO, REINFORCE++, ...):
  verl's own ``_compute_advantage`` runs on the policy's own samples only, so baselines, group
  std and verl's rollout correction never see an added refinement; each added refinement then
  gets the fixed advantage ``mathse.refine_sft_coef`` (neutral rollout-correction weights), i.e.
  through verl's PPO loss with ratio 1 a supervised term ``coef x -log pi(refinement | prompt)``.
- **Old log-probs.** A refinement was sampled after the reflection prompt, so its rollout
  log-probs are not pi(refinement | prompt). With ``algorithm.rollout_correction.bypass_mode``
  (old log-probs := rollout log-probs) the refinement rows' old log-probs are computed by the
  actor under the original prompt, in one extra pass over those rows only; verl's
  rollout-vs-actor diagnostics (``training/rollout_probs_diff_*``) are taken on the policy's
  samples only.
- **Optimizer steps.** Added refinements make a step longer, rejected rows (``mathse_rft``)
  shorter, than ``train_batch_size x rollout.n``. The trainer keeps verl's number of optimizer
  steps and sizes the mini-batches to the rows there are with the least padding verl's workers
  allow, then spreads the padding so every optimizer step trains an equal share of real rows
  (:mod:`~.layout`); a step with nothing to train (``mathse_rft``, nothing accepted) takes no
  optimizer step at all. ``mathse/optimizer_steps`` and ``mathse/mini_batch_rows`` log it.
- **Metrics.** verl's sample metrics (``critic/score``, ``critic/rewards``, ``response_length``,
  ``prompt_length``, ``num_turns``) are taken over the policy's own samples, rejected ones
  included; ``critic/advantages``/``returns`` and ``actor/*`` (entropy, losses) describe the
  trained rows. The samples' step
  counters are logged as ``mathse/*`` (:meth:`mathse_rl.step.StepCounters.as_metrics`), those of
  groups verl evicted as ``mathse/evicted/*``, validation's as ``mathse/val/*`` with the judge's
  accuracy before and after reflection (:mod:`~.replay`).
- **Validation.** Validation batches are marked (``mathse_validate``), so the agent loop returns
  the policy's own answer (scored by verl's validation metrics) in either reflect mode, and still
  reflects to measure accuracy after reflection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from mathse_rl.integrations.verl.algos import NAME as RFT, RFTConfig, rft_batch, verdicts_accepted
from mathse_rl.integrations.verl.fields import ROLE_REFINEMENT, VALIDATE_FIELD, role_of
from mathse_rl.integrations.verl.layout import mini_batch_rows, spread_over_ranks
from mathse_rl.step import StepCounters

TRAINER_NAME = "mathse"
# verl's sample metrics, recomputed over the policy's own samples.
SAMPLE_METRIC_PREFIXES = ("critic/score/", "critic/rewards/", "response_length/", "response_length_non_aborted/",
                          "response/aborted_ratio", "prompt_length/", "num_turns/", "training/num_turns/")


def column(data: Any, key: str) -> list[Any]:
    """A non-tensor column of a TransferQueue TensorDict as a list (verl stores dicts/strings per row)."""
    value = data.get(key, None) if hasattr(data, "get") else data[key]
    if value is None:
        return []
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return [getattr(v, "data", v) for v in value]


def step_metrics(extra_fields: Sequence[Any], padding: Sequence[bool], prefix: str = "mathse/") -> dict[str, float]:
    """``mathse/*`` metrics of a batch: the sum of its samples' step counters."""
    counters = StepCounters()
    for fields, pad in zip(extra_fields, padding):
        if not pad and isinstance(fields, dict) and fields.get("mathse_counts"):
            counters.merge(fields["mathse_counts"])
    return counters.as_metrics(prefix) if counters.to_counts() else {}


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


def validation_metrics(counters: StepCounters, prefix: str = "mathse/val/") -> dict[str, float]:
    """``mathse/val/*``: the validation samples' step counters and the judge's accuracy before and
    after reflection (correct first answers, and those plus verified refinements, per path).

    >>> c = StepCounters(); c.add("paths", 4); c.add("correct", 1); c.add("accepted", 2)
    >>> m = validation_metrics(c); m["mathse/val/acc_before_reflection"], m["mathse/val/acc_after_reflection"]
    (0.25, 0.5)
    """
    out = counters.as_metrics(prefix)
    paths = counters["paths"]
    out[f"{prefix}acc_before_reflection"] = counters["correct"] / paths if paths else 0.0
    out[f"{prefix}acc_after_reflection"] = counters["accepted"] / paths if paths else 0.0
    return out


@dataclass
class StepRows:
    """What a step's sampled rows are, read once from their extra fields."""

    keys: list[str]
    roles: list[str | None]
    extra: list[Any]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    def refinement(self, key: str) -> bool:
        i = self.index.get(key)
        return i is not None and self.roles[i] == ROLE_REFINEMENT

    def policy(self, key: str) -> bool:
        """The policy's own sample (or what replaced it): not padding, not an added refinement."""
        i = self.index.get(key)
        return i is not None and self.roles[i] != ROLE_REFINEMENT


class _MiniBatchRows:
    """The actor worker group with every ``update_actor`` call trained in mini-batches of ``rows``
    rows (verl's ``_update_actor`` sends ``ppo_mini_batch_size x rollout.n``)."""

    def __init__(self, group: Any, rows: int):
        self._group, self._rows = group, rows

    def update_actor(self, batch: Any) -> Any:
        batch.extra_info.update(mini_batch_size=self._rows, global_batch_size=self._rows)
        return self._group.update_actor(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)


def _register():
    import transfer_queue as tq
    from tensordict import TensorDict
    from transfer_queue import KVBatchMeta
    from verl import DataProto
    from verl.trainer.ppo.metric_utils import compute_data_metrics
    from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.utils import tensordict_utils as tu
    from verl.utils.debug.metrics import calculate_debug_metrics
    from verl.workers.utils.padding import response_from_nested, response_to_nested

    from mathse_rl.integrations.verl.replay import MathSEReplayBuffer
    from mathse_rl.integrations.verl.wiring import check_wiring

    def select(batch: KVBatchMeta, keep: Sequence[bool]) -> KVBatchMeta:
        return KVBatchMeta(keys=[k for k, t in zip(batch.keys, keep) if t],
                           tags=[g for g, t in zip(batch.tags, keep) if t],
                           partition_id=batch.partition_id, fields=batch.fields, extra_info=batch.extra_info)

    def padding_of(batch: KVBatchMeta) -> list[bool]:
        return [bool(tag.get("is_padding", False)) for tag in batch.tags]

    class MathSETrainer(PPOTrainerSync):
        """verl's ``sync`` trainer plus MathSE (see the module docstring)."""

        # -- verl sees a sync trainer ----------------------------------------------------------
        @property
        def trainer_mode(self) -> str:
            return "sync"

        @trainer_mode.setter
        def trainer_mode(self, value: str) -> None:
            # verl assigns trainer.v1.trainer_mode ("mathse", how verl found this class); every
            # branch verl takes on the mode must be its sync one
            self.registered_mode = value

        def __init__(self, config):
            check_wiring(config)
            self._reset_step()
            super().__init__(config)

        def _build_replay_buffer(self):
            buffer = super()._build_replay_buffer()
            if type(buffer) is ReplayBuffer:  # verl's own; a custom sampler is refused at start
                buffer.__class__ = MathSEReplayBuffer
                buffer.mathse_reset()
            return buffer

        @property
        def _rft(self) -> bool:
            return self.config.algorithm.adv_estimator == RFT

        def _reset_step(self) -> None:
            self._rows: StepRows | None = None
            self._aside: KVBatchMeta | None = None
            self._layout_rows: int | None = None  # trained rows being laid out (inside _balance_batch)
            self._mini_rows: int | None = None  # rows per mini-batch (all ranks) chosen for them
            self._nothing_to_train = False
            self._step_metrics: dict[str, float] = {}

        def _step_once(self, metrics, timing_raw, sample_batch_size):
            self._reset_step()
            batch = super()._step_once(metrics, timing_raw, sample_batch_size)
            if self._aside is None:
                return batch
            # rows kept out of training come back for the step's metrics, dumps and cleanup
            return KVBatchMeta(keys=batch.keys + self._aside.keys, tags=batch.tags + self._aside.tags,
                               partition_id=self._aside.partition_id, extra_info=batch.extra_info)

        # -- rows: what is trained, how it is laid out -----------------------------------------
        def _read_rows(self, batch: KVBatchMeta) -> StepRows:
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
            extra = column(data, "extra_fields")
            return StepRows(list(batch.keys), [role_of(f) for f in extra], extra)

        def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
            rows = self._rows = self._read_rows(batch)
            trained = [True] * len(batch)
            if self._rft:
                trained = verdicts_accepted(verdicts(rows.extra, [False] * len(batch))).tolist()
            if all(trained) and ROLE_REFINEMENT not in rows.roles:  # MathSE changes nothing: verl's own
                return super()._balance_batch(batch, metrics, logging_prefix, keep_minibatch)
            if not all(trained):
                self._aside = select(batch, [not t for t in trained])
                batch = select(batch, trained)
            self._step_metrics.update({"mathse/trained_rows": float(len(batch)),
                                       "mathse/skipped_rows": float(len(self._aside or ())),
                                       "mathse/refinement_rows": float(sum(rows.refinement(k) for k in batch.keys))})
            if len(batch) == 0:
                self._nothing_to_train = True
                return batch
            self._layout_rows = len(batch)
            try:
                batch = super()._balance_batch(batch, metrics, logging_prefix, keep_minibatch)
            finally:
                self._layout_rows = None
            if self._mini_rows is not None:  # verl's padding sits at the end of every rank: spread it
                batch.reorder(spread_over_ranks(padding_of(batch), self._dp_size(), len(batch) // self._mini_rows))
            self._step_metrics["mathse/padding_rows"] = float(sum(padding_of(batch)))
            return batch

        def _dp_size(self) -> int:
            return max(self.actor_rollout_wg._dispatch_info["actor"]) + 1

        def _get_required_batch_multiple(self, dp_size: int) -> int:
            config = self.config
            if (self._layout_rows is None or self.use_critic
                    or config.trainer.critic_warmup > self.global_steps):  # verl's rule
                return super()._get_required_batch_multiple(dp_size)
            ref = config.actor_rollout_ref
            steps = max(1, int(config.data.train_batch_size) // int(ref.actor.ppo_mini_batch_size))
            infer = [] if ref.rollout.get("log_prob_use_dynamic_bsz", False) else [
                ref.rollout.get("log_prob_micro_batch_size_per_gpu")]
            if self.use_reference_policy and not ref.ref.get("log_prob_use_dynamic_bsz", False):
                infer.append(ref.ref.get("log_prob_micro_batch_size_per_gpu"))
            update = None if ref.actor.get("use_dynamic_bsz", False) else ref.actor.get("ppo_micro_batch_size_per_gpu")
            per_rank = mini_batch_rows(self._layout_rows, steps=steps, dp=dp_size, update_micro=update,
                                       infer_micros=[m for m in infer if m])
            self._mini_rows = dp_size * per_rank
            return steps * self._mini_rows

        # -- the passes ------------------------------------------------------------------------
        def _compute_old_log_prob(self, batch, metrics):
            if self._nothing_to_train:
                return batch
            out = super()._compute_old_log_prob(batch, metrics)
            refinements = [k for k in batch.keys if self._rows is not None and self._rows.refinement(k)]
            if not refinements:
                return out
            rc = self.config.algorithm.get("rollout_correction", None)
            if rc is not None and rc.get("bypass_mode", False):
                self._refinement_old_log_probs(batch, refinements)
            elif self.config.actor_rollout_ref.rollout.calculate_log_probs:
                metrics.update(self._policy_debug_metrics(batch))
            return out

        def _refinement_old_log_probs(self, batch: KVBatchMeta, keys: list[str]) -> None:
            """Old log-probs of the refinement rows under the prompt they are trained with (bypass mode
            would take their rollout log-probs, sampled after the reflection prompt)."""
            ref = self.config.actor_rollout_ref
            micro = 1 if ref.rollout.get("log_prob_use_dynamic_bsz", False) else int(
                ref.rollout.log_prob_micro_batch_size_per_gpu)
            sub = batch.select_keys(keys)
            sub = upsample_batch_to_divisible_size(sub, self._dp_size() * micro, self.tokenizer.eos_token_id)
            sub.extra_info.update({"calculate_entropy": False, "compute_loss": False,
                                   "temperature": ref.rollout.temperature})
            self.actor_rollout_wg.compute_log_prob(sub)
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id,
                                   select_fields=["log_probs", "response_mask"])
            # the other rows' old log-probs are their rollout log-probs (float32, AgentLoopOutput.as_dict)
            old = response_from_nested(data["log_probs"], data["response_mask"]).to(torch.float32)
            tq.kv_batch_put(keys=keys, partition_id=batch.partition_id,
                            fields=TensorDict({"old_log_probs": old}, batch_size=len(keys)))
            if len(sub) > len(keys):
                tq.kv_clear(keys=sub.keys[len(keys):], partition_id=batch.partition_id)

        def _policy_debug_metrics(self, batch: KVBatchMeta) -> dict[str, float]:
            """verl's rollout-vs-actor log-prob diagnostics on the policy's own samples."""
            keys = [k for k, pad in zip(batch.keys, padding_of(batch)) if not pad and self._rows.policy(k)]
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id,
                                   select_fields=["responses", "response_mask", "rollout_log_probs", "old_log_probs"])
            return calculate_debug_metrics(DataProto(batch=data.to_padded_tensor()))

        def _compute_ref_log_prob(self, batch, metrics):
            return batch if self._nothing_to_train else super()._compute_ref_log_prob(batch, metrics)

        def _compute_values(self, batch, metrics):
            return batch if self._nothing_to_train else super()._compute_values(batch, metrics)

        def _compute_advantage(self, batch, metrics):
            if self._nothing_to_train:
                return batch
            if self._rft:
                return self._rft_advantage(batch)
            refinements = [k for k in batch.keys if self._rows is not None and self._rows.refinement(k)]
            if not refinements:
                return super()._compute_advantage(batch, metrics)
            # verl's estimator, KL-in-reward and rollout correction on the policy's own samples only
            policy = batch.select_keys([k for k in batch.keys if k not in set(refinements)])
            written = super()._compute_advantage(policy, metrics)
            self._put_refinement_advantages(batch, refinements, set(written.fields or ()))
            return KVBatchMeta(keys=batch.keys, tags=batch.tags, partition_id=batch.partition_id,
                               fields=written.fields, extra_info=batch.extra_info)

        def _put_refinement_advantages(self, batch: KVBatchMeta, keys: list[str], written: set[str]) -> None:
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id,
                                   select_fields=["response_mask", "rm_scores"])
            nested_mask = data["response_mask"]
            mask = nested_mask.to_padded_tensor(0).to(torch.float32)
            coef = float((self.config.get("mathse") or {}).get("refine_sft_coef", 1.0))
            out = {"advantages": coef * mask, "returns": coef * mask}
            if "token_level_rewards" in written:
                out["token_level_rewards"] = data["rm_scores"].to_padded_tensor(0.0)
            if "rollout_is_weights" in written:  # neutral: a refinement is trained by its fixed weight alone
                out["rollout_is_weights"] = torch.ones_like(mask)
            fields = TensorDict({k: response_to_nested(v, nested_mask) for k, v in out.items()}, batch_size=len(keys))
            tq.kv_batch_put(keys=keys, partition_id=batch.partition_id, fields=fields)

        def _rft_advantage(self, batch):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["uid", "response_mask"])
            nested_mask = data["response_mask"]
            mask = nested_mask.to_padded_tensor(0)
            accepted = torch.tensor([not pad for pad in padding_of(batch)])  # every trained row was accepted
            uid = np.array([str(u) for u in column(data, "uid")], dtype=object)
            advantages, _ = rft_batch(accepted, mask, uid, RFTConfig.from_algorithm(self.config.algorithm))
            fields = TensorDict({k: response_to_nested(advantages, nested_mask) for k in ("advantages", "returns")},
                                batch_size=len(batch))
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)

        def _update_actor(self, batch, metrics):
            ref = self.config.actor_rollout_ref
            epochs = int(ref.actor.ppo_epochs)
            if self._nothing_to_train:
                metrics.update({"mathse/optimizer_steps": 0.0, "mathse/mini_batch_rows": 0.0})
                return batch
            rows = self._mini_rows or int(ref.actor.ppo_mini_batch_size) * int(ref.rollout.n)
            metrics.update({"mathse/mini_batch_rows": float(rows),
                            "mathse/optimizer_steps": float(math.ceil(len(batch) / rows) * epochs)})
            if self._mini_rows is None:
                return super()._update_actor(batch, metrics)
            group, self.actor_rollout_wg = self.actor_rollout_wg, _MiniBatchRows(self.actor_rollout_wg, rows)
            try:
                return super()._update_actor(batch, metrics)
            finally:
                self.actor_rollout_wg = group

        # -- metrics ---------------------------------------------------------------------------
        def _compute_metrics(self, batch, metrics, timing_raw, global_steps, epoch):
            rows = self._rows
            aside = set(self._aside.keys) if self._aside is not None else set()
            trained = select(batch, [k not in aside for k in batch.keys]) if aside else batch
            if len(trained) and not self._nothing_to_train:
                super()._compute_metrics(trained, metrics, timing_raw, global_steps, epoch)
            else:
                metrics.update({"training/global_step": global_steps, "training/epoch": epoch})
            if rows is None:
                return
            real = [k for k, pad in zip(batch.keys, padding_of(batch)) if not pad]
            policy = [k for k in real if rows.policy(k)]
            if policy and (aside or len(policy) != len(real)):
                metrics.update(self._sample_metrics(batch.partition_id, policy))
            metrics.update(step_metrics([rows.extra[rows.index[k]] for k in policy], [False] * len(policy)))
            metrics.update(self._step_metrics)
            evicted = getattr(self.replay_buffer, "evicted", None)
            if evicted is not None and evicted.to_counts():
                metrics.update(evicted.as_metrics("mathse/evicted/"))
                self.replay_buffer.evicted = StepCounters()

        def _sample_metrics(self, partition_id: str, keys: list[str]) -> dict[str, Any]:
            """verl's sample metrics (``SAMPLE_METRIC_PREFIXES``) over the policy's own samples."""
            rewards = "token_level_rewards" if self.config.algorithm.use_kl_in_reward and not self._rft else "rm_scores"
            fields = ["prompts", "responses", "response_mask", "rm_scores", "num_turns"] + (
                [rewards] if rewards != "rm_scores" else [])
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=fields)
            num_turns = np.array(data.pop("num_turns").tolist())
            prompt_length, response_length = data["prompts"].offsets().diff(), data["responses"].offsets().diff()
            data = data.to_padded_tensor()
            data["token_level_scores"] = data["rm_scores"]
            data["token_level_rewards"] = data[rewards]
            data["advantages"] = data["returns"] = torch.zeros_like(data["rm_scores"])
            data["prompt_length"], data["response_length"] = prompt_length.float(), response_length.float()
            proto = DataProto(batch=data)
            proto.non_tensor_batch["__num_turns__"] = num_turns.astype(np.int32)
            out = {k: v for k, v in compute_data_metrics(batch=proto, use_critic=False).items()
                   if k.startswith(SAMPLE_METRIC_PREFIXES)}
            out.update({"training/num_turns/mean": num_turns.mean(), "training/num_turns/max": num_turns.max(),
                        "training/num_turns/min": num_turns.min()})
            return out

        # -- validation ------------------------------------------------------------------------
        def on_validate_begin(self):
            super().on_validate_begin()
            self.replay_buffer.validation = StepCounters()
            manager = self.agent_loop_manager
            original = manager.generate_sequences

            def generate_sequences(batch):
                tu.assign_non_tensor_data(batch, VALIDATE_FIELD, True)
                return original(batch)

            manager.generate_sequences = generate_sequences
            self._validation_manager = manager

        def on_validate_end(self):
            manager = getattr(self, "_validation_manager", None)
            if manager is not None and "generate_sequences" in vars(manager):
                del manager.generate_sequences
            self._validation_manager = None
            super().on_validate_end()

        def _val_metrics_update(self, *args, **kwargs):
            out = super()._val_metrics_update(*args, **kwargs)
            counters = getattr(self.replay_buffer, "validation", None)
            if counters is not None and counters.to_counts():
                out.update(validation_metrics(counters))
            return out

    MathSETrainer.__name__ = MathSETrainer.__qualname__ = "MathSETrainer"
    existing = TRAINER_REGISTRY.get(TRAINER_NAME)
    if existing is not None and existing.__qualname__ == MathSETrainer.__qualname__:
        del TRAINER_REGISTRY[TRAINER_NAME]  # this module imported again: keep the newest
    register_trainer(TRAINER_NAME)(MathSETrainer)
    return MathSETrainer


MathSETrainer = _register()
