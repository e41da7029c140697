from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.networks.mask_rcnn.centerness import CenternessModule, ignore_matched_negatives


@pytest.mark.parametrize(
    "labels, pred, thr, expected",
    [
        # negative 0 overlaps the predicted box fully -> ignored; negative 1 far away stays; positive 2 stays
        ([0, 0, 1], [[0, 0, 10, 10]], 0.5, [-1, 0, 1]),
        # IoU of sample 0 with pred = 50/150 = 1/3 < 0.5 -> stays negative; >= 0.3 -> ignored
        ([0, 0, 1], [[0, 5, 10, 15]], 0.5, [0, 0, 1]),
        ([0, 0, 1], [[0, 5, 10, 15]], 0.3, [-1, 0, 1]),
        ([0, 0, 1], [], 0.5, [0, 0, 1]),
    ],
)
def test_samples_matching_predicted_boxes_are_ignored(labels, pred, thr, expected):
    samples = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    predicted = torch.tensor(pred, dtype=torch.float32).reshape(-1, 4)
    out = ignore_matched_negatives(torch.tensor(labels), samples, predicted, thr)
    assert out.tolist() == expected


def test_detect_one_box_per_component_at_the_peak():
    m = CenternessModule(4, nucleus_size=8.0, threshold=0.95)
    logits = torch.full((1, 1, 6, 8), -5.0)
    logits[0, 0, 1, 1:3] = torch.tensor([4.0, 6.0])  # component A, peak at (1, 2)
    logits[0, 0, 4, 6] = 5.0  # component B at (4, 6)
    logits[0, 0, 4, 3] = 2.0  # sigmoid(2) = 0.88 < 0.95: not a detection
    deltas = torch.zeros((1, 4, 6, 8))
    deltas[0, 2, 4, 6] = np.log(2.0)  # component B: twice the anchor height
    ((boxes, scores),) = m.detect(logits, deltas, stride=4)
    order = torch.argsort(boxes[:, 0])
    boxes, scores = boxes[order], scores[order]
    # peak (1, 2) -> centre (1*4+2, 2*4+2) = (6, 10), anchor 8x8
    np.testing.assert_allclose(boxes[0].numpy(), [2, 6, 10, 14], atol=1e-5)
    # peak (4, 6) -> centre (18, 26), height 16, width 8
    np.testing.assert_allclose(boxes[1].numpy(), [10, 22, 26, 30], atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(torch.tensor([6.0, 5.0])).numpy(), rtol=1e-6)


def test_detect_takes_bfloat16_maps_from_a_training_autocast():
    # under bfloat16 autocast training (train_precision) the heads' maps arrive in bfloat16: the same detections
    m = CenternessModule(4, nucleus_size=8.0, threshold=0.95)
    logits = torch.full((1, 1, 6, 8), -5.0)
    logits[0, 0, 1, 1:3] = torch.tensor([4.0, 6.0])
    logits[0, 0, 4, 6] = 5.0
    deltas = torch.zeros((1, 4, 6, 8))
    deltas[0, 2, 4, 6] = 0.5
    ((ref_boxes, ref_scores),) = m.detect(logits, deltas, stride=4)
    ((boxes, scores),) = m.detect(logits.bfloat16(), deltas.bfloat16(), stride=4)
    assert boxes.dtype == torch.float32 and len(boxes) == len(ref_boxes) == 2
    np.testing.assert_allclose(boxes.numpy(), ref_boxes.numpy(), atol=0.1)
    np.testing.assert_allclose(scores.numpy(), ref_scores.numpy(), atol=1e-2)


def test_anchor_size_follows_the_median():
    m = CenternessModule(4, nucleus_size=10.0, momentum=1.0)
    m.update_anchor_size(torch.tensor([[0, 0, 4, 6], [0, 0, 8, 2], [0, 0, 20, 30.0]]))
    np.testing.assert_allclose(m.anchor_size.numpy(), [8.0, 6.0])
    assert "anchor_size" in m.state_dict()
    out = m(torch.randn(2, 4, 5, 5))
    assert out[0].shape == (2, 1, 5, 5) and out[1].shape == (2, 4, 5, 5)
