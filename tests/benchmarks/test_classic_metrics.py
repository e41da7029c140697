from __future__ import annotations

import numpy as np
import pytest
import tifffile

from benchmarks.run import classic_pixel_metrics


def test_classic_pixel_metrics_on_hand_made_predictions(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt = np.zeros((10, 10), np.uint16)
    gt[2:6, 2:6] = 1
    tifffile.imwrite(gt_dir / "a.tif", gt)
    tifffile.imwrite(pred_dir / "a.tif", gt * 5)  # perfect foreground (ids do not matter): F1 1, AUC 1
    tifffile.imwrite(gt_dir / "b.tif", gt)
    half = np.zeros_like(gt)
    half[2:6, 2:4] = 3  # half of the object, no false positive: F1 = 2·8/(2·8+8) = 2/3; AUC = (0.5 + 1) / 2
    tifffile.imwrite(pred_dir / "b.tif", half)
    got = classic_pixel_metrics(pred_dir, gt_dir)
    assert got["val_pixel_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert got["val_pixel_auc"] == pytest.approx((1 + 0.75) / 2)
