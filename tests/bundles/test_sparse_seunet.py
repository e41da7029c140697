"""The SE-U-Net / SparseSEU-Net bundle: what only it does — sparse instance branch, tiles at the training patch
size, first-N training images (the shared train → evaluate → infer flow is in test_bundles.py; these tests read
the same runs: evaluation uses the sparse decoder of train.json, inference the one of inference.json)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser

from tests.bundles.conftest import BIG_SIZE, REPO

BUNDLE = REPO / "bundles" / "sparse_seunet"


@pytest.mark.slow
def test_checkpoint_holds_the_instance_activation_maps_and_four_heads(flows):
    state = torch.load(flows["sparse_seunet"].trained().model, weights_only=True)
    assert state["branches.0.iam.weight"].shape[0] == 8  # N instance activation maps (--num_instances 8)
    assert len([k for k in state if k.startswith("seunet.head_layers.") and k.endswith(".2.weight")]) == 4


def test_max_train_images_takes_the_first_ids():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["max_train_images"] = 2
    first_two = parser.get_parsed_content("train#datalist")
    parser["max_train_images"] = 0
    everything = parser.get_parsed_content("train#datalist", lazy=False)
    assert [d["id"] for d in first_two] == [d["id"] for d in everything[:2]] and len(everything) > 2
    assert "annotation_budget" not in parser  # full masks: not a weak bundle for benchmarks/run.py


@pytest.mark.slow
def test_an_image_larger_than_a_tile_is_stitched_into_consecutive_labels(flows):
    """The sparse branch reads coordinate channels of its input: the bundle predicts tile by tile at the training
    patch size (``TiledInstanceInferer``) and stitches the instances into one label image of the input's size."""
    labels = tifffile.imread(flows["sparse_seunet"].inferred() / "big.tif")
    assert labels.shape == BIG_SIZE and labels.min() >= 0
    ids = np.setdiff1d(np.unique(labels), [0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # stitched labels renumbered 1..K


@pytest.mark.parametrize("configs", [["train.json"], ["inference.json"]])
@pytest.mark.parametrize("decoder", ["sparse", "watershed"])
def test_the_inferer_tiles_as_the_decoder_needs(configs, decoder):
    """Sparse: tiles of the training patch size (CoordConv); watershed: the fitted window of ``semantic_tile`` and a
    network that skips its instance branch — the inferer and the network follow ``instance_decoder`` together."""
    from cellseg_monai.inferers import (
        FastInferer,
        FittedSlidingWindowInferer,
        FlipAveragingInferer,
        SEUNetInferer,
        TiledInstanceInferer,
    )

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser["patch_size"] = [96, 80]
    parser["semantic_tile"] = [192, 160]
    parser["instance_decoder"] = decoder
    outer = parser.get_parsed_content("inferer")
    assert isinstance(outer, FlipAveragingInferer) and outer.augmentation == parser["test_time_augmentation"]
    assert outer.keep_channels == [0, 1]  # the sparse labels and their scores are never averaged
    wrapper = outer.inferer
    assert isinstance(wrapper, FastInferer) and wrapper.precision == parser["inference_precision"]
    assert isinstance(wrapper.inferer, SEUNetInferer)
    inferer = wrapper.inferer.inferer
    assert parser.get_parsed_content("network_def").sparse_eval == (decoder == "sparse")
    if decoder == "watershed":
        assert isinstance(inferer, FittedSlidingWindowInferer) and list(inferer.roi_size) == [192, 160]
        return
    assert isinstance(inferer, TiledInstanceInferer)
    assert inferer.roi_size == (96, 80) and inferer.num_pixel_channels == len(parser["heads"])
