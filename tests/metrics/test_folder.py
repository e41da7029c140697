from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellseg_monai.data.io import DataError
from cellseg_monai.metrics.folder import evaluate_folders, format_table


def squares_image(spec: list[tuple[int, int, int, int]], shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Label image with object k = rows [y, y + h), cols [x, x + w) for spec entries (y, x, h, w), id 5 k + 1."""
    out = np.zeros(shape, np.uint16)
    for k, (y, x, h, w) in enumerate(spec):
        out[y : y + h, x : x + w] = 5 * k + 1
    return out


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    # a: 2 GT squares, both predicted exactly -> tp 2
    tifffile.imwrite(gt_dir / "a.tif", squares_image([(0, 0, 8, 8), (10, 10, 8, 8)]))
    tifffile.imwrite(pred_dir / "a.tif", squares_image([(0, 0, 8, 8), (10, 10, 8, 8)]).astype(np.int32))
    # b: 1 GT square, prediction shifted by 2 columns (IoU 6/10 = 0.6) plus a spurious object -> tp 1, fp 1
    tifffile.imwrite(gt_dir / "b.tif", squares_image([(0, 0, 8, 8)]))
    tifffile.imwrite(pred_dir / "b.tiff", squares_image([(0, 2, 8, 8), (20, 20, 4, 4)])[None])  # (1, H, W)
    # c: no prediction file -> scored as empty, listed as missing (2 fn)
    tifffile.imwrite(gt_dir / "c.tif", squares_image([(0, 0, 4, 4), (8, 8, 4, 4)]))
    # predictions without GT are ignored; other files too
    tifffile.imwrite(pred_dir / "extra.tif", squares_image([(0, 0, 4, 4)]))
    (gt_dir / "notes.txt").write_text("not an image")
    return pred_dir, gt_dir


def test_evaluate_folders(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred_dir, gt_dir = folders
    json_path = tmp_path / "out" / "metrics.json"
    res = evaluate_folders(pred_dir, gt_dir, json_path=json_path)
    assert set(res) == {"per_image_mean", "pooled", "per_image", "missing"}
    assert res["missing"] == ["c"]
    assert [r["id"] for r in res["per_image"]] == ["a", "b", "c"]
    # per image f1@0.5: a 1, b 2*1/(2+1+0) = 2/3, c 0 ; pooled tp 3, fp 1, fn 2 -> 6 / 9
    assert [r["f1@0.5"] for r in res["per_image"]] == pytest.approx([1.0, 2 / 3, 0.0])
    assert res["per_image_mean"]["f1@0.5"] == pytest.approx((1 + 2 / 3) / 3)
    assert res["pooled"]["f1@0.5"] == pytest.approx(6 / 9)
    assert res["pooled"]["precision@0.5"] == pytest.approx(3 / 4)
    assert res["pooled"]["recall@0.5"] == pytest.approx(3 / 5)
    assert res["pooled"]["fnr@0.5"] == pytest.approx(2 / 5)
    assert res["pooled"]["ap_dsb@0.5"] == pytest.approx(3 / 6)
    assert res["per_image"][1]["ap_dsb@0.75"] == 0.0  # IoU 0.6 < 0.75
    for key in ("f1@0.5", "ap_dsb@0.5", "ap_dsb_mean", "aji", "pq", "mdice", "miou", "f1_mean", "fnr@0.5"):
        assert key in res["pooled"] and key in res["per_image_mean"]
    on_disk = json.loads(json_path.read_text())
    assert on_disk["missing"] == ["c"] and on_disk["pooled"]["f1@0.5"] == pytest.approx(6 / 9)
    table = format_table(res)
    assert "f1@0.5" in table and "0.6667" in table and "missing predictions" in table and "c" in table


def test_shape_mismatch_names_file(folders: tuple[Path, Path]) -> None:
    pred_dir, gt_dir = folders
    tifffile.imwrite(pred_dir / "a.tif", np.zeros((16, 32), np.uint16))
    with pytest.raises(ValueError, match=r"a\.tif.*16x32.*32x32"):
        evaluate_folders(pred_dir, gt_dir)


@pytest.mark.parametrize(
    "setup, match",
    [
        ("no_gt_dir", "not a folder"),
        ("empty_gt", "no label images"),
        ("float_pred", "b.tiff"),
        ("corrupt", "cannot read"),
    ],
)
def test_bad_folders(folders: tuple[Path, Path], tmp_path: Path, setup: str, match: str) -> None:
    pred_dir, gt_dir = folders
    if setup == "no_gt_dir":
        gt_dir = tmp_path / "nope"
    elif setup == "empty_gt":
        gt_dir = tmp_path / "empty"
        gt_dir.mkdir()
    elif setup == "float_pred":
        tifffile.imwrite(pred_dir / "b.tiff", np.full((32, 32), 0.5, np.float32))
    else:
        (gt_dir / "a.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match=match):
        evaluate_folders(pred_dir, gt_dir)


def test_scores_from_per_object_csv_enable_ranked_ap(tmp_path):
    # one GT square; prediction 1 = that square, prediction 2 = a false positive with a higher score
    import tifffile

    from cellseg_monai.metrics import evaluate_folders

    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt = np.zeros((12, 12), np.uint16)
    gt[1:5, 1:5] = 1
    pred = np.zeros_like(gt)
    pred[1:5, 1:5] = 1
    pred[7:11, 7:11] = 2
    tifffile.imwrite(gt_dir / "x.tif", gt)
    tifffile.imwrite(pred_dir / "x.tif", pred)
    (pred_dir / "x.csv").write_text("id,area,score\n1,16,0.4\n2,16,0.9\n")
    res = evaluate_folders(pred_dir, gt_dir)
    # ranked: FP (0.9) first, then the TP with precision 1/2 -> AP@0.5 = 0.5 / 1 GT
    assert res["per_image_mean"]["ap@0.5"] == pytest.approx(0.5)
    assert res["per_image_mean"]["f1@0.1"] == pytest.approx(2 / 3)  # 1 TP, 1 FP, 0 FN
    (pred_dir / "x.csv").write_text("id,area,score\n1,16,0.9\n2,16,0.4\n")
    assert evaluate_folders(pred_dir, gt_dir)["per_image_mean"]["ap@0.5"] == pytest.approx(1.0)
    assert "ap@0.5" not in evaluate_folders(pred_dir, gt_dir, scores=False)["per_image_mean"]
