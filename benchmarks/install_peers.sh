#!/usr/bin/env bash
# Build the peers' venv for benchmarks/speed.py: Cellpose 3, StarDist (+ tensorflow-cpu) and InstanSeg in
# .venv-peers/ at the repository root, beside (not inside) the main environment.
#
#     bash benchmarks/install_peers.sh                        # -> .venv-peers/
#     CELLSEG_PEERS_VENV=/some/dir bash benchmarks/install_peers.sh
#     PYTHON=python3.11 bash benchmarks/install_peers.sh      # the interpreter the venv is made from
#
# Why a venv of its own: StarDist brings TensorFlow/Keras, Cellpose pins opencv and numba; none of that belongs in
# the environment the bundles are tested in.
# torch stays the release this repository is tested with (constraints.txt: torch==2.13.0, the CPU build on a CPU
# machine). Before installing, a dry run resolves the whole set and the script stops if it would pull any CUDA
# package (nvidia-*, triton, a +cu torch) or torchvision (whose PyPI wheels need CUDA libraries next to a CPU torch).
# None of the three peers imports torchvision for inference (checked by the smoke test at the end).
# Re-running is safe (pip skips what is installed); the last step writes .venv-peers/cellseg-peers.ok.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CELLSEG_PEERS_VENV:-$repo/.venv-peers}"
python="${PYTHON:-python3}"
# pandas, seaborn: InstanSeg imports them (instanseg.utils.biological_utils) without declaring them
peers=("cellpose<4" "stardist" "tensorflow-cpu" "instanseg-torch" "pandas" "seaborn")

echo "peers venv: $venv"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
rm -f "$venv/cellseg-peers.ok"
pip=("$venv/bin/python" -m pip)

# 1. dry run: refuse CUDA wheels and torchvision before anything is downloaded for real
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"${pip[@]}" install --quiet --dry-run --ignore-installed --report "$report" -c "$repo/constraints.txt" "${peers[@]}"
"$venv/bin/python" - "$report" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}
bad = sorted(f"{n}=={v}" for n, v in names.items()
             if n.startswith("nvidia-") or n in ("triton", "torchvision") or (n == "torch" and "+cpu" not in v and "+" in v))
if bad:
    sys.exit(f"refusing to install: the peers would pull {', '.join(bad)} (CUDA or torchvision); see the script's header")
print(f"dry run ok: {len(names)} packages, torch {names.get('torch', '(already installed)')}")
PY

# 2. the install itself, with the same constraints
"${pip[@]}" install --quiet -c "$repo/constraints.txt" "${peers[@]}"

# 3. smoke test: what benchmarks/speed.py imports in this venv
"$venv/bin/python" - <<'PY'
import sys
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
import cellpose.models  # noqa: F401
import stardist.models  # noqa: F401
import instanseg  # noqa: F401
import instanseg.utils.loss.instanseg_loss  # noqa: F401  (what a model without downloaded weights is built from)
assert "torchvision" not in sys.modules, "a peer imported torchvision"
import cellpose, stardist, tensorflow
print(f"ok: torch {torch.__version__}, cellpose {cellpose.version if hasattr(cellpose, 'version') else '?'}, "
      f"stardist {stardist.__version__}, tensorflow {tensorflow.__version__}")
PY
date -u +"%Y-%m-%dT%H:%M:%SZ" > "$venv/cellseg-peers.ok"
