"""One bundle-root rule (cellseg_monai.bundle.paths): unit cases, then every way a bundle is run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cellseg_monai.bundle import existing_checkpoint, is_bundle_dir, locate_bundle_root

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "impartial"
PRINT_ROOT = ["--initialize", "[]", "--run", "['$print(\"ROOT=\" + @bundle_root)']", "--finalize", "[]"]


def _fake_bundle(root: Path, marker: str | None = None) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    if marker:
        (root / "configs" / "inference.json").write_text(f'{{"bundle_root": "$x.locate_bundle_root(\'{marker}\')"}}')
    return root


def test_the_working_directory_when_it_is_the_bundle(tmp_path):
    root = _fake_bundle(tmp_path / "mine")
    assert Path(locate_bundle_root("mine", cwd=root)) == root


def test_a_renamed_bundle_folder_is_recognised_by_its_configs(tmp_path):
    root = _fake_bundle(tmp_path / "renamed", marker="mine")
    assert is_bundle_dir(root, "mine") and not is_bundle_dir(root, "other")
    assert Path(locate_bundle_root("mine", cwd=root)) == root


def test_another_bundle_in_the_working_directory_is_not_taken(tmp_path):
    other = _fake_bundle(tmp_path / "other", marker="other")
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        locate_bundle_root("mine", cwd=other)


def test_bundles_folder_under_the_working_directory(tmp_path):
    root = _fake_bundle(tmp_path / "bundles" / "mine")
    assert Path(locate_bundle_root("mine", cwd=tmp_path)) == root


def test_no_guess_from_the_install_location(tmp_path):
    # the old rule fell back to this repository's bundles/impartial from anywhere: silently the wrong copy
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        locate_bundle_root("impartial", cwd=tmp_path)


def test_existing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        existing_checkpoint(tmp_path / "model.pt")
    (tmp_path / "model.pt").write_bytes(b"x")
    assert existing_checkpoint(tmp_path / "model.pt") == str(tmp_path / "model.pt")


def _root_printed(config: Path, cwd: Path, *args: str) -> Path:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *args, *PRINT_ROOT]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROOT=")]
    return Path(lines[-1][5:])


@pytest.mark.parametrize("alias", ["impartial", "imppartial"])
def test_monai_bundle_run_from_the_repository_root(alias):
    config = Path("bundles") / alias / "configs" / "inference.json"
    assert _root_printed(config, REPO).resolve() == BUNDLE


@pytest.mark.parametrize("alias", ["impartial", "imppartial"])
def test_monai_bundle_run_from_inside_the_bundle(alias):
    assert _root_printed(Path("configs/inference.json"), REPO / "bundles" / alias).resolve() == BUNDLE


def test_monai_bundle_run_from_elsewhere_needs_bundle_root(tmp_path):
    config = BUNDLE / "configs" / "inference.json"
    assert _root_printed(config, tmp_path, "--bundle_root", str(BUNDLE)) == BUNDLE
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *PRINT_ROOT]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--bundle_root" in proc.stderr


def test_an_unpacked_copy_resolves_to_itself_not_to_the_repository(tmp_path):
    copy = tmp_path / "impartial"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("runs", "models"))
    assert _root_printed(Path("configs/inference.json"), copy) == copy


def test_python_api_from_any_directory(tmp_path, monkeypatch):
    from monai.bundle import ConfigParser, create_workflow

    copy = tmp_path / "unpacked" / "impartial"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("runs", "models"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / "inference.json"))
    with pytest.raises(RuntimeError) as err:  # never the repository's copy
        parser.get_parsed_content("ckpt_path")
    assert "--bundle_root" in str(err.value.__cause__)
    parser["bundle_root"] = str(copy)
    assert parser.get_parsed_content("ckpt_path") == os.path.join(str(copy), "models", "model.pt")
    wf = create_workflow(
        config_file=str(copy / "configs" / "inference.json"), workflow_type="infer", bundle_root=str(copy)
    )
    assert wf.bundle_root == str(copy) and wf.parser.get_parsed_content("ckpt_path").startswith(str(copy))
