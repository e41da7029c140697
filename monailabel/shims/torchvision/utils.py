"""``make_grid`` / ``save_image`` that MONAI Label imports at start; calling either says why it is unavailable."""

from __future__ import annotations

__all__ = ["make_grid", "save_image"]

_WHY = (
    "torchvision is not installed in the MONAI Label venv (monailabel/shims stands in for it, see its __init__): "
    "install a torchvision build that matches the venv's torch to use {name}"
)


def make_grid(*args, **kwargs):
    raise RuntimeError(_WHY.format(name="torchvision.utils.make_grid"))


def save_image(*args, **kwargs):
    raise RuntimeError(_WHY.format(name="torchvision.utils.save_image"))
