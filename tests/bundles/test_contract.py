"""Every bundle under bundles/ honours the bundle contract of DESIGN.md (files, ids, metadata, network I/O)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs").is_dir() and not p.is_symlink())
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"
FILES = [
    "configs/metadata.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "LICENSE",
    "large_files.yml",
]
TRAIN_IDS = [
    "bundle_root",
    "device",
    "dataset_dir",
    "output_dir",
    "ckpt_path",
    "network_def",
    "network",
    "inferer",
    "val_interval",
    "train#dataset",
    "train#preprocessing",
    "train#trainer",
    "train#trainer#max_epochs",
    "train#handlers",
    "validate#evaluator",
    "validate#postprocessing",
    "validate#key_metric",
]
DOC_SECTIONS = [
    "Overview",
    "Data",
    "Annotations",
    "Training",
    "Input/Output",
    "Performance",
    "Commands",
    "References",
    "License",
]


def _config(bundle: Path, name: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / name))
    return parser


def test_there_is_a_bundle():
    assert BUNDLES, "no bundle found under bundles/"


def test_alias_imppartial_points_at_impartial():
    assert (REPO / "bundles" / "imppartial").resolve() == (REPO / "bundles" / "impartial").resolve()


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_files_and_config_ids(bundle):
    missing = [f for f in FILES if not (bundle / f).is_file()]
    assert not missing, f"{bundle.name} lacks {missing}"
    train = _config(bundle, "train.json")
    absent = [i for i in TRAIN_IDS if i not in train]
    assert not absent, f"{bundle.name}/configs/train.json lacks ids {absent}"
    inference = _config(bundle, "inference.json")
    for i in ("bundle_root", "device", "dataset_dir", "output_dir", "ckpt_path", "network_def", "inferer"):
        assert i in inference, f"{bundle.name}/configs/inference.json lacks '{i}'"


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_network_def_is_the_same_in_train_and_inference(bundle):
    # MONAI has no file-relative include, so inference.json (which must run alone) repeats train.json's
    # network_def; this test keeps the two from drifting apart.
    train, inference = _config(bundle, "train.json"), _config(bundle, "inference.json")
    assert train["network_def"] == inference["network_def"]
    for ref in ("in_channels", "classes"):
        if ref in train and ref in inference:
            assert train[ref] == inference[ref], ref


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_docs_have_the_fixed_sections_in_order(bundle):
    text = (bundle / "docs" / "README.md").read_text()
    heads = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert heads == DOC_SECTIONS, f"{bundle.name}/docs/README.md sections {heads}"


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI's metadata schema is not at {SCHEMA} (../shared is absent)")
@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_metadata(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_metadata",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--filepath",
        str(SCHEMA),
        "--hash_val",
        SCHEMA_MD5,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_net_in_out(bundle):
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(bundle / "configs" / "metadata.json"),
        "--config_file",
        str(bundle / "configs" / "inference.json"),
        "--n",
        "32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and "verified with no error" in proc.stdout + proc.stderr, proc.stderr[-3000:]
