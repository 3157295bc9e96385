"""Path shim: the ``verifier`` reward for frameworks that load a reward from a file or a path.

    reward.custom_reward_function.path=rewards/verifier.py     # verl (name: compute_score, the default)
    trl grpo ... --reward_funcs rewards.verifier.verifier      # trl, run from the repository root
"""

from mathse_rl.integrations.trl.rewards import make_reward_func
from mathse_rl.integrations.verl.scoring import compute_score as _compute_score

REWARD = "verifier"
verifier = make_reward_func(REWARD)  # trl reward function, logged as rewards/verifier/mean


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    kwargs.setdefault("reward", REWARD)
    return _compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
