"""Every bundle ships trained weights: they load into its inference network, match their hash and size limit, and
the scores in metadata and docs are the ones that benchmarks/ship.py recorded for exactly this file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir() and not p.is_symlink())
RESULTS = REPO / "benchmarks" / "results" / "shipped"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_weights_load_strictly_into_the_inference_network(bundle):
    from monai.bundle import ConfigParser

    weights = bundle / "models" / "model.pt"
    assert weights.is_file(), f"{bundle.name} ships no models/model.pt"
    assert weights.stat().st_size <= 10_000_000
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)  # raises on any missing / unexpected / mis-shaped key
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_hash_record_metadata_and_docs_agree(bundle):
    data = (bundle / "models" / "model.pt").read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    assert f'hash_val: "{md5}"' in (bundle / "large_files.yml").read_text()
    record = json.loads((RESULTS / f"{bundle.name}.json").read_text())
    assert record["md5"] == md5 and record["bytes"] == len(data)  # the scores were measured on this very file
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {k: round(v, 3) for k, v in record["val"].items()}
    assert record["command"] in meta["eval_metrics_source"]
    docs = (bundle / "docs" / "README.md").read_text()
    assert record["command"] in docs and f"{record['val']['f1@0.5']:.3f}" in docs


@pytest.mark.slow
def test_segment_works_out_of_the_box_with_the_shipped_weights(tmp_path):
    from cellseg_monai.data import sample_data_dir

    images = Path(sample_data_dir()) / "images"
    cmd = [sys.executable, "-m", "cellseg_monai.cli", "segment", str(images), "--bundle", "impartial"]
    proc = subprocess.run([*cmd, "--output_dir", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = []
    for image in sorted(images.glob("*.tif")):
        labels = tifffile.imread(tmp_path / image.name)
        assert labels.shape == tifffile.imread(image).shape[:2]
        counts.append(len(np.setdiff1d(np.unique(labels), [0])))
    assert min(counts) > 0  # trained weights find nuclei in every sample crop (each holds several)
