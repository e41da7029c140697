"""Implicit shape MLP: the log-probability that a point in canonical coordinates lies inside the canonical shape.

Costa, Gaudio, Campilho & Cardoso, "Explainable Weakly-Supervised Cell Nuclei Segmentation by Canonical Shape
Learning and Transformation", MIDL 2022, Sec. 2.1.

Architecture (as in Sec. 2.1)::

    u  = (x, y, r),  r = sqrt(x² + y²)                      (..., 3)
    h1 = ReLU(fc1(u))                                       (..., 8)
    h2 = ReLU(fc2([h1, u]))                                 (..., 4)    fc2: 11 -> 4
    z  = fc3([h2, u])                                       (..., 1)    fc3:  7 -> 1
    log p(s | x, y, r) = -softplus(z)  ∈ (-inf, 0],   p(s | x, y, r) = exp(-softplus(z)) = sigmoid(-z) ∈ (0, 1]

Choice where the paper is silent (as far as could be checked): the initialisation. ``init_radius`` (default 1.0)
starts the shape as a soft disc of that radius: fc3's weight on r is ``init_sharpness``, its bias
``-init_sharpness * init_radius``, its weights on x and y are 0 and those on the hidden units are PyTorch's default
scaled by 0.1 (small, so the hidden layers still get gradients from the first step). Then
p(s) ≈ sigmoid(-k (r - r0)), which places every predicted instance on the image from the first step, so the
encoder's affine parameters get a useful gradient. ``init_radius=None`` keeps PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cellseg_monai.torchscript import shape_repr

__all__ = ["ImplicitShapeMLP"]


class ImplicitShapeMLP(nn.Module):
    """Implicit canonical shape: (x, y) canonical coordinates → log p(s | x, y, r) ≤ 0 (Costa et al. 2022, Sec. 2.1).

    Args:
        hidden: widths of the two hidden layers (the paper: (8, 4)); the output layer has width 1.
        init_radius: radius of the soft disc the shape starts as (canonical units), or None for PyTorch's default
            initialisation (a choice: the paper does not state its initialisation).
        init_sharpness: slope k of the initial disc's edge, p(s) ≈ sigmoid(-k (r - init_radius)).

    Attributes:
        fc1: ``Linear(3, hidden[0])``; fc2: ``Linear(hidden[0] + 3, hidden[1])``; fc3: ``Linear(hidden[1] + 3, 1)``.
    """

    def __init__(
        self, hidden: tuple[int, int] = (8, 4), init_radius: float | None = 1.0, init_sharpness: float = 10.0
    ) -> None:
        super().__init__()
        if len(hidden) != 2 or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be two positive layer widths, e.g. (8, 4); got {hidden!r}.")
        h1, h2 = (int(h) for h in hidden)
        self.fc1 = nn.Linear(3, h1)
        self.fc2 = nn.Linear(h1 + 3, h2)
        self.fc3 = nn.Linear(h2 + 3, 1)
        if init_radius is not None:
            if init_radius <= 0 or init_sharpness <= 0:
                raise ValueError(
                    f"init_radius and init_sharpness must be > 0; got {init_radius!r}, {init_sharpness!r}."
                )
            with torch.no_grad():
                self.fc3.weight.mul_(0.1)
                self.fc3.weight[0, h2 : h2 + 2] = 0.0  # x, y
                self.fc3.weight[0, h2 + 2] = float(init_sharpness)  # r
                self.fc3.bias.fill_(-float(init_sharpness) * float(init_radius))

    @staticmethod
    def features(coords: Tensor) -> Tensor:
        """(..., 2) canonical (x, y) → (..., 3) MLP input (x, y, r), r = sqrt(x² + y²) (Sec. 2.1).

        r is computed as sqrt(x² + y² + 1e-12) so that its gradient stays finite at the origin.
        """
        if coords.shape[-1] != 2:
            raise ValueError(f"coords must have a last dimension of 2 (x, y); got shape {shape_repr(coords)}.")
        r = torch.sqrt((coords * coords).sum(dim=-1, keepdim=True) + 1e-12)
        return torch.cat([coords, r], dim=-1)

    def logits(self, coords: Tensor) -> Tensor:
        """(..., 2) canonical coordinates → (...) pre-activation z, with log p(s) = -softplus(z)."""
        u = self.features(coords)
        h = F.relu(self.fc1(u))
        h = F.relu(self.fc2(torch.cat([h, u], dim=-1)))
        return self.fc3(torch.cat([h, u], dim=-1)).squeeze(-1)

    def forward(self, coords: Tensor) -> Tensor:
        """Log-probability of shape membership.

        Args:
            coords: (..., 2) points (x, y) in canonical coordinates, any float dtype.

        Returns:
            (...) log p(s | x, y, r) = -softplus(z), values in (-inf, 0].
        """
        return -F.softplus(self.logits(coords))

    def probability(self, coords: Tensor) -> Tensor:
        """(..., 2) canonical coordinates → (...) p(s | x, y, r) = exp(log p) ∈ (0, 1] (computed as sigmoid(-z))."""
        return torch.sigmoid(-self.logits(coords))

    def render(self, size: int = 64, extent: float = 2.0) -> Tensor:
        """The canonical shape as an image, for explainability (the paper shows it is a circle).

        Args:
            size: output side in pixels.
            extent: the image covers canonical coordinates [-extent, extent]² (pixel centres; x → columns,
                y → rows, row 0 at y = -extent).

        Returns:
            (size, size) p(s | x, y, r) in (0, 1], detached.
        """
        if size < 1 or extent <= 0:
            raise ValueError(f"size must be >= 1 and extent > 0; got {size!r}, {extent!r}.")
        p = next(self.parameters())
        c = (torch.arange(size, device=p.device, dtype=p.dtype) + 0.5) / size * 2 * extent - extent
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        with torch.no_grad():
            return self.probability(torch.stack([xx, yy], dim=-1))
