"""How unsure a model is about an image, from its own output: for choosing the next image to annotate.

:func:`foreground_entropy` is the mean binary entropy of the foreground probability p over the image's pixels,

    H = mean over pixels of  -(p log2 p + (1 - p) log2 (1 - p))    (bits; 0 log 0 = 0)

0 where the model is certain of every pixel (p = 0 or 1), 1 where it cannot tell (p = 0.5 everywhere). It needs
no label. For ImPartial, p = 1 - P(background) of its mixture classes; for the other methods with a foreground
probability (:data:`cellseg_monai.contract.FG_PROB_KEY`), that map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.utils import convert_to_numpy

__all__ = ["foreground_entropy"]


def foreground_entropy(prob: Any) -> float:
    """Mean binary entropy, in bits, of a foreground probability map ((H, W) or (1, H, W), values in [0, 1]).

    Raises:
        ValueError: values outside [0, 1], NaN, or an empty map.
    """
    p = convert_to_numpy(prob).astype(np.float64, copy=False)
    if p.size == 0:
        raise ValueError("foreground_entropy: empty probability map")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("foreground_entropy: probabilities must be finite and in [0, 1]")
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(q > 0, q * np.log2(q), 0.0))
    return float(h.mean())
