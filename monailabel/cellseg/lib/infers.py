"""Inference of one cellseg-monai bundle through MONAI Label: the bundle's own ``configs/inference.json`` (its
pre-processing, network, shipped weights ``models/model.pt``, inferer and post-processing), minus the files its
``SaveInstancesd`` would write, returning what MONAI Label's writer needs to save the same instance labels.

What differs from MONAI Label's stock :class:`BundleInferTask` (which this class extends):

- **labels**: MONAI Label turns the keys of the network output's ``channel_def`` into label values (``int(key)``);
  our bundles describe raw network channels there, with range keys such as ``"0-1"`` that crash the server at start.
  The task reads the bundle through a derived copy of ``metadata.json`` (a temporary file, never in the bundle)
  whose output is the post-processed result: ``{"0": "background", "1": <label name>}``.
- **outputs**: the bundle's ``SaveInstancesd`` (label TIFF, overlay PNG, CSV per image) is taken out of the
  post-processing, and the bundle's ``output_dir`` points into the system's temporary folder as well, so a
  request never writes into ``bundles/<name>/``. The labels the saver would have written (its ``keys``) become the result.
- **result**: ``(H, W)`` ``uint16`` instance ids (0 background; ``uint32`` and TIFF above 65535 objects), cast
  exactly as ``SaveInstancesd`` casts them; handed to the writer transposed, ``(W, H)``, because MONAI Label's
  writer transposes 2D results back (it expects MONAI's ``(W, H)`` reader convention; without this the returned
  mask is the transpose of the bundle's). The result file is a PNG (TIFF for TIFF inputs).
- weights are loaded strictly (a checkpoint that does not match the network is an error, not a warning), and
  MONAI Label's ``Restored`` (resize back to the input size) is not added: the bundles already return the input
  size.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask

from cellseg_monai.contract import FG_PROB_KEY
from cellseg_monai.metrics import foreground_entropy
from cellseg_monai.transforms import SaveInstancesd

logger = logging.getLogger(__name__)

__all__ = ["CellSegBundleInferTask", "InstanceIdsForWriterd", "monailabel_metadata"]

#: extensions of the result file: TIFF inputs get a TIFF, every other input a PNG (16-bit grey)
_TIFF_SUFFIXES = (".tif", ".tiff")


def monailabel_metadata(metadata: dict[str, Any], label_name: str) -> dict[str, Any]:
    """The bundle's ``metadata.json`` as MONAI Label reads it: one output, the post-processed instance labels,
    whose ``channel_def`` names the label values (``{"0": "background", "1": label_name}``)."""
    meta = copy.deepcopy(metadata)
    fmt = meta.setdefault("network_data_format", {})
    result = copy.deepcopy(
        fmt.get("post_processed_outputs", {}).get("pred") or next(iter(fmt.get("outputs", {}).values()), {})
    )
    result.update(
        {
            "type": "image",
            "format": "labels",
            "num_channels": 1,
            "dtype": "uint16",
            "channel_def": {"0": "background", "1": label_name},
        }
    )
    fmt["outputs"] = {"pred": result}
    return meta


class _Constants(BundleConstants):
    """BundleInferTask reads ``os.path.join(bundle, "configs", metadata_json())``: an absolute path (the derived
    metadata, a temporary file) replaces the bundle's own file there."""

    def __init__(self, metadata_path: str) -> None:
        self._metadata_path = metadata_path

    def metadata_json(self) -> str:
        return self._metadata_path


class InstanceIdsForWriterd:
    """Last post-processing step: ``data[source_key]`` (``(1, H, W)`` or ``(H, W)`` integer-valued instance ids) →
    ``data[output_key]``, an ``(W, H)`` ``uint16`` array (``uint32`` above 65535) for MONAI Label's writer, which
    transposes it back to ``(H, W)``. Also chooses the result file type (``result_extension``: PNG, or TIFF for
    TIFF inputs and ``uint32`` ids, unless the request names one) and adds the object count to the result JSON —
    and, for methods with a foreground probability (``fg_prob``), the model's uncertainty about the image
    (:func:`cellseg_monai.metrics.foreground_entropy`, bits per pixel), which active learning ranks images by."""

    def __init__(self, source_key: str, output_key: str = "pred") -> None:
        self.source_key = source_key
        self.output_key = output_key

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        labels = d[self.source_key]
        labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if labels.ndim == 3 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.ndim != 2:
            raise ValueError(f"data[{self.source_key!r}] must be (1, H, W) instance labels, got {labels.shape}")
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
            raise TypeError(f"data[{self.source_key!r}] must hold instance ids, got dtype {labels.dtype}")
        if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"data[{self.source_key!r}] holds non-integer values; expected instance ids")
        if labels.size and labels.min() < 0:
            raise ValueError(f"data[{self.source_key!r}] holds negative values; expected instance ids >= 0")
        wide = bool(labels.size) and labels.max() > np.iinfo(np.uint16).max
        labels = labels.astype(np.uint32 if wide else np.uint16)

        d[self.output_key] = np.ascontiguousarray(labels.T)
        if not d.get("result_extension"):
            suffix = Path(str(d.get("image_path") or "")).suffix.lower()
            d["result_extension"] = ".tif" if wide or suffix in _TIFF_SUFFIXES else ".png"
        ids = np.unique(labels)
        result = dict(d.get("result") or {})
        result.update(
            {
                "instances": int(np.count_nonzero(ids)),
                "label_format": "instance ids, 0 background",
                "dtype": str(labels.dtype),
                "shape": [int(s) for s in labels.shape],
            }
        )
        fg = d.get(FG_PROB_KEY)
        if fg is not None and bool(((fg > 0) & (fg < 1)).any()):  # a probability, not a 0/1 mask
            result["uncertainty"] = foreground_entropy(fg)
        d["result"] = result
        return d


class CellSegBundleInferTask(BundleInferTask):
    """Serve ``bundles/<name>`` (``configs/inference.json`` + ``models/model.pt``) as one MONAI Label model.

    Args:
        path: the bundle folder.
        conf: the app's ``--conf`` options (``preload``).
        label_name: the name of the objects, shown by viewers (``/info`` labels and the result's ``label_names``).
        served: weights that replace the shipped ``models/model.pt`` once the file exists (a training made them);
            MONAI Label reloads the network when the file in use changes.
    """

    def __init__(
        self, path: str, conf: dict[str, str], label_name: str = "nucleus", served: str | None = None, **kwargs
    ):
        path = os.path.abspath(path)
        name = os.path.basename(path)
        with open(os.path.join(path, "configs", "metadata.json")) as f:
            metadata = json.load(f)
        # BundleInferTask reads the metadata in __init__ only: the derived copy lives just that long
        with tempfile.TemporaryDirectory(prefix=f"cellseg-monailabel-{name}-") as tmp:
            derived = os.path.join(tmp, "metadata.json")
            with open(derived, "w") as f:
                json.dump(monailabel_metadata(metadata, label_name), f, indent=2)
            super().__init__(
                path,
                conf,
                const=_Constants(derived),
                type=InferType.SEGMENTATION,
                post_filter=None,  # the bundle's saver is taken out in post_transforms, where its key is read
                add_post_restore=False,
                load_strict=True,
                **kwargs,
            )
        if not self.valid:
            return
        self.name = name
        # the saver never runs (post_transforms drops it); were one to run, it would write here, not in the bundle
        self.output_dir = os.path.join(tempfile.gettempdir(), "cellseg-monailabel", name)
        self.bundle_config["output_dir"] = self.output_dir
        if served:
            # get_path() takes the last existing path; MONAI Label's "model_filename" option would instead always
            # load models/<file> next to the first path (the shipped weights), so it is not offered
            self.path = [os.path.join(path, "models", "model.pt"), served]
            self._config.pop("model_filename", None)

    def post_transforms(self, data=None):
        post = super().post_transforms(data)
        post = list(post.transforms) if isinstance(post, Compose) else list(post)
        savers = [t for t in post if isinstance(t, SaveInstancesd)]
        if len(savers) != 1:
            raise ValueError(
                f"{self.bundle_config_path}: expected one cellseg_monai.transforms.SaveInstancesd in the "
                f"post-processing (it names the instance labels), found {len(savers)}"
            )
        source_key = savers[0].keys[0]
        post = [t for t in post if not isinstance(t, SaveInstancesd)]
        post.append(InstanceIdsForWriterd(source_key, output_key=self.output_label_key))
        return post
