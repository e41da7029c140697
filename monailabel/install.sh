#!/usr/bin/env bash
# Build the MONAI Label venv of this repository: MONAI Label 0.8.5 + cellseg-monai (editable) in their own venv.
#
#     bash monailabel/install.sh                      # -> .venv-monailabel/ at the repository root
#     CELLSEG_MONAILABEL_VENV=/some/dir bash monailabel/install.sh
#     PYTHON=python3.11 bash monailabel/install.sh    # the interpreter the venv is made from (default: python3)
#
# Why a second venv: MONAI Label's DICOM and scribble dependencies (pydicom-seg, numpymaxflow) require numpy < 2,
# the main environment has numpy 2. Why --no-deps for monailabel itself: see monailabel/requirements.txt.
#
# CPU machine: nothing to do, constraints.txt pins the torch release this repository is tested with.
# GPU machine: create the venv and install the CUDA build of that torch release (and, optionally, the matching
# torchvision) into it first, then run this script: it keeps what is installed (2.13.0+cuXXX satisfies
# torch==2.13.0), and puts the torchvision stand-in on the path only when no working torchvision is there:
#     python3 -m venv .venv-monailabel
#     .venv-monailabel/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
#     bash monailabel/install.sh
#
# Re-running is safe (pip skips what is installed). The last step writes .venv-monailabel/cellseg-install.ok with
# a digest of this script and of the requirements: tests use the venv only when that file matches.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CELLSEG_MONAILABEL_VENV:-$repo/.venv-monailabel}"
python="${PYTHON:-python3}"
monailabel_version="0.8.5"

echo "MONAI Label venv: $venv"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# keep the venv out of git without touching the repository's .gitignore
[ -f "$venv/.gitignore" ] || echo '*' > "$venv/.gitignore"
rm -f "$venv/cellseg-install.ok"

pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -c "$repo/constraints.txt" -r "$repo/monailabel/requirements.txt" -e "$repo"
"${pip[@]}" install -c "$repo/constraints.txt" --no-deps "monailabel==$monailabel_version"

# torchvision: MONAI Label imports torchvision.utils at start. Keep a working one; otherwise add the stand-in.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$site/cellseg_torchvision_shim.pth"
if "$venv/bin/python" -c 'import torchvision.utils' >/dev/null 2>&1; then
    echo "torchvision: using the installed $("$venv/bin/python" -c 'import torchvision; print(torchvision.__version__)')"
elif "$venv/bin/python" -m pip show torchvision >/dev/null 2>&1; then
    echo "torchvision is installed in $venv but does not import (a CUDA build next to a CPU torch?):" >&2
    "$venv/bin/python" -c 'import torchvision.utils' >&2 || true
    echo "uninstall it ($venv/bin/pip uninstall torchvision) or install the build that matches torch, then re-run." >&2
    exit 1
else
    echo "$repo/monailabel/shims" > "$site/cellseg_torchvision_shim.pth"
    echo "torchvision: not installed; monailabel/shims stands in for torchvision.utils (never called by the app)"
fi

# smoke test: everything the app imports at start, and the CLI
"$venv/bin/python" - <<'PY'
import numpy, torch, monai, monailabel, cellseg_monai
from monailabel.interfaces.app import MONAILabelApp  # noqa: F401  (the server's imports, torchvision included)
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
print(f"ok: monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")
PY
"$venv/bin/python" -m monailabel.main --help >/dev/null

cat "${BASH_SOURCE[0]}" "$repo/monailabel/requirements.txt" "$repo/constraints.txt" | sha256sum | cut -d' ' -f1 \
    > "$venv/cellseg-install.ok"
echo "MONAI Label is installed in $venv; start the server with: bash monailabel/start.sh <images folder>"
