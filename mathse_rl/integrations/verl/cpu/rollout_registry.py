"""Put the ``hf_cpu`` rollout into verl's two rollout registries.

verl finds a rollout twice: the replica (server side) through ``RolloutReplicaRegistry``
and the trainer-side adapter through ``verl.workers.rollout.base._ROLLOUT_REGISTRY``
(keyed by ``(name, mode)``; verl 0.9.1 has no public register call for it).
"""

from __future__ import annotations

# The name users write as ``actor_rollout_ref.rollout.name``.
ROLLOUT_NAME = "hf_cpu"
ADAPTER = "mathse_rl.integrations.verl.cpu.rollout.HFServerAdapter"


def _load_replica():
    from mathse_rl.integrations.verl.cpu.rollout import HFRolloutReplica

    return HFRolloutReplica


def register_rollout() -> None:
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ADAPTER
