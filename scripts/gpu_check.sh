#!/usr/bin/env bash
# Proof of the NVML collector on a real NVIDIA GPU (H100/H200): runs it ~30 s at 1 Hz while a
# PyTorch bf16 matmul loop loads GPU 0 and holds a known allocation, prints the figures and
# PASS/FAIL checks. Needs only python3 + nvidia-ml-py + torch (no DuckDB, no pydantic).
#   scripts/gpu_check.sh [--seconds 30] [--alloc-gib 8] [--gpu 0]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi not available"
exec "$PY" scripts/gpu_check.py "$@"
