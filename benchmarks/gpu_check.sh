#!/usr/bin/env bash
# The GPU check: one JSON (stdout) with, on one CUDA GPU, in under 8 minutes:
#   parity     gsplat against the portable backend (tests/test_render.py, CUDA test)
#   train_rgb  RGB training steps per second (synthetic scene, 988x731)
#   query      query latency and FPS at 988x731, GAGS against LangSplat-style (target GAGS >= 400 FPS)
#   prepare    gags prepare seconds per image, SAM ViT-H + OpenCLIP ViT-B-16 architectures, random weights
#   distill    gags distill (GaD) steps per second
# Progress goes to stderr; a part that fails or runs past its limit is reported and the others still run.
#
#   benchmarks/gpu_check.sh                 # on the GPU machine, from anywhere in the checkout
#   benchmarks/gpu_check.sh --cpu-smoke     # toy sizes on the CPU: checks the script runs (no GPU figures)
#   benchmarks/gpu_check.sh --parts query --query-gaussians 2000000    # any option of gpu_check.py
#
# PYTHON selects the interpreter (default: python on PATH); --out (default runs/gpu_check) keeps scenes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
limit=475  # 8 minutes in all on the GPU; the CPU smoke mode may take longer on a busy machine
for arg in "$@"; do [[ "$arg" == "--cpu-smoke" ]] && limit=1600; done
exec timeout --kill-after 10 "$limit" "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
