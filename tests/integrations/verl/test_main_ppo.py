"""verl's real trainer, end to end on CPU: ``python -m verl.trainer.main_ppo`` with MathSE names.

Each case runs verl's own entry point as a subprocess for 2 steps on the tiny Qwen2.5-VL
and a few image problems, with our CPU backend switched on (``VERL_PLATFORM=cpu``: the
``cpu`` platform, FSDP2 on CPU, the ``hf_cpu`` rollout that generates with transformers and
receives the actor's weights every step). Assertions read verl's own file logger
(``trainer.logger=[console,file]``) and the lines the ``hf_cpu`` rollout prints at each
weight sync (tensors loaded, keys missing/unexpected, requests served so far: a reflection is
one extra request, so refined samples are counted there):

- GRPO with ``reward.reward_manager.name=mathse`` scoring ``verifier+length_parity``
  (a random model never solves a problem, so the parity part is what varies inside a group);
- MathSE-RFT: ``algorithm.adv_estimator=mathse_rft``, ``policy_loss.loss_mode=mathse_rft``,
  the ``mathse`` trainer and the ``mathse_reflect`` agent loop (every wrong first answer is
  reflected on; a verified refinement is added beside it). The judge is ``length_parity``
  (a random model never solves a problem, so only a parity judge accepts anything), which is
  also the reward (a reward that decides otherwise than the judge is refused at start). The
  ``hf_cpu`` rollout grants new tokens by vLLM's rule, so a reflection prompt (longer than
  ``rollout.prompt_length``) sent without ``max_tokens`` would get a budget of a token or two.
  This case runs a copy of the tiny model whose answers end early (``ending_vlm_path``): a
  refinement cut at its budget is never verified, and only an ended one can be added beside the
  policy's answer (``reflect_mode: add``, a session of two outputs of different lengths);
- GRPO + reflect: verl's GRPO through the same trainer and agent loop, added refinements with
  the fixed advantage ``mathse.refine_sft_coef``, on the same model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.verl_e2e]

STEPS = 2
BATCH, GROUP = 2, 4  # prompts per step, samples per prompt: 4 make a group with no reward spread rare
TIMEOUT_S = 420
REWARD = "verifier+length_parity"  # max score 2.0
JUDGE = "length_parity"  # the reflect flavours' judge, and so their reward (one verdict per path)
RESPONSE_LENGTH = 16  # main_ppo_command's default
DATA_SOURCE = "mathse_cpu_debug"
ATTEMPTS = 2  # refinements per wrong answer, at most
# Each flavour's model: the reflect loop needs answers that end (see the module docstring).
MODEL = {"grpo_mathse_reward": "tiny_vlm_path", "mathse_rft_reflect": "ending_vlm_path",
         "grpo_reflect_add": "ending_vlm_path"}
REFINE_SFT_COEF = 0.5  # the fixed advantage of an added, verified refinement (GRPO + reflect)

FLAVOURS = {
    "grpo_mathse_reward": [
        "algorithm.adv_estimator=grpo",
        "reward.reward_manager.name=mathse",
        f"+reward.reward_kwargs.reward={REWARD}",
    ],
    "mathse_rft_reflect": [
        "algorithm.adv_estimator=mathse_rft",
        "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft",
        "trainer.v1.trainer_mode=mathse",
        "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect",
        "+mathse.judge=length_parity",
        f"+mathse.reflect.attempts={ATTEMPTS}",
        "reward.reward_manager.name=mathse",
        f"+reward.reward_kwargs.reward={JUDGE}",  # one verdict: the reward is the judge's
    ],
    "grpo_reflect_add": [
        "algorithm.adv_estimator=grpo",
        "trainer.v1.trainer_mode=mathse",
        "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect",
        "+mathse.judge=length_parity",
        f"+mathse.reflect.attempts={ATTEMPTS}",
        f"+mathse.refine_sft_coef={REFINE_SFT_COEF}",
        "reward.reward_manager.name=mathse",
        f"+reward.reward_kwargs.reward={JUDGE}",
    ],
}
REFLECTING = ("mathse_rft_reflect", "grpo_reflect_add")


SYNC_FIELDS = ("step", "tensors", "missing", "unexpected", "requests", "batches", "max_batch", "long_prompts",
               "long_granted_min")
SYNC_LINE = re.compile(r"weights synced replica=0 " + " ".join(rf"{f}=(-?\d+)" for f in SYNC_FIELDS))


def run_main_ppo(model: str, train: str, out: Path, overrides: list[str]) -> tuple[list[dict], str]:
    from mathse_rl.integrations.verl.cpu.debug import main_ppo_command

    metrics = out / "metrics.jsonl"
    cmd = main_ppo_command(model, train, str(out), steps=STEPS, batch_size=BATCH, group_size=GROUP,
                           extra=overrides)
    env = dict(os.environ, VERL_PLATFORM="cpu", VERL_FILE_LOGGER_PATH=str(metrics), HF_HUB_OFFLINE="1",
               WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", RAY_DEDUP_LOGS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=TIMEOUT_S)
    log = proc.stdout + proc.stderr
    (out / "main_ppo.log").write_text(log)
    assert proc.returncode == 0, f"main_ppo exited {proc.returncode}; last output:\n{log[-6000:]}"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return rows, log


@pytest.fixture(scope="module")
def train_parquet(tmp_path_factory) -> str:
    from mathse_rl.integrations.verl.cpu.debug import write_parquet

    return write_parquet(tmp_path_factory.mktemp("verl-data") / "train.parquet", n=8)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_main_ppo_runs_on_cpu(flavour, train_parquet, tmp_path, request):
    model = request.getfixturevalue(MODEL[flavour])
    rows, log = run_main_ppo(model, train_parquet, tmp_path, FLAVOURS[flavour])
    steps = {row["step"]: row["data"] for row in rows}

    # every step completed and was logged by verl, and no group failed (verl would evict it and
    # generate it again: a session verl's worker cannot score, for one)
    assert sorted(steps) == list(range(1, STEPS + 1)), f"logged steps {sorted(steps)}"
    assert not any(d.get("training/rollout_failure/evicted_samples") for d in steps.values()), steps
    assert "Error in _run_prompt" not in log, log[log.index("Error in _run_prompt"):][:3000]
    for step, data in steps.items():
        # rewards in range for verifier (0/1) + length parity (0/1)
        assert 0.0 <= data["critic/score/min"] <= data["critic/score/max"] <= 2.0, (step, data)
        assert data["response_length/mean"] > 0

    # the reward varied inside a group and the policy got a gradient at least once
    assert any(d["actor/grad_norm"] > 0 for d in steps.values()), [d["actor/grad_norm"] for d in steps.values()]

    # weights: the rollout received the actor's full state dict before each step (step 0 = initial
    # sync) and all keys matched
    syncs = [dict(zip(SYNC_FIELDS, map(int, m))) for m in SYNC_LINE.findall(log)]
    assert [s["step"] for s in syncs] == list(range(STEPS + 1)), syncs
    assert all(s["tensors"] > 0 and s["missing"] == 0 and s["unexpected"] == 0 for s in syncs), syncs
    if flavour == "grpo_mathse_reward":
        # every response was sampled from the weights the actor then recomputed log-probs with
        # (refined responses are not: they were written after a reflection prompt, not the original)
        for data in steps.values():
            assert data["training/rollout_probs_diff_max"] < 1e-3, data["training/rollout_probs_diff_max"]

    # the rollout batched the concurrent requests of a step
    assert syncs[-1]["max_batch"] >= 2, syncs[-1]
    # requests per step: one per sample, plus one per reflection in the reflect loop
    samples = BATCH * GROUP
    per_step = [b["requests"] - a["requests"] for a, b in zip(syncs, syncs[1:])]
    if flavour in REFLECTING:
        # wrong first answers were reflected on: one to ATTEMPTS more requests each
        assert all(samples <= n <= (1 + ATTEMPTS) * samples for n in per_step), per_step
        assert sum(per_step) > STEPS * samples, per_step
        # every reflection prompt is longer than a dataset prompt, and the server granted it the
        # full response length (without an explicit max_tokens it grants 16 + 96 - len <= 1)
        assert syncs[-1]["long_prompts"] >= sum(per_step) - STEPS * samples > 0, syncs[-1]
        assert syncs[-1]["long_granted_min"] == RESPONSE_LENGTH, syncs[-1]
        if flavour == "mathse_rft_reflect":  # the mathse_rft loss ran and trained on accepted samples only
            assert any(d["actor/rft_accepted_tokens"] > 0 for d in steps.values())
        else:  # verl's PPO loss, with GRPO advantages and the refinements' fixed one
            assert "actor/rft_accepted_tokens" not in steps[1]
        # the step's counters reached verl's logged metrics, overall and per data source
        for data in steps.values():
            assert data["mathse/paths"] == samples, data
            assert data["mathse/reflected"] == data["mathse/refine_rate"] * samples
            assert 0 < data["mathse/accepted_frac"] <= 1
            assert data["mathse/accepted"] == data["mathse/correct"] + data["mathse/refine_verified"]
            assert {"mathse/judge_errors", "mathse/reflect_too_long", "mathse/truncated",
                    "mathse/generate_errors"} <= set(data)
            assert data[f"mathse/{DATA_SOURCE}/paths"] == samples
        # add mode ran through verl: verified refinements went back beside their policy answers as
        # second outputs of their sessions (verl's scoring of such a session once failed for VLMs)
        assert sum(d["mathse/reflected"] for d in steps.values()) > 0
        # one optimizer step per training step (ppo_mini_batch_size = train_batch_size), however
        # many refinements were added
        assert all(d["mathse/optimizer_steps"] == 1 for d in steps.values()), steps
        assert sum(d["mathse/refine_verified"] for d in steps.values()) > 0, [
            {k: d[k] for k in ("mathse/reflected", "mathse/truncated", "mathse/refine_rejected")}
            for d in steps.values()]
    else:
        assert per_step == [samples] * STEPS, per_step
        assert "actor/rft_accepted_tokens" not in steps[1]  # verl's own PPO loss
