#!/usr/bin/env bash
# mathse_rft recipe: Qwen2.5-VL-7B-Instruct on Geometry3K, one node (FSDP2 + vLLM).
# Needs: pip install "mathse-rl[verl]" vllm; data from
#   python scripts/prepare_verl_data.py --source geometry3k --out "$DATA_DIR"
# Extra Hydra overrides are passed through, e.g. trainer.n_gpus_per_node=4.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA_DIR="${DATA_DIR:-$HOME/data/geo3k}"
MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}"
NGPUS="${NGPUS:-8}"

python3 -m verl.trainer.main_ppo \
    --config-path="$HERE" \
    --config-name=mathse_rft_geo3k \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    trainer.n_gpus_per_node="$NGPUS" \
    "$@"
