"""Python API: segment NumPy images with a bundle, no config to write (cf. cellpose's ``CellposeModel().eval()``).

    >>> import cellseg_monai
    >>> model = cellseg_monai.load_bundle("impartial")          # shipped weights, CUDA when present
    >>> labels, table = model.segment(image)                    # (H, W) instance labels + one row per object

The model is the bundle's own ``configs/inference.json``, parsed with ``monai.bundle.ConfigParser``: its
``network`` (weights loaded by its ``CheckpointLoader``), ``preprocessing``, the evaluator's ``inferer`` and
``postprocessing``, run one image at a time as MONAI's ``SupervisedEvaluator`` runs them. The only change is the
last post-processing step: the ``SaveInstancesd`` that would write ``<id>.tif``/``.png``/``.csv`` hands its label
image and measurements back instead. So ``segment`` gives the same labels as ``cellseg-monai segment`` and
``python -m monai.bundle run --config_file configs/inference.json`` on the same image.

:func:`inference_config` (find the bundle, refuse bad options, set weights and device) is shared by this API and
the ``cellseg-monai segment`` command.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["InferenceConfig", "BundleModel", "inference_config", "load_bundle", "API_RESERVED"]

API_RESERVED: tuple[str, ...] = ("bundle_root", "dataset_dir", "datalist", "output_dir", "ckpt_path", "device")
"""Config ids the API sets itself (from its arguments, or unused because nothing is read from or written to disk)."""

_IMAGE_SOURCE = "<array>"  # what error messages and meta["filename_or_obj"] call an in-memory image


@dataclass(frozen=True)
class InferenceConfig:
    """A bundle's inference configuration, checked and ready to run.

    Attributes:
        root: the bundle folder (holding ``configs/``).
        overrides: config ids to set over ``configs/inference.json``: ``bundle_root``, ``ckpt_path`` and ``device``
            where given, plus the user's own overrides (already checked against the config).
        in_channels: the channel count the bundle's network takes (its ``in_channels`` id), or None.
    """

    root: Path
    overrides: dict[str, object] = field(default_factory=dict)
    in_channels: int | None = None

    @property
    def config_file(self) -> Path:
        return self.root / "configs" / "inference.json"

    @property
    def meta_file(self) -> Path:
        return self.root / "configs" / "metadata.json"

    @property
    def logging_file(self) -> Path:
        return self.root / "configs" / "logging.conf"

    def parser(self) -> Any:
        """A ``monai.bundle.ConfigParser`` holding ``metadata.json`` and ``inference.json`` with the overrides set."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_meta(str(self.meta_file))
        parser.read_config(str(self.config_file))
        parser.update(self.overrides)
        return parser


def inference_config(
    bundle: str | os.PathLike,
    ckpt_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    overrides: Mapping[str, object] | None = None,
    options: Iterable[str] = ("bundle", "ckpt_path", "device"),
    reserved: Iterable[str] = API_RESERVED,
) -> InferenceConfig:
    """Find a bundle and check what the caller asks of its ``inference.json`` before anything is built or read.

    Args:
        bundle: a bundle name (``impartial``, ``lacss``, ...; ``imppartial`` is an alias) or a bundle folder
            (:func:`cellseg_monai.bundle.paths.find_bundle`).
        ckpt_path: weights to load (default: the config's ``ckpt_path``, ``<bundle>/models/model.pt``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (default: the config's ``device``, CUDA when present).
        overrides: other config ids to set, e.g. ``{"prob_threshold": 0.4}``.
        options: the caller's own option names (suggested when an override is unknown).
        reserved: ids the caller sets itself; refused as overrides.

    Raises:
        UsageError: unknown bundle, unknown or reserved override id, a value of the wrong type or out of range, or a
            device this machine does not have (one line naming the option, :mod:`cellseg_monai.guards`).
        DataError: ``ckpt_path`` is missing, empty or not a weights file (:func:`cellseg_monai.guards.check_weights`).
    """
    from monai.bundle import ConfigParser

    from cellseg_monai.bundle.paths import find_bundle
    from cellseg_monai.guards import UsageError, check_device, check_overrides, check_weights

    overrides = dict(overrides or {})
    try:
        root = find_bundle(bundle)
    except FileNotFoundError as exc:
        raise UsageError("--bundle", str(exc)) from None
    raw = ConfigParser()
    raw.read_config(str(root / "configs" / "inference.json"))
    check_overrides(raw.get(), overrides, options=options, reserved=reserved)
    check_device(None if device is None else str(device))
    if ckpt_path is not None:
        check_weights(ckpt_path)  # missing, empty, a folder or not a weights file: one line naming it
    channels = overrides.get("in_channels", raw.get("in_channels"))
    overrides["bundle_root"] = str(root)
    if ckpt_path is not None:
        overrides["ckpt_path"] = str(Path(ckpt_path).absolute())
    if device is not None:
        overrides["device"] = f"$torch.device({str(device)!r})"
    in_channels = channels if isinstance(channels, int) and not isinstance(channels, bool) else None
    return InferenceConfig(root=root, overrides=overrides, in_channels=in_channels)


def _as_loaded_image(image: object, channels: int | None) -> Any:
    """An in-memory image as ``LoadMicroscopy`` loads a file holding it: (C, H, W) float32 ``MetaTensor``.

    Accepts (H, W), (H, W, C) or planar (C, H, W) with C <= 4, leading singleton axes dropped (the rule of
    :func:`cellseg_monai.data.io.read_image`), of a boolean, integer or floating dtype; the channels are matched to
    the bundle's ``in_channels`` (:func:`cellseg_monai.transforms.io.match_channels`).
    """
    from monai.data import MetaTensor
    from monai.utils import convert_to_numpy

    from cellseg_monai.data.io import DataError, _to_2d_layout
    from cellseg_monai.transforms.io import match_channels

    if isinstance(image, torch.Tensor):
        image = convert_to_numpy(image)
    if not isinstance(image, np.ndarray):
        raise DataError(
            f"{_IMAGE_SOURCE}: expected a NumPy array (H, W), (H, W, C) or (C, H, W); got {type(image).__name__}"
        )
    if not (image.dtype == bool or np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise DataError(f"{_IMAGE_SOURCE}: image dtype {image.dtype} is not a number type (expected bool, int, float)")
    if image.size == 0:
        raise DataError(f"{_IMAGE_SOURCE}: empty image of shape {image.shape}")
    arr = _to_2d_layout(image, Path(_IMAGE_SOURCE))
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    arr = match_channels(arr, channels, _IMAGE_SOURCE)
    data = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32))
    meta = {
        "filename_or_obj": _IMAGE_SOURCE,
        "id": "image",
        "spatial_shape": np.asarray(data.shape[1:]),
        "original_channel_dim": 0,
    }
    return MetaTensor(data, affine=torch.eye(3, dtype=torch.float64), meta=meta)


def _split_writer(postprocessing: Any) -> tuple[Callable, Any]:
    """The post-processing ``Compose`` without its final ``SaveInstancesd``, and that writer (whose keys say where
    the labels, the score map, the image and the per-object attributes are)."""
    from monai.transforms import Compose

    from cellseg_monai.transforms.save_instances import SaveInstancesd

    steps = list(getattr(postprocessing, "transforms", [postprocessing]))
    writers = [t for t in steps if isinstance(t, SaveInstancesd)]
    if len(writers) != 1:
        raise ValueError(
            f"the bundle's postprocessing must end in one cellseg_monai.transforms.SaveInstancesd; found {len(writers)}"
        )
    return Compose([t for t in steps if t is not writers[0]]), writers[0]


def _block_settings(parser: Any, evaluator: Mapping) -> dict[str, Any]:
    """``block_size``, ``block_margin`` and ``whole_image_size`` of the config's evaluator: its own values, else
    :class:`~cellseg_monai.engines.BlockwiseEvaluator`'s defaults; empty for any other evaluator (always whole)."""
    import inspect

    from cellseg_monai.engines.blockwise import BlockwiseEvaluator

    if not str(evaluator.get("_target_", "")).endswith("BlockwiseEvaluator"):
        return {}
    defaults = inspect.signature(BlockwiseEvaluator.__init__).parameters
    keys = ("block_size", "block_margin", "whole_image_size")
    return {k: parser.get_parsed_content(f"evaluator#{k}") if k in evaluator else defaults[k].default for k in keys}


def _checkpoint_loader(parser: Any) -> Any:
    """The config's ``CheckpointLoader`` (the first one among ``handlers``), built from the config."""
    for i, handler in enumerate(parser.get("handlers", [])):
        if isinstance(handler, Mapping) and str(handler.get("_target_", "")).endswith("CheckpointLoader"):
            return parser.get_parsed_content(f"handlers#{i}")
    raise ValueError("the bundle's inference.json has no CheckpointLoader among its handlers")


class BundleModel:
    """A bundle's inference, ready to segment NumPy images; made by :func:`load_bundle`.

    Attributes:
        bundle_root: the bundle folder.
        device: the torch device the network runs on.
        network, preprocessing, inferer, postprocessing: the components of the bundle's ``inference.json``
            (``postprocessing`` without its file writer).
    """

    def __init__(self, config: InferenceConfig) -> None:
        from ignite.engine import Engine
        from monai.engines.utils import default_prepare_batch

        from cellseg_monai.guards import check_weights

        parser = config.parser()
        self.bundle_root = config.root
        self.in_channels = config.in_channels
        self.device = parser.get_parsed_content("evaluator#device")
        self.network = parser.get_parsed_content("evaluator#network")
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.inferer = parser.get_parsed_content("evaluator#inferer")
        self.postprocessing, self._writer = _split_writer(parser.get_parsed_content("evaluator#postprocessing"))
        evaluator = parser.get("evaluator", {})
        has_own = "prepare_batch" in evaluator
        #: block-wise settings of a BlockwiseEvaluator (none: always whole, as MONAI's SupervisedEvaluator)
        self.blocks = _block_settings(parser, evaluator)
        self._prepare_batch = parser.get_parsed_content("evaluator#prepare_batch") if has_own else default_prepare_batch
        check_weights(parser.get_parsed_content("ckpt_path"), self.network.state_dict().keys())  # this network's?
        _checkpoint_loader(parser)(Engine(lambda engine, batch: None))  # the weights, as the bundle loads them
        self.network.eval()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.bundle_root)!r}, device={str(self.device)!r})"

    def _run(self, image: Any) -> dict:
        """One image through preprocessing, inferer and postprocessing, the steps and data of one
        ``SupervisedEvaluator`` iteration (batch of one, decollated before post-processing); an image larger than
        the evaluator's ``whole_image_size`` block by block, as :class:`~cellseg_monai.engines.BlockwiseEvaluator`
        segments it."""
        from functools import partial

        from cellseg_monai.engines.blockwise import segment_item, split_at_contract
        from cellseg_monai.inferers.blocks import needs_blocks, segment_in_blocks

        item = self.preprocessing({"image": image})
        segment = partial(
            segment_item,
            network=self.network,
            inferer=self.inferer,
            prepare_batch=self._prepare_batch,
            device=self.device,
        )
        if not needs_blocks(item["image"].shape[1:], self.blocks.get("whole_image_size")):
            return segment(item, postprocessing=self.postprocessing)
        decode, after = split_at_contract(self.postprocessing)
        size, margin = self.blocks["block_size"], self.blocks["block_margin"]
        return after(segment_in_blocks(item, partial(segment, postprocessing=decode), size, margin))

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Segment one image.

        Args:
            image: a NumPy array of any height and width: (H, W) grey, (H, W, C) or (C, H, W) with C <= 4, of a
                boolean, integer or floating dtype, in its own value range (the bundle normalises it). Channels are
                matched to the bundle's ``in_channels`` as for files (RGB → grey by the mean, grey → RGB repeated,
                alpha dropped).

        Returns:
            ``(labels, table)``: (H, W) instance labels, 0 = background, ``uint16`` (``int32`` above 65535 objects);
            and one entry per object as columns of equal length (NumPy arrays, sorted by id; ``pandas.DataFrame(
            table)`` makes a data frame): ``id``, ``area`` (px), ``centroid_y``, ``centroid_x`` (px), ``mean_intensity``
            (of the input image, channel mean), ``score`` (mean over the object of the method's probability or
            per-object score; absent when the method has none) and any per-object attributes the bundle writes
            (e.g. canonical_shape's affine parameters). The same values as the ``<id>.csv`` the CLI writes.

        Raises:
            DataError: an array that is not an image (3D stack, wrong dtype, channels that cannot be matched), as
                one line starting ``<array>:``.
        """
        from monai.utils import convert_to_numpy

        from cellseg_monai.postprocessing.measure import MEASUREMENT_COLUMNS, measure_instances, object_means

        data = self._run(_as_loaded_image(image, self.in_channels))
        writer = self._writer
        labels = convert_to_numpy(data[writer.keys[0]])[0]
        labels = labels.astype(np.uint16 if labels.size == 0 or labels.max() <= np.iinfo(np.uint16).max else np.int32)
        shown = data.get(writer.image_key) if writer.image_key is not None else None
        prob = data.get(writer.prob_key) if writer.prob_key is not None else None
        grey = None if shown is None else convert_to_numpy(shown).astype(np.float32, copy=False)
        prob = None if prob is None else convert_to_numpy(prob).astype(np.float32, copy=False).reshape(labels.shape)
        rows = measure_instances(labels, grey, prob)
        columns = [c for c in MEASUREMENT_COLUMNS if c != "score" or prob is not None]
        table = {
            c: np.asarray([row[c] for row in rows], dtype=np.int64 if c in ("id", "area") else np.float64)
            for c in columns
        }
        attributes = data.get(writer.attributes_key) if writer.attributes_key is not None else None
        if attributes is not None:
            means = object_means(labels, convert_to_numpy(attributes).astype(np.float32, copy=False), table["id"])
            for name, values in zip(writer.attribute_names, means, strict=True):
                table[name] = np.asarray(values, dtype=np.float64)
        return labels, table


def load_bundle(
    bundle: str | os.PathLike = "impartial",
    ckpt_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **config_overrides: object,
) -> BundleModel:
    """Load a bundle for segmentation from Python.

    Args:
        bundle: a bundle that comes with the package (``"impartial"``, ``"lacss"``, ``"canonical_shape"``,
            ``"partial_maskrcnn"``, ``"sparse_seunet"``, ``"supervised_unet"``; ``"imppartial"`` is an alias) or
            the path of a bundle folder (an unpacked model-zoo zip, your own copy).
        ckpt_path: weights to load, a plain state dict such as the ``model.pt`` training writes (default: the
            bundle's shipped ``models/model.pt``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (default: CUDA when present, else CPU).
        config_overrides: ids of the bundle's ``inference.json`` to change, e.g. ``prob_threshold=0.4``.

    Returns:
        A :class:`BundleModel`; ``labels, table = model.segment(image)``.

    Raises:
        UsageError, DataError: as :func:`inference_config` (one line naming the option or file); DataError also for
            weights of another network or other network settings (``network_def#...``).
    """
    return BundleModel(inference_config(bundle, ckpt_path, device, config_overrides))
