"""The no-training classic baseline: Otsu threshold + distance-transform watershed.

Otsu's threshold (Otsu 1979, "A threshold selection method from gray-level histograms", IEEE TSMC 9(1)) on the
grey image separates nuclei from background; touching nuclei are split by exactly the same watershed as the
learned models' post-processing (:func:`cellseg_monai.postprocessing.instances.mask_to_instances`), so the
baseline differs from them only in where the foreground comes from.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from cellseg_monai.postprocessing.instances import WatershedParams, mask_to_instances

__all__ = ["ClassicBaseline", "nuclei_are_dark", "otsu_foreground", "otsu_watershed"]

Polarity = Literal["auto", "bright", "dark"]


def _to_grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] > 4 and image.shape[-1] <= 4:
        raise ValueError(
            f"image must be channel-first (C, H, W); shape {tuple(image.shape)} looks channel-last (H, W, C): "
            "move the channel axis first (numpy.moveaxis(image, -1, 0))."
        )
    if image.ndim == 3:
        image = image.mean(axis=0)
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W) or channel-first (C, H, W), got shape {tuple(image.shape)}.")
    if not np.issubdtype(image.dtype, np.number) and image.dtype != bool:
        raise TypeError(f"image must be numeric, got dtype {image.dtype}.")
    image = image.astype(np.float64)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values.")
    return image


def _otsu_bright(image: np.ndarray, smooth_sigma: float) -> np.ndarray | None:
    """Pixels above Otsu's threshold of the (smoothed) grey image; None for a constant image."""
    if smooth_sigma < 0:
        raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma}.")
    grey = _to_grey(image)
    if smooth_sigma > 0:
        grey = ndi.gaussian_filter(grey, smooth_sigma)
    if grey.max() <= grey.min():
        return None
    return grey > threshold_otsu(grey)


def _bright_is_background(bright: np.ndarray) -> bool:
    return bool(bright.mean() > 0.5)


def nuclei_are_dark(image: np.ndarray, smooth_sigma: float = 1.0) -> bool:
    """The automatic polarity rule: True when the nuclei are darker than the background (brightfield, H&E).

    The pixels above Otsu's threshold of the grey image are taken as nuclei unless they cover more than half of the
    image, in which case the nuclei are the dark side. It assumes, as in almost every nucleus image, that background
    covers more of the field than nuclei.

    Args:
        image: (H, W) or channel-first (C, H, W), any numeric dtype and range; channels are averaged to grey.
        smooth_sigma: Gaussian smoothing (px) before thresholding; 0 disables it.
    """
    bright = _otsu_bright(image, smooth_sigma)
    return bright is not None and _bright_is_background(bright)


def otsu_foreground(image: np.ndarray, polarity: Polarity = "auto", smooth_sigma: float = 1.0) -> np.ndarray:
    """Foreground (nuclei) mask of an image by Otsu's threshold, with the nuclei's polarity detected.

    Args:
        image: (H, W) or channel-first (C, H, W) image, any numeric dtype and range. Channels are averaged to grey.
            Channel-last (H, W, C) arrays are not accepted (they would be read as C = H channels).
        polarity: "bright" — nuclei brighter than the background (fluorescence); "dark" — nuclei darker than the
            background (brightfield, H&E); "auto" — :func:`nuclei_are_dark`.
        smooth_sigma: Gaussian smoothing (px) of the grey image before thresholding; 0 disables it.

    Returns:
        (H, W) bool foreground mask; all False for a constant image.
    """
    if polarity not in ("auto", "bright", "dark"):
        raise ValueError(f"polarity must be 'auto', 'bright' or 'dark', got {polarity!r}.")
    bright = _otsu_bright(image, smooth_sigma)
    if bright is None:
        return np.zeros(np.shape(image)[-2:], dtype=bool)
    if polarity == "dark" or (polarity == "auto" and _bright_is_background(bright)):
        return ~bright
    return bright


def otsu_watershed(
    image: np.ndarray,
    polarity: Polarity = "auto",
    smooth_sigma: float = 1.0,
    params: WatershedParams | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Classic baseline: :func:`otsu_foreground` then :func:`~cellseg_monai.postprocessing.instances.mask_to_instances`.

    Args:
        image: (H, W) or channel-first (C, H, W) image, any numeric dtype and range.
        polarity, smooth_sigma: see :func:`otsu_foreground`.
        params, overrides: the mask → instances settings,
            :class:`~cellseg_monai.postprocessing.instances.WatershedParams` and keyword overrides of its fields.

    Returns:
        (H, W) int32 instance labels, 0 = background, objects numbered 1..N consecutively.
    """
    params = WatershedParams.of(params, **overrides)  # checked before the (slower) thresholding
    mask = otsu_foreground(image, polarity=polarity, smooth_sigma=smooth_sigma)
    return mask_to_instances(mask, params)


class ClassicBaseline(torch.nn.Module):
    """:func:`otsu_watershed` as a network, so a bundle config can put it where a trained model goes.

    It has no parameters (its ``state_dict`` is empty) and no gradient. Each image of the batch is segmented on
    its own on the CPU with NumPy/scikit-image; the result is moved back to the input's device. The output is an
    instance label map, so use it with a whole-image inferer (``monai.inferers.SimpleInferer``): a sliding-window
    inferer would blend and renumber labels across windows.

    Args:
        polarity, smooth_sigma: see :func:`otsu_watershed`.
        params, overrides: the mask → instances settings,
            :class:`~cellseg_monai.postprocessing.instances.WatershedParams` and keyword overrides of its fields
            (``min_size=``, ``watershed=``, ...).

    Shapes:
        input (B, C, H, W) float images (any range) → output (B, 1, H, W) float32 instance labels
        (0 = background, 1..N per image).
    """

    def __init__(
        self,
        polarity: Polarity = "auto",
        smooth_sigma: float = 1.0,
        params: WatershedParams | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.polarity = polarity
        self.smooth_sigma = smooth_sigma
        self.params = WatershedParams.of(params, **overrides)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ClassicBaseline expects a (B, C, H, W) batch, got shape {tuple(x.shape)}.")
        images = x.detach().float().cpu().numpy()
        labels = np.stack([otsu_watershed(image, self.polarity, self.smooth_sigma, self.params) for image in images])[
            :, None
        ]
        return torch.as_tensor(labels, dtype=torch.float32, device=x.device)

    def extra_repr(self) -> str:
        settings = {"polarity": self.polarity, "smooth_sigma": self.smooth_sigma, **self.params.as_dict()}
        return ", ".join(f"{k}={v!r}" for k, v in settings.items())
