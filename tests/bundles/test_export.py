"""``cellseg-monai export-bundle``: the model zoo's zip, and that it runs with nothing from this repository."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

import cellseg_monai
from cellseg_monai.bundle.export import ExportError, export_bundle, library_files
from tests.bundles.conftest import bundle_run

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "impartial"
PACKAGE = Path(cellseg_monai.__file__).resolve().parent


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _version(bundle: Path) -> str:
    return json.loads((bundle / "configs" / "metadata.json").read_text())["version"]


@pytest.fixture(scope="module")
def zip_path(tmp_path_factory) -> Path:
    return export_bundle(BUNDLE, tmp_path_factory.mktemp("dist"))


def test_zip_name_and_layout(zip_path):
    assert zip_path.name == f"impartial_v{_version(BUNDLE)}.zip"
    names = zipfile.ZipFile(zip_path).namelist()
    assert all(n.startswith("impartial/") for n in names)
    for required in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                     "configs/logging.conf", "models/model.pt", "docs/README.md", "LICENSE", "large_files.yml"):  # fmt: skip
        assert f"impartial/{required}" in names, required
    assert not [n for n in names if "/runs/" in n or "__pycache__" in n or n.endswith((".pyc", ".ts"))]
    assert not [n for n in names if "imppartial" in n]  # the alias is not a second bundle


def test_zip_carries_the_weights_listed_with_their_hash(zip_path):
    data = zipfile.ZipFile(zip_path).read("impartial/models/model.pt")
    assert data == (BUNDLE / "models" / "model.pt").read_bytes()
    assert f'hash_val: "{_md5(data)}"' in (BUNDLE / "large_files.yml").read_text()


def test_zip_carries_a_snapshot_of_the_library_not_a_second_copy_in_the_repository(zip_path):
    zf = zipfile.ZipFile(zip_path)
    lib = {n[len("impartial/cellseg_monai/") :] for n in zf.namelist() if n.startswith("impartial/cellseg_monai/")}
    assert lib == {p.as_posix() for p in library_files(PACKAGE)}
    assert "data/sample/images/1b6044e4858a.tif" in lib  # the default dataset_dir travels with it
    for rel in ("__init__.py", "bundle/paths.py", "networks/impartial_unet.py"):
        assert zf.read(f"impartial/cellseg_monai/{rel}") == (PACKAGE / rel).read_bytes()
    vendored = [p for p in REPO.rglob("cellseg_monai") if p.is_dir() and p != PACKAGE and ".git" not in p.parts]
    assert not vendored, f"library copies inside the repository: {vendored}"


def test_alias_exports_the_real_bundle(tmp_path):
    assert export_bundle(REPO / "bundles" / "imppartial", tmp_path).name == f"impartial_v{_version(BUNDLE)}.zip"


def test_refuses_weights_that_do_not_match_their_hash(tmp_path):
    copy = tmp_path / "impartial"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("runs"))
    (copy / "models" / "model.pt").write_bytes(b"not the shipped weights")
    with pytest.raises(ExportError, match="md5"):
        export_bundle(copy, tmp_path / "dist")
    (copy / "models" / "model.pt").unlink()
    with pytest.raises(ExportError, match="no trained weights"):
        export_bundle(copy, tmp_path / "dist")


def test_cli_writes_the_zip(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cellseg_monai.cli", "export-bundle", "impartial", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / f"impartial_v{_version(BUNDLE)}.zip").is_file()


def _requirements(bundle: Path) -> list[str]:
    """What the zoo's ``get_bundle_requirements.py`` installs for a bundle: the pinned versions of its metadata."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update(meta.get("required_packages_version", {}))
    return [f"{k}=={v}" for k, v in pins.items()]


@pytest.mark.slow
def test_the_zip_alone_segments_the_sample_like_the_repository(zip_path, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-q", *_requirements(BUNDLE)], capture_output=True, text=True, timeout=1500
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    probe = subprocess.run([py, "-c", "import cellseg_monai"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert probe.returncode != 0, "the clean venv must not see this repository's package"

    downloads = tmp_path / "downloads"
    cmd = [py, "-m", "monai.bundle", "download", "--name", "impartial", "--bundle_dir", str(downloads)]
    dl = subprocess.run([*cmd, "--url", zip_path.resolve().as_uri()], capture_output=True, text=True, env=env)
    assert dl.returncode == 0, dl.stderr[-3000:]
    unpacked = downloads / "impartial"
    standalone_out = tmp_path / "standalone"
    run = subprocess.run(
        [py, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--output_dir", str(standalone_out)],
        cwd=unpacked, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]

    repo_out = tmp_path / "repository"
    bundle_run(BUNDLE, ["inference.json"], "--output_dir", str(repo_out))
    repo_labels = sorted(repo_out.glob("*.tif"))
    assert len(repo_labels) == len(list((PACKAGE / "data" / "sample" / "images").glob("*.tif")))
    for path in repo_labels:
        np.testing.assert_array_equal(tifffile.imread(standalone_out / path.name), tifffile.imread(path))
