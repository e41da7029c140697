from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from cellseg_monai.transforms.copy_paste import CopyPaste, CopyPasted, paste_object

YY, XX = np.mgrid[:64, :64]


def _disc_image(centres: list[tuple[int, int]], r: int, value: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, 64, 64) image with textured discs of intensity ~ value, and (1, 64, 64) labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        labels[(YY - cy) ** 2 + (XX - cx) ** 2 <= r * r] = k
    image = np.where(labels > 0, value, 0.05) + rng.normal(0, 0.01, (3, 64, 64))
    return image.astype(np.float32), labels[None]


def test_paste_object_by_hand():
    image = np.zeros((1, 6, 6), np.float32)
    labels = np.zeros((6, 6), np.int32)
    labels[0, 0] = 4
    obj = np.full((1, 2, 3), 7.0, np.float32)
    mask = np.array([[1, 1, 0], [0, 1, 0]], bool)
    new_image, new_labels = paste_object(image, labels, obj, mask, (2, 1), blur_sigma=0)
    expected = np.zeros((6, 6), np.int32)
    expected[0, 0] = 4
    expected[2, 1] = expected[2, 2] = expected[3, 2] = 5
    np.testing.assert_array_equal(new_labels, expected)
    np.testing.assert_array_equal(new_image[0], np.where(expected == 5, 7.0, 0.0))
    assert labels.sum() == 4 and image.sum() == 0  # inputs untouched
    with pytest.raises(ValueError, match="does not fit"):
        paste_object(image, labels, obj, mask, (5, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pasted_objects_keep_image_and_labels_consistent(seed):
    source_img, source_lab = _disc_image([(20, 20), (44, 44)], 7, value=0.9, seed=10)
    target_img, target_lab = _disc_image([(15, 48)], 6, value=0.5, seed=11)
    cp = CopyPaste(prob=1.0, max_objects=3, blur_sigma=1.0, max_overlap=0.1, elastic_alpha=1.5)
    cp.set_random_state(seed)
    cp.add_source(source_img, source_lab, "source")
    out_img, out_lab = cp(target_img, target_lab, "target")
    assert out_img.shape == target_img.shape and out_lab.shape == target_lab.shape
    new_ids = [i for i in np.unique(out_lab) if i > 1]
    assert new_ids, "nothing was pasted"
    original = target_lab[0] == 1
    checked = 0
    for i in new_ids:
        mask = out_lab[0] == i
        assert mask.sum() >= 16
        # pasted ids are connected objects that show the source's bright texture where they are opaque
        assert ndi.label(mask)[1] == 1
        core = ndi.binary_erosion(mask, iterations=4)
        if core.any():
            assert np.all(np.abs(out_img[:, core] - 0.9) < 0.06)
            checked += 1
        # bounded overlap with the existing object (at most 10 % of the pasted object)
        assert (mask & original).sum() <= 0.1 * (mask.sum() + (mask & original).sum()) + 1
    assert checked > 0
    # away from every pasted object (and its blurred edge) the image is unchanged
    far = ~ndi.binary_dilation(out_lab[0] > 1, iterations=6)
    np.testing.assert_allclose(out_img[:, far], target_img[:, far])
    # the original object keeps at least 90 % of its pixels
    assert (out_lab[0] == 1).sum() >= 0.9 * original.sum()


def test_objects_are_never_pasted_into_their_own_image():
    img, lab = _disc_image([(32, 32)], 8, value=0.9, seed=0)
    cp = CopyPaste(prob=1.0)
    cp.set_random_state(0)
    cp.add_source(img, lab, "same")
    _, out_lab = cp(img, lab, "same")
    np.testing.assert_array_equal(out_lab, lab)
    assert len(cp.bank) == 2  # the call added its own object a second time


def test_seeded_dict_transform_is_reproducible_and_keeps_meta():
    source_img, source_lab = _disc_image([(20, 20), (44, 44)], 7, value=0.9, seed=3)
    target_img, target_lab = _disc_image([(15, 48)], 6, value=0.5, seed=4)
    outs = []
    for _ in range(2):
        t = CopyPasted(keys=("image", "label"), prob=1.0)
        t.set_random_state(5)
        t({"image": torch.as_tensor(source_img), "label": torch.as_tensor(source_lab), "id": "a"})
        label = MetaTensor(torch.as_tensor(target_lab), meta={"id": "b"})
        outs.append(t({"image": MetaTensor(torch.as_tensor(target_img)), "label": label, "id": "b"}))
    torch.testing.assert_close(outs[0]["image"], outs[1]["image"])
    torch.testing.assert_close(outs[0]["label"], outs[1]["label"])
    assert isinstance(outs[0]["label"], MetaTensor) and outs[0]["label"].meta["id"] == "b"
    assert outs[0]["label"].dtype == torch.int32 and outs[0]["label"].max() > 1


def test_prob_zero_is_identity():
    img, lab = _disc_image([(32, 32)], 8, value=0.9, seed=0)
    t = CopyPasted(prob=0.0)
    d = {"image": img, "label": lab, "id": "x"}
    out = t(d)
    assert out["image"] is img and out["label"] is lab


@pytest.mark.parametrize(
    "kwargs", [{"prob": 1.5}, {"max_overlap": -0.1}, {"scale_range": (0, 1)}, {"max_objects": 0}, {"blur_sigma": -1}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CopyPaste(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="CopyPaste expects"):
        CopyPaste()(np.zeros((3, 8, 8)), np.zeros((1, 8, 9), np.int32))


def test_the_bank_goes_through_a_checkpoint():
    """state_dict / load_state_dict: a resumed training's CopyPaste pastes what the uninterrupted one would have."""
    import io

    source_img, source_lab = _disc_image([(20, 20), (44, 44)], 7, value=0.9, seed=3)
    target_img, target_lab = _disc_image([(15, 48)], 6, value=0.5, seed=4)
    used = CopyPaste(prob=1.0)
    used.set_random_state(5)
    used.add_source(source_img, source_lab, "a")
    buffer = io.BytesIO()
    torch.save(used.state_dict(), buffer)
    resumed = CopyPaste(prob=1.0)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert [(s, i.shape, m.dtype) for s, i, m in resumed.bank] == [(s, i.shape, m.dtype) for s, i, m in used.bank]
    used.set_random_state(9), resumed.set_random_state(9)
    for a, b in zip(used(target_img, target_lab, "b"), resumed(target_img, target_lab, "b"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert CopyPaste().state_dict() == {"bank": []}
