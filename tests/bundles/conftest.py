"""Tiny synthetic datasets in the standard layout for the bundle tests (no download, no ../shared needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile


def make_disc_dataset(root: Path, n_train: int = 3, n_val: int = 2, size: tuple[int, int] = (96, 80), seed: int = 0):
    """Bright discs on a dark noisy background, RGB uint8 images and uint16 instance labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    ids = [f"img{i}" for i in range(n_train + n_val)]
    yy, xx = np.mgrid[: size[0], : size[1]]
    for sample_id in ids:
        labels = np.zeros(size, np.uint16)
        for k in range(1, 7):
            cy, cx, r = rng.integers(10, size[0] - 10), rng.integers(10, size[1] - 10), rng.integers(5, 9)
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
        grey = 30 + 150 * (labels > 0) + rng.normal(0, 8, size)
        image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        tifffile.imwrite(root / "images" / f"{sample_id}.tif", image)
        tifffile.imwrite(root / "labels" / f"{sample_id}.tif", labels)
    (root / "split.json").write_text(json.dumps({"train": ids[:n_train], "val": ids[n_train:]}))
    return root


@pytest.fixture(scope="session")
def disc_dataset(tmp_path_factory) -> Path:
    return make_disc_dataset(tmp_path_factory.mktemp("discs") / "data")


REPO = Path(__file__).resolve().parents[2]


def bundle_run(bundle: Path, configs: list[str], *args: str, launcher: list[str] | None = None):
    """Run ``python -m monai.bundle run`` on ``bundle``'s ``configs`` (merged in order) from the repository root."""
    files = [str(bundle / "configs" / c) for c in configs]
    config_arg = files[0] if len(files) == 1 else str(files)
    cmd = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run", "--config_file", config_arg, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc
