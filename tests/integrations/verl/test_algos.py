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


def test_registered_estimator_refuses_to_accept_on_rewards():
    """verl's estimators see only token rewards; mathse_rft accepts on verdicts (the mathse trainer)."""
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards(), "response_mask": MASK},
                               non_tensors={"uid": INDEX})
    with pytest.raises(ValueError, match="trainer.v1.trainer_mode=mathse"):
        compute_advantage(data, adv_estimator="mathse_rft", config=algorithm())


def test_rft_batch_weights_accepted_samples_and_masks_out_the_rest():
    from mathse_rl.integrations.verl.algos import rft_batch, verdicts_accepted

    accepted = verdicts_accepted([1.0, 0.0, 1.0, None, 0.0])  # None: undecidable, never accepted
    adv, mask = rft_batch(accepted, MASK, INDEX)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]).unsqueeze(-1)
    assert torch.equal(adv, keep * MASK) and torch.equal(mask, keep * MASK)


def test_rft_batch_per_group_normalisation_shares_the_weight_among_accepted():
    from mathse_rl.integrations.verl.algos import RFTConfig, rft_batch

    cfg = RFTConfig.from_algorithm(algorithm(normalize_per_group=True, weight=2.0))
    adv, _ = rft_batch(torch.tensor([True, False, True, True, False]), MASK, INDEX, cfg)
    # group a: 2 of 3 accepted -> 2.0 / 2 each; group b: 1 accepted -> 2.0; group c: none.
    assert torch.allclose(adv, torch.tensor([1.0, 0.0, 1.0, 2.0, 0.0]).unsqueeze(-1) * MASK)
    with pytest.raises(ValueError, match="unknown algorithm.mathse_rft option"):
        RFTConfig.from_algorithm(algorithm(treshold=0.5))
    with pytest.raises(ValueError, match="verdict"):
        RFTConfig.from_algorithm(algorithm(accept_threshold=0.5))


def test_kl_in_reward_does_not_reject_correct_samples():
    """With algorithm.use_kl_in_reward, verl turns scores into score - beta * KL per token: no
    correct sample's summed reward reaches 1.0 any more. Acceptance reads the verdicts."""
    from verl import DataProto
    from verl.trainer.ppo.core_algos import FixedKLController
    from verl.trainer.ppo.ray_trainer import apply_kl_penalty

    from mathse_rl.integrations.verl.algos import rft_batch
    from mathse_rl.integrations.verl.trainer import verdicts

    torch.manual_seed(0)
    data = DataProto.from_dict(tensors={
        "token_level_scores": token_rewards(), "response_mask": MASK,
        "old_log_probs": -torch.rand(5, 4), "ref_log_prob": -torch.rand(5, 4) - 1.0})
    data, _ = apply_kl_penalty(data, FixedKLController(0.1))
    summed = data.batch["token_level_rewards"].sum(-1)
    assert not bool((summed >= 1.0).any())  # a reward threshold of 1.0 would reject everything
    fields = [{"accepted": s} for s in SCORES]  # the judge's verdicts travel in the extra fields
    accepted = torch.tensor([v == 1.0 for v in verdicts(fields, [False] * 5)])
    adv, _ = rft_batch(accepted, MASK, INDEX)
    assert (adv.sum(-1) > 0).tolist() == [s == 1.0 for s in SCORES]


def test_the_trainer_needs_the_reflect_loops_verdicts():
    from mathse_rl.integrations.verl.trainer import verdicts

    assert verdicts([{"accepted": 1.0}, {}], [False, True]) == [1.0, None]  # padding rows never count
    with pytest.raises(ValueError, match="mathse_reflect"):
        verdicts([{"is_refined": False}], [False])


def actor_config(**kw):
    from verl.workers.config import FSDPActorConfig

    return FSDPActorConfig(strategy="fsdp", ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1, **kw)


def rft_loss(log_prob, advantages, mode="token-mean", config=None, mask=None, **kw):
    loss_fn = get_policy_loss_fn("mathse_rft")
    mask = (advantages > 0) if mask is None else mask
    return loss_fn(old_log_prob=log_prob.detach(), log_prob=log_prob, advantages=advantages,
                   response_mask=mask.bool(), loss_agg_mode=mode,
                   config=config if config is not None else actor_config(), **kw)


def test_loss_is_weighted_nll_and_gradients_flow_only_through_accepted_tokens():
    torch.manual_seed(0)
    log_prob = (-torch.rand(5, 4) - 0.1).requires_grad_()
    adv = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0]).unsqueeze(-1) * MASK
    mask = (adv > 0).float()  # what the mathse trainer hands the loss: accepted samples' tokens only
    loss, metrics = rft_loss(log_prob, adv, mask=mask)
    expected = -(adv * log_prob).sum() / mask.sum()  # token-mean over accepted tokens
    assert torch.allclose(loss, expected)
    loss.backward()
    grad = log_prob.grad
    accepted_tokens = (adv > 0)
    assert torch.all(grad[~accepted_tokens] == 0)  # rejected rows and padding: no gradient
    assert torch.all(grad[accepted_tokens] < 0)  # accepted tokens: raising log-prob lowers the loss
    assert metrics["actor/rft_accepted_tokens"] == mask.sum().item()
    assert metrics["actor/rft_nll"] == pytest.approx(-(log_prob.detach()[accepted_tokens]).mean().item())


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_loss_is_a_mean_over_accepted_tokens_whatever_loss_agg_mode(mode):
    log_prob = -torch.linspace(0.1, 2.0, 20).reshape(5, 4)
    adv = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).unsqueeze(-1) * MASK
    loss, _ = rft_loss(log_prob, adv, mode=mode)
    assert torch.allclose(loss, (-(adv * log_prob)).sum() / (adv > 0).sum())


def test_loss_uses_verls_global_token_count():
    log_prob = -torch.linspace(0.1, 2.0, 20).reshape(5, 4)
    adv = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).unsqueeze(-1) * MASK
    config = actor_config()
    # What verl's ppo_loss sets before calling a policy loss: this micro-batch is part of a
    # mini-batch with 40 accepted tokens over 2 ranks.
    config.global_batch_info.update(dp_size=2, batch_num_tokens=40, global_batch_size=10, loss_scale_factor=None)
    loss, _ = rft_loss(log_prob, adv, config=config)
    assert torch.allclose(loss, (-(adv * log_prob)).sum() / 40 * 2)


def test_loss_is_finite_and_gradient_free_when_nothing_is_accepted():
    log_prob = (-torch.rand(5, 4)).requires_grad_()
    config = actor_config()
    config.global_batch_info.update(dp_size=1, batch_num_tokens=0, global_batch_size=5, loss_scale_factor=None)
    loss, metrics = rft_loss(log_prob, torch.zeros(5, 4), config=config)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(log_prob.grad == 0)
    assert metrics["actor/rft_accepted_tokens"] == 0.0
    assert config.global_batch_info["batch_num_tokens"] == 1  # verl's entropy / KL terms stay finite too


def test_loss_refuses_rejected_tokens_left_in_the_mask():
    # They would enter the normaliser: one accepted sample's gradient would shrink with the rejected count.
    log_prob = (-torch.rand(5, 4)).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 0.0, 0.0, -0.5]).unsqueeze(-1) * MASK
    with pytest.raises(ValueError, match="trainer_mode=mathse"):
        rft_loss(log_prob, adv, mask=MASK)


def test_loss_through_verls_ppo_loss_entry_point():
    """verl's FSDP engine calls ``workers.utils.losses.ppo_loss``; with loss_mode=mathse_rft
    it must route to our loss with verl's global batch info, and return our metrics."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from mathse_rl.integrations.verl.algos import rft_batch

    torch.manual_seed(0)
    lengths = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    adv, resp_mask = rft_batch(torch.tensor([True, False, True]), lengths)  # sample 1 rejected
    batch, prompt_len = 3, 2
    attention = torch.cat([torch.ones(batch, prompt_len, dtype=torch.long), lengths], dim=1)
    flat_log_probs = (-torch.rand(int(attention.sum()))).requires_grad_()  # the model's unpadded output
    data = TensorDict({
        "prompts": torch.ones(batch, prompt_len, dtype=torch.long),
        "responses": torch.ones(batch, 4, dtype=torch.long),
        "attention_mask": attention,
        "response_mask": resp_mask,
        "old_log_probs": torch.zeros(batch, 4),
        "advantages": adv,
    }, batch_size=[batch])
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(resp_mask.sum()), global_batch_size=batch)
    config = actor_config(policy_loss={"loss_mode": "mathse_rft"}, use_kl_loss=False)

    loss, metrics = ppo_loss(config, {"log_probs": flat_log_probs}, data)
    loss.backward()

    # Response token t of a sample is predicted at flat position (start + prompt_len - 1 + t).
    starts = torch.cat([torch.zeros(1, dtype=torch.long), attention.sum(dim=1).cumsum(0)[:-1]])
    accepted_positions = [int(starts[i]) + prompt_len - 1 + t for i in (0, 2) for t in range(int(lengths[i].sum()))]
    expected = -flat_log_probs.detach()[accepted_positions].sum() / 7
    assert torch.allclose(loss, expected)
    grad = flat_log_probs.grad
    assert torch.count_nonzero(grad) == len(accepted_positions)
    assert torch.allclose(grad[accepted_positions], torch.full((7,), -1 / 7))
    assert {"actor/rft_accepted_tokens", "actor/rft_nll", "actor/pg_loss"} <= set(metrics)


# --- the update is the same whatever shares the batch and however verl splits it -------------------
DIM, PROMPT = 6, 2


def _sample(seed: int, length: int) -> torch.Tensor:
    """Fixed features of one sample's prompt + response tokens (the "model" is log pi = -softplus(f . theta))."""
    return torch.randn(PROMPT + length, DIM, generator=torch.Generator().manual_seed(seed))


def engine_update(samples, accepted, dp: int, micro: int, entropy_coeff=0.0, kl_coef=0.0):
    """The gradient verl's FSDP engine applies for one mini-batch: ``batch_num_tokens`` summed over
    ``loss_mask`` of every rank (FSDPEngine.forward_backward_batch), ``ppo_loss`` per micro-batch,
    gradients accumulated over micro-batches and averaged over data-parallel ranks."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    from mathse_rl.integrations.verl.algos import rft_batch

    width = max(len(f) for f in samples) - PROMPT
    lengths = torch.tensor([[1] * (len(f) - PROMPT) + [0] * (width - len(f) + PROMPT) for f in samples])
    adv, mask = rft_batch(torch.tensor(accepted), lengths)
    batch_num_tokens = int(mask.sum())  # = loss_mask summed over all ranks
    theta0 = torch.linspace(-0.5, 0.5, DIM)
    config = actor_config(policy_loss={"loss_mode": "mathse_rft"}, use_kl_loss=kl_coef > 0, kl_loss_coef=kl_coef,
                          entropy_coeff=entropy_coeff)
    grads = []
    per_rank = len(samples) // dp
    for rank in range(dp):
        theta = theta0.clone().requires_grad_()
        rows = list(range(rank * per_rank, (rank + 1) * per_rank))
        for chunk in np.array_split(rows, micro):
            idx = [int(i) for i in chunk]
            feats = torch.cat([samples[i] for i in idx])
            logits = feats @ theta
            n = len(idx)
            data = TensorDict({
                "prompts": torch.ones(n, PROMPT, dtype=torch.long),
                "responses": torch.ones(n, width, dtype=torch.long),
                "attention_mask": torch.cat([torch.ones(n, PROMPT, dtype=torch.long), lengths[idx]], dim=1),
                "response_mask": mask[idx], "old_log_probs": torch.zeros(n, width), "advantages": adv[idx],
                "ref_log_prob": torch.full((n, width), -1.0),
            }, batch_size=[n])
            tu.assign_non_tensor(data, dp_size=dp, batch_num_tokens=batch_num_tokens,
                                 global_batch_size=len(samples))
            output = {"log_probs": -torch.nn.functional.softplus(logits),
                      "entropy": torch.nn.functional.softplus(-logits)}
            loss, _ = ppo_loss(config, output, data)
            loss.backward()
        grads.append(theta.grad)
    return torch.stack(grads).mean(0)  # DDP / FSDP: the mean over ranks


@pytest.mark.parametrize("entropy_coeff, kl_coef", [(0.0, 0.0), (0.01, 0.1)])
def test_one_accepted_samples_update_does_not_depend_on_the_rejected_beside_it_or_the_layout(entropy_coeff, kl_coef):
    """1, 9 or 99 rejected samples beside it, one rank or several, one micro-batch or several:
    the same update; verl's entropy and KL-loss terms do not act on rejected samples either."""
    accepted_sample = _sample(0, 5)
    updates = []
    for rejected, dp, micro in ((1, 1, 1), (9, 2, 2), (99, 4, 5)):
        samples = [accepted_sample] + [_sample(100 + k, 2 + k % 4) for k in range(rejected)]
        updates.append(engine_update(samples, [True] + [False] * rejected, dp, micro, entropy_coeff, kl_coef))
    assert updates[0].abs().sum() > 0
    for other in updates[1:]:
        assert torch.allclose(other, updates[0], atol=1e-6), (other, updates[0])


def test_two_accepted_samples_get_the_same_update_split_across_ranks_and_micro_batches():
    samples = [_sample(1, 4), _sample(2, 3)] + [_sample(200 + k, 3) for k in range(6)]
    accepted = [True, True] + [False] * 6
    one = engine_update(samples, accepted, dp=1, micro=1)
    order = [0, 2, 3, 4, 1, 5, 6, 7]  # the two accepted samples land on different ranks
    split = engine_update([samples[i] for i in order], [accepted[i] for i in order], dp=2, micro=2)
    assert torch.allclose(one, split, atol=1e-6)


def test_step_metrics_sum_the_samples_counters_per_data_source():
    from mathse_rl.integrations.verl.trainer import step_metrics
    from mathse_rl.step import StepCounters

    def counts(source, correct, reflected=0, verified=0, too_long=0):
        c = StepCounters()
        c.add("paths", source=source)
        c.add("correct" if correct else "wrong", source=source)
        for key, n in (("accepted", int(correct) + verified), ("reflected", reflected),
                       ("refine_verified", verified), ("reflect_too_long", too_long)):
            if n:
                c.add(key, n, source=source)
        return c.to_counts()

    fields = [{"mathse_counts": counts("geo", True)}, {"mathse_counts": counts("geo", False, 1, 1)},
              {"mathse_counts": counts("chart", False, too_long=1)}, {"mathse_counts": {}},  # an added refinement
              {"mathse_counts": counts("geo", True)}]  # a padding row copies a real one: not counted
    m = step_metrics(fields, [False, False, False, False, True])
    assert m["mathse/paths"] == 3 and m["mathse/accepted_frac"] == pytest.approx(2 / 3)
    assert m["mathse/refine_rate"] == pytest.approx(1 / 3) and m["mathse/reflect_too_long"] == 1
    assert m["mathse/geo/accepted_frac"] == 1.0 and m["mathse/chart/accepted_frac"] == 0.0
