"""The ``mathse`` trainer's own decisions, on verl's real pieces without Ray workers.

What a whole step does through verl's trainer, workers and TransferQueue is in
``test_conformance.py``; here, fast: how a step's rows are laid out over optimizer steps (with
verl's balancer), that verl sees a *sync* trainer, DAPO's group test on the policy's samples,
and that mis-wired configs fail at start (in ``main_ppo``, before ``ray.init``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import verl  # noqa: F401  (loads the mathse_rl plugin)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


OURS = ["trainer.v1.trainer_mode=mathse", "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect"]
RFT = ["algorithm.adv_estimator=mathse_rft", "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft"]


# --- optimizer steps -----------------------------------------------------------------------------
def _trainer(config):
    from mathse_rl.integrations.verl.trainer import MathSETrainer

    trainer = MathSETrainer(config)  # verl's constructor; no workers behind it
    trainer.global_steps = 1
    return trainer


def _verl_balance(trainer, rows: int, dp: int, seqlens: list[int]) -> list[bool]:
    """What verl's ``_balance_batch`` does with the multiple the trainer asks for: pad at the end
    (``upsample_batch_to_divisible_size``), partition by sequence length, each rank's indices sorted;
    then the trainer's own reorder. Returns the padding flags in batch order."""
    from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions

    from mathse_rl.integrations.verl.layout import spread_over_ranks

    trainer._layout_rows = rows
    multiple = trainer._get_required_batch_multiple(dp)
    padded = math.ceil(rows / multiple) * multiple
    lengths = torch.tensor(seqlens + [128] * (padded - rows))  # verl's padding rows are 128 tokens
    partitions = get_seqlen_balanced_partitions(calculate_workload(lengths), k_partitions=dp, equal_size=True)
    pads = [j >= rows for p in partitions for j in p]
    return [pads[i] for i in spread_over_ranks(pads, dp, padded // trainer._mini_rows)]


def test_the_7b_recipes_step_with_one_refinement_keeps_four_even_optimizer_steps():
    """512 prompts x 5, mini-batch 128, 8 ranks, micro-batches of 8 (update) and 16 (log-probs):
    one verified refinement makes 2,561 rows. verl's own step is 4 optimizer steps of 640 rows; so
    is the mathse trainer's (padding to whole micro-batches only), not 1,280 / 1,280 / 1 / 0."""
    from mathse_rl.integrations.verl.layout import rows_per_step

    config = compose(OURS + ["algorithm.adv_estimator=grpo", "data.train_batch_size=512", "actor_rollout_ref.rollout.n=5",
                             "actor_rollout_ref.actor.ppo_mini_batch_size=128",
                             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
                             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16"])
    trainer = _trainer(config)
    rows = 2561
    seqlens = [600 + (37 * i) % 1500 for i in range(rows)]
    pads = _verl_balance(trainer, rows, 8, seqlens)
    steps = rows_per_step(pads, dp=8, mini_batch_rows_per_rank=trainer._mini_rows // 8)
    assert len(steps) == 4 and sum(steps) == rows
    assert max(steps) - min(steps) <= 8, steps
    assert len(pads) - rows < 8 * 8 * 4  # less than one micro-batch per rank and step of padding


@pytest.mark.parametrize("rows", [8, 11, 5])
def test_a_step_of_verls_size_is_laid_out_as_verl_does(rows):
    """Without MathSE rows the multiple is verl's; with more or fewer rows: verl's step count."""
    config = compose(OURS + ["algorithm.adv_estimator=grpo", "data.train_batch_size=2", "actor_rollout_ref.rollout.n=4",
                             "actor_rollout_ref.actor.ppo_mini_batch_size=1",
                             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
                             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2"])
    trainer = _trainer(config)
    trainer._layout_rows = None
    assert trainer._get_required_batch_multiple(2) == 4  # verl's: lcm(dp, mini-batch 1 x 4)
    pads = _verl_balance(trainer, rows, 2, list(range(10, 10 + rows)))
    assert len(pads) // trainer._mini_rows == 2  # train_batch_size / ppo_mini_batch_size optimizer steps
    assert trainer._mini_rows % 2 == 0 and (trainer._mini_rows // 2) % 2 == 0  # whole micro-batches per rank


# --- sync semantics ----------------------------------------------------------------------------------
def test_verl_sees_a_sync_trainer(tiny_vlm_path, tmp_path, monkeypatch):
    """verl takes its async paths for any trainer_mode but ``sync``: replay buffer, forced
    gen_batch_size=1, the TransferQueue saved in checkpoints. Not for ours."""
    import transfer_queue as tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync

    from mathse_rl.integrations.verl.cpu.debug import write_parquet

    data = write_parquet(tmp_path / "train.parquet", n=8)
    config = compose(OURS + ["algorithm.adv_estimator=grpo", f"actor_rollout_ref.model.path={tiny_vlm_path}",
                             f"data.train_files={data}",
                             f"data.val_files={data}", "data.train_batch_size=2", "data.gen_batch_size=2",
                             "data.image_key=images", "data.dataloader_num_workers=0",
                             f"trainer.default_local_dir={tmp_path}/ckpt"])
    trainer = _trainer(config)
    assert not isinstance(trainer.replay_buffer, ReplayBufferAsync) and trainer.parameter_sync_step == 1
    trainer._init_tokenizer()
    trainer._init_dataloader()
    assert config.data.gen_batch_size == 2 and trainer.train_dataloader.batch_size == 2  # not forced to 1

    saved = SimpleNamespace(calls=[])
    monkeypatch.setattr(tq, "save_checkpoint", lambda *a, **k: saved.calls.append(a))
    monkeypatch.setattr(tq, "load_checkpoint", lambda *a, **k: saved.calls.append(a))
    trainer.actor_rollout_wg = SimpleNamespace(save_checkpoint=lambda *a, **k: None,
                                               load_checkpoint=lambda *a, **k: None)
    trainer.global_steps = 3
    trainer._save_checkpoint()
    (tmp_path / "ckpt" / "global_step_3" / "transfer_queue").mkdir()  # as an async run would have left it
    trainer._load_checkpoint()
    assert trainer.global_steps == 3 and saved.calls == []  # no TransferQueue saved or restored
    assert sorted(p.name for p in (tmp_path / "ckpt" / "global_step_3").iterdir()) == ["data.pt", "transfer_queue"]

    from mathse_rl.integrations.verl.replay import MathSEReplayBuffer

    assert trainer.trainer_mode == "sync" and trainer.registered_mode == "mathse"
    assert type(trainer.replay_buffer) is MathSEReplayBuffer  # verl's sync buffer, our two rules on groups


# --- DAPO --------------------------------------------------------------------------------------------
class _FakeTQ:
    """The TransferQueue calls verl's DAPO classification makes (``kv_batch_get``)."""

    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    def kv_batch_get(self, keys, partition_id, select_fields):
        return {"extra_fields": [{"reward_extra_info": {"acc": self.scores[k]}} for k in keys],
                "rm_scores": [torch.tensor([0.0, self.scores[k]]) for k in keys]}


@pytest.mark.parametrize("metric", ["acc", "reward"])
def test_dapo_tests_the_policys_own_samples_and_keeps_groups_with_verified_refinements(monkeypatch, metric):
    """Group ``a``: all wrong, one verified refinement (which carries its failure's 0.0): kept, its
    refinement's supervised term is signal. Group ``b``: all wrong, no refinement, and ``d``: all right:
    evicted, as verl does. Group ``c``: mixed, with a refinement beside its failure: kept."""
    import verl.trainer.ppo.v1.replay_buffer as rb

    scores = {"a_0_0": 0.0, "a_0_1": 0.0, "a_1_0": 0.0, "b_0_0": 0.0, "b_1_0": 0.0,
              "c_0_0": 1.0, "c_1_0": 0.0, "c_1_1": 0.0, "d_0_0": 1.0, "d_1_0": 1.0}  # a_0_0, c_1_0: refinements
    monkeypatch.setattr(rb, "tq", _FakeTQ(scores))
    trainer = _trainer(compose(OURS + ["algorithm.adv_estimator=grpo", "algorithm.filter_groups.enable=True",
                                       f"algorithm.filter_groups.metric={metric}"]))
    buffer = trainer.replay_buffer  # the buffer the mathse trainer samples from
    buffer.partitions["train"] = {k: {} for k in scores}
    buffer.finished_keys["train"] = {"a", "b", "c", "d"}
    evicted, counts = buffer._dapo_filtered_keys("train")
    assert evicted == {"b", "d"} and counts == Counter({0.0: 1, 1.0: 1})
    assert list(buffer.partitions["train"]) == list(scores)  # verl's snapshot is left as it was


# --- wiring ------------------------------------------------------------------------------------------
MISWIRED = {
    "rft_with_sync_trainer": (RFT + ["actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect"],
                              "trainer.v1.trainer_mode=mathse"),
    "rft_with_single_turn": (RFT + ["trainer.v1.trainer_mode=mathse"], "default_agent_loop=mathse_reflect"),
    "rft_loss_with_grpo": (OURS + ["algorithm.adv_estimator=grpo",
                                   "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft"],
                           "loss_mode=mathse_rft is the NLL"),
    "rft_estimator_with_vanilla_loss": (OURS + ["algorithm.adv_estimator=mathse_rft"], "set actor_rollout_ref.actor"),
    "reflect_with_sync_trainer": (["actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect",
                                   "algorithm.adv_estimator=grpo"], "only the mathse trainer"),
    "reflect_add_on_the_legacy_trainer": (OURS + ["trainer.use_v1=False", "algorithm.adv_estimator=grpo"],
                                          "trainer.use_v1=true"),
    "reflect_add_with_a_critic": (OURS + ["algorithm.adv_estimator=gae"], "no value target"),
    "dapo_with_rft": (OURS + RFT + ["algorithm.filter_groups.enable=True"], "filter_groups (DAPO)"),
    "dapo_metric_the_manager_never_writes": (OURS + ["algorithm.adv_estimator=grpo", "reward.reward_manager.name=mathse",
                                                     "algorithm.filter_groups.enable=True",
                                                     "algorithm.filter_groups.metric=seq_final_reward"],
                                             "not a value the mathse reward manager writes"),
    "rollout_is_with_rft": (OURS + RFT + ["algorithm.rollout_correction.rollout_is=token"], "rollout_is"),
    "custom_sampler": (OURS + ["algorithm.adv_estimator=grpo", "trainer.v1.sampler.custom_sampler.path=x.py",
                               "trainer.v1.sampler.custom_sampler.name=S"], "custom_sampler"),
    "router_replay_r3_with_reflection": (OURS + ["algorithm.adv_estimator=grpo",
                                                 "actor_rollout_ref.rollout.enable_rollout_routing_replay=True"],
                                         "router replay R3"),
    "distillation_with_reflection": (OURS + ["algorithm.adv_estimator=grpo", "distillation.enabled=True"],
                                     "teacher log-probs"),
    "bad_mathse_option": (OURS + ["algorithm.adv_estimator=grpo", "+mathse.reflect_mode=sideways"], "reflect_mode"),
    # one verdict per path: a reward that would decide otherwise than the judge, refused in the driver
    # (the reward manager and agent loop refuse it again in their workers, after Ray has started)
    "reward_lenient_beside_a_strict_judge": (OURS + ["algorithm.adv_estimator=grpo", "reward.reward_manager.name=mathse",
                                                     "+reward.reward_kwargs.reward=verifier",
                                                     "+reward.reward_kwargs.reward_options.strict=False"],
                                             "sets strict=False, the judge uses True"),
    "reward_other_than_the_judge_with_verls_trainer": (["algorithm.adv_estimator=grpo", "+mathse.judge=verifier",
                                                        "reward.reward_manager.name=mathse",
                                                        "+reward.reward_kwargs.reward=verifier+format"],
                                                       "decides correctness"),
    "compute_score_scores_undecidable_otherwise": (OURS + ["algorithm.adv_estimator=grpo",
                                                           "+mathse.undecidable_as_wrong=true",
                                                           "reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl"],
                                                   "reward.custom_reward_function.reward_kwargs.undecidable_as_wrong=False"),
    "shim_scores_undecidable_otherwise": (OURS + ["algorithm.adv_estimator=grpo", "+mathse.undecidable_as_wrong=true",
                                                  "reward.custom_reward_function.path=rewards/verifier.py"],
                                          "reward.custom_reward_function.reward_kwargs.undecidable_as_wrong=False"),
}


@pytest.mark.parametrize("case", sorted(MISWIRED))
def test_a_miswired_config_is_one_clear_error(case):
    from mathse_rl.integrations.verl.wiring import WiringError, check_wiring

    overrides, message = MISWIRED[case]
    with pytest.raises(WiringError, match="mis-wired MathSE config") as err:
        check_wiring(compose(overrides))
    assert message in str(err.value)


# what verl's own validate_config needs of the default config (so that only our names are mis-wired)
VALID = ["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
         "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
         "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2"]


@pytest.mark.parametrize("case", ["rft_with_sync_trainer", "rft_with_single_turn", "rft_loss_with_grpo",
                                  "rollout_is_with_rft", "reward_lenient_beside_a_strict_judge"])
def test_verls_driver_check_refuses_a_miswired_config(case):
    """verl's own ``validate_config`` (what ``main_ppo`` runs in the driver before ``ray.init``)
    refuses it: the plugin, loaded by ``import verl``, put the wiring check in front of it."""
    import re

    import verl.utils.config as verl_config

    overrides, message = MISWIRED[case]
    with pytest.raises(ValueError, match=f"mis-wired MathSE config(.|\n)*{re.escape(message)}"):
        verl_config.validate_config(compose(overrides + VALID), use_reference_policy=False, use_critic=False)


@pytest.mark.parametrize("overrides", [
    OURS + RFT, OURS + ["algorithm.adv_estimator=grpo"], OURS + ["algorithm.adv_estimator=rloo"],
    OURS + ["algorithm.adv_estimator=grpo", "algorithm.filter_groups.enable=True",
            "reward.reward_manager.name=mathse", "algorithm.filter_groups.metric=acc"],
    OURS + RFT + ["algorithm.rollout_correction.bypass_mode=True"],
    ["actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect", "+mathse.reflect.enabled=false"],
    OURS + ["algorithm.adv_estimator=grpo", "+mathse.undecidable_as_wrong=true",
            "reward.custom_reward_function.path=pkg://mathse_rl.integrations.verl",
            "+reward.custom_reward_function.reward_kwargs.undecidable_as_wrong=true"],
    OURS + ["algorithm.adv_estimator=grpo", "+mathse.undecidable_as_wrong=true", "reward.reward_manager.name=mathse"],
    OURS + ["algorithm.adv_estimator=grpo", "+mathse.undecidable_as_wrong=true",  # someone else's reward function
            "reward.custom_reward_function.path=my_rewards.py"],
    ["algorithm.adv_estimator=grpo"],  # nothing of ours
])
def test_well_wired_configs_pass(overrides):
    from mathse_rl.integrations.verl.wiring import check_wiring

    check_wiring(compose(overrides))


START_REFUSED = {
    "rft_with_sync_trainer": ([*RFT, "trainer.v1.trainer_mode=sync",
                               "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect"],
                              "trainer.v1.trainer_mode=mathse"),
    # the reward manager and the agent loop refuse this too, but only inside Ray workers
    "reward_against_the_judge": ([*OURS, "reward.reward_manager.name=mathse", "+reward.reward_kwargs.reward=verifier",
                                  "+reward.reward_kwargs.reward_options.strict=False"],
                                 "would decide differently"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(START_REFUSED))
def test_main_ppo_refuses_a_miswired_config_before_ray_starts(tiny_vlm_path, tmp_path, case):
    """The check runs in verl's validate_config, in the driver, before ``ray.init``: a config verl
    itself accepts (the CPU debug run's), mis-wired only in our names (mathse_rft with verl's sync
    trainer; a reward that decides otherwise than the judge), never starts a worker."""
    from mathse_rl.integrations.verl.cpu.debug import main_ppo_command, write_parquet

    overrides, message = START_REFUSED[case]
    data = write_parquet(tmp_path / "train.parquet", n=4)
    cmd = main_ppo_command(tiny_vlm_path, data, str(tmp_path), extra=overrides)
    env = dict(os.environ, VERL_PLATFORM="cpu", HYDRA_FULL_ERROR="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "mis-wired MathSE config" in log and message in log, log[-3000:]
    assert "ray init kwargs" not in log and "Started a local Ray instance" not in log
