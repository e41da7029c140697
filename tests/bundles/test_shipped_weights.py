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


def _sample_crop(size: int = 128) -> torch.Tensor:
    """(1, 3, size, size) centre crop of a sample image, normalised to [0, 1] per channel as the bundles do."""
    from cellseg_monai.data import read_image, sample_data_dir

    path = sorted((Path(sample_data_dir()) / "images").glob("*.tif"))[0]
    arr = read_image(path).astype(np.float32)
    arr = np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 2 else arr[..., :3]
    lo, hi = np.percentile(arr, 1, axis=(0, 1)), np.percentile(arr, 99.8, axis=(0, 1))
    arr = np.clip((arr - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    crop = arr[top : top + size, left : left + size].transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(crop))[None]


def _flat(out, name: str = "out") -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return {name: out}
    items = out.items() if isinstance(out, dict) else enumerate(out)
    return {k: v for key, value in items for k, v in _flat(value, f"{name}[{key!r}]").items()}


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_ckpt_export_of_the_shipped_weights_matches_the_eager_network(bundle, tmp_path):
    from monai.bundle import ConfigParser, ckpt_export

    ts_path = tmp_path / "model.ts"
    config = str(bundle / "configs" / "inference.json")
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=config,
        bundle_root=str(bundle),
    )
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    parser = ConfigParser()
    parser.read_config(config)
    eager = parser.get_parsed_content("network_def").eval()
    eager.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    x = _sample_crop()
    with torch.no_grad():
        want, got = _flat(eager(x)), _flat(scripted(x))
    assert list(got) == list(want)
    for key, w in want.items():
        assert got[key].shape == w.shape, key
        if w.is_floating_point() and w.numel():
            assert (got[key] - w).abs().max().item() <= 1e-4, key
        else:
            assert torch.equal(got[key], w), key
