from __future__ import annotations

from pathlib import Path

import pytest

from cellseg_monai.bundle import existing_checkpoint, locate_bundle_root

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["monai.bundle", "run", "--config_file", "{root}/configs/train.json"],
        ["monai.bundle", "run", "--config_file={root}/configs/train.json"],
        ["monai.bundle", "run", "--config_file", "['{root}/configs/train.json', '{root}/configs/evaluate.json']"],
    ],
)
def test_root_from_command_line(tmp_path, argv):
    root = tmp_path / "mybundle"
    (root / "configs").mkdir(parents=True)
    argv = [a.format(root=root) for a in argv]
    assert Path(locate_bundle_root("anything", argv=argv, cwd=tmp_path)) == root


def test_alias_symlink_is_kept(tmp_path):
    (tmp_path / "real" / "configs").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    argv = ["x", "--config_file", str(tmp_path / "alias" / "configs" / "train.json")]
    assert Path(locate_bundle_root("real", argv=argv, cwd=tmp_path)) == tmp_path / "alias"


def test_root_from_working_directory(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text("{}")
    assert Path(locate_bundle_root("x", argv=["pytest"], cwd=tmp_path)) == tmp_path


def test_root_from_repository(tmp_path):
    assert Path(locate_bundle_root("impartial", argv=["pytest"], cwd=tmp_path)) == REPO / "bundles" / "impartial"


def test_unknown_bundle_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        locate_bundle_root("no_such_bundle", argv=["pytest"], cwd=tmp_path)


def test_existing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        existing_checkpoint(tmp_path / "model.pt")
    (tmp_path / "model.pt").write_bytes(b"x")
    assert existing_checkpoint(tmp_path / "model.pt") == str(tmp_path / "model.pt")
