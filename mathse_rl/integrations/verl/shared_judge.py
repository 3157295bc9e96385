"""One ``backend: local`` judge per node, shared by all of verl's agent-loop workers there.

verl runs several agent-loop workers per node (Ray actors), and the ``mathse_reflect`` loop builds
its judge and critic once per worker process: with ``backend: local`` (a transformers model) that
would be one full copy of the ORM per worker. Inside Ray the loop asks for the judge backend
``local_per_node`` instead (:func:`shared_on_node`): a named Ray actor per node and configuration
holds the one ``local`` judge, and each worker's backend sends it the batches to judge
(:meth:`~mathse_rl.orm.judge.Judge.replies`); parsing, scoring and the fallback stay in the worker.
The actor asks Ray for no CPU or GPU of its own (verl's placement groups hold them), so it shares
the node like the workers do; a judge that needs its own GPU is better served
(``backend: openai`` on a vLLM or SGLang server). It lives as long as the worker that created it
holds its judge (the loop keeps it for the run), and is not detached: nothing outlives the job on
a shared Ray cluster.

    >>> shared_on_node({"backend": "local", "model": "m"}, in_ray=True)["backend"]
    'local_per_node'
    >>> shared_on_node({"backend": "openai"}, in_ray=True)["backend"]
    'openai'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

from mathse_rl.orm.config import JudgeConfig
from mathse_rl.orm.judge import Judge, Reply, load_judge, register_backend
from mathse_rl.types import RewardInput

BACKEND = "local_per_node"
NAMESPACE = "mathse_rl"


def shared_on_node(config: Mapping[str, Any] | None, in_ray: bool | None = None) -> dict[str, Any]:
    """``config`` with ``backend: local`` switched to the per-node shared backend inside Ray."""
    out = dict(config or {})
    if in_ray is None:
        import ray

        in_ray = ray.is_initialized()
    if in_ray and out.get("backend") == "local":
        out["backend"] = BACKEND
    return out


def _host_name(config: JudgeConfig, node_id: str) -> str:
    key = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return f"mathse_local_judge_{hashlib.sha1(key.encode()).hexdigest()[:12]}_{node_id[:16]}"


class LocalJudgeHost:
    """The Ray actor holding a node's ``local`` judge (created by the first worker that asks)."""

    def __init__(self, config: Mapping[str, Any]):
        self.judge = load_judge({**dict(config), "backend": "local"})

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        return self.judge.replies(list(items))

    def where(self) -> tuple[int, str]:
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()


@register_backend(BACKEND)
class NodeSharedJudge(Judge):
    """A ``local`` judge held once per node by :class:`LocalJudgeHost`; this process sends it batches."""

    def __init__(self, config: JudgeConfig) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        super().__init__(config)
        node = ray.get_runtime_context().get_node_id()
        plain = {k: v for k, v in dataclasses.asdict(config).items() if k != "backend"}
        self.host = ray.remote(LocalJudgeHost).options(
            name=_host_name(config, node), namespace=NAMESPACE, get_if_exists=True,
            num_cpus=0, max_concurrency=8,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        ).remote(plain)

    def replies(self, items: Sequence[RewardInput]) -> list[Reply]:
        import ray

        return ray.get(self.host.replies.remote(list(items)))

    async def areplies(self, items: Sequence[RewardInput]) -> list[Reply]:
        return await self.host.replies.remote(list(items))
