"""BlockwiseEvaluator: MONAI's evaluator loop, block by block above ``whole_image_size``; and the bundles' use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.transforms import Compose, CopyItemsd
from scipy import ndimage

from cellseg_monai.contract import FG_PROB_KEY, LABELS_KEY, SCORED_KEY
from cellseg_monai.engines import BlockwiseEvaluator, split_at_contract
from cellseg_monai.transforms import InstanceOutputsd, ProbabilityToInstancesd
from tests.inferers.test_tiled_roundtrip import _discs


class _FirstChannel(torch.nn.Module):
    """A 'network' whose foreground probability is the image's first channel (a known answer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class _Record:
    """A post-processing step after the contract (where the writer sits): keeps what it was given."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def __call__(self, data: dict) -> dict:
        self.seen.append(dict(data))
        return data


def _run(image: torch.Tensor | list, **blocks) -> tuple[BlockwiseEvaluator, _Record]:
    record = _Record()
    post = Compose(
        [
            CopyItemsd(keys="pred", names=FG_PROB_KEY),
            ProbabilityToInstancesd(
                keys=FG_PROB_KEY, output_key=LABELS_KEY, threshold=0.5, watershed=False, min_size=1
            ),
            InstanceOutputsd(keys=LABELS_KEY, score_from=FG_PROB_KEY),
            record,
        ]
    )
    images = image if isinstance(image, list) else [image]
    loader = DataLoader([{"image": im} for im in images], batch_size=len(images))
    evaluator = BlockwiseEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=_FirstChannel(), postprocessing=post, **blocks
    )
    evaluator.run()
    return evaluator, record


def test_large_images_go_block_by_block_and_give_the_whole_image_instances():
    truth = _discs((500, 450), n=50, seed=5)
    image = torch.as_tensor((truth > 0).astype(np.float32))[None]
    _, whole = _run(image, whole_image_size=None)
    evaluator, blocked = _run(image, whole_image_size=300, block_size=128, block_margin=16)
    assert evaluator._stitched  # the block path ran
    assert len(whole.seen) == len(blocked.seen) == 1  # the step after the contract ran once, on the whole image
    reference = ndimage.label(truth > 0)[0]
    for seen in (whole.seen[0], blocked.seen[0]):
        labels = np.asarray(seen[LABELS_KEY][0])
        pairs = np.unique(np.stack([labels[labels > 0], reference[reference > 0]]), axis=1)
        assert np.array_equal(labels > 0, reference > 0) and pairs.shape[1] == 50 == len(np.unique(pairs[0]))
    got = blocked.seen[0]
    assert got[SCORED_KEY].shape == (2, 500, 450) and got["image"].shape == (1, 500, 450)
    assert evaluator.state.output[0][LABELS_KEY] is got[LABELS_KEY]  # what metric handlers read


@pytest.mark.parametrize("whole_image_size", [None, 100])
def test_each_image_of_a_batch_keeps_its_own_metadata(whole_image_size):
    truth = _discs((160, 150), n=6, seed=2)
    images = [
        MetaTensor(
            torch.as_tensor((np.roll(truth, 7 * i, axis=1) > 0).astype(np.float32))[None],
            affine=torch.diag(torch.tensor([2.0, 3.0, 1.0])),
            meta={"id": name, "filename_or_obj": f"/data/{name}.tif"},
        )
        for i, name in enumerate(["first", "second"])
    ]
    evaluator, record = _run(images, whole_image_size=whole_image_size, block_size=64, block_margin=16)
    assert evaluator._stitched == (whole_image_size is not None)
    assert [seen[LABELS_KEY].meta["id"] for seen in record.seen] == ["first", "second"]
    for seen, image in zip(record.seen, images, strict=True):
        assert seen[LABELS_KEY].meta["filename_or_obj"] == image.meta["filename_or_obj"]
        assert tuple(seen[LABELS_KEY].affine.shape) == (3, 3) and seen[SCORED_KEY].shape == (2, 160, 150)
        expected = ndimage.label(np.asarray(image[0]) > 0.5)[0]
        assert np.asarray(seen[LABELS_KEY][0]).max() == expected.max() == 6


def test_images_up_to_whole_image_size_run_as_monai_runs_them():
    image = torch.as_tensor((_discs((120, 130), n=5, seed=1) > 0).astype(np.float32))[None]
    evaluator, record = _run(image, whole_image_size=130, block_size=16, block_margin=0)
    assert not evaluator._stitched and np.asarray(record.seen[0][LABELS_KEY]).max() == 5
    assert "image" in evaluator.state.output[0] and FG_PROB_KEY in evaluator.state.output[0]


def test_split_at_contract_and_what_blockwise_refuses():
    steps = [CopyItemsd(keys="pred", names="x"), InstanceOutputsd(keys="pred", score_from="x"), _Record()]
    decode, after = split_at_contract(Compose(steps))
    assert decode.transforms == tuple(steps[:2]) and after.transforms == (steps[2],)
    with pytest.raises(ValueError, match="InstanceOutputsd"):
        split_at_contract(Compose(steps[:1]))
    loader = DataLoader([{"image": torch.zeros(1, 8, 8)}], batch_size=1)
    with pytest.raises(ValueError, match="decollate must be True"):
        BlockwiseEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=_FirstChannel(), decollate=False)


def test_every_bundle_segments_large_images_block_by_block():
    import json

    from cellseg_monai.bundle.paths import bundle_names, find_bundle

    for name in bundle_names():
        config = json.loads((find_bundle(name) / "configs" / "inference.json").read_text())
        assert config["evaluator"]["_target_"] == "cellseg_monai.engines.BlockwiseEvaluator", name
        assert config["whole_image_size"] >= 4096 and config["block_margin"] >= 64, name


def test_the_api_segments_a_large_image_in_blocks_like_the_whole_image(monkeypatch):
    import cellseg_monai
    import cellseg_monai.inferers.blocks as blocks_module
    from cellseg_monai.metrics.matching import match, overlap

    truth = _discs((420, 380), n=40, seed=7)
    rng = np.random.default_rng(0)
    image = ndimage.gaussian_filter((truth > 0).astype(np.float32), 1.5) * 200 + rng.normal(20, 3, truth.shape)
    whole, _ = cellseg_monai.load_bundle("supervised_unet", device="cpu").segment(image)
    model = cellseg_monai.load_bundle("supervised_unet", device="cpu", whole_image_size=256, block_size=150)
    assert model.blocks == {"block_size": 150, "block_margin": 96, "whole_image_size": 256}
    calls = []
    original = blocks_module.segment_in_blocks
    monkeypatch.setattr(blocks_module, "segment_in_blocks", lambda *a, **k: calls.append(1) or original(*a, **k))
    blocked, table = model.segment(image)
    assert calls == [1]  # the block path ran
    assert whole.max() >= 30  # the shipped weights find the discs
    matching = match(overlap(whole, blocked), 0.5)
    assert len(matching.ious) >= 0.95 * max(whole.max(), blocked.max())  # the same objects, up to the network's tiling
    assert len(table["id"]) == blocked.max()
