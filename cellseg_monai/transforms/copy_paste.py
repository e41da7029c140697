"""Instance-aware copy-paste augmentation (Prytula 2023, Sec. 4.4.1; Ghiasi et al., "Simple Copy-Paste is a Strong
Data Augmentation Method for Instance Segmentation", CVPR 2021).

Objects (image pixels + mask) of *other* training images are transformed — scaled, rotated, elastically deformed
and placed at a random position (the shift) — and pasted into the current image with Gaussian-blurred edges:
``image = α · object + (1 - α) · image`` with ``α = gaussian_filter(mask, blur_sigma)`` (snapped to 0 / 1 within
1e-3). A placement is accepted
only when the pasted object overlaps the existing foreground by at most ``max_overlap`` of its own area AND hides
at most ``max_overlap`` of any existing object; otherwise up to ``max_tries`` other positions are tried. The labels
stay consistent: the pasted mask gets a new id (max id + 1) and overwrites what it covers (it lies on top).

Where the objects come from: the transform keeps a bank of the objects of the images it has seen (at most
``bank_size``, the oldest dropped first; at most ``objects_per_image`` random objects per image), and pastes only
objects whose source id differs from the current image's. In a training pipeline the bank fills during the first
epoch, so every image soon receives objects from others; each data-loader worker keeps its own bank. Sources can
also be given up front with :meth:`CopyPaste.add_source`.

Use it on whole, normalised images and instance labels (before cropping): the image values of pasted objects are
taken from other images as they are, so all images must share one intensity range (e.g. after
``ScaleIntensityRangePercentilesd`` to [0, 1]).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage as ndi

__all__ = ["CopyPaste", "CopyPasted", "paste_object"]


def paste_object(
    image: np.ndarray,
    labels: np.ndarray,
    obj_image: np.ndarray,
    obj_mask: np.ndarray,
    top_left: tuple[int, int],
    blur_sigma: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste one object at ``top_left`` (no checks of overlap; see :class:`CopyPaste`).

    Args:
        image: (C, H, W) float image.
        labels: (H, W) integer labels.
        obj_image: (C, h, w) object pixels.
        obj_mask: (h, w) bool object mask.
        top_left: (y, x) of the object's box in the image; the box must lie inside the image.
        blur_sigma: Gaussian sigma (px) of the blending weight; 0 pastes with hard edges.

    Returns:
        New ``(image, labels)``: blended image; labels with the mask set to ``labels.max() + 1``.
    """
    y, x = top_left
    h, w = obj_mask.shape
    if y < 0 or x < 0 or y + h > labels.shape[0] or x + w > labels.shape[1]:
        raise ValueError(f"object box {h}x{w} at {top_left} does not fit into a {labels.shape} image.")
    alpha = ndi.gaussian_filter(obj_mask.astype(np.float64), blur_sigma) if blur_sigma > 0 else obj_mask.astype(float)
    alpha = np.where(alpha < 1e-3, 0.0, np.where(alpha > 1 - 1e-3, 1.0, alpha))  # exact outside the blurred edge
    image, labels = image.copy(), labels.copy()
    region = image[:, y : y + h, x : x + w]
    image[:, y : y + h, x : x + w] = (alpha * obj_image + (1 - alpha) * region).astype(image.dtype)
    labels[y : y + h, x : x + w][obj_mask] = labels.max() + 1
    return image, labels


def _plain(source: Hashable) -> str | int | None:
    """A source id as a checkpoint can hold it (``torch.load(..., weights_only=True)``)."""
    return source if source is None or isinstance(source, (str, int)) else str(source)


class CopyPaste(Randomizable):
    """Array copy-paste: ``__call__(image (C, H, W), labels (1, H, W), source_id)`` → ``(image, labels)``.

    Args:
        prob: probability that an image receives pasted objects.
        max_objects: up to this many objects (uniform 1..max_objects) are pasted.
        scale_range: (min, max) isotropic scale factor.
        rotate_range: maximal rotation (radians), uniform in [-rotate_range, rotate_range].
        elastic_alpha: maximal elastic displacement (px); 0 disables the deformation.
        elastic_sigma: smoothness (px) of the displacement field.
        blur_sigma: Gaussian sigma (px) of the blended edge.
        max_overlap: bound of the overlap ratio (see the module docstring), in [0, 1].
        bank_size: objects kept for pasting.
        objects_per_image: objects taken from each image into the bank.
        min_size: objects smaller than this (px, before or after transforming) are not used.
        max_tries: placements tried per object.
    """

    def __init__(
        self,
        prob: float = 0.5,
        max_objects: int = 5,
        scale_range: Sequence[float] = (0.75, 1.25),
        rotate_range: float = math.pi,
        elastic_alpha: float = 2.0,
        elastic_sigma: float = 3.0,
        blur_sigma: float = 1.0,
        max_overlap: float = 0.1,
        bank_size: int = 512,
        objects_per_image: int = 20,
        min_size: int = 16,
        max_tries: int = 10,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or not 0.0 <= max_overlap <= 1.0:
            raise ValueError(f"prob and max_overlap must be in [0, 1], got {prob} and {max_overlap}.")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {scale_range}.")
        if min(max_objects, bank_size, objects_per_image, max_tries) < 1:
            raise ValueError("max_objects, bank_size, objects_per_image and max_tries must be >= 1.")
        if min(elastic_alpha, elastic_sigma, blur_sigma, rotate_range) < 0:
            raise ValueError("elastic_alpha, elastic_sigma, blur_sigma and rotate_range must be >= 0.")
        self.prob, self.max_objects = float(prob), int(max_objects)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rotate_range, self.elastic_alpha, self.elastic_sigma = float(rotate_range), elastic_alpha, elastic_sigma
        self.blur_sigma, self.max_overlap = float(blur_sigma), float(max_overlap)
        self.objects_per_image, self.min_size, self.max_tries = int(objects_per_image), int(min_size), int(max_tries)
        self.bank: deque[tuple[Hashable, np.ndarray, np.ndarray]] = deque(maxlen=int(bank_size))

    def randomize(self, data: Any = None) -> None:  # randomness is drawn inside __call__ from self.R
        pass

    def state_dict(self) -> dict[str, Any]:
        """The bank, for a training checkpoint: a resumed training pastes what the uninterrupted one would have.

        Returns:
            ``{"bank": [{"source": id, "image": (C, h, w) float32 tensor, "mask": (h, w) bool tensor}, ...]}``.
        """
        return {
            "bank": [
                {"source": _plain(source), "image": torch.from_numpy(image), "mask": torch.from_numpy(mask)}
                for source, image, mask in self.bank
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the bank by that of :meth:`state_dict`."""
        self.bank.clear()
        for entry in state["bank"]:
            self.bank.append((entry["source"], entry["image"].numpy(), entry["mask"].numpy()))

    def add_source(self, image: Any, labels: Any, source_id: Hashable) -> None:
        """Put up to ``objects_per_image`` objects of one image ((C, H, W), (1, H, W) or (H, W)) into the bank."""
        image, labels = (
            convert_to_numpy(image, wrap_sequence=True).astype(np.float32),
            convert_to_numpy(labels, wrap_sequence=True),
        )
        labels = labels[0] if labels.ndim == 3 else labels
        margin = int(math.ceil(2 * self.blur_sigma))
        objects = [o for o in ndi.find_objects(labels.astype(np.int64)) if o is not None]
        ids = [i + 1 for i, o in enumerate(ndi.find_objects(labels.astype(np.int64))) if o is not None]
        order = self.R.permutation(len(ids))[: self.objects_per_image]
        for k in order:
            sl, oid = objects[k], ids[k]
            ys = slice(max(sl[0].start - margin, 0), min(sl[0].stop + margin, labels.shape[0]))
            xs = slice(max(sl[1].start - margin, 0), min(sl[1].stop + margin, labels.shape[1]))
            mask = labels[ys, xs] == oid
            if mask.sum() >= self.min_size:
                self.bank.append((source_id, image[:, ys, xs].copy(), mask))

    def _transform(self, obj_image: np.ndarray, obj_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale, rotate and elastically deform one object; returns the tight box (+ blur margin)."""
        scale = self.R.uniform(*self.scale_range)
        angle = self.R.uniform(-self.rotate_range, self.rotate_range)
        h, w = obj_mask.shape
        side = int(math.ceil(scale * math.hypot(h, w))) + 2
        c, s = math.cos(angle), math.sin(angle)
        matrix = np.array([[c, -s], [s, c]]) / scale  # output coordinates → input coordinates
        offset = np.array([(h - 1) / 2, (w - 1) / 2]) - matrix @ np.array([(side - 1) / 2, (side - 1) / 2])
        coords = np.mgrid[:side, :side].reshape(2, -1).astype(np.float64)
        coords = matrix @ coords + offset[:, None]
        if self.elastic_alpha > 0:
            field = self.R.normal(size=(2, side, side))
            field = np.stack([ndi.gaussian_filter(f, self.elastic_sigma) for f in field])
            field *= self.elastic_alpha / max(np.abs(field).max(), 1e-12)
            coords = coords + field.reshape(2, -1)
        mask = ndi.map_coordinates(obj_mask.astype(np.float32), coords, order=1, cval=0.0).reshape(side, side) > 0.5
        img = np.stack([ndi.map_coordinates(ch, coords, order=1, mode="nearest") for ch in obj_image])
        img = img.reshape(-1, side, side)
        if not mask.any():
            return img[:, :0, :0], mask[:0, :0]
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        margin = int(math.ceil(2 * self.blur_sigma))
        ys = slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, side))
        xs = slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, side))
        return img[:, ys, xs], mask[ys, xs]

    def _fits(self, labels: np.ndarray, mask: np.ndarray, y: int, x: int) -> bool:
        covered = labels[y : y + mask.shape[0], x : x + mask.shape[1]][mask]
        if np.count_nonzero(covered) > self.max_overlap * mask.sum():
            return False
        hidden = np.bincount(covered, minlength=labels.max() + 1)[1:]
        if not hidden.any():
            return True
        areas = np.bincount(labels.ravel(), minlength=labels.max() + 1)[1:]
        return bool(np.all(hidden <= self.max_overlap * np.maximum(areas, 1)))

    def __call__(self, image: Any, labels: Any, source_id: Hashable = None) -> tuple[Any, Any]:
        img, lab = convert_to_numpy(image, wrap_sequence=True), convert_to_numpy(labels, wrap_sequence=True)
        if img.ndim != 3 or lab.ndim != 3 or lab.shape[0] != 1 or img.shape[1:] != lab.shape[1:]:
            raise ValueError(
                f"CopyPaste expects image (C, H, W) and labels (1, H, W) of one size, got {img.shape}, {lab.shape}."
            )
        if self.prob == 0:
            return image, labels
        if not np.issubdtype(lab.dtype, np.integer):
            lab = lab.astype(np.int64)
        out_img, out_lab = img.astype(np.float32), lab[0].astype(np.int64)
        others = [i for i, entry in enumerate(self.bank) if source_id is None or entry[0] != source_id]
        if others and self.R.rand() < self.prob:
            for pick in self.R.choice(others, size=self.R.randint(1, self.max_objects + 1)):
                _, obj_img, obj_mask = self.bank[pick]
                if obj_img.shape[0] != out_img.shape[0]:
                    raise ValueError(f"bank object has {obj_img.shape[0]} channels, the image {out_img.shape[0]}.")
                t_img, t_mask = self._transform(obj_img, obj_mask)
                mh, mw = t_mask.shape
                if t_mask.sum() < self.min_size or mh > out_lab.shape[0] or mw > out_lab.shape[1]:
                    continue
                for _ in range(self.max_tries):
                    y = self.R.randint(0, out_lab.shape[0] - mh + 1)
                    x = self.R.randint(0, out_lab.shape[1] - mw + 1)
                    if self._fits(out_lab, t_mask, y, x):
                        out_img, out_lab = paste_object(out_img, out_lab, t_img, t_mask, (y, x), self.blur_sigma)
                        break
        self.add_source(img, lab, source_id)
        new_img, *_ = convert_to_dst_type(out_img, dst=image, dtype=img.dtype)
        new_lab, *_ = convert_to_dst_type(out_lab[None], dst=labels, dtype=lab.dtype)
        return new_img, new_lab


class CopyPasted(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`CopyPaste`.

    Args:
        keys: (image key, label key).
        id_key: key of the image id in the data dict (the datalists' ``"id"``); objects are never pasted into the
            image they came from. Without it, the label's ``meta["id"]`` is used.
        prob, max_objects, scale_range, rotate_range, elastic_alpha, elastic_sigma, blur_sigma, max_overlap,
            bank_size, objects_per_image, min_size, max_tries: see :class:`CopyPaste` (``prob`` = 0: identity).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        id_key: str = "id",
        prob: float = 0.5,
        max_objects: int = 5,
        scale_range: Sequence[float] = (0.75, 1.25),
        rotate_range: float = math.pi,
        elastic_alpha: float = 2.0,
        elastic_sigma: float = 3.0,
        blur_sigma: float = 1.0,
        max_overlap: float = 0.1,
        bank_size: int = 512,
        objects_per_image: int = 20,
        min_size: int = 16,
        max_tries: int = 10,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 2:
            raise ValueError(f"CopyPasted needs keys (image key, label key), got {self.keys}.")
        self.id_key = id_key
        self.copy_paste = CopyPaste(
            prob, max_objects, scale_range, rotate_range, elastic_alpha, elastic_sigma, blur_sigma, max_overlap,
            bank_size, objects_per_image, min_size, max_tries,
        )  # fmt: skip

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> CopyPasted:
        super().set_random_state(seed, state)
        self.copy_paste.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_key, label_key = self.keys
        source = d.get(self.id_key)
        if source is None:
            source = getattr(d[label_key], "meta", {}).get("id")
        d[image_key], d[label_key] = self.copy_paste(d[image_key], d[label_key], source)
        return d
