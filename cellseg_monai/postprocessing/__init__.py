"""Post-processing: probability maps and foreground masks → instance label images, the classic baseline,
per-object measurements."""

from __future__ import annotations

from cellseg_monai.postprocessing.canonical_merge import (
    affine_table,
    canonical_instances,
    canonical_point_instances,
    merge_groups,
    merge_point_groups,
)
from cellseg_monai.postprocessing.classic import ClassicBaseline, nuclei_are_dark, otsu_foreground, otsu_watershed
from cellseg_monai.postprocessing.instances import (
    WatershedParams,
    labels_on_border,
    mask_to_instances,
    probability_to_instances,
    remove_small_labels,
    seed_unseeded_components,
)
from cellseg_monai.postprocessing.interior_boundary import interior_boundary_to_instances
from cellseg_monai.postprocessing.mask_paste import paste_masks
from cellseg_monai.postprocessing.measure import MEASUREMENT_COLUMNS, measure_instances
from cellseg_monai.postprocessing.nms import (
    distance_nms,
)
from cellseg_monai.postprocessing.sparse_instances import (
    mask_iou_matrix,
    mask_nms,
    maskness,
    sparse_instances_to_labels,
)

__all__ = [
    "distance_nms",
    "paste_masks",
    "mask_iou_matrix",
    "mask_nms",
    "maskness",
    "sparse_instances_to_labels",
    "merge_groups",
    "merge_point_groups",
    "canonical_instances",
    "canonical_point_instances",
    "affine_table",
    "MEASUREMENT_COLUMNS",
    "ClassicBaseline",
    "WatershedParams",
    "mask_to_instances",
    "nuclei_are_dark",
    "measure_instances",
    "otsu_foreground",
    "otsu_watershed",
    "probability_to_instances",
    "labels_on_border",
    "remove_small_labels",
    "seed_unseeded_components",
    "interior_boundary_to_instances",
]
