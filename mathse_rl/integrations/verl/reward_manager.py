"""The ``mathse`` reward manager in verl 0.9's reward loop.

Select it and name the reward (any registry name or composite)::

    reward.reward_manager.name=mathse
    +reward.reward_kwargs.reward=verifier          # default: verifier
    +reward.reward_kwargs.reward_options.timeout=3  # optional, passed to the reward's factory

verl imports this module through our ``verl.plugins`` entry point in every process
(driver and reward-loop Ray workers), so the name is known wherever verl looks it up.

Unlike verl's ``naive`` manager, which scores one sample per call, it gathers the samples
a reward-loop worker is scoring at the same time into one batch (the verifier checks a
batch in one go; the ORM sends one batched request), and it passes the sample's images
(from ``multi_modal_data`` or the image parts of ``raw_prompt``) and question to the
reward. Each sample's result has the same keys (``score``, ``acc``, ``scored`` and the
reward's extras), which verl stacks into ``reward_extra_info`` columns.

One verdict per path (:mod:`mathse_rl.integrations.verl.scoring`): with a ``mathse`` section the
reward is the step judge's verdict (``acc`` 1.0 accepted / 0.0 not; ``score`` its reward, or
``unscored_value`` with ``scored=False`` for an undecidable sample unless
``mathse.undecidable_as_wrong``); a sample the ``mathse_reflect`` loop judged is scored from that
verdict, never judged twice; a reward configured against the judge fails at start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import registry as _verl_registry
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from mathse_rl.batching import MicroBatcher
from mathse_rl.integrations.verl.scoring import (Scorer, carried_verdict, check_reward_config, result_dict,
                                                 reward_settings, sample_from_verl)
from mathse_rl.rewards import Reward
from mathse_rl.types import RewardInput, RewardOutput

logger = logging.getLogger(__name__)

NAME = "mathse"


def manager_settings(config: Any) -> dict[str, Any]:
    """Reward name, options, batching and fallback (:func:`mathse_rl.integrations.verl.scoring.reward_settings`)."""
    s = reward_settings(config)
    return {"reward": s.reward, "reward_options": s.reward_options, "unscored_value": s.unscored_value,
            "max_batch": s.max_batch, "batch_window_s": s.batch_window_s}


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(p.get("text") or "" for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def question_and_images(non_tensor: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The last user message's text and the sample's images, from verl's non-tensor fields."""
    question, images = "", []
    raw_prompt = non_tensor.get("raw_prompt")
    if raw_prompt is not None:
        for message in list(raw_prompt):
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if message.get("role") == "user":
                question = _message_text(content) or question
            if isinstance(content, (list, tuple)):
                images += [p["image"] for p in content
                           if isinstance(p, Mapping) and p.get("type") == "image" and p.get("image") is not None]
    mm = non_tensor.get("multi_modal_data")
    if isinstance(mm, Mapping) and mm.get("image") is not None:  # verl's processed images win
        value = mm["image"]
        images = list(value) if isinstance(value, (list, tuple)) else [value]
    return question, tuple(images)


def _score_batch(reward: Reward):
    """One reward call for a batch; a failure scores every sample of it as unscored (logged)."""

    async def score(samples: list[RewardInput]) -> list[RewardOutput]:
        try:
            if reward.is_async:
                return await reward.acall(samples)
            return await asyncio.to_thread(reward, samples)
        except Exception as exc:  # Reward.__call__ already isolates bad samples; this is a last resort
            logger.error("mathse reward %r failed on a batch of %d: %s", reward.name, len(samples), exc)
            return [RewardOutput(None, {}) for _ in samples]

    return score


class MathSERewardManager(RewardManagerBase):
    """Scores reward-loop samples with a reward from the mathse-rl registry (through the step's judge
    when it decides correctness)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_: Any):
        super().__init__(config, tokenizer, compute_score)
        settings = reward_settings(config)
        step = check_reward_config(config)  # a reward that would disagree with the judge: refused here
        self.scorer = Scorer(settings.reward, settings.reward_options, step, reward_router_address,
                             settings.max_batch, settings.batch_window_s)
        self.unscored_value = settings.unscored_value
        self._batcher = None if self.scorer.judged else MicroBatcher(
            _score_batch(self.scorer.reward), settings.max_batch, settings.batch_window_s)
        self.reward_router_address = reward_router_address
        if compute_score is not None:
            logger.info("mathse reward manager scores with %r; the configured custom reward function is not used",
                        self.scorer.spec)

    @property
    def reward(self) -> Reward:
        """The reward this manager scores with (the judge's, when it judges)."""
        return self.scorer.judge.reward if self.scorer.judged else self.scorer.reward

    def sample(self, data: DataProto) -> RewardInput:
        """The ``RewardInput`` of a one-sample ``DataProto`` (the last sequence of a multi-turn sample)."""
        item = data[-1]
        response_ids = item.batch["responses"]
        length = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        response = self.tokenizer.decode(response_ids[:length], skip_special_tokens=True)
        non_tensor = item.non_tensor_batch
        reward_model = non_tensor.get("reward_model") or {}
        question, images = question_and_images(non_tensor)
        return sample_from_verl(non_tensor.get("data_source", ""), response, reward_model.get("ground_truth"),
                                non_tensor.get("extra_info"), question=question, images=images)

    async def run_single(self, data: DataProto) -> dict:
        # decoding here, not in a thread, lets every sample of a worker's chunk join one batch
        sample = self.sample(data)
        if self._batcher is not None:
            result = result_dict(self.scorer.reward, await self._batcher.submit(sample), self.unscored_value)
        else:  # the agent loop's verdict (verl passes its extra fields as tool_extra_fields), else the judge's
            carried = carried_verdict(data[-1].non_tensor_batch.get("tool_extra_fields"))
            result = await self.scorer.ascore_one(sample, carried, self.unscored_value)
        return {"reward_score": result["score"], "reward_extra_info": result}


def _register() -> None:
    existing = _verl_registry.REWARD_MANAGER.get(NAME)
    if existing is not None and existing.__qualname__ == MathSERewardManager.__qualname__:
        _verl_registry.REWARD_MANAGER[NAME] = MathSERewardManager  # same class imported again: keep the newest
        return
    _verl_registry.register(NAME)(MathSERewardManager)


_register()
