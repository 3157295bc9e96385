"""Path shim: the ``orm`` reward (the outcome reward model) for frameworks that load a reward from a file.

    reward.custom_reward_function.path=rewards/orm.py
    +reward.custom_reward_function.reward_kwargs.reward_options.backend=openai   # judge options, if any

``compute_score`` is a coroutine, so verl awaits it and overlaps the judge's calls.
"""

from mathse_rl.integrations.verl.scoring import compute_score_async as _compute_score_async

REWARD = "orm"


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    kwargs.setdefault("reward", REWARD)
    return await _compute_score_async(data_source, solution_str, ground_truth, extra_info, **kwargs)
