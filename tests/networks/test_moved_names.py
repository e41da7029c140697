"""Old import paths of network parts that moved next to their network (or to ``cellseg_monai.targets``) still work,
with a ``DeprecationWarning``, and give the very objects of the new home."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = {
    "cellseg_monai.networks.centerness": {
        "CenternessModule": "cellseg_monai.networks.mask_rcnn.centerness",
        "ignore_matched_negatives": "cellseg_monai.networks.mask_rcnn.centerness",
        "instance_boxes": "cellseg_monai.targets.boxes",
        "pixel_anchors": "cellseg_monai.targets.boxes",
    },
    "cellseg_monai.networks.blocks.box_ops": {"box_iou": "cellseg_monai.networks.mask_rcnn.box_ops"},
    "cellseg_monai.networks.blocks.roi_align": {"roi_align": "cellseg_monai.networks.mask_rcnn.roi_align"},
    "cellseg_monai.networks.blocks.decomposed_attention": {
        "DecomposedSelfAttention": "cellseg_monai.networks.mask_rcnn.decomposed_attention"
    },
    "cellseg_monai.networks.blocks.implicit_shape": {
        "ImplicitShapeMLP": "cellseg_monai.networks.canonical_shape.implicit_shape"
    },
    "cellseg_monai.networks.blocks.lacss_lpn": {
        "LocationProposalHead": "cellseg_monai.networks.lacss.lpn",
        "encode_lpn_targets": "cellseg_monai.targets.locations",
        "decode_lpn": "cellseg_monai.targets.locations",
    },
    "cellseg_monai.networks.blocks.lacss_segmentor": {
        "LacssSegmentor": "cellseg_monai.networks.lacss.segmentor",
        "crop_patches": "cellseg_monai.targets.locations",
    },
    "cellseg_monai.networks.blocks": {"RoIAlign": "cellseg_monai.networks.mask_rcnn.roi_align"},
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_aliases_the_new_objects(old):
    for name in [m for m in sys.modules if m == old or m.startswith(old + ".")]:
        sys.modules.pop(name)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        mod = importlib.import_module(old)
    for name, new in MOVED[old].items():
        assert getattr(mod, name) is getattr(importlib.import_module(new), name), name


@pytest.mark.parametrize(
    "path",
    [
        "cellseg_monai.networks.lacss.Lacss",
        "cellseg_monai.networks.canonical_shape.CanonicalShapeNet",
        "cellseg_monai.networks.mask_rcnn.MaskRCNN",
    ],
)
def test_config_targets_of_networks_resolve(path):
    from monai.bundle import ConfigParser

    module, name = path.rsplit(".", 1)
    parser = ConfigParser({"imports": ["$import cellseg_monai"], "x": f"${path}"})
    assert parser.get_parsed_content("x") is getattr(importlib.import_module(module), name)
