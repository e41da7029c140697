#!/usr/bin/env bash
# The speed table on a GPU (issue 16 point 5), one command:
#
#     bash benchmarks/gpu_speed.sh [--out DIR] [more benchmarks/speed.py options]
#
# Every bundle with its shipped weights on the GPU, AMP on (each bundle's FastInferer with inference_precision
# "auto": float16 on CUDA), 512², 1024² and 2048² synthetic nuclei, post-processing and file writing on the CPU as
# in real use; GPU memory per size; training throughput with the bundle's own train.json on the GPU. The peers are
# not run here (their packages are not installed on the GPU machines this project is lent). Writes
# benchmarks/results/speed-gpu-<model>.md / .json (or into --out).
#
# A machine without MONAI / Ignite (a bare GPU image) takes them as wheels from ./.whl when that folder exists:
#     pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl monai==1.6.1 pytorch-ignite==0.5.5
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ] && ! python3 -c "import monai, ignite" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
model=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
export PYTHONUNBUFFERED=1
exec python3 benchmarks/speed.py --device cuda --peers none --sizes 512 1024 2048 --no-objects --no-profile \
    --repeats 3 --repeats-large 1 --machine "gpu-${model#nvidia-}" "$@"
