"""MathSE-RFT inside verl: the ``mathse_rft`` advantage estimator and policy loss.

MathSE trains on accepted reasoning paths with a plain next-token loss. Online, inside
verl's PPO loop, that becomes reward-filtered fine-tuning:

- the estimator turns each sample's outcome reward into a per-token weight: samples whose
  reward reaches ``accept_threshold`` (verified correct answers, and refinements the
  ``mathse_reflect`` agent loop verified, which the reward scores as correct) get ``weight``,
  every other sample gets 0; with ``normalize_per_group`` the weight of a prompt's group is
  shared among its accepted samples, so each prompt that has any accepted sample counts once;
- the loss is the negative log-likelihood of the response tokens times that weight,
  aggregated by verl's ``agg_loss`` so ``actor.loss_agg_mode`` and verl's global-batch
  normalisation apply exactly as for its own losses. Rejected samples contribute zero loss
  and zero gradient.

Select them with ``algorithm.adv_estimator=mathse_rft`` and
``actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft``. Estimator options live under
``algorithm.mathse_rft`` (see :class:`RFTConfig`), e.g.
``+algorithm.mathse_rft.normalize_per_group=true`` on a plain verl command line (no ``+``
with our recipes, which declare the section).

    >>> import numpy as np, torch
    >>> rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    >>> adv, _ = compute_mathse_rft_advantage(rewards, torch.ones(2, 2), index=np.array(["a", "a"]))
    >>> adv.tolist()
    [[1.0, 1.0], [0.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import agg_loss, register_adv_est, register_policy_loss

# The name both registrations use (estimator and loss).
NAME = "mathse_rft"
# Where the estimator's options live inside ``algorithm``.
CONFIG_KEY = "mathse_rft"
# Slack when comparing a float reward to the threshold.
_EPS = 1e-6


@dataclass(frozen=True)
class RFTConfig:
    """Options of the ``mathse_rft`` estimator (``algorithm.mathse_rft.*``)."""

    accept_threshold: float = 1.0  # a sample is accepted when its summed reward >= this
    weight: float = 1.0  # per-token weight of an accepted sample
    normalize_per_group: bool = False  # split `weight` among the accepted samples of a prompt

    @classmethod
    def from_algorithm(cls, config: Any) -> "RFTConfig":
        """Read ``config.mathse_rft`` (a DictConfig, dict, verl AlgoConfig or None)."""
        section = _get(config, CONFIG_KEY)
        if section is None:
            return cls()
        known = {f.name for f in fields(cls)}
        if not (isinstance(section, Mapping) or hasattr(section, "items")):
            raise ValueError(f"algorithm.{CONFIG_KEY} must be a mapping, got {type(section).__name__}")
        values = dict(section.items())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown algorithm.{CONFIG_KEY} option(s) {unknown}; known: {sorted(known)}")
        out = cls(**values)
        if out.weight <= 0:
            raise ValueError(f"algorithm.{CONFIG_KEY}.weight must be positive, got {out.weight}")
        return out


def _get(config: Any, key: str) -> Any:
    if config is None:
        return None
    getter = getattr(config, "get", None)
    if callable(getter):
        return getter(key, None)
    return getattr(config, key, None)


def accepted_mask(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean (bs,) mask of accepted samples from their summed outcome rewards."""
    return scores >= threshold - _EPS


def sample_weights(accepted: torch.Tensor, index: np.ndarray | None, cfg: RFTConfig) -> torch.Tensor:
    """Per-sample weights: ``cfg.weight`` for accepted samples, 0 otherwise; optionally per group."""
    weights = accepted.to(torch.float32) * cfg.weight
    if cfg.normalize_per_group and index is not None and len(index) > 0:
        _, group = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
        group_t = torch.as_tensor(group, dtype=torch.long, device=weights.device)
        counts = torch.zeros(int(group_t.max()) + 1, device=weights.device).index_add_(
            0, group_t, accepted.to(torch.float32)
        )
        weights = weights / counts[group_t].clamp(min=1.0)
    return weights


def _register_adv_est(name: str):
    """verl's ``register_adv_est``, tolerant of this module being imported a second time
    (a reload, or a run as ``__main__``): an older copy of the same function is replaced."""

    def decorator(fn):
        old = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if old is not None and getattr(old, "__qualname__", None) == fn.__qualname__:
            del core_algos.ADV_ESTIMATOR_REGISTRY[name]
        return register_adv_est(name)(fn)

    return decorator


@_register_adv_est(NAME)
def compute_mathse_rft_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accepted samples get a positive per-token weight, the others 0 (advantages == returns).

    ``token_level_rewards`` and ``response_mask`` are (bs, response_length); ``index`` holds
    each sample's prompt id (verl's ``uid``), used only by ``normalize_per_group``.
    """
    cfg = RFTConfig.from_algorithm(config)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        weights = sample_weights(accepted_mask(scores, cfg.accept_threshold), index, cfg)
        advantages = weights.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return advantages, advantages


@register_policy_loss(NAME)  # type: ignore[arg-type]
def compute_mathse_rft_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Weighted negative log-likelihood of the response tokens, aggregated by ``agg_loss``.

    The weights are the advantages clipped at 0: this is supervised learning on accepted
    samples, so a negative advantage (e.g. from GRPO's estimator) never pushes a sample down.
    Denominators are verl's (all response tokens / sequences of the mini-batch), which keeps
    the loss finite when nothing is accepted and equal across data-parallel layouts.
    """
    mask = response_mask.to(log_prob.dtype)
    weights = advantages.detach().clamp(min=0.0) * mask
    if rollout_is_weights is not None:
        weights = weights * rollout_is_weights.detach()
    loss_mat = -weights * log_prob
    batch_info = dict(_get(config, "global_batch_info") or {})
    loss = agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **batch_info)

    with torch.no_grad():
        token_accepted = (weights > 0).to(log_prob.dtype)
        n_tokens = token_accepted.sum()
        seq_accepted = (token_accepted.sum(dim=-1) > 0).to(log_prob.dtype)
        seq_valid = (mask.sum(dim=-1) > 0).to(log_prob.dtype)
        nll = (-(log_prob.detach()) * token_accepted).sum() / n_tokens.clamp(min=1.0)
        kl = ((old_log_prob - log_prob.detach()) * mask).sum() / mask.sum().clamp(min=1.0)
    metrics = {
        "actor/rft_accepted_frac": (seq_accepted.sum() / seq_valid.sum().clamp(min=1.0)).item(),
        "actor/rft_nll": nll.item(),
        "actor/ppo_kl": kl.item(),
    }
    return loss, metrics
