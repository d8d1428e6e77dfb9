#!/usr/bin/env bash
# The accelerator check of issue 23: names the card, then runs benchmarks/gpu_check.py
# (Slow R-50 step times by precision and XLA, augment_batch, input clips/s, gradient
# caching, one demo recipe per family), which writes its numbers with the device's name
# to benchmarks/gpu_check.json (--output), section by section.
#
#   benchmarks/gpu_check.sh                     # the full check, on a GPU
#   benchmarks/gpu_check.sh --tiny --output /tmp/check.json   # toy sizes, any CPU
#   benchmarks/gpu_check.sh --sections step,caching           # some sections only
#
# PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "nvidia-smi not found: no NVIDIA GPU here"
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
