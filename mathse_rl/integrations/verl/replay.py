"""verl's synchronous replay buffer with MathSE's two rules on groups.

verl's ``ReplayBuffer`` (``verl.trainer.ppo.v1.replay_buffer``) picks the finished prompt groups
a step trains on and, with DAPO's ``algorithm.filter_groups``, evicts groups whose metric is the
same on every trajectory (no gradient signal) and refills them. The ``mathse`` trainer uses it
as it is, with two changes (:class:`MathSEReplayBuffer`):

- **DAPO looks at the policy's own samples.** An added refinement (``reflect_mode: add``) is a
  second output of its session and carries its failure's score (verl copies a session's score to
  all its outputs), so it must not count in the uniformity test; and a group whose samples are
  all wrong but which got a verified refinement is *not* without signal: the refinement's
  supervised term trains on it. Such a group is kept. The policy's output is the last of its
  session (the ``mathse_reflect`` loop's contract, the rule verl's GRPO and validation use too).
- **Nothing is counted twice or lost.** The ``mathse_counts`` of groups verl evicts (DAPO,
  failed groups refilled) are kept (:attr:`MathSEReplayBuffer.evicted`, logged as
  ``mathse/evicted/*``), and those of validation batches are summed
  (:attr:`MathSEReplayBuffer.validation`, logged as ``mathse/val/*``).

verl builds the buffer with its own constructor; the ``mathse`` trainer then switches the
instance's class to this subclass, which adds no state verl's constructor would have to know.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from mathse_rl.step import StepCounters


def session_of(key: str) -> tuple[str, int]:
    """``({uid}_{session}, index)`` of a trajectory key ``{uid}_{session}_{index}``."""
    session, _, index = key.rpartition("_")
    return session, int(index)


def added_outputs(keys: list[str]) -> set[str]:
    """Keys that are not the last output of their session: the refinements ``reflect_mode: add``
    puts before the policy's own output.

    >>> sorted(added_outputs(["u_0_0", "u_0_1", "u_1_0"]))
    ['u_0_0']
    """
    last: dict[str, int] = {}
    for key in keys:
        session, index = session_of(key)
        last[session] = max(index, last.get(session, index))
    return {k for k in keys if session_of(k)[1] < last[session_of(k)[0]]}


def read_counts(keys: list[str], partition_id: str) -> StepCounters:
    """The sum of the ``mathse_counts`` of trajectories ``keys`` (refinements carry none)."""
    import transfer_queue as tq

    counters = StepCounters()
    if not keys:
        return counters
    data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["extra_fields"])
    for fields in data["extra_fields"]:
        fields = getattr(fields, "data", fields)
        if isinstance(fields, dict) and fields.get("mathse_counts"):
            counters.merge(fields["mathse_counts"])
    return counters


class MathSEReplayBuffer(ReplayBuffer):
    """verl's sync ``ReplayBuffer``: DAPO on the policy's own samples, groups with verified
    refinements kept, counters of evicted groups and of validation batches kept."""

    evicted: StepCounters
    validation: StepCounters

    def mathse_reset(self) -> None:
        self.evicted = StepCounters()
        self.validation = StepCounters()

    def _dapo_filtered_keys(self, partition_id: str) -> tuple[set[str], Counter]:
        partition = self.partitions[partition_id]
        hidden = added_outputs(list(partition))
        if not hidden:
            return super()._dapo_filtered_keys(partition_id)
        self.partitions[partition_id] = {k: v for k, v in partition.items() if k not in hidden}
        try:
            filtered, _ = super()._dapo_filtered_keys(partition_id)
        finally:
            self.partitions[partition_id] = partition
        refined_groups = {k.split("_")[0] for k in hidden}
        kept = filtered - refined_groups
        cache = self._dapo_classification_cache[partition_id]
        return kept, Counter(cache[uid] for uid in kept)

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        if uids and partition_id != "val":
            keys = [k for k in self.partitions[partition_id] if k.split("_")[0] in uids]
            self._counters("evicted").merge(read_counts(keys, partition_id))
        super()._clear_groups(partition_id, uids)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == "val":
            self._counters("validation").merge(read_counts(list(batch.keys), partition_id))
        return batch, metrics

    def _counters(self, name: str) -> StepCounters:
        if not hasattr(self, name):
            self.mathse_reset()
        return getattr(self, name)
