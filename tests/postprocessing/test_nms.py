"""Distance NMS against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.nms import distance_nms

# (0,12) 0.95 kept; (0,0) 0.9 kept (12 px away); (0,3) 0.8 suppressed (3 px from (0,0));
# (0,10) 0.7 suppressed (2 px from (0,12)); (20,20) 0.1 kept
POINTS = [[0.0, 0.0], [0.0, 3.0], [0.0, 10.0], [0.0, 12.0], [20.0, 20.0]]
SCORES = [0.9, 0.8, 0.7, 0.95, 0.1]

CASES = [
    ({"min_distance": 5.0}, [3, 0, 4]),
    ({"min_distance": 5.0, "score_threshold": 0.5}, [3, 0]),
    ({"min_distance": 5.0, "top_k": 2}, [3, 0]),
    ({"min_distance": 5.0, "max_output": 1}, [3]),
    ({"min_distance": 0.0}, [3, 0, 1, 2, 4]),
    ({"min_distance": 2.0}, [3, 0, 1, 2, 4]),  # (0,10)-(0,12) are exactly 2 apart: strictly closer is suppressed
    ({"min_distance": 2.01}, [3, 0, 1, 4]),
    ({"min_distance": 100.0}, [3]),
]


@pytest.mark.parametrize("kwargs,expected", CASES)
def test_distance_nms_hand_cases(kwargs, expected):
    keep = distance_nms(torch.tensor(POINTS), torch.tensor(SCORES), **kwargs)
    assert keep.dtype == torch.int64
    assert keep.tolist() == expected


def test_numpy_input_and_empty():
    keep = distance_nms(np.array(POINTS), np.array(SCORES), 5.0)
    assert keep.tolist() == [3, 0, 4]
    assert distance_nms(torch.zeros(0, 2), torch.zeros(0), 3.0).numel() == 0


def test_ties_keep_lower_index_first():
    keep = distance_nms(torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.tensor([0.5, 0.5]), 3.0)
    assert keep.tolist() == [0]


@pytest.mark.parametrize(
    "points,scores,kwargs",
    [
        (torch.zeros(3, 2), torch.zeros(2), {"min_distance": 1.0}),
        (torch.zeros(3), torch.zeros(3), {"min_distance": 1.0}),
        (torch.zeros(3, 2), torch.zeros(3), {"min_distance": -1.0}),
        (torch.zeros(3, 2), torch.zeros(3), {"min_distance": 1.0, "top_k": -1}),
    ],
)
def test_bad_input_raises(points, scores, kwargs):
    with pytest.raises(ValueError):
        distance_nms(points, scores, **kwargs)
