from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellseg_monai.annotations import cut_off_points, unclicked_components


def _crop_scene():
    """A 12x12 crop: a clicked cell inside, a cut cell on the left border (no click), a cut cell on the bottom border
    holding a click, an unclicked blob inside (debris), an L-shaped cut fragment on the top border."""
    fg = np.zeros((12, 12), np.uint8)
    fg[4:7, 4:7] = 1  # clicked, inside
    fg[2:5, 0:2] = 1  # cut by the left border, its click was outside the crop
    fg[10:12, 8:11] = 1  # cut by the bottom border, clicked
    fg[8, 2] = 1  # unclicked blob inside
    fg[0:7, 11] = 1  # L-shaped fragment on the top-right corner ...
    fg[6, 8:11] = 1  # ... its centroid (3.9, 10.4) is background
    points = np.array([[5.0, 5.0], [11.0, 9.0]])
    return fg, points


def test_unclicked_components_against_scipy_labels():
    fg, points = _crop_scene()
    comp, ids = unclicked_components(fg, points)
    ref, n = ndi.label(fg > 0, structure=np.ones((3, 3)))
    assert np.array_equal(comp, ref)
    expected = sorted({ref[2, 0], ref[8, 2], ref[0, 11]})
    assert ids.tolist() == expected and n == 5


def test_a_click_on_background_vouches_for_the_nearest_component():
    fg, _ = _crop_scene()
    _, ids = unclicked_components(fg, np.array([[5.0, 7.0]]))  # background, 1 px right of the inside cell
    ref, _ = ndi.label(fg > 0, structure=np.ones((3, 3)))
    assert ref[5, 5] not in ids and len(ids) == 4


def test_cut_off_points_clicks_the_visible_centroid_of_each_unclicked_border_component():
    fg, points = _crop_scene()
    new = cut_off_points(fg, points)
    # left fragment: rows 2..4, cols 0..1 -> centroid (3, 0.5). The L: 7 + 3 pixels, centroid (39/10, 104/10) rounds
    # to (4, 10), background; the nearest L pixel is (4, 11) (distance^2 0.01 + 0.36). The inside blob and the
    # clicked cells get none. Order: the components' scipy label order (row-major first pixel).
    rr, cc = np.nonzero(fg[:7, 8:])
    assert np.allclose([rr.mean(), cc.mean() + 8], [3.9, 10.4])  # the scene is what the comment says
    assert fg[4, 10] == 0
    assert np.allclose(new, [[4.0, 11.0], [3.0, 0.5]])


def test_nothing_to_add():
    fg, points = _crop_scene()
    all_points = np.vstack([points, [[3.0, 1.0], [8.0, 2.0], [1.0, 10.0]]])
    assert cut_off_points(fg, all_points).shape == (0, 2)
    assert cut_off_points(np.zeros((6, 6)), np.zeros((0, 2))).shape == (0, 2)
