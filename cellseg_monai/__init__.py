"""cellseg_monai: shared library of the cellseg-monai bundles (weakly supervised cell instance segmentation).

Subpackages follow MONAI's layout (``monai/apps/pathology``): ``data``, ``annotations``, ``transforms``,
``networks``, ``losses``, ``metrics``, ``inferers``, ``postprocessing``, ``engines``, ``handlers``, plus
``bundle`` (helpers that bundle configs call). They are imported here so that bundle-config expressions such as
``$cellseg_monai.data.sample_data_dir()`` work after ``import cellseg_monai``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import (  # noqa: E402
    annotations,
    bundle,
    data,
    engines,
    handlers,
    inferers,
    losses,
    metrics,
    networks,
    postprocessing,
    transforms,
)

__all__ = [
    "__version__",
    "annotations",
    "bundle",
    "data",
    "engines",
    "handlers",
    "inferers",
    "losses",
    "metrics",
    "networks",
    "postprocessing",
    "transforms",
]
