#!/usr/bin/env bash
# The GPU checks and figures in one run (a few minutes on one GPU): the GPU tests, then training and sampling
# throughput of the U-Net (2-D 64x128 and 128x256, 3-D 64^3 and 96^3), eager and torch.compile'd, with the bf16
# model-FLOP utilisation against the bf16 matmul peak measured in the same process.
#
#     bash benchmarks/gpu.sh            (PYTHON=... to choose the interpreter)
#
# Without CUDA it says so and exits 0 having measured nothing, so it can sit in any script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA device here: skipped, nothing measured"
  exit 0
fi
"$PY" -c "import torch; print('#', torch.cuda.get_device_name(), 'torch', torch.__version__)"
"$PY" -m pytest -q -m gpu tests/test_gpu.py
"$PY" benchmarks/unet_throughput.py --device cuda --compile --repeats 10
