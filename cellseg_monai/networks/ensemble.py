"""Several trainings of one network, run as one: their raw outputs averaged.

Independent trainings of the same network make different mistakes; averaging them is the oldest way to trade
inference time for accuracy (Cellpose 1 shipped four networks per model and averaged them). :class:`AverageEnsemble`
holds ``size`` copies of a network and returns the mean of their outputs, the same average of raw outputs that
:class:`~cellseg_monai.inferers.FlipAveragingInferer` takes over mirrored inputs, so every decoder reads it as the
output of one network. Its weights are one ``state_dict`` whose keys are the members' keys under ``members.<i>.``
(:func:`ensemble_state_dict` builds it from the members' own weights files).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

__all__ = ["AverageEnsemble", "ensemble_state_dict"]


class AverageEnsemble(nn.Module):
    """``size`` independent copies of ``network`` whose outputs are averaged.

    Args:
        network: the member network (copied; its weights are replaced when the ensemble's are loaded).
        size: number of members (1 is the network alone, under ``members.0.``).

    Raises:
        ValueError: ``size`` < 1; at run time, a member whose output is not a tensor.
    """

    def __init__(self, network: nn.Module, size: int = 2) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"AverageEnsemble: size must be >= 1, got {size}")
        self.members = nn.ModuleList([network] + [copy.deepcopy(network) for _ in range(int(size) - 1)])

    def forward(self, x: Tensor) -> Tensor:
        total = None
        for member in self.members:
            out = member(x)
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"AverageEnsemble averages tensor outputs; {type(member).__name__} returned {type(out).__name__}"
                )
            total = out.float() if total is None else total + out.float()
        mean = total / len(self.members)
        return mean.to(out.dtype)


def ensemble_state_dict(members: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """One :class:`AverageEnsemble` ``state_dict`` from its members' ``state_dict``s, in order.

    Raises:
        ValueError: no members, or members whose keys or shapes differ (not trainings of one network).
    """
    if not members:
        raise ValueError("ensemble_state_dict: no members")
    first = members[0]
    out: dict[str, Tensor] = {}
    for i, state in enumerate(members):
        if state.keys() != first.keys():
            extra = sorted(set(state) ^ set(first))[:3]
            raise ValueError(f"ensemble member {i} has other weights than member 0 (e.g. {extra}): not one network")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"ensemble member {i}: {key} has shape {tuple(value.shape)}, member 0 {tuple(first[key].shape)}"
                )
            out[f"members.{i}.{key}"] = value
    return out
