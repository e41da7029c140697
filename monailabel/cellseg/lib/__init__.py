"""Tasks of the cellseg MONAI Label app (MONAI Label imports ``lib`` from the app folder, as in its sample apps)."""

from .infers import CellSegBundleInferTask, InstanceIdsForWriterd, monailabel_metadata

__all__ = ["CellSegBundleInferTask", "InstanceIdsForWriterd", "monailabel_metadata"]
