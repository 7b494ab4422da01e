#!/usr/bin/env bash
# GPU check: short real runs on a CUDA machine, with tokens/s and MFU (bench/gpu_check.py's docstring
# says what each check does). Skips cleanly (exit 0) where no CUDA GPU is visible. At most 5 minutes.
#   precision        what precision = "auto" picks on this GPU (the native-bf16 rule); emulated bf16 warns
#   bf16-lora        bf16 LoRA, window attention
#   bf16-lora-doc    document-isolated packing (sdpa)
#   bf16-lora-flash  flash-attention padding-free at batch 8, document isolation checked
#   bf16-full-flash  a full fine-tune with flash and document isolation
#   fp16-lora-emb    fp16 with trained embeddings and new tokens under the loss scaler
#   flash-kernel     the flash stand-in against flash-attn's kernel
#   padding-free     bench_padding_free.py under flash_attention_2: padding-free vs padded rows, MFU, ratio
#   auto-ckpt        automatic gradient checkpointing against the measured peak
#   4bit-nf4, 8bit   4-bit NF4 double-quant (QLoRA), an 8-bit base
#   fsdp             FSDP over all visible GPUs (2+)
#   resume-nproc     a checkpoint of N processes resumed by 1 is refused naming both geometries (2+ GPUs)
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
