"""One bundle-root rule (cellseg_monai.bundle.paths): unit cases, then every way a bundle is run; then the one rule
that finds a bundle by name or folder, in a checkout and in an installed package."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cellseg_monai.bundle import existing_checkpoint, is_bundle_dir, locate_bundle_root
from cellseg_monai.bundle.export import bundle_files, library_files
from cellseg_monai.bundle.paths import BUNDLE_ALIASES, bundle_names, bundles_dir, find_bundle

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


# --- finding a bundle by name or folder (find_bundle): the CLI, the Python API and the benchmarks ---

PACKAGE = REPO / "cellseg_monai"
SHIPPED = ["canonical_shape", "impartial", "lacss", "partial_maskrcnn", "sparse_seunet", "supervised_unet"]


def test_names_and_the_alias_resolve_to_the_repository_bundles_in_a_checkout():
    assert bundles_dir() == (REPO / "bundles").resolve()
    assert bundle_names() == SHIPPED  # the imppartial link is an alias, not a seventh bundle
    for name in SHIPPED:
        assert find_bundle(name) == (REPO / "bundles" / name).resolve()
    assert find_bundle("imppartial") == BUNDLE and BUNDLE_ALIASES == {"imppartial": "impartial"}


def test_a_folder_wins_and_unknown_names_list_the_known_ones(tmp_path, monkeypatch):
    mine = _fake_bundle(tmp_path / "my_copy")
    assert find_bundle(mine) == mine and find_bundle(str(mine)) == mine
    monkeypatch.chdir(tmp_path)
    assert find_bundle("my_copy") == mine  # a folder of that name in the working directory
    for bad in ["nope", "../bundles/impartial", ""]:
        with pytest.raises(FileNotFoundError, match=r"no bundle .*one of \['canonical_shape', 'impartial'"):
            find_bundle(bad)


def _installed_paths_module(site: Path, bundles: list[str]):
    """bundle/paths.py as it lies in an installed wheel: cellseg_monai/_bundles/<name> are real folders."""
    (site / "cellseg_monai" / "bundle").mkdir(parents=True)
    shutil.copy(PACKAGE / "bundle" / "paths.py", site / "cellseg_monai" / "bundle" / "paths.py")
    for name in bundles:
        _fake_bundle(site / "cellseg_monai" / "_bundles" / name)
    spec = importlib.util.spec_from_file_location("installed_paths", site / "cellseg_monai" / "bundle" / "paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_installed_package_finds_its_own_copy_of_the_bundles(tmp_path):
    paths = _installed_paths_module(tmp_path / "site", ["impartial", "lacss"])
    shipped = tmp_path / "site" / "cellseg_monai" / "_bundles"
    assert paths.bundles_dir() == shipped and paths.bundle_names() == ["impartial", "lacss"]
    assert paths.find_bundle("imppartial") == shipped / "impartial"
    assert paths.find_bundle("lacss") == shipped / "lacss"
    with pytest.raises(FileNotFoundError, match=r"one of \['impartial', 'lacss'\]"):
        paths.find_bundle("canonical_shape")


def test_an_install_without_bundles_says_so(tmp_path):
    paths = _installed_paths_module(tmp_path / "site", [])
    with pytest.raises(FileNotFoundError, match=r"give a bundle folder .*_bundles is missing or empty"):
        paths.find_bundle("impartial")


def test_the_package_data_ships_every_bundle_file_and_no_alias_copy():
    """pyproject's package-data globs (read by setuptools relative to cellseg_monai/, through the _bundles link)
    cover every file a bundle's zip holds (cellseg_monai.bundle.export.bundle_files) apart from local training
    products, and the exclusions drop the imppartial alias."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = {f for p in setuptools["package-data"]["cellseg_monai"] for f in glob.glob(p, root_dir=PACKAGE)}
    exclude = {f for p in setuptools["exclude-package-data"]["cellseg_monai"] for f in glob.glob(p, root_dir=PACKAGE)}
    shipped = include - exclude
    assert not any(f.startswith("_bundles/imppartial/") for f in shipped)
    for name in SHIPPED:
        for rel in bundle_files(REPO / "bundles" / name):
            if rel.parent.name == "models" and rel.name != "model.pt" and rel.suffix != ".md":
                continue  # checkpoints, exported models: made locally, not part of the bundle
            assert f"_bundles/{name}/{rel.as_posix()}" in shipped, f"{name}/{rel} would not be installed"


def test_an_exported_zip_carries_the_library_without_the_installed_bundles(tmp_path):
    package = tmp_path / "site" / "cellseg_monai"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "io.py").write_text("")
    _fake_bundle(package / "_bundles" / "impartial")
    (package / "_bundles" / "impartial" / "models").mkdir()
    (package / "_bundles" / "impartial" / "models" / "model.pt").write_bytes(b"w")
    assert library_files(package) == [Path("__init__.py"), Path("data/io.py")]
