#!/usr/bin/env bash
# GPU check: short real training runs on a CUDA machine, printing tokens/s and MFU for each of
# bf16 LoRA, document-isolated packing (sdpa, flash-attention padding-free at batch 8, a full fine-tune with
# flash), fp16 with trained embeddings and the loss scaler, the flash stand-in against flash-attn, automatic
# gradient checkpointing, 4-bit NF4 double-quant, 8-bit and FSDP over all visible GPUs. Skips cleanly (exit 0) where no CUDA GPU is visible. At most 5 minutes.
#
#   bash bench/gpu_check.sh                        # every check
#   bash bench/gpu_check.sh --only fsdp 4bit-nf4   # some of them (see bench/gpu_check.py --help)
#   PYTHON=.venv/bin/python bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "gpu_check: skipped, no CUDA GPU visible (or torch is not importable with $PY)"
    exit 0
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TQDM_DISABLE=1
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-300}" "$PY" bench/gpu_check.py "$@"
