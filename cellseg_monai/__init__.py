"""cellseg_monai: shared library of the cellseg-monai bundles (weakly supervised cell instance segmentation).

Subpackages follow MONAI's layout (``monai/apps/pathology``): ``data``, ``annotations``, ``transforms``,
``networks``, ``losses``, ``metrics``, ``inferers``, ``postprocessing``, ``engines``, ``handlers``, ``optimizers``,
plus ``bundle`` (helpers that bundle configs call). They are imported here so that bundle-config expressions such as
``$cellseg_monai.data.sample_data_dir()`` work after ``import cellseg_monai``.

For use from Python without configs: ``model = cellseg_monai.load_bundle("impartial")`` then
``labels, table = model.segment(image)`` (:mod:`cellseg_monai.api`); ``cellseg_monai.find_bundle(name)`` is the
folder of a bundle that comes with the package.
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
    optimizers,
    postprocessing,
    transforms,
)
from .api import BundleModel, load_bundle  # noqa: E402
from .bundle.paths import find_bundle  # noqa: E402

__all__ = [
    "__version__",
    "BundleModel",
    "find_bundle",
    "load_bundle",
    "annotations",
    "bundle",
    "data",
    "engines",
    "handlers",
    "inferers",
    "losses",
    "metrics",
    "networks",
    "optimizers",
    "postprocessing",
    "transforms",
]
