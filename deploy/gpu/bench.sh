#!/usr/bin/env bash
# The encoder and engine benchmarks on a CUDA machine, in bf16, added to docs/benchmarks.md.
#
#   bash deploy/gpu/bench.sh            # from the repository root, on a machine with a GPU
#
# Sets up the venv like `make` does (torch from PyPI brings CUDA), checks that
# CUDA is there, then runs `python -m benchmarks run --only encoder,engine
# --device cuda --dtype bfloat16 --tag gpu`, which writes
# docs/benchmarks/{encoder,engine}-gpu.json and regenerates the report.
# The engine part replays ../shared/data/ml-1m-partial when present (else the
# synthetic shop). About 5 minutes on one H100/H200-class GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
make setup >/dev/null
PY=.venv/bin/python
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench.sh: CUDA is not available here (torch.cuda.is_available() is False)" >&2
  exit 1
fi
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
exec "$PY" -m benchmarks run --only "${BENCH_ONLY:-encoder,engine}" \
  --device cuda --dtype bfloat16 --tag gpu "$@"
