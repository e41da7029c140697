"""Distance NMS against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg_monai.postprocessing.nms import close_pairs, distance_nms

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


def _greedy_reference(points, scores, min_distance, score_threshold=0.0, top_k=None, max_output=None):
    """The one-proposal-at-a-time greedy loop (the former implementation), as an independent reference."""
    p, s = torch.as_tensor(points).double(), torch.as_tensor(scores).double()
    cand = torch.nonzero(s >= score_threshold)[:, 0]
    cand = cand[torch.argsort(-s[cand], stable=True)][:top_k]
    limit = cand.shape[0] if max_output is None else max_output
    keep, suppressed = [], torch.zeros(cand.shape[0], dtype=torch.bool)
    for i in range(cand.shape[0]):
        if len(keep) >= limit:
            break
        if not suppressed[i]:
            keep.append(i)
            suppressed |= ((p[cand] - p[cand][i]) ** 2).sum(dim=1) < min_distance**2
    return cand[keep].tolist()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kwargs", [{"min_distance": 4.0}, {"min_distance": 7.5, "top_k": 150, "max_output": 40}])
def test_rounds_match_the_greedy_loop(seed, kwargs):
    g = torch.Generator().manual_seed(seed)
    # clusters of proposals around cell centres, on a pixel grid so that exact ties of distance occur, and tied scores
    centres = torch.rand(30, 2, generator=g) * 100
    pts = (centres.repeat_interleave(8, 0) + torch.randn(240, 2, generator=g) * 3).round()
    scores = (torch.rand(240, generator=g) * 20).round() / 20
    assert distance_nms(pts, scores, **kwargs).tolist() == _greedy_reference(pts, scores, **kwargs)


@pytest.mark.parametrize("distance", [0.5, 3.0, 10.0, 200.0])
def test_close_pairs_against_all_pairs(distance):
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(120, 2, generator=g) * 50).round().double()
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    i, j = torch.nonzero(torch.triu(d2 < distance**2, diagonal=1), as_tuple=True)
    expected = set(zip(i.tolist(), j.tolist(), strict=True))
    got = close_pairs(pts, distance).tolist()
    assert len(got) == len(expected) and set(map(tuple, got)) == expected
    assert close_pairs(pts[:1], distance).shape == (0, 2)
