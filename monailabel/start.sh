#!/usr/bin/env bash
# Start the MONAI Label server of this repository (app monailabel/cellseg) on a folder of 2D PNG/TIFF images.
#
#     bash monailabel/start.sh <images folder> [start_server options]
#     bash monailabel/start.sh my_images/ --port 8000 --conf models impartial,supervised_unet
#
# Listens on 127.0.0.1:8000 unless --host / --port say otherwise (--host 0.0.0.0 for a viewer on another machine).
# Options after the folder go to `monailabel start_server` (--conf key value, --port, --host, ...).
# MONAI Label keeps its datastore (datastore_v2.json, labels/) inside the images folder. Needs the venv built by
# `bash monailabel/install.sh` (CELLSEG_MONAILABEL_VENV to use another one). Nothing is downloaded at start.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CELLSEG_MONAILABEL_VENV:-$repo/.venv-monailabel}"

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash monailabel/start.sh <images folder> [--port N] [--host H] [--conf key value ...]" >&2
    exit 2
fi
studies="$1"
shift
if [ ! -d "$studies" ]; then
    echo "no folder $studies" >&2
    exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "no MONAI Label venv at $venv: build it with  bash monailabel/install.sh" >&2
    exit 1
fi

exec "$venv/bin/python" -m monailabel.main start_server --app "$repo/monailabel/cellseg" --studies "$studies" \
    --host 127.0.0.1 --port 8000 "$@"
