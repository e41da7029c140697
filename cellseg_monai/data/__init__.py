"""data: dataset layouts and datalists, image/label readers, the embedded sample data."""

from __future__ import annotations

from cellseg_monai.data.balance import IMAGE_KINDS, KindBalancedSampler, image_kind, kind_weights
from cellseg_monai.data.io import (
    IMAGE_SUFFIXES,
    DataError,
    is_image_file,
    read_image,
    read_labels,
    validate_labels,
    write_labels,
)
from cellseg_monai.data.layouts import SPLITS, detect_layout, list_images, load_datalist, split_ids
from cellseg_monai.data.sample import SAMPLE_DIR, best_crop, make_sample_data, sample_data_dir

__all__ = [
    "IMAGE_KINDS",
    "IMAGE_SUFFIXES",
    "KindBalancedSampler",
    "SAMPLE_DIR",
    "SPLITS",
    "DataError",
    "best_crop",
    "detect_layout",
    "image_kind",
    "is_image_file",
    "kind_weights",
    "list_images",
    "load_datalist",
    "make_sample_data",
    "read_image",
    "read_labels",
    "sample_data_dir",
    "split_ids",
    "validate_labels",
    "write_labels",
]
