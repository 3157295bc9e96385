"""Path shim: the ``orm`` reward (the outcome reward model) for frameworks that load a reward from a file or a path.

    reward.custom_reward_function.path=rewards/orm.py          # verl
    +reward.custom_reward_function.reward_kwargs.reward_options.backend=openai   # judge options, if any
    trl grpo ... --reward_funcs rewards.orm.orm                # trl, run from the repository root

``compute_score`` is a coroutine, so verl awaits it and overlaps the judge's calls.
"""

from mathse_rl.integrations.verl.scoring import compute_score_async as _compute_score_async

REWARD = "orm"


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    kwargs.setdefault("reward", REWARD)
    return await _compute_score_async(data_source, solution_str, ground_truth, extra_info, **kwargs)


def __getattr__(name):
    if name == "orm":  # built on first use: building the judge may load a model
        from mathse_rl.integrations.trl.rewards import make_reward_func

        return make_reward_func(REWARD)
    raise AttributeError(name)
