"""MathSE-RFT inside verl: the ``mathse_rft`` advantage estimator and policy loss.

MathSE trains on accepted reasoning paths with a plain next-token loss. Online, inside
verl's PPO loop, that becomes rejection-sampling fine-tuning:

- **acceptance is the judge's verdict**, carried by every ``mathse_reflect`` output in its
  ``accepted`` extra field (1.0 accepted, 0.0 rejected, None undecidable = not accepted),
  never a summed token-level reward: ``verifier+format`` would accept a wrong answer in the
  right format, and with ``algorithm.use_kl_in_reward`` (score - beta * KL per token) no
  correct sample would reach a threshold. A verl advantage estimator only sees the token
  rewards, so the ``mathse`` trainer (``trainer.v1.trainer_mode=mathse``,
  :mod:`mathse_rl.integrations.verl.trainer`) computes the advantages with :func:`rft_batch`
  from the verdicts; the registered estimator refuses to run without it;
- **normalised over accepted tokens.** :func:`rft_batch` also zeroes ``response_mask`` and
  ``loss_mask`` of rejected samples (as verl does for its own padding rows). verl's engine sums
  ``loss_mask`` over the whole mini-batch on every data-parallel rank (``batch_num_tokens``,
  ``verl/workers/engine/fsdp/transformer_impl.py:FSDPEngine.forward_backward_batch``) and
  ``agg_loss`` divides each micro-batch's token sum by it and multiplies by ``dp_size`` (the
  data-parallel mean undoes that), so the loss is the mean NLL over the accepted tokens of the
  mini-batch, whatever the micro-batch / rank layout, and the gradient of one accepted sample
  is the same beside 1, 9 or 99 rejected ones. verl's entropy and KL-loss terms aggregate over
  the same mask, so they never act on rejected samples. Tokens, not sequences: verl's
  ``global_batch_size`` (the sequence normaliser of the ``seq-mean-*`` modes) counts every row
  of the mini-batch, rejected ones included, so ``mathse_rft`` always aggregates ``token-mean``.

Select them with ``algorithm.adv_estimator=mathse_rft``,
``actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft`` and ``trainer.v1.trainer_mode=mathse``.
Estimator options live under ``algorithm.mathse_rft`` (see :class:`RFTConfig`), e.g.
``+algorithm.mathse_rft.normalize_per_group=true`` on a plain verl command line (no ``+``
with our recipes, which declare the section).

    >>> import numpy as np, torch
    >>> adv, mask = rft_batch(torch.tensor([True, False]), torch.ones(2, 2), index=np.array(["a", "a"]))
    >>> adv.tolist(), mask.tolist()
    ([[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class RFTConfig:
    """Options of the ``mathse_rft`` estimator (``algorithm.mathse_rft.*``)."""

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
        if "accept_threshold" in values:
            raise ValueError(f"algorithm.{CONFIG_KEY}.accept_threshold is gone: mathse_rft accepts on the judge's "
                             "verdict (mathse.judge), never on a reward threshold")
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


def verdicts_accepted(verdicts: Any) -> torch.Tensor:
    """Boolean (bs,) mask from the judge's verdicts (1.0 / 0.0 / None = undecidable, never accepted)."""
    return torch.tensor([v is not None and float(v) >= 0.5 for v in verdicts], dtype=torch.bool)


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


def rft_batch(accepted: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray | None = None,
              cfg: RFTConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages (the per-token weights) and the training mask of a ``mathse_rft`` batch.

    ``accepted`` (bs,) is the judge's verdict; ``response_mask`` (bs, response_length). The
    mask keeps only accepted samples' tokens, so verl's global token count (the loss
    normaliser) counts accepted tokens only.
    """
    cfg = cfg or RFTConfig()
    with torch.no_grad():
        accepted = accepted.to(torch.bool).to(response_mask.device)
        mask = response_mask * accepted.to(response_mask.dtype).unsqueeze(-1)
        weights = sample_weights(accepted, index, cfg)
        advantages = weights.to(torch.float32).unsqueeze(-1) * mask.to(torch.float32)
    return advantages, mask


@_register_adv_est(NAME)
def compute_mathse_rft_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refuses: an advantage estimator sees only token-level rewards, and ``mathse_rft``
    accepts on the judge's verdict. The ``mathse`` trainer computes the advantages itself."""
    raise ValueError(
        "algorithm.adv_estimator=mathse_rft accepts samples on the judge's verdict, which verl's "
        "advantage estimators never see: set trainer.v1.trainer_mode=mathse and "
        "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect"
    )


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
    """Weighted negative log-likelihood of the accepted tokens, a mean over the mini-batch's accepted tokens.

    The weights are the advantages clipped at 0 (supervised learning on accepted samples: a
    negative advantage never pushes a sample down). ``response_mask`` must already be the
    accepted-only mask :func:`rft_batch` writes (the ``mathse`` trainer does); a rejected token
    left in the mask would enter the normaliser and shrink every accepted sample's gradient,
    so it is refused. The normaliser is verl's global ``batch_num_tokens`` (accepted tokens of
    the mini-batch on all ranks), at least 1, so a mini-batch with nothing accepted gives 0.
    """
    mask = response_mask.to(log_prob.dtype)
    weights = advantages.detach().clamp(min=0.0) * mask
    if bool(((weights <= 0) & (mask > 0)).any()):
        raise ValueError("mathse_rft loss: response_mask holds tokens of rejected samples; the loss would be "
                         "normalised over them. Use trainer.v1.trainer_mode=mathse, which masks them out.")
    if rollout_is_weights is not None:
        weights = weights * rollout_is_weights.detach()
    loss_mat = -weights * log_prob
    info = getattr(config, "global_batch_info", None)
    batch_info = dict(info or {})
    if batch_info.get("batch_num_tokens") is not None:
        # verl's entropy / KL terms reuse this dict after the policy loss: keep them finite too
        batch_info["batch_num_tokens"] = max(1, int(batch_info["batch_num_tokens"]))
        info["batch_num_tokens"] = batch_info["batch_num_tokens"]
    elif float(mask.sum()) == 0:
        batch_info["batch_num_tokens"] = 1
    if loss_agg_mode != "token-mean":
        _warn_once(f"mathse_rft aggregates token-mean over accepted tokens; loss_agg_mode={loss_agg_mode} is ignored")
    loss = agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode="token-mean",
                    dp_size=batch_info.get("dp_size", 1), batch_num_tokens=batch_info.get("batch_num_tokens"))

    with torch.no_grad():
        token_accepted = (weights > 0).to(log_prob.dtype)
        n_tokens = token_accepted.sum()
        nll = (-(log_prob.detach()) * token_accepted).sum() / n_tokens.clamp(min=1.0)
        kl = ((old_log_prob - log_prob.detach()) * mask).sum() / mask.sum().clamp(min=1.0)
    metrics = {
        "actor/rft_accepted_tokens": n_tokens.item(),
        "actor/rft_nll": nll.item(),
        "actor/ppo_kl": kl.item(),
    }
    return loss, metrics


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    import logging

    logging.getLogger(__name__).warning(message)
