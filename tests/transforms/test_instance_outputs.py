"""InstanceOutputsd: the output contract's last step (cellseg_monai.contract), against hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cellseg_monai.contract import OPTIONAL_KEYS, OUTPUT_KEYS, REQUIRED_KEYS
from cellseg_monai.transforms import InstanceOutputsd

LABELS = np.array([[[0, 1, 1], [2, 2, 0]]], np.float32)  # (1, 2, 3): two objects
SCORE = np.array([[[0.0, 0.9, 0.9], [0.4, 0.4, 0.0]]], np.float32)


def test_contract_keys_are_documented_once():
    assert set(REQUIRED_KEYS) | set(OPTIONAL_KEYS) == set(OUTPUT_KEYS)
    assert REQUIRED_KEYS == ("pred", "score", "pred_scored")


def test_labels_and_score_are_stacked_and_metadata_kept():
    meta = {"id": "img0", "filename_or_obj": "img0.tif"}
    out = InstanceOutputsd()({"pred": MetaTensor(torch.from_numpy(LABELS), meta=meta), "score": SCORE})
    assert out["pred"].dtype == torch.int32 and out["pred"].meta["id"] == "img0"
    np.testing.assert_array_equal(out["pred"].numpy(), LABELS.astype(np.int32))
    np.testing.assert_allclose(out["pred_scored"].numpy(), np.concatenate([LABELS, SCORE]))
    assert out["pred_scored"].meta["id"] == "img0" and out["score"].meta["id"] == "img0"


def test_score_from_the_foreground_probability():
    fg = np.array([[[0.1, 0.8, 0.6], [0.7, 0.9, 0.2]]], np.float32)
    out = InstanceOutputsd(score_from="fg_prob")({"pred": LABELS, "fg_prob": fg})
    np.testing.assert_allclose(out["score"].numpy(), fg)
    np.testing.assert_allclose(out["fg_prob"].numpy(), fg)
    np.testing.assert_allclose(out["pred_scored"].numpy()[1], fg[0])


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"pred": LABELS}, KeyError, "score"),
        ({"pred": LABELS[0], "score": SCORE}, ValueError, r"\(1, H, W\)"),
        ({"pred": LABELS + 0.5, "score": SCORE}, ValueError, "non-integer"),
        ({"pred": -LABELS, "score": SCORE}, ValueError, "negative"),
        ({"pred": LABELS, "score": SCORE * 2}, ValueError, r"\[0, 1\]"),
        ({"pred": LABELS, "score": SCORE[:, :1]}, ValueError, "score"),
        ({"pred": LABELS, "score": SCORE, "fg_prob": SCORE - 1}, ValueError, "fg_prob"),
        ({"pred": LABELS, "score": SCORE, "attributes": np.zeros((5, 3, 3))}, ValueError, "attributes"),
    ],
)
def test_broken_contract_names_the_key(data, error, match):
    with pytest.raises(error, match=match):
        InstanceOutputsd()(data)
