#!/usr/bin/env bash
# Debug a MathSE verl config on a laptop: verl's real trainer (python -m verl.trainer.main_ppo)
# for a few steps on CPU, with a tiny Qwen2.5-VL and a few image problems.
#
#   scripts/verl_cpu_debug.sh                       # GRPO, mathse reward manager (verifier + length_parity)
#   scripts/verl_cpu_debug.sh rft                   # MathSE-RFT estimator + loss, mathse_reflect agent loop (length_parity)
#   scripts/verl_cpu_debug.sh grpo trainer.total_training_steps=3   # extra Hydra overrides go last
#
# VERL_PLATFORM=cpu switches on mathse-rl's CPU backend for verl 0.9.1 (cpu platform, FSDP2 on
# CPU, the hf_cpu rollout). Metrics land in $OUT/metrics.jsonl (verl's file logger); the rollout
# prints "mathse-cpu-rollout: weights synced ..." after every weight sync.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-mathse_runs/verl_cpu_debug}
FLAVOUR=${1:-grpo}
[[ $# -gt 0 ]] && shift

REWARD=(reward.reward_manager.name=mathse "+reward.reward_kwargs.reward=verifier+length_parity")
case "$FLAVOUR" in
  grpo) ALGO=(algorithm.adv_estimator=grpo) ;;
  rft)  ALGO=(algorithm.adv_estimator=mathse_rft actor_rollout_ref.actor.policy_loss.loss_mode=mathse_rft
              trainer.v1.trainer_mode=mathse actor_rollout_ref.rollout.agent.default_agent_loop=mathse_reflect
              +mathse.judge=length_parity +mathse.reflect.attempts=1)
        # one verdict per path: the reward is the judge's (a reward deciding otherwise is refused)
        REWARD=(reward.reward_manager.name=mathse "+reward.reward_kwargs.reward=length_parity") ;;
  *) echo "usage: $0 [grpo|rft] [hydra overrides...]" >&2; exit 2 ;;
esac

export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
exec "$PY" -m mathse_rl.integrations.verl.cpu.debug --out "$OUT/$FLAVOUR" -- "${ALGO[@]}" "${REWARD[@]}" "$@"
