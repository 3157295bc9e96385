"""verl's real trainer, end to end on CPU: ``python -m verl.trainer.main_ppo`` with MathSE names.

Each case runs verl's own entry point as a subprocess for 2 steps on the tiny Qwen2.5-VL
and a few image problems, with our CPU backend switched on (``VERL_PLATFORM=cpu``: the
``cpu`` platform, FSDP2 on CPU, the ``hf_cpu`` rollout that generates with transformers and
receives the actor's weights every step). Assertions read verl's own file logger
(``trainer.logger=[console,file]``), verl's dump of each step's rows
(``trainer.rollout_data_dir``) and the report the ``hf_cpu`` rollout appends to a file at each
weight sync (``engine_kwargs.hf_cpu.stats_path``: tensors loaded, keys missing/unexpected,
requests served so far: a reflection is one extra request, so refined samples are counted there):

- MathSE-RFT: ``algorithm.adv_estimator=mathse_rft``, ``policy_loss.loss_mode=mathse_rft``,
  the ``mathse`` trainer and the ``mathse_reflect`` agent loop (every wrong first answer is
  reflected on; a verified refinement is added beside it). The judge is ``length_parity``
  (a random model never solves a problem, so only a parity judge accepts anything), which is
  also the reward (a reward that decides otherwise than the judge is refused at start). The
  ``hf_cpu`` rollout grants new tokens by vLLM's rule, so a reflection prompt (longer than
  ``rollout.prompt_length``) sent without ``max_tokens`` would get a budget of a token or two.
  These cases run a copy of the tiny model whose answers end early (``ending_vlm_path``): a
  refinement cut at its budget is never verified, and only an ended one can be added beside the
  policy's answer (``reflect_mode: add``, a session of two outputs of different lengths);
- GRPO + reflect: verl's GRPO through the same trainer and agent loop, scored by the ``mathse``
  reward manager (``length_parity``, the judge's verdict), added refinements with the fixed advantage
  ``mathse.refine_sft_coef``, two optimizer steps per training step.

Nothing asserted depends on scheduling: the requests a step made are read from the rollout's
own file (Ray's forwarding of printed lines may drop the last ones when the run ends); how the
rollout batches concurrent requests (timing) is tested on the rollout alone
(``test_main_ppo_cpu_backend.py``). What sampling decides (how many answers are wrong, how many
refinements verify) varies from run to run however the requests are batched: the ``hf_cpu``
rollout samples a batch with the process's one random generator, so which requests share a
batch (a 50 ms window, i.e. the machine's load) changes every sample. The assertions hold for
any such count, except that the run verified at least one refinement: with ~9 wrong answers of
16 and 2 attempts each (each ends with an even length, what the parity judge accepts, ~60% of
the time) a run without one has a probability of about 1e-4. One count used to fail the run:
when the refinements of a step left a micro-batch of verl's text-only padding rows alone, verl's
Qwen2-VL forward raised under transformers 5 (fixed in ``compat.py``, tested on the forward
itself in ``test_compat.py``).
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
TIMEOUT_S = 900  # ~100 s alone; a loaded 2-core machine can take several times that
JUDGE = "length_parity"  # the judge, and so the reward (one verdict per path); max score 1.0
RESPONSE_LENGTH = 16  # main_ppo_command's default
DATA_SOURCE = "mathse_cpu_debug"
ATTEMPTS = 2  # refinements per wrong answer, at most
REFINE_SFT_COEF = 0.5  # the fixed advantage of an added, verified refinement (GRPO + reflect)
MICRO = 2  # per-rank micro-batches (update and log-prob passes)

COMMON = [
    "trainer.v1.trainer_mode=mathse",
    "actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect",
    "+mathse.judge=length_parity",
    f"+mathse.reflect.attempts={ATTEMPTS}",
    "reward.reward_manager.name=mathse",
    f"+reward.reward_kwargs.reward={JUDGE}",  # one verdict: the reward is the judge's
    f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO}",
    f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={MICRO}",
]
FLAVOURS = {
    "mathse_rft_reflect": COMMON + [
        "algorithm.adv_estimator=mathse_rft",
        "actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft",
        f"trainer.save_freq={STEPS}",  # a checkpoint of our mode at the last step
    ],
    "grpo_reflect_add": COMMON + [
        "algorithm.adv_estimator=grpo",
        f"+mathse.refine_sft_coef={REFINE_SFT_COEF}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",  # 2 optimizer steps per training step
    ],
}
OPTIMIZER_STEPS = {"mathse_rft_reflect": 1, "grpo_reflect_add": 2}


def run_main_ppo(model: str, train: str, out: Path, overrides: list[str]) -> tuple[list[dict], str, list[dict]]:
    from mathse_rl.integrations.verl.cpu.debug import main_ppo_command

    metrics, stats = out / "metrics.jsonl", out / "rollout_stats.jsonl"
    extra = overrides + [f"+actor_rollout_ref.rollout.engine_kwargs.hf_cpu.stats_path={stats}",
                         f"trainer.rollout_data_dir={out / 'rollout'}"]
    cmd = main_ppo_command(model, train, str(out), steps=STEPS, batch_size=BATCH, group_size=GROUP, extra=extra)
    env = dict(os.environ, VERL_PLATFORM="cpu", VERL_FILE_LOGGER_PATH=str(metrics), HF_HUB_OFFLINE="1",
               WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", RAY_DEDUP_LOGS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=TIMEOUT_S)
    log = proc.stdout + proc.stderr
    (out / "main_ppo.log").write_text(log)
    assert proc.returncode == 0, f"main_ppo exited {proc.returncode}; last output:\n{log[-6000:]}"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    syncs = [json.loads(line) for line in stats.read_text().splitlines() if line.strip()]
    return rows, log, syncs


def dumped_rows(out: Path, step: int) -> list[dict]:
    """verl's dump of a step's rows (``trainer.rollout_data_dir``), padding rows left out."""
    lines = (out / "rollout" / f"{step}.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if not r["uid"].startswith("pad")]


def policy_rows(rows: list[dict]) -> list[dict]:
    """The policy's own samples: the last output of each session (``{uid}_{session}_{index}``)."""
    last: dict[str, int] = {}
    for r in rows:
        session, _, index = r["uid"].rpartition("_")
        last[session] = max(int(index), last.get(session, -1))
    return [r for r in rows if int(r["uid"].rpartition("_")[2]) == last[r["uid"].rpartition("_")[0]]]


@pytest.fixture(scope="module")
def train_parquet(tmp_path_factory) -> str:
    from mathse_rl.integrations.verl.cpu.debug import write_parquet

    return write_parquet(tmp_path_factory.mktemp("verl-data") / "train.parquet", n=8)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_main_ppo_runs_on_cpu(flavour, train_parquet, tmp_path, ending_vlm_path):
    rows, log, syncs = run_main_ppo(ending_vlm_path, train_parquet, tmp_path, FLAVOURS[flavour])
    steps = {row["step"]: row["data"] for row in rows}
    samples = BATCH * GROUP

    # every step completed and was logged by verl, and no group failed (verl would evict it and
    # generate it again: a session verl's worker cannot score, for one)
    assert sorted(steps) == list(range(1, STEPS + 1)), f"logged steps {sorted(steps)}"
    assert not any(d.get("training/rollout_failure/evicted_samples") for d in steps.values()), steps
    assert "Error in _run_prompt" not in log, log[log.index("Error in _run_prompt"):][:3000]

    # weights: the rollout received the actor's full state dict before each step (step 0 = initial
    # sync) and all keys matched
    assert [s["step"] for s in syncs] == list(range(STEPS + 1)), syncs
    assert all(s["tensors"] > 0 and s["missing"] == 0 and s["unexpected"] == 0 for s in syncs), syncs
    # requests per step: one per sample, plus one per reflection (one to ATTEMPTS per wrong answer)
    per_step = [b["requests"] - a["requests"] for a, b in zip(syncs, syncs[1:])]
    assert all(samples <= n <= (1 + ATTEMPTS) * samples for n in per_step), per_step
    # every reflection prompt is longer than a dataset prompt, and the server granted it the full
    # response length (without an explicit max_tokens it grants 16 + 96 - len <= 1)
    reflections = sum(per_step) - STEPS * samples
    assert syncs[-1]["long_prompts"] == reflections
    assert reflections == sum(d["mathse/reflected"] for d in steps.values())
    if reflections:
        assert syncs[-1]["long_granted_min"] == RESPONSE_LENGTH, syncs[-1]

    for step, data in steps.items():
        dumped = dumped_rows(tmp_path, step)
        policy = policy_rows(dumped)
        refinements = len(dumped) - len(policy)
        # the step's counters reached verl's logged metrics, overall and per data source
        assert data["mathse/paths"] == len(policy) == samples, data
        assert data[f"mathse/{DATA_SOURCE}/paths"] == samples
        assert data["mathse/reflected"] == data["mathse/refine_rate"] * samples
        assert data["mathse/accepted"] == data["mathse/correct"] + data["mathse/refine_verified"]
        assert data["mathse/accepted_frac"] == data["mathse/accepted"] / samples
        assert {"mathse/judge_errors", "mathse/reflect_too_long", "mathse/truncated",
                "mathse/generate_errors"} <= set(data)
        # add mode: every verified refinement came back beside its failure, as a second output of
        # its session (verl's scoring of such a session once failed for VLMs)
        assert refinements == data["mathse/refine_verified"] == data.get("mathse/refinement_rows", 0)
        # verl's score metrics are the policy's own samples' (a refinement carries its failure's score),
        # and the reward is the judge's verdict: its correct paths are the samples scored 1.0
        scores = [r["score"] for r in policy]
        assert data["mathse/correct"] == sum(score == 1.0 for score in scores), (scores, data)
        assert data["critic/score/mean"] == pytest.approx(sum(scores) / len(scores))
        assert (data["critic/score/min"], data["critic/score/max"]) == (min(scores), max(scores))
        assert 0.0 <= data["critic/score/min"] <= data["critic/score/max"] <= 1.0
        # verl's number of optimizer steps, however many rows the refinements added or RFT skipped
        trained = flavour != "mathse_rft_reflect" or data["mathse/accepted"] > 0  # RFT: nothing accepted, no step
        assert data["mathse/optimizer_steps"] == (OPTIMIZER_STEPS[flavour] if trained else 0), data
        if "mathse/trained_rows" in data:  # MathSE changed the step's rows: laid out over verl's optimizer steps
            rows = data["mathse/trained_rows"]
            assert rows == (len(policy) + refinements if flavour != "mathse_rft_reflect"
                            else data["mathse/correct"] + refinements), data
            if trained:  # whole micro-batches, the least padding they allow: no step of padding only
                laid_out = data["mathse/mini_batch_rows"] * data["mathse/optimizer_steps"]
                assert laid_out == rows + data["mathse/padding_rows"], data
                assert data["mathse/padding_rows"] < MICRO * data["mathse/optimizer_steps"], data
                assert data["mathse/mini_batch_rows"] > data["mathse/padding_rows"], data
        if flavour == "mathse_rft_reflect":  # the mathse_rft loss trained on accepted rows only
            assert data.get("mathse/skipped_rows", 0) == samples - data["mathse/correct"]
            assert (data.get("actor/rft_accepted_tokens", 0) > 0) == trained
        else:  # verl's PPO loss, GRPO advantages on the policy's samples, the refinements' fixed one
            assert "actor/rft_accepted_tokens" not in data
            # the policy's samples were sampled with the weights the actor trains (the refinements, written
            # after a reflection prompt, are left out). Measured: max 2e-4 at step 1, 5e-3 at step 2 once
            # a step of lr 1e-3 has sharpened the tiny model (entropy 5.9 -> 2.7); CPU numerics of two paths
            assert data["training/rollout_probs_diff_max"] < 1e-2
            if refinements:  # the trained rows' advantages include the refinements' fixed one
                assert data["critic/advantages/max"] >= REFINE_SFT_COEF
    # add mode ran through verl at least once (one missing takes every reflection of the run failing)
    assert sum(d["mathse/refine_verified"] for d in steps.values()) > 0, [
        {k: d[k] for k in ("mathse/reflected", "mathse/truncated", "mathse/refine_rejected")} for d in steps.values()]
    # the policy got a gradient at least once
    assert any(d.get("actor/grad_norm", 0) > 0 for d in steps.values()), [d.get("actor/grad_norm") for d in steps.values()]
    if flavour == "mathse_rft_reflect":  # a checkpoint of our mode is verl's sync one: no TransferQueue state
        saved = tmp_path / "checkpoints" / f"global_step_{STEPS}"
        assert sorted(p.name for p in saved.iterdir()) == ["actor", "data.pt"]
