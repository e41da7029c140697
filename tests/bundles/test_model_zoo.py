"""The MONAI model zoo's own CI (``../shared/checks/model-zoo/check.py``: its ``ci/`` unchanged) on every bundle, as
shipped: directory with real weights, version, metadata schema, properties, network I/O, TorchScript export,
inference workflow, one-epoch train + evaluate workflows, JSON format. Skipped where ``../shared`` is absent (a
user's fresh clone); CI has it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO.parent / "shared" / "checks" / "model-zoo" / "check.py"
BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir() and not p.is_symlink())
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHECK.is_file(), reason=f"the model zoo's checks are not here ({CHECK} absent)"),
]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_model_zoo_check_passes(bundle, tmp_path):
    cmd = [sys.executable, str(CHECK), f"bundles/{bundle}", "--work", str(tmp_path), "--one"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"check.py crashed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    failed = {k: v for k, v in result.items() if v != "PASS"}
    assert not failed, json.dumps(failed, indent=1)
    assert len(result) == 9  # every check ran, train_wf included
