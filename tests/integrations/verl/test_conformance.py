"""MathSE inside verl changes nothing verl does except what MathSE adds.

verl 0.9.1's own v1 trainer, stock (``PPOTrainerSync`` + ``single_turn_agent``) and ours
(``trainer_mode=mathse`` + ``mathse_reflect``), runs a training step on the same scripted batch
through verl's real pieces: replay buffer (DAPO), balancer and padding, two FSDP2 data-parallel
ranks on CPU, the old-log-prob pass, estimators, rollout correction, the mini-batch iterator,
checkpoints and verl's metric logger (``conformance.py`` says what stands in for the GPU engine).

The matrix (``conformance.CONFIGS``) covers every level of: estimator (GRPO, RLOO, REINFORCE++,
REINFORCE++ with baseline, GRPO + DAPO ``filter_groups``), ``trainer.balance_batch`` on/off (the
v1 trainer balances either way), ``actor.shuffle`` on/off, ``use_dynamic_bsz`` on/off,
``rollout_correction`` off/bypass (and decoupled token IS once); always 2 data-parallel ranks and
a mini-batch giving 2 optimizer steps.

- Reflection off, or on with nothing verified: the actor's weights after the step, the optimizer
  steps and every metric verl logs are identical to stock verl's. Tolerance: none (bit-identical
  on CPU); only wall-clock and memory metrics (``timing_s/``, ``timing_per_token_ms/``, ``perf/``)
  are not compared, and ours adds ``mathse/*``.
- With verified refinements added: verl's number of optimizer steps, real rows spread evenly over
  them, no step of padding only; the policy's own samples get exactly stock verl's advantages
  and score/length metrics; refinements get the fixed ``refine_sft_coef``, old log-probs taken
  under the original prompt (not their rollout log-probs, sampled after the reflection prompt)
  and a neutral rollout-correction weight; DAPO keeps an all-wrong group that got refinements.
- ``mathse_rft``: rejected rows skip the old-log-prob pass and the update; verl's optimizer steps.
- Resume from a checkpoint of our mode gives the weights of the run that never stopped; no
  TransferQueue state is saved.

The harness runs once per session (one subprocess, its own Ray); each test reads its results.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow]

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import conformance as C  # noqa: E402

TIMEOUT_S = 900
# Wall-clock and memory readings differ between any two runs.
UNCOMPARED = ("timing_s/", "timing_per_token_ms/", "perf/")
SAMPLE_METRICS = ("critic/score/", "critic/rewards/", "response_length/", "prompt_length/")


class Results:
    def __init__(self, out: Path):
        self.out, self._cache = out, {}

    def __getitem__(self, name: str) -> dict:
        if name not in self._cache:
            path = self.out / f"{name.replace('/', '__')}.pt"
            assert path.exists(), f"the harness did not produce {name}; see {self.out / 'harness.log'}"
            self._cache[name] = torch.load(path, weights_only=False)
        return self._cache[name]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    out = tmp_path_factory.mktemp("conformance")
    env = dict(os.environ, VERL_PLATFORM="cpu", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", WANDB_MODE="offline", RAY_DEDUP_LOGS="0")
    proc = subprocess.run([sys.executable, str(HERE / "conformance.py"), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    (out / "harness.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return Results(out)


def compared(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(p in k for p in UNCOMPARED)}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def optimizer_steps(run: dict) -> int:
    return sum(len(u["steps"]) for u in run["updates"])


def real_rows_per_step(run: dict) -> list[int]:
    (update,) = run["updates"]
    return [sum(not update["padding"][i] for i in step) for step in update["steps"]]


# ---------------------------------------------------------------------------------- no MathSE rows
@pytest.mark.parametrize("config", sorted(C.CONFIGS))
def test_with_reflection_off_a_step_is_verls_bit_for_bit(results, config):
    stock, ours = results[f"{config}/stock"], results[f"{config}/off"]
    assert stock["weights"].keys() == ours["weights"].keys()
    for name, tensor in stock["weights"].items():
        assert torch.equal(tensor, ours["weights"][name]), name
    assert optimizer_steps(ours) == optimizer_steps(stock) == 2 * (2 if "epochs" in config else 1)
    s, o = compared(stock["metrics"][1]), compared(ours["metrics"][1])
    assert set(o) - set(s) == {k for k in o if k.startswith("mathse/")}
    differ = {k: (s[k], o.get(k)) for k in s if not same(s[k], o.get(k))}
    assert not differ, differ
    assert o["mathse/optimizer_steps"] == optimizer_steps(stock) and o["mathse/paths"] == C.BATCH * C.GROUP


def test_with_reflection_on_and_nothing_verified_a_step_is_verls(results):
    stock, ours = results["grpo/stock"], results["grpo/zero"]
    for name, tensor in stock["weights"].items():
        assert torch.equal(tensor, ours["weights"][name]), name
    s, o = compared(stock["metrics"][1]), compared(ours["metrics"][1])
    assert {k: (s[k], o.get(k)) for k in s if not same(s[k], o.get(k))} == {}
    assert o["mathse/reflected"] > 0 and o["mathse/refine_verified"] == 0


# ---------------------------------------------------------------------------------- refinements
def _refined_rows(run: dict) -> list[str]:
    return [r for r in run["rows"] if r.endswith("_0") and r[:-2] + "_1" in run["rows"]]


@pytest.mark.parametrize("config", C.REFINE_CONFIGS)
def test_refinements_keep_verls_optimizer_steps_with_real_rows_spread_evenly(results, config):
    stock, ours = results[f"{config}/stock"], results[f"{config}/refine"]
    assert optimizer_steps(ours) == optimizer_steps(stock)
    per_step = real_rows_per_step(ours)
    (update,) = ours["updates"]
    real = sum(not p for p in update["padding"])
    padding = len(update["padding"]) - real
    assert real > C.BATCH * C.GROUP  # refinements were added
    assert padding < C.DP * C.MICRO * len(per_step)  # the least whole micro-batches allow
    # verl deals shuffled rows at random; in order, each step gets an equal share (up to one row per rank)
    tolerance = padding if update["dataloader_kwargs"].get("shuffle") else C.DP
    assert min(per_step) >= real / len(per_step) - tolerance, per_step
    assert max(per_step) - min(per_step) <= tolerance, per_step
    assert ours["metrics"][1]["mathse/optimizer_steps"] == len(per_step)


@pytest.mark.parametrize("config", [c for c in C.REFINE_CONFIGS if "dapo" not in c])
def test_refinements_leave_the_policys_own_samples_as_verl_trains_them(results, config):
    """Baselines, group std and batch whitening see the policy's own samples only; so do the
    score and length metrics; each refinement gets the fixed supervised weight."""
    stock, ours = results[f"{config}/stock"], results[f"{config}/refine"]
    refined = _refined_rows(ours)
    assert len(refined) == 5
    for row, values in stock["rows"].items():
        assert torch.equal(ours["rows"][row if row not in [r[:-2] + "_0" for r in refined] else row[:-2] + "_1"]
                           ["advantages"], values["advantages"]), row
    for row in refined:
        advantages = ours["rows"][row]["advantages"]
        assert torch.equal(advantages, torch.full_like(advantages, C.REFINE_SFT_COEF))
    s, o = stock["metrics"][1], ours["metrics"][1]
    for key in s:
        if key.startswith(SAMPLE_METRICS):
            assert same(s[key], o[key]), (key, s[key], o[key])
    assert o["mathse/refinement_rows"] == 5 and o["mathse/refine_verified"] == 5


@pytest.mark.parametrize("config", [c for c in C.REFINE_CONFIGS if "bypass" in c])
def test_a_refinement_is_not_rescaled_by_a_ratio_against_the_reflection_prompt(results, config):
    """rollout_correction bypass: old log-probs := rollout log-probs, except a refinement's, which
    the actor computes under the prompt it is trained with (rollout: after the reflection prompt)."""
    ours, recomputed = results[f"{config}/refine"], results["grpo/refine"]  # grpo: old log-probs by the actor
    for row in _refined_rows(ours):
        old = ours["rows"][row]["old_log_probs"]
        assert not torch.allclose(old, torch.full_like(old, C.REFLECT_LOG_PROB), atol=0.5)
        assert torch.equal(old, recomputed["rows"][row]["old_log_probs"].float()), row
    policy = next(r for r in ours["rows"] if r not in _refined_rows(ours))
    rollout = C.POLICY_LOG_PROB - 0.01 * torch.arange(len(ours["rows"][policy]["old_log_probs"]))
    assert torch.allclose(ours["rows"][policy]["old_log_probs"], rollout)  # the policy's: bypassed, as verl does


def test_decoupled_rollout_correction_gives_a_refinement_a_neutral_weight(results):
    ours = results["grpo_decoupled_is/refine"]
    for row in _refined_rows(ours):
        weights = ours["rows"][row]["rollout_is_weights"]
        assert torch.equal(weights, torch.ones_like(weights))
    others = [v["rollout_is_weights"] for r, v in ours["rows"].items() if r not in _refined_rows(ours)]
    assert any(not torch.allclose(w, torch.ones_like(w)) for w in others)  # the policy's samples are reweighted


def test_dapo_keeps_an_all_wrong_group_that_got_verified_refinements(results):
    """Prompt 1's samples all score 0 (uniform: DAPO evicts it in stock verl); two got verified
    refinements, whose supervised term is signal: the mathse trainer trains the group."""
    stock, ours = results["dapo/stock"], results["dapo/refine"]
    trained = lambda run: {r.split("_")[0] for r in run["rows"]}  # noqa: E731
    assert "1" not in trained(stock) and "0" not in trained(stock)
    assert "1" in trained(ours) and "0" not in trained(ours)  # the all-correct group is still evicted
    s, o = stock["metrics"][1], ours["metrics"][1]
    assert s["training/filter_groups/evicted_samples"] > o["training/filter_groups/evicted_samples"] >= 1
    assert o["mathse/evicted/paths"] >= C.GROUP  # the evicted groups' counters are kept


# ---------------------------------------------------------------------------------- mathse_rft
@pytest.mark.parametrize("name", ["rft/rft", "rft_dyn/rft"])
def test_rft_trains_the_accepted_rows_only_in_verls_optimizer_steps(results, name):
    run = results[name]
    accepted = {f"{i}_{s}_0" for i in range(C.BATCH) for s in range(C.GROUP) if C.score_of(i, s)}
    refinements = {f"{i}_{s}_0" for i in range(C.BATCH) for s in range(C.GROUP)
                   if (i % 4, s) in C.REFINED and not C.score_of(i, s)}
    assert set(run["rows"]) == accepted | refinements  # the rejected failures were never trained
    (passes,) = run["log_prob_passes"]  # ... nor passed through the old-log-prob pass
    assert {r for r in passes if not r.startswith("pad")} == set(run["rows"])
    assert optimizer_steps(run) == 2 and min(real_rows_per_step(run)) > 0
    m = run["metrics"][1]
    assert m["mathse/skipped_rows"] == C.BATCH * C.GROUP - len(accepted)
    assert m["critic/score/mean"] == pytest.approx(len(accepted) / (C.BATCH * C.GROUP))  # the policy's samples


# ---------------------------------------------------------------------------------- validation
def test_validation_scores_the_policys_answers_and_logs_accuracy_before_and_after_reflection(results):
    from mathse_rl.integrations.verl.fields import VALIDATE_FIELD

    assert C.VALIDATE_FIELD == VALIDATE_FIELD  # the stand-in rollout reads the trainer's marker
    stock, ours = results["validate/stock"], results["validate/refine"]
    s, o = stock["metrics"][0], ours["metrics"][0]  # validation before training (step 0)
    core = [k for k in s if k.startswith("val-core/")]
    assert core and all(same(s[k], o[k]) for k in core), {k: (s[k], o[k]) for k in core}  # first answers scored
    before, after = o["mathse/val/acc_before_reflection"], o["mathse/val/acc_after_reflection"]
    acc = next(v for k, v in s.items() if k.startswith("val-core/") and "/acc/mean@" in k)
    assert before == pytest.approx(acc) and after > before
    assert o["mathse/val/paths"] == C.PROMPTS and o["mathse/val/refine_verified"] > 0


# ---------------------------------------------------------------------------------- sync semantics
def test_resuming_from_a_checkpoint_of_our_mode_continues_the_run(results):
    straight, resumed = results["resume/straight"], results["resume/resumed"]
    for name, tensor in straight["weights"].items():
        assert torch.equal(tensor, resumed["weights"][name]), name
    assert sorted(resumed["metrics"]) == [2]  # resumed at step 2
    assert "transfer_queue" not in straight["checkpoint_files"]  # verl's sync checkpoint: no TransferQueue
