"""MONAI's ``SupervisedEvaluator`` that segments very large images block by block (every bundle's ``inference.json``).

Images whose sides are all at most ``whole_image_size`` run exactly as in ``SupervisedEvaluator``: the inferer on
the whole image, then ``postprocessing``. A larger image (a slide scan, a stitched mosaic) is segmented by
:func:`cellseg_monai.inferers.blocks.segment_in_blocks`: each block goes through the same ``prepare_batch``,
``inferer`` and the post-processing steps up to the output contract (:class:`~cellseg_monai.transforms.
InstanceOutputsd`); the stitched contract then goes through the steps after it (the writer). Memory is bounded by
one block instead of growing with the image.

:func:`segment_item` (one decollated data dict through batch preparation, inferer and post-processing, as one
``SupervisedEvaluator`` iteration runs it) is shared with the Python API (:mod:`cellseg_monai.api`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.data.utils import collate_meta_tensor
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents, engine_apply_transform
from monai.networks.utils import eval_mode
from monai.transforms import Compose, Decollated, apply_transform
from monai.utils import CommonKeys as Keys

from cellseg_monai.inferers.blocks import needs_blocks, segment_in_blocks
from cellseg_monai.transforms.instance_outputs import InstanceOutputsd

__all__ = ["BlockwiseEvaluator", "batch_of", "segment_item", "split_at_contract"]


def split_at_contract(postprocessing: Callable) -> tuple[Compose, Compose]:
    """``postprocessing`` cut after its last :class:`InstanceOutputsd`: (steps up to the output contract, the
    steps after it, e.g. the file writer), each a ``Compose`` with the original one's options."""
    steps = list(getattr(postprocessing, "transforms", [postprocessing]))
    ends = [i for i, step in enumerate(steps) if isinstance(step, InstanceOutputsd)]
    if not ends:
        raise ValueError(
            "block-wise segmentation needs a post-processing that ends its decoding with "
            "cellseg_monai.transforms.InstanceOutputsd (the output contract, as a step of its Compose); none found."
        )
    options = {}
    if isinstance(postprocessing, Compose):
        options = {
            "map_items": postprocessing.map_items,
            "unpack_items": postprocessing.unpack_items,
            "log_stats": postprocessing.log_stats,
        }
    return Compose(steps[: ends[-1] + 1], **options), Compose(steps[ends[-1] + 1 :], **options)


def batch_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Tensors of one key, one per image, as MONAI's ``list_data_collate`` batches them (MetaTensor metadata
    collated so that decollation gives each image its own back); one image is batched as a view, without a copy
    of an image-sized output."""
    if len(tensors) > 1 or not isinstance(tensors[0], MetaTensor):
        return collate_meta_tensor(tensors) if isinstance(tensors[0], MetaTensor) else torch.stack(tensors)
    one = tensors[0]
    collated = MetaTensor(one.as_tensor()[None])
    small = collate_meta_tensor([one[..., :1, :1]])  # MONAI's own metadata collation, on a 1-pixel crop
    collated.meta, collated.applied_operations, collated.is_batch = small.meta, small.applied_operations, True
    return collated


def segment_item(
    item: Mapping[str, Any],
    *,
    network: torch.nn.Module,
    inferer: Callable,
    postprocessing: Callable,
    prepare_batch: Callable,
    device: torch.device | str,
    non_blocking: bool = False,
    mode: Callable = eval_mode,
    amp: bool = False,
    amp_kwargs: Mapping[str, Any] | None = None,
    to_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One data dict (one image, no batch axis) through ``prepare_batch``, ``inferer`` and ``postprocessing``, as one
    ``SupervisedEvaluator`` iteration with a batch of one: returns the post-processed dict (input and output keys)."""
    batch = list_data_collate([dict(item)])
    prepared = prepare_batch(batch, device, non_blocking, **dict(to_kwargs or {}))
    inputs, targets = prepared[0], prepared[1]
    args, kwargs = (prepared[2], prepared[3]) if len(prepared) == 4 else ((), {})
    with mode(network):
        if amp:
            with torch.autocast("cuda", **dict(amp_kwargs or {})):
                pred = inferer(inputs, network, *args, **kwargs)
        else:
            pred = inferer(inputs, network, *args, **kwargs)
    decollate = Decollated(keys=None, detach=True)
    output = decollate({Keys.IMAGE: inputs, Keys.LABEL: targets, Keys.PRED: pred})[0]
    data, out = engine_apply_transform(decollate(batch)[0], output, postprocessing)
    return {**data, **out}


class BlockwiseEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` that segments images with a side over ``whole_image_size`` block by block.

    Args:
        *args, **kwargs: those of ``monai.engines.SupervisedEvaluator`` (``decollate`` must stay True).
        postprocessing: as for ``SupervisedEvaluator``; for block-wise images it is split by
            :func:`split_at_contract` (so it must contain an ``InstanceOutputsd``).
        block_size: the longest side of a block's core (see :func:`~cellseg_monai.inferers.blocks.block_windows`).
        block_margin: pixels of context around each core; objects whose extent from their centroid is at most this
            are segmented whole (96 px: nuclei up to ~190 px across; raise it for larger objects).
        whole_image_size: images whose sides are all at most this are segmented whole, as MONAI's evaluator does
            (4096: the bundles' speed is measured that way up to 4096²); None: always whole.
    """

    def __init__(
        self,
        *args: Any,
        postprocessing: Callable | None = None,
        block_size: int = 2048,
        block_margin: int = 96,
        whole_image_size: int | None = 4096,
        **kwargs: Any,
    ) -> None:
        if not kwargs.get("decollate", True):
            raise ValueError("BlockwiseEvaluator post-processes decollated items: decollate must be True.")
        if int(block_size) < 1 or int(block_margin) < 0:
            raise ValueError(f"block_size must be >= 1 and block_margin >= 0; got {block_size}, {block_margin}.")
        self.block_size, self.block_margin = int(block_size), int(block_margin)
        self.whole_image_size = None if whole_image_size is None else int(whole_image_size)
        self._split: tuple[Compose, Compose] | None = None  # postprocessing cut at the contract, on first use
        self._stitched = False
        # MONAI registers this in its usual place (after decollate, before metrics and handlers)
        posttrans = None if postprocessing is None else self._apply_postprocessing
        super().__init__(*args, postprocessing=posttrans, **kwargs)
        self.postprocessing = postprocessing

    def _apply_postprocessing(self, data: Any) -> Any:
        """The configured post-processing on one decollated item, or only its steps after the output contract when
        the item was stitched from blocks (its contract keys are there already)."""
        if not self._stitched:
            return apply_transform(self.postprocessing, data)
        return apply_transform(self._parts()[1], data)

    def _parts(self) -> tuple[Compose, Compose]:
        if self._split is None:
            if self.postprocessing is None:
                raise ValueError("block-wise segmentation needs the evaluator's postprocessing; none was given.")
            self._split = split_at_contract(self.postprocessing)
        return self._split

    def _iteration(self, engine: BlockwiseEvaluator, batchdata: dict[str, Any]) -> dict:
        """As ``SupervisedEvaluator._iteration`` for images up to ``whole_image_size``. Larger ones: each image of
        the batch is segmented by :func:`segment_in_blocks` (prepare_batch, inferer and the post-processing up to the
        contract, per block); ``output["pred"]`` and the other contract keys hold the stitched result when
        ``FORWARD_COMPLETED`` fires (the raw network output of a whole large image never exists), ``image`` and
        ``label`` what ``prepare_batch`` gives for the whole batch."""
        image = batchdata[Keys.IMAGE] if isinstance(batchdata, Mapping) else None
        self._stitched = isinstance(image, torch.Tensor) and needs_blocks(image.shape[2:], self.whole_image_size)
        if not self._stitched:
            return super()._iteration(engine, batchdata)
        decode = self._parts()[0]
        segment = partial(
            segment_item,
            network=engine.network,
            inferer=engine.inferer,
            postprocessing=decode,
            prepare_batch=engine.prepare_batch,
            device=engine.state.device,
            non_blocking=engine.non_blocking,
            mode=engine.mode,
            amp=engine.amp,
            amp_kwargs=engine.amp_kwargs,
            to_kwargs=engine.to_kwargs,
        )
        items = [
            segment_in_blocks(item, segment, self.block_size, self.block_margin, image_key=Keys.IMAGE)
            for item in decollate_batch(batchdata, detach=True)
        ]
        prepared = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        output: dict[str, Any] = {Keys.IMAGE: prepared[0], Keys.LABEL: prepared[1]}
        for key in items[0]:
            if key not in batchdata:
                output[key] = batch_of([it[key] for it in items])
        engine.state.output = output
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
