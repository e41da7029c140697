"""LACSS (Shrestha, Kuang & Yu, 2023) and its parts: ``network.py`` (:class:`Lacss`, its backbone and the
training-only boundary network), ``lpn.py`` (location proposal head), ``segmentor.py`` (per-location FCN on local
crops, mask pasting). The LPN targets, their decoding and the crop windows, which the loss shares, are in
:mod:`cellseg_monai.targets.locations`."""

from __future__ import annotations

from .lpn import LocationProposalHead
from .network import Lacss, LacssAuxNet, LacssBackbone, match_locations
from .segmentor import LacssSegmentor, paste_instances

__all__ = [
    "Lacss",
    "LacssAuxNet",
    "LacssBackbone",
    "LacssSegmentor",
    "LocationProposalHead",
    "match_locations",
    "paste_instances",
]
