"""Old name of :mod:`cellseg_monai.transforms.instance_outputs` (it clashed with the :mod:`cellseg_monai.postprocessing`
package); kept so that existing imports and configs go on working."""

from __future__ import annotations

from cellseg_monai.transforms.instance_outputs import (
    InstanceOutputsd,
    ProbabilityToInstances,
    ProbabilityToInstancesd,
    labels_like,
)

__all__ = ["InstanceOutputsd", "ProbabilityToInstances", "ProbabilityToInstancesd", "labels_like"]
