"""Write the inference outputs of one image: instance label TIFF, overlay PNG and per-object measurement CSV.

Every file is written atomically (:func:`cellseg_monai.data.io.atomic_path`): an interrupted run leaves complete
files or none, never a half-written TIFF, PNG or CSV.
"""

from __future__ import annotations

import csv
import logging
import struct
import zlib
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy
from skimage.color import hsv2rgb
from skimage.segmentation import find_boundaries

from cellseg_monai.data.io import atomic_path
from cellseg_monai.postprocessing.measure import MEASUREMENT_COLUMNS, count_instances, measure_instances, object_means

__all__ = ["SaveInstancesd", "instance_overlay", "output_names", "write_png_rgb"]

logger = logging.getLogger(__name__)

_GOLDEN_RATIO_CONJUGATE = 0.618033988749895
# boundary hues from orange to cyan: they stand out on grey, on fluorescence and on purple/pink (H&E) stains
_HUE_LOW, _HUE_HIGH = 0.05, 0.5


#: file name endings of the three outputs of one image: ``<id>.tif``, ``<id>_overlay.png``, ``<id>.csv``
_LABELS, _OVERLAY, _MEASUREMENTS = ".tif", "_overlay.png", ".csv"
#: pixels per channel from which the display percentiles of the overlay are taken (see ``_normalise``)
_PERCENTILE_SAMPLES = 2**18
#: pixels per block of rows in which the overlay is drawn and compressed
_BLOCK_PIXELS = 1 << 20


def output_names(image_id: str, overlay: bool = True, measurements: bool = True) -> list[str]:
    """File names :class:`SaveInstancesd` writes for one image: ``<id>.tif`` [, ``<id>_overlay.png``] [, ``<id>.csv``]."""
    endings = [_LABELS] + [_OVERLAY] * overlay + [_MEASUREMENTS] * measurements
    return [image_id + ending for ending in endings]


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def _display_range(x: np.ndarray, lower: float = 1.0, upper: float = 99.8) -> tuple[float, float]:
    """The ``lower`` and ``upper`` percentiles of ``x`` ((H, W), or (C, H, W) taken jointly) for display.

    For display only, so the percentiles of a large image are taken on a regular sample of about
    ``_PERCENTILE_SAMPLES`` pixels per channel (every s-th row and column); the displayed values stay within 2 grey
    levels of those of the exact percentiles (``tests/transforms/test_save_instances.py``).
    """
    return _percentiles(_sample(x), lower, upper)


def _percentiles(sample: np.ndarray, lower: float = 1.0, upper: float = 99.8) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(sample, dtype=np.float32), [lower, upper])
    return float(lo), float(hi)


def _sample(x: np.ndarray) -> np.ndarray:
    """Every s-th row and column of ``x`` (..., H, W): about ``_PERCENTILE_SAMPLES`` pixels per channel."""
    step = max(1, int(np.sqrt(x.shape[-1] * x.shape[-2] / _PERCENTILE_SAMPLES)))
    return x[..., ::step, ::step]


def _to_uint8(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x`` mapped from [lo, hi] to 0..255 (clipped, rounded) as uint8; a constant image (hi <= lo) maps to 0."""
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    y = np.array(x, dtype=np.float32)  # a copy of one block of rows, worked on in place
    y -= np.float32(lo)
    y *= np.float32(1.0 / (hi - lo))
    np.clip(y, 0.0, 1.0, out=y)
    y *= 255
    return np.rint(y, out=y).astype(np.uint8)


def _row_blocks(h: int, w: int) -> list[tuple[int, int]]:
    rows = max(1, _BLOCK_PIXELS // max(w, 1))
    return [(r, min(h, r + rows)) for r in range(0, h, rows)]


def _display_rgb(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) or (C, H, W) image of any range → (H, W, 3) uint8 RGB for display, built in blocks of rows (no
    image-sized float copy).

    One channel (or more than three) is shown grey (the channel mean); three channels as RGB normalised jointly
    (keeps the colour balance of H&E); two channels as red and green, each normalised on its own. None gives black.
    """
    rgb = np.zeros((*shape, 3), dtype=np.uint8)
    if image is None:
        return rgb
    if image.ndim == 2:
        image = image[None]
    c = image.shape[0]
    if c in (2, 3):
        ranges = [_display_range(image)] * 3 if c == 3 else [_display_range(image[0]), _display_range(image[1])]
        for r0, r1 in _row_blocks(*shape):
            for i, (lo, hi) in enumerate(ranges):
                rgb[r0:r1, :, i] = _to_uint8(image[i, r0:r1], lo, hi)
        return rgb
    lo, hi = _percentiles(_sample(image).mean(axis=0, dtype=np.float32))  # the channel mean, sampled
    for r0, r1 in _row_blocks(*shape):
        rgb[r0:r1] = _to_uint8(image[:, r0:r1].mean(axis=0, dtype=np.float32), lo, hi)[..., None]
    return rgb


def instance_overlay(labels: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """Draw the boundary of each instance, one colour per instance, on the image.

    Args:
        labels: (H, W) integer instance labels, 0 = background.
        image: (H, W) or channel-first (C, H, W) image of any range (percentile-normalised for display, see
            ``_display_rgb``), or None for a black background.

    Returns:
        (H, W, 3) uint8 RGB image. Boundary pixels (``skimage.segmentation.find_boundaries``, mode "inner") of
        object ``i`` get a fully saturated hue between orange and cyan, ``0.05 + 0.45 · frac(i · 0.618…)`` (golden-ratio
        steps, so neighbouring ids differ in colour; no blue or magenta, which vanish on H&E). Drawn in blocks of
        rows (with one row of context each), so memory stays near the output's own size.
    """
    out = _display_rgb(image, labels.shape)
    h = labels.shape[0]
    for r0, r1 in _row_blocks(*labels.shape):
        a, b = max(0, r0 - 1), min(h, r1 + 1)
        part = labels[a:b]
        boundary = (find_boundaries(part, mode="inner") & (part > 0))[r0 - a : r0 - a + (r1 - r0)]
        ids = labels[r0:r1][boundary].astype(np.float64)
        if not ids.size:
            continue
        hue = _HUE_LOW + (_HUE_HIGH - _HUE_LOW) * ((ids * _GOLDEN_RATIO_CONJUGATE) % 1.0)
        hsv = np.stack([hue, np.ones_like(ids), np.ones_like(ids)], axis=-1)
        out[r0:r1][boundary] = np.round(hsv2rgb(hsv[None])[0] * 255).astype(np.uint8)
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_rgb(path: str | Path, rgb: np.ndarray, level: int = 1) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG: no row filter, zlib ``level``.

    Pillow tries every PNG row filter for each row, which costs more than the compression itself; the overlays
    (flat backgrounds, thin coloured lines) compress well without a filter (``benchmarks/speed.py`` times the writing
    as part of the post-processing).
    """
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 image, got shape {rgb.shape} and dtype {rgb.dtype}.")
    h, w, _ = rgb.shape
    compressor = zlib.compressobj(level)
    parts = []
    for r0, r1 in _row_blocks(h, 3 * w):  # a block of rows at a time: no image-sized copy
        rows = np.zeros((r1 - r0, 1 + 3 * w), dtype=np.uint8)  # each row: filter byte 0, then R, G, B of every pixel
        rows[:, 1:] = rgb[r0:r1].reshape(r1 - r0, 3 * w)
        parts.append(compressor.compress(rows.tobytes()))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 (RGB), deflate, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", header))
        f.write(_png_chunk(b"IDAT", b"".join(parts)))
        f.write(_png_chunk(b"IEND", b""))


class SaveInstancesd(MapTransform):
    """Write, for one (decollated) data dict, ``<output_dir>/<id>.tif``, ``<id>_overlay.png`` and ``<id>.csv``.

    - ``<id>.tif``: the instance labels, (H, W) uint16 (uint32 when an id exceeds 65535), 0 = background.
    - ``<id>_overlay.png``: (H, W, 3) uint8, the image with instance boundaries in colour (:func:`instance_overlay`).
    - ``<id>.csv``: one row per object, columns ``id,area,centroid_y,centroid_x,mean_intensity,score``
      (:func:`cellseg_monai.postprocessing.measure.measure_instances`; score is 1.0 without a probability map).

    The id is ``data[keys].meta["id"]``, else the stem of its ``meta["filename_or_obj"]``, else the same two
    looked up in the image's meta. The data dict is returned unchanged; one log line (INFO) is written per image.

    Args:
        keys: the key of the (1, H, W) integer (or integer-valued float) instance labels — exactly one key.
        output_dir: folder to write into; created when missing.
        image_key: key of the (C, H, W) or (H, W) image (any range), used for the overlay and mean intensities;
            None (or a key absent from the data) gives a black overlay and NaN mean intensities.
        prob_key: key of the (1, H, W) foreground probability whose mean over an object is its score; None, or a
            key absent from the data, gives score 1.0.
        overlay: write the overlay PNG.
        measurements: write the measurement CSV.
        attributes_key: key of (F, H, W) per-instance attributes painted over each instance's pixels (e.g. the
            affine parameters that :class:`~cellseg_monai.inferers.TiledInstanceInferer` stitches); each object's
            value (mean over its pixels) becomes an extra CSV column. None, or a key absent from the data: none.
        attribute_names: the F column names, in channel order.
        allow_missing_keys: skip (write nothing) when the label key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | Path = "./predictions",
        image_key: str | None = "image",
        prob_key: str | None = "fg_prob",
        overlay: bool = True,
        measurements: bool = True,
        attributes_key: str | None = None,
        attribute_names: Sequence[str] = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SaveInstancesd writes one label image per data dict; got keys {self.keys}.")
        clash = set(attribute_names) & set(MEASUREMENT_COLUMNS)
        if clash or len(set(attribute_names)) != len(attribute_names):
            raise ValueError(
                f"attribute_names must be unique and differ from {MEASUREMENT_COLUMNS}; got {attribute_names}."
            )
        self.attributes_key = attributes_key
        self.attribute_names = tuple(attribute_names)
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.prob_key = prob_key
        self.overlay = overlay
        self.measurements = measurements

    def _image_id(self, data: Mapping[Hashable, object], key: Hashable) -> str:
        for source in (key, self.image_key):
            meta = getattr(data.get(source), "meta", None) if source is not None else None
            if not meta:
                continue
            if meta.get("id"):
                image_id = str(meta["id"])
            elif meta.get("filename_or_obj"):
                image_id = Path(str(meta["filename_or_obj"])).stem
            else:
                continue
            if image_id in (".", "..") or "/" in image_id or "\\" in image_id:
                raise ValueError(f"Image id {image_id!r} (from data[{source!r}].meta) cannot be used as a file name.")
            return image_id
        raise ValueError(
            f"Cannot name the output: neither data[{key!r}].meta nor data[{self.image_key!r}].meta has an 'id' or "
            "'filename_or_obj' entry (load images with cellseg_monai's loaders, which set both)."
        )

    def _labels(self, data: Mapping[Hashable, object], key: Hashable, image_id: str) -> np.ndarray:
        labels = convert_to_numpy(data[key], wrap_sequence=True)
        if labels.ndim != 3 or labels.shape[0] != 1:
            raise ValueError(f"{image_id}: data[{key!r}] must be (1, H, W) instance labels, got {labels.shape}.")
        labels = labels[0]
        if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
            raise TypeError(f"{image_id}: data[{key!r}] must hold integer instance ids, got dtype {labels.dtype}.")
        if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"{image_id}: data[{key!r}] holds non-integer values; expected instance labels.")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{image_id}: data[{key!r}] holds negative values; expected instance labels >= 0.")
        dtype = np.uint16 if labels.size == 0 or labels.max() <= np.iinfo(np.uint16).max else np.uint32
        return labels.astype(dtype)

    def _optional(self, data: Mapping[Hashable, object], key: str | None) -> np.ndarray | None:
        if key is None or key not in data:
            return None
        value = data[key]
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise TypeError(f"data[{key!r}] must be a loaded array or tensor, got {type(value).__name__}.")
        return convert_to_numpy(value, wrap_sequence=True).astype(np.float32, copy=False)

    def _add_attributes(self, data: Mapping[Hashable, object], labels: np.ndarray, rows: list, image_id: str) -> list:
        """Add each object's attribute values (mean over its pixels) to its measurement row; the column names."""
        attrs = self._optional(data, self.attributes_key)
        if attrs is None:
            return []
        if attrs.ndim != 3 or attrs.shape[1:] != labels.shape or attrs.shape[0] != len(self.attribute_names):
            raise ValueError(
                f"{image_id}: data[{self.attributes_key!r}] has shape {attrs.shape}; expected "
                f"({len(self.attribute_names)}, {labels.shape[0]}, {labels.shape[1]}) for attribute_names "
                f"{self.attribute_names}."
            )
        means = object_means(labels, attrs, [int(row["id"]) for row in rows])
        for name, values in zip(self.attribute_names, means, strict=True):
            for row, value in zip(rows, values, strict=True):
                row[name] = float(value)
        return list(self.attribute_names)

    def _write_overlay(self, image_id: str, labels: np.ndarray, image: np.ndarray | None) -> None:
        with atomic_path(self.output_dir / (image_id + _OVERLAY)) as tmp:
            write_png_rgb(tmp, instance_overlay(labels, image))

    def __call__(self, data: Mapping[Hashable, object]) -> Mapping[Hashable, object]:
        for key in self.key_iterator(data):
            image_id = self._image_id(data, key)
            labels = self._labels(data, key, image_id)
            image = self._optional(data, self.image_key)
            prob = self._optional(data, self.prob_key)
            if image is not None and (image.ndim not in (2, 3) or image.shape[-2:] != labels.shape):
                raise ValueError(
                    f"{image_id}: labels are {labels.shape[0]}x{labels.shape[1]} (H x W) but data[{self.image_key!r}]"
                    f" has shape {image.shape}; expected (C, H, W) or (H, W) with the same H x W."
                )
            if prob is not None:
                if prob.ndim == 3 and prob.shape[0] == 1:
                    prob = prob[0]
                if prob.shape != labels.shape:
                    raise ValueError(
                        f"{image_id}: labels are {labels.shape[0]}x{labels.shape[1]} (H x W) but "
                        f"data[{self.prob_key!r}] has shape {prob.shape}; expected (1, H, W) with the same H x W."
                    )

            # the overlay (drawing + PNG compression) in a second thread while this one writes the labels and the
            # measurements: zlib and most NumPy kernels release the GIL, and the network's threads are idle here
            with ThreadPoolExecutor(max_workers=1) as pool:
                overlay = pool.submit(self._write_overlay, image_id, labels, image) if self.overlay else None
                with atomic_path(self.output_dir / (image_id + _LABELS)) as tmp:
                    tifffile.imwrite(tmp, labels, compression="zlib")
                if self.measurements:
                    rows = measure_instances(labels, image, prob)
                    columns = list(MEASUREMENT_COLUMNS) + self._add_attributes(data, labels, rows, image_id)
                    with atomic_path(self.output_dir / (image_id + _MEASUREMENTS)) as tmp:
                        _write_csv(tmp, columns, rows)
                if overlay is not None:
                    overlay.result()  # its error, if any, is raised here
            written = output_names(image_id, self.overlay, self.measurements)
            n_objects = count_instances(labels)
            logger.info("%s: %d objects -> %s in %s", image_id, n_objects, ", ".join(written), self.output_dir)
        return data
