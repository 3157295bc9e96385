"""Path shim: the ``verifier`` reward for frameworks that load a reward from a file.

    reward.custom_reward_function.path=rewards/verifier.py   # verl; name defaults to compute_score
"""

from mathse_rl.integrations.verl.scoring import compute_score as _compute_score

REWARD = "verifier"


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    kwargs.setdefault("reward", REWARD)
    return _compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
