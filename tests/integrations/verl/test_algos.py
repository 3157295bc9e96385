"""The ``mathse_rft`` advantage estimator and policy loss, on hand-built tensors.

Both are looked up through verl's own registries (filled by our plugin at ``import verl``)
and, for the estimator, also driven through verl's ``compute_advantage``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import verl  # noqa: F401  (loads the mathse_rl plugin)
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

# 5 samples, response length 4; rows 1 and 3 are right-padded.
MASK = torch.tensor(
    [
        [1, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 0, 0, 0],
        [1, 1, 1, 0],
    ],
    dtype=torch.float32,
)
# Outcome rewards sit on the last valid token, as verl's reward managers put them.
SCORES = [1.0, 0.0, 1.0, 1.0, 0.0]
INDEX = np.array(["a", "a", "a", "b", "c"], dtype=object)


def token_rewards(scores=SCORES, mask=MASK) -> torch.Tensor:
    out = torch.zeros_like(mask)
    last = mask.sum(dim=-1).long() - 1
    out[torch.arange(len(scores)), last] = torch.tensor(scores)
    return out


def algorithm(**options):
    return OmegaConf.create({"adv_estimator": "mathse_rft", "mathse_rft": options})


def test_estimator_gives_accepted_samples_weight_on_their_valid_tokens_only():
    estimator = get_adv_estimator_fn("mathse_rft")
    adv, returns = estimator(token_level_rewards=token_rewards(), response_mask=MASK, index=INDEX, config=None)
    expected = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).unsqueeze(-1) * MASK
    assert torch.equal(adv, expected)
    assert torch.equal(returns, adv)


def test_estimator_per_group_normalisation_shares_the_weight_among_accepted():
    estimator = get_adv_estimator_fn("mathse_rft")
    adv, _ = estimator(
        token_level_rewards=token_rewards(), response_mask=MASK, index=INDEX,
        config=algorithm(normalize_per_group=True, weight=2.0),
    )
    # group a: 2 of 3 accepted -> 2.0 / 2 each; group b: 1 accepted -> 2.0; group c: none.
    per_sample = torch.tensor([1.0, 0.0, 1.0, 2.0, 0.0])
    assert torch.allclose(adv, per_sample.unsqueeze(-1) * MASK)
    assert adv[INDEX == "a"].sum(dim=-1).tolist() == [4.0, 0.0, 4.0]  # 4 valid tokens at weight 1


def test_estimator_threshold_and_bad_options():
    estimator = get_adv_estimator_fn("mathse_rft")
    rewards = token_rewards([0.6, 0.4, 0.5, 1.0, 0.0])
    adv, _ = estimator(token_level_rewards=rewards, response_mask=MASK, index=INDEX,
                       config=algorithm(accept_threshold=0.5))
    assert (adv.sum(dim=-1) > 0).tolist() == [True, False, True, True, False]
    with pytest.raises(ValueError, match="unknown algorithm.mathse_rft option"):
        estimator(token_level_rewards=rewards, response_mask=MASK, index=INDEX, config=algorithm(treshold=0.5))


def test_estimator_through_verls_compute_advantage():
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards(), "response_mask": MASK},
        non_tensors={"uid": INDEX},
    )
    out = compute_advantage(data, adv_estimator="mathse_rft", config=algorithm(normalize_per_group=True))
    assert torch.allclose(out.batch["advantages"][:, 0], torch.tensor([0.5, 0.0, 0.5, 1.0, 0.0]))
    assert torch.equal(out.batch["advantages"] * (1 - MASK), torch.zeros_like(MASK))


def actor_config(**kw):
    from verl.workers.config import FSDPActorConfig

    return FSDPActorConfig(strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1, **kw)


def rft_loss(log_prob, advantages, mode="token-mean", config=None, **kw):
    loss_fn = get_policy_loss_fn("mathse_rft")
    return loss_fn(old_log_prob=log_prob.detach(), log_prob=log_prob, advantages=advantages, response_mask=MASK.bool(),
                   loss_agg_mode=mode, config=config if config is not None else actor_config(), **kw)


def test_loss_is_weighted_nll_and_gradients_flow_only_through_accepted_tokens():
    torch.manual_seed(0)
    log_prob = (-torch.rand(5, 4) - 0.1).requires_grad_()
    adv = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0]).unsqueeze(-1) * MASK
    loss, metrics = rft_loss(log_prob, adv)
    expected = -(adv * log_prob * MASK).sum() / MASK.sum()  # token-mean over all valid tokens
    assert torch.allclose(loss, expected)
    loss.backward()
    grad = log_prob.grad
    accepted_tokens = (adv > 0)
    assert torch.all(grad[~accepted_tokens] == 0)  # rejected rows and padding: no gradient
    assert torch.all(grad[accepted_tokens] < 0)  # accepted tokens: raising log-prob lowers the loss
    assert metrics["actor/rft_accepted_frac"] == pytest.approx(3 / 5)
    assert metrics["actor/rft_nll"] == pytest.approx(-(log_prob.detach()[accepted_tokens]).mean().item())


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_loss_aggregation_follows_loss_agg_mode(mode):
    log_prob = -torch.linspace(0.1, 2.0, 20).reshape(5, 4)
    adv = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).unsqueeze(-1) * MASK
    loss, _ = rft_loss(log_prob, adv, mode=mode)
    tok = -(adv * log_prob) * MASK
    manual = {
        "token-mean": tok.sum() / MASK.sum(),
        "token-sum": tok.sum(),
        "seq-mean-token-sum": tok.sum(dim=-1).mean(),
        "seq-mean-token-mean": (tok.sum(dim=-1) / MASK.sum(dim=-1)).mean(),
    }[mode]
    assert torch.allclose(loss, manual)


def test_loss_uses_verls_global_batch_normalisation():
    log_prob = -torch.linspace(0.1, 2.0, 20).reshape(5, 4)
    adv = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).unsqueeze(-1) * MASK
    config = actor_config()
    # What verl's ppo_loss sets before calling a policy loss: this micro-batch is part of 40 tokens.
    config.global_batch_info.update(dp_size=1, batch_num_tokens=40, global_batch_size=10, loss_scale_factor=None)
    loss, _ = rft_loss(log_prob, adv, config=config)
    assert torch.allclose(loss, (-(adv * log_prob) * MASK).sum() / 40)


def test_loss_is_finite_and_gradient_free_when_nothing_is_accepted():
    log_prob = (-torch.rand(5, 4)).requires_grad_()
    loss, metrics = rft_loss(log_prob, torch.zeros(5, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(log_prob.grad == 0)
    assert metrics["actor/rft_accepted_frac"] == 0.0


def test_loss_ignores_negative_advantages():
    # With GRPO's estimator a rejected sample has a negative advantage; RFT never unlearns it.
    log_prob = (-torch.rand(5, 4)).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0, -0.5]).unsqueeze(-1) * MASK
    loss, _ = rft_loss(log_prob, adv)
    loss.backward()
    assert torch.all(log_prob.grad[1:] == 0) and torch.all(log_prob.grad[0] != 0)


def test_loss_through_verls_ppo_loss_entry_point():
    """verl's FSDP engine calls ``workers.utils.losses.ppo_loss``; with loss_mode=mathse_rft
    it must route to our loss with verl's global batch info, and return our metrics."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    torch.manual_seed(0)
    resp_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    batch, prompt_len = 3, 2
    attention = torch.cat([torch.ones(batch, prompt_len, dtype=torch.long), resp_mask], dim=1)
    flat_log_probs = (-torch.rand(int(attention.sum()))).requires_grad_()  # the model's unpadded output
    data = TensorDict({
        "prompts": torch.ones(batch, prompt_len, dtype=torch.long),
        "responses": torch.ones(batch, 4, dtype=torch.long),
        "attention_mask": attention,
        "response_mask": resp_mask,
        "old_log_probs": torch.zeros(batch, 4),
        "advantages": torch.tensor([1.0, 0.0, 1.0]).unsqueeze(-1) * resp_mask,  # sample 1 rejected
    }, batch_size=[batch])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(resp_mask.sum()), global_batch_size=batch)
    config = actor_config(policy_loss={"loss_mode": "mathse_rft"}, use_kl_loss=False)

    loss, metrics = ppo_loss(config, {"log_probs": flat_log_probs}, data)
    loss.backward()

    # Response token t of a sample is predicted at flat position (start + prompt_len - 1 + t).
    starts = torch.cat([torch.zeros(1, dtype=torch.long), attention.sum(dim=1).cumsum(0)[:-1]])
    accepted_positions = [int(starts[i]) + prompt_len - 1 + t for i in (0, 2) for t in range(int(resp_mask[i].sum()))]
    expected = -flat_log_probs.detach()[accepted_positions].sum() / resp_mask.sum()
    assert torch.allclose(loss, expected)
    grad = flat_log_probs.grad
    assert torch.count_nonzero(grad) == len(accepted_positions)
    assert torch.allclose(grad[accepted_positions], torch.full((7,), -1 / 9))
    assert {"actor/rft_accepted_frac", "actor/rft_nll", "actor/pg_loss"} <= set(metrics)
