"""The trl clash: verl's FSDP model patching must work with trl 1.16 installed.

The end-to-end evidence (a fresh interpreter patches a model through verl with our plugin,
and fails without it) is in test_plugin.py; here, the shim's own behaviour.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def trl_lacks_value_head():
    from mathse_rl.integrations.verl.compat import trl_value_head_available

    if trl_value_head_available():
        pytest.skip("the installed trl still has AutoModelForCausalLMWithValueHead: no clash to fix")


def test_shim_only_changes_the_answer_when_trl_lacks_the_class(trl_lacks_value_head):
    import verl  # noqa: F401  (loads the plugin, which installs the shim)
    import verl.utils.import_utils as import_utils

    from mathse_rl.integrations.verl import compat

    assert compat.shim_installed()
    original = import_utils.is_trl_available.__wrapped__
    assert original() is True  # trl is installed...
    assert import_utils.is_trl_available() is False  # ...but unusable for verl's value head
    assert compat.install_trl_shim() is False  # idempotent: a second install does nothing
    assert import_utils.is_trl_available.__wrapped__ is original


# -- a mathse_reflect session with a refinement added beside the policy's answer ----------------
#
# verl 0.9.1's AgentLoopWorker._compute_score scores all outputs of a session in one reward
# call: it pads their position ids with pad_sequence, which for a Qwen2-VL-family model (ids of
# shape (4, seq_len)) fails whenever the outputs differ in length, and the reward manager then
# picks one row (verl's naive manager: the first, i.e. our refinement). The worker below is
# verl's class with only the parts _compute_score reads replaced: mrope-shaped position ids, and
# a reward handle that scores the row verl's naive manager scores (data[0]).

class _RemoteScore:
    def __init__(self, calls):
        self.calls = calls

    def remote(self, data):
        async def score():
            self.calls.append(len(data))
            first = data[0]  # verl's NaiveRewardManager.run_single reads data[0]
            length = int(first.non_tensor_batch["response_len"])
            return {"reward_score": float(length), "reward_extra_info": {"rows": len(data)}}
        return score()


class _RewardHandle:
    def __init__(self):
        self.calls: list[int] = []
        self.compute_score = _RemoteScore(self.calls)


def _vlm_worker(handle):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    import torch

    worker = AgentLoopWorker.__new__(AgentLoopWorker)
    worker.reward_loop_worker_handles = [handle]
    worker._compute_multi_modal_inputs = lambda output, input_ids: {}
    # Qwen2.5-VL's position ids: (1, 4, seq_len) before verl squeezes the batch dimension
    worker._compute_position_ids = lambda input_ids, attention_mask, mm, *a, **k: (
        torch.arange(input_ids.shape[1]).expand(1, 4, -1).clone())
    worker._get_mm_processor_kwargs = lambda *a, **k: {}
    return worker


def _output(response_len: int, role: str):
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    return AgentLoopOutput(prompt_ids=[1, 2, 3], response_ids=list(range(5, 5 + response_len)),
                           response_mask=[1] * response_len, multi_modal_data={}, num_turns=2,
                           metrics={}, extra_fields={"mathse_role": role})


def _score_session(outputs):
    import asyncio

    import verl  # noqa: F401  (loads the plugin)
    import mathse_rl.integrations.verl.agent_loop  # noqa: F401  (installs the session scoring fix)

    handle = _RewardHandle()
    worker = _vlm_worker(handle)
    asyncio.run(worker._compute_score(outputs, kwargs={"data_source": "x"}))
    return handle.calls


def test_a_session_with_an_added_refinement_is_scored_on_the_policy_answer_alone():
    from mathse_rl.integrations.verl.fields import ROLE_POLICY, ROLE_REFINEMENT

    refinement, policy = _output(12, ROLE_REFINEMENT), _output(4, ROLE_POLICY)
    calls = _score_session([refinement, policy])  # verl's pad_sequence raised on (4, 15) vs (4, 7)
    assert calls == [1]  # one reward call, on one row
    assert policy.reward_score == 4.0  # the policy's own answer's score, not the refinement's (12)
    assert policy.extra_fields["reward_extra_info"] == {"rows": 1}


def test_other_sessions_are_scored_as_verl_scores_them():
    from mathse_rl.integrations.verl.fields import ROLE_POLICY

    single = _output(6, ROLE_POLICY)
    assert _score_session([single]) == [1] and single.reward_score == 6.0
    # several outputs that are not ours go to verl unchanged (all rows in one call)
    a, b = _output(5, "turn"), _output(5, "turn")
    assert _score_session([a, b]) == [2] and b.reward_score == 5.0


def test_a_micro_batch_without_images_runs_through_verls_qwen2_vl_forward(tiny_vlm):
    """verl's text-only branch (a micro-batch of its padding rows) runs the vision tower on a
    dummy image; under transformers 5 it raised on the tower's output object. Images or not, the
    text embeddings are unchanged (the tower only joins the graph with weight 0)."""
    import torch
    import verl  # noqa: F401  (the plugin installs the fix)
    import verl.models.transformers.qwen2_vl as qwen2_vl

    model, processor = tiny_vlm
    base = model.model  # what verl's patched forward hands _get_input_embeds
    input_ids = torch.tensor([[processor.tokenizer.eos_token_id] * 8])
    with torch.no_grad():
        embeds, mask = qwen2_vl._get_input_embeds(base, input_ids, torch.ones_like(input_ids))
    assert torch.equal(embeds, base.get_input_embeddings()(input_ids)) and mask.shape == input_ids.shape
