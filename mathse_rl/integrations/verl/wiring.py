"""MathSE's names in a verl config must be wired together; a mis-wired run fails before Ray starts.

verl accepts each of our names on its own (an estimator, a policy loss, a trainer mode, an agent
loop, a reward manager), so a config that combines them wrongly would start, roll out, validate
and only then fail, or worse train something else silently. :func:`check_wiring` lists every
inconsistency of a config at once (a reward that would decide differently from the ``mathse``
judge included); :func:`install_start_check` runs it from verl's own
``validate_config``, which ``verl.trainer.main_ppo`` calls in the driver before ``ray.init``
(the ``mathse`` trainer checks again when it is built).

    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"algorithm": {"adv_estimator": "mathse_rft"},
    ...     "actor_rollout_ref": {"actor": {"policy_loss": {"loss_mode": "vanilla"}}}})
    >>> problems(cfg)[0].split(":")[0]
    'algorithm.adv_estimator=mathse_rft trains on the judge-accepted samples with the RFT loss'
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

RFT = "mathse_rft"
TRAINER = "mathse"
AGENT_LOOP = "mathse_reflect"
MANAGER = "mathse"
# Keys the mathse reward manager writes for every sample (scoring.result_dict) besides the reward's extras.
MANAGER_KEYS = ("score", "acc", "scored")
# Marker attribute on the installed wrapper (makes installing idempotent).
START_CHECK_MARKER = "_mathse_start_check"


class WiringError(ValueError):
    """A verl config whose MathSE names do not fit together (every problem in one message)."""


def _get(config: Any, path: str, default: Any = None) -> Any:
    node = config
    for part in path.split("."):
        if node is None:
            return default
        getter = getattr(node, "get", None)
        node = getter(part, None) if callable(getter) else getattr(node, part, None)
    return default if node is None else node


def _reflection(config: Any) -> tuple[bool, str]:
    """(reflection enabled, reflect_mode) from the config's ``mathse`` section."""
    from mathse_rl.integrations.verl.agent_loop import resolve_options

    step, options = resolve_options(config)
    return bool(step.reflect.enabled), options.reflect_mode


def _dapo_keys(config: Any) -> set[str] | None:
    """What DAPO's ``filter_groups.metric`` can name with the ``mathse`` reward manager (None: unknown)."""
    from mathse_rl.integrations.verl.reward_manager import manager_settings
    from mathse_rl.rewards.registry import _resolve, parse_spec

    keys = {"reward", *MANAGER_KEYS}
    try:
        parts = parse_spec(manager_settings(config)["reward"])
    except Exception:
        return None
    for name, _weight in parts:
        factory = _resolve(name)
        extras = getattr(factory, "extras_keys", None)
        if extras is None or isinstance(extras, property):
            return None
        if len(parts) == 1:
            keys |= set(extras)
        else:
            keys |= {f"{name}/score", *(f"{name}/{k}" for k in extras)}
    return keys


def problems(config: Any) -> list[str]:
    """Every inconsistency between the MathSE names (and the verl features they meet) in ``config``."""
    estimator = str(_get(config, "algorithm.adv_estimator", ""))
    loss = str(_get(config, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla"))
    use_v1 = bool(_get(config, "trainer.use_v1", True))
    mode = str(_get(config, "trainer.v1.trainer_mode", "sync"))
    agent = str(_get(config, "actor_rollout_ref.rollout.agent.default_agent_loop", "single_turn_agent"))
    out: list[str] = _reward_problems(config, agent == AGENT_LOOP)
    if RFT not in (estimator, loss) and mode != TRAINER and agent != AGENT_LOOP:
        return out  # no trainer, estimator or loop of ours
    rft = estimator == RFT
    ours = use_v1 and mode == TRAINER
    if rft and loss != RFT:
        out.append(f"algorithm.adv_estimator={RFT} trains on the judge-accepted samples with the RFT loss: "
                   f"set actor_rollout_ref.actor.policy_loss.loss_mode={RFT} (got {loss})")
    if loss == RFT and not rft:
        out.append(f"policy_loss.loss_mode={RFT} is the NLL of accepted samples and reads the weights the {RFT} "
                   f"estimator writes; with algorithm.adv_estimator={estimator} it would train on advantages "
                   f"it cannot read: set algorithm.adv_estimator={RFT}, or a verl loss (vanilla) for {estimator}")
    if rft and not ours:
        out.append(f"algorithm.adv_estimator={RFT} accepts samples on the judge's verdict, which only the "
                   f"{TRAINER} trainer reads: set trainer.v1.trainer_mode={TRAINER} (and trainer.use_v1=true)")
    if rft and agent != AGENT_LOOP:
        out.append(f"algorithm.adv_estimator={RFT} needs the judge's verdict on every sample, which the "
                   f"{AGENT_LOOP} agent loop writes: set actor_rollout_ref.rollout.agent.default_agent_loop="
                   f"{AGENT_LOOP} (mathse.reflect.enabled=false for no reflection; got {agent})")
    try:
        reflect, reflect_mode = _reflection(config)
    except Exception as exc:  # bad mathse.* options: the agent loop would fail with the same message
        out.append(f"mathse: {exc}")
        reflect, reflect_mode = False, "add"
    if agent == AGENT_LOOP and reflect and not ours:
        out.append(f"the {AGENT_LOOP} agent loop returns refinements and verdicts that only the {TRAINER} trainer "
                   f"trains and logs correctly (verl's sync trainer would give an added refinement its failure's "
                   f"advantage and validate on refined answers): set trainer.v1.trainer_mode={TRAINER} "
                   f"(trainer.use_v1=true){' or mathse.reflect.enabled=false' if not rft else ''}")
    adds = agent == AGENT_LOOP and reflect and reflect_mode == "add"
    critic = _get(config, "critic.enable", None)
    if adds and not rft and (critic is True or (critic is None and estimator == "gae")):
        out.append(f"mathse.reflect_mode=add with a critic (algorithm.adv_estimator={estimator}): an added "
                   "refinement has no value target; use a critic-free estimator (grpo, rloo, "
                   "reinforce_plus_plus, ...) or mathse.reflect_mode=replace")
    if agent == AGENT_LOOP and reflect and bool(_get(config, "actor_rollout_ref.rollout.enable_rollout_routing_replay",
                                                     False)):
        out.append("actor_rollout_ref.rollout.enable_rollout_routing_replay (router replay R3) replays the routes the "
                   "engine took; a refinement's were taken under the reflection prompt, not the prompt it is trained "
                   "with: not supported with reflection (R2, which records routes in the old-log-prob pass, is)")
    if agent == AGENT_LOOP and reflect and bool(_get(config, "distillation.enabled", False)):
        out.append("distillation: verl computes teacher log-probs for a session's last output only, so an added "
                   "refinement (or a replacement) would have none: not supported with reflection")
    if ours and (_get(config, "trainer.v1.sampler.custom_sampler.path") or
                 _get(config, "trainer.v1.sampler.custom_sampler.name")):
        out.append(f"trainer.v1.sampler.custom_sampler replaces the replay buffer the {TRAINER} trainer extends "
                   "(DAPO on the policy's own samples, counters of evicted groups): not supported")
    out += _dapo_problems(config, rft)
    out += _rollout_correction_problems(config, rft)
    return out


def _reward_problems(config: Any, our_loop: bool) -> list[str]:
    """A reward that would decide differently from the ``mathse`` section's judge
    (:func:`~.scoring.check_reward_config`, which the reward manager and agent loop run again
    inside their workers). The ``mathse_reflect`` loop judges with the step's defaults when the
    config has no ``mathse`` section."""
    from mathse_rl.integrations.verl.scoring import check_reward_config, mathse_step
    from mathse_rl.step import step_config

    try:
        step = mathse_step(config)
        check_reward_config(config, step if step is not None or not our_loop else step_config())
    except ValueError as exc:
        return [str(exc)]
    return []


def _dapo_problems(config: Any, rft: bool) -> list[str]:
    if not bool(_get(config, "algorithm.filter_groups.enable", False)):
        return []
    if rft:
        return [f"algorithm.filter_groups (DAPO) evicts groups whose samples all score alike, which under {RFT} "
                "are the all-correct groups it trains on: not supported with mathse_rft"]
    metric = str(_get(config, "algorithm.filter_groups.metric", "") or "")
    if str(_get(config, "reward.reward_manager.name", "")) != MANAGER or not metric:
        return []
    keys = _dapo_keys(config)
    if keys is not None and metric not in keys:
        return [f"algorithm.filter_groups.metric={metric} is not a value the {MANAGER} reward manager writes; "
                f"known: {sorted(keys)}"]
    return []


def _rollout_correction_problems(config: Any, rft: bool) -> list[str]:
    if not rft:
        return []
    rc = _get(config, "algorithm.rollout_correction", None)
    active = [k for k in ("rollout_is", "rollout_rs") if _get(rc, k, None)]
    if active:
        return [f"algorithm.rollout_correction.{'/'.join(active)} reweights or rejects samples by the rollout's "
                f"probabilities; {RFT} trains on the judge's verdicts and would ignore it: not supported with "
                f"{RFT} (bypass_mode, which only skips the old-log-prob pass, is)"]
    return []


def check_wiring(config: Any) -> None:
    """Raise :class:`WiringError` listing every problem :func:`problems` finds; silent when none."""
    found = problems(config)
    if found:
        raise WiringError("mis-wired MathSE config:\n  - " + "\n  - ".join(found))


def install_start_check() -> bool:
    """Run :func:`check_wiring` inside verl's ``validate_config`` (driver, before ``ray.init``).
    True if newly installed; safe to call many times."""
    import verl.utils.config as verl_config

    original = verl_config.validate_config
    if getattr(original, START_CHECK_MARKER, False):
        return False

    @functools.wraps(original)
    def validate_config(config, *args, **kwargs):
        check_wiring(config)
        return original(config, *args, **kwargs)

    setattr(validate_config, START_CHECK_MARKER, True)
    verl_config.validate_config = validate_config
    return True
