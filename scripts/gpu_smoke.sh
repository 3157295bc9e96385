#!/usr/bin/env bash
# GPU smoke test of the verl recipes: one GPU, vLLM, a small VLM, a few steps per flavour.
#
# Needs a CUDA GPU (>= 40 GB for the 3B default), `pip install -e ".[verl]" vllm`, and
# network access the first time (model and Geometry3K from the Hugging Face Hub).
#
#   bash scripts/gpu_smoke.sh                       # both flavours, 2 steps each
#   STEPS=3 MODEL_PATH=/models/qwen2.5-vl-3b bash scripts/gpu_smoke.sh
#   bash scripts/gpu_smoke.sh trainer.logger='[console,wandb]'   # extra overrides go to both runs
#
# Passes when both runs exit 0 and log STEPS training steps; prints the MathSE metrics.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/recipes/verl"
DATA_DIR="${DATA_DIR:-/tmp/mathse_gpu_smoke/geo3k}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}"
STEPS="${STEPS:-2}"
LOG_DIR="${LOG_DIR:-/tmp/mathse_gpu_smoke/logs}"
mkdir -p "$LOG_DIR"

if [ ! -f "$DATA_DIR/train.parquet" ]; then
    python3 "$ROOT/scripts/prepare_verl_data.py" --source geometry3k --out "$DATA_DIR"
fi

echo "== MathSE-RFT ($MODEL_PATH, $STEPS steps)"
python3 -m verl.trainer.main_ppo \
    --config-path="$HERE" \
    --config-name=mathse_rft_geo3k \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    data.train_max_samples=64 \
    data.val_max_samples=16 \
    data.train_batch_size=8 \
    data.max_response_length=512 \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.actor.ppo_mini_batch_size=8 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.n=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    actor_rollout_ref.rollout.max_model_len=3072 \
    trainer.n_gpus_per_node=1 \
    trainer.total_training_steps="$STEPS" \
    trainer.logger='[console]' \
    trainer.val_before_train=false \
    trainer.test_freq=-1 \
    trainer.save_freq=-1 \
    "$@" 2>&1 | tee "$LOG_DIR/mathse_rft.log"

echo "== GRPO + reflect ($MODEL_PATH, $STEPS steps)"
python3 -m verl.trainer.main_ppo \
    --config-path="$HERE" \
    --config-name=grpo_reflect_geo3k \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    data.train_max_samples=64 \
    data.val_max_samples=16 \
    data.train_batch_size=8 \
    data.max_response_length=512 \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.actor.ppo_mini_batch_size=8 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.n=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    actor_rollout_ref.rollout.max_model_len=3072 \
    trainer.n_gpus_per_node=1 \
    trainer.total_training_steps="$STEPS" \
    trainer.logger='[console]' \
    trainer.val_before_train=false \
    trainer.test_freq=-1 \
    trainer.save_freq=-1 \
    "$@" 2>&1 | tee "$LOG_DIR/grpo_reflect.log"

status=0
for run in mathse_rft grpo_reflect; do
    log="$LOG_DIR/$run.log"
    if grep -q "step:$STEPS " "$log"; then
        echo "PASS $run: $STEPS steps"
        grep -o "actor/rft_[a-z_]*:[^ ]*\|actor/pg_loss:[^ ]*\|critic/score/mean:[^ ]*\|mathse/[a-z_]*:[^ ]*" "$log" | tail -n 24 || true
    else
        echo "FAIL $run: no 'step:$STEPS' line in $log"
        status=1
    fi
done
exit $status
