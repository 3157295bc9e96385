"""A ``backend: local`` judge or critic is loaded once per node, not once per agent-loop worker."""

from __future__ import annotations

import pytest

from mathse_rl.types import Problem


def test_inside_ray_the_loop_asks_for_the_node_shared_backend():
    from mathse_rl.integrations.verl.agent_loop import node_shared
    from mathse_rl.step import step_config

    local = {"backend": "local", "model": "judge-path"}
    step = step_config({"judge": "orm", "critic": local, "judge_options": {"orm": dict(local)}})
    shared = node_shared(step, in_ray=True)
    assert shared.critic["backend"] == "local_per_node" and shared.judge_options["orm"]["backend"] == "local_per_node"
    assert node_shared(step, in_ray=False) == step  # outside Ray (trl, tests, the offline loop): unchanged
    served = step_config({"critic": {"backend": "openai", "endpoint": "http://h/v1", "model": "m"}})
    assert node_shared(served, in_ray=True) == served


@pytest.mark.slow
def test_two_agent_loop_workers_share_one_loaded_judge(ray_local, tiny_lm_path):
    import ray

    config = {"backend": "local", "model": tiny_lm_path, "device": "cpu", "max_new_tokens": 8, "fallback": "none"}
    problems = [Problem(id="a", question="What is 2 + 3?", gold="5"), Problem(id="b", question="1 + 1?", gold="2")]
    responses = ["2 + 3 = 6. The answer to this problem is 6.", "The answer to this problem is 2."]

    @ray.remote(num_cpus=0)
    class AgentLoopWorker:  # what a verl agent-loop worker does: build the loop's critic once, critique
        def critique(self):
            import os

            from mathse_rl.integrations.verl.shared_judge import shared_on_node
            from mathse_rl.step import Critic, reward_input

            # the loop keeps its critic for the run (agent_loop._critic's cache): so does the host actor live
            self.critic = critic = Critic(shared_on_node(config))
            items = [reward_input(p, r) for p, r in zip(problems, responses)]
            replies = [r.raw or r.failure for r in critic.backend.judge_detailed(items)]
            host = ray.get(critic.backend.host.where.remote()) if hasattr(critic.backend, "host") else None
            return type(critic.backend).__name__, replies, host, os.getpid()

    workers = [AgentLoopWorker.remote() for _ in range(2)]
    results = ray.get([w.critique.remote() for w in workers])
    assert [r[0] for r in results] == ["NodeSharedJudge", "NodeSharedJudge"]
    (host,) = {r[2] for r in results}  # one process holds the judge model for both workers ...
    assert host[0] not in {r[3] for r in results}  # ... neither of them

    from mathse_rl.orm import load_judge
    from mathse_rl.step import reward_input

    alone = load_judge(config).judge_detailed([reward_input(p, r) for p, r in zip(problems, responses)])
    assert results[0][1] == results[1][1] == [r.raw or r.failure for r in alone]  # the same judge's replies
    for w in workers:
        ray.kill(w)
