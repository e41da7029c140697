"""Several trainings of one network, run as one: their raw outputs averaged.

Independent trainings of the same network make different mistakes; averaging them is the oldest way to trade
inference time for accuracy (Cellpose 1 shipped four networks per model and averaged them). :class:`AverageEnsemble`
holds ``size`` copies of a network and returns the mean of their outputs, the same average of raw outputs that
:class:`~cellseg_monai.inferers.FlipAveragingInferer` takes over mirrored inputs, so every decoder reads it as the
output of one network. Its weights are one ``state_dict`` whose keys are the members' keys under ``members.<i>.``
(:func:`ensemble_state_dict` builds it from the members' own weights files). :class:`MixtureAverageEnsemble` averages
ImPartial's decoded class probabilities instead, since raw mixture logits of different trainings do not correspond.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .impartial_unet import check_classes, class_probabilities

__all__ = ["AverageEnsemble", "MixtureAverageEnsemble", "ensemble_state_dict"]


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
        outputs = []
        for member in self.members:
            out = member(x)
            if not isinstance(out, Tensor):
                raise ValueError(
                    f"{type(self).__name__} averages tensor outputs; {type(member).__name__} returned {type(out).__name__}"
                )
            outputs.append(out)
        return self.combine(outputs).to(outputs[0].dtype)

    def combine(self, outputs: list[Tensor]) -> Tensor:
        """The ensemble's output from its members' outputs: here their mean, in float32."""
        total = outputs[0].float()
        for out in outputs[1:]:
            total = total + out.float()
        return total / len(outputs)


class MixtureAverageEnsemble(AverageEnsemble):
    """An ensemble of :class:`~cellseg_monai.networks.ImPartialUNet` trainings that averages class probabilities.

    Each training orders the mixture components of a class its own way, so the mean of raw logits would mix
    unrelated components. This ensemble averages the decoded class probabilities P(k | x) instead and returns them in
    the raw layout: each of the m_k components of class k gets the logit log(P̄_k / m_k), so
    :func:`~cellseg_monai.networks.class_probabilities` of the output is the members' mean. The component means are
    member 0's (they feed the training-time reconstruction loss only, which an ensemble is not trained with).

    Args:
        network: the member network (an ImPartial U-Net or any network with its raw layout).
        size: number of members.
        classes: components per class, background first (the network's ``classes``).
    """

    def __init__(self, network: nn.Module, size: int = 2, classes: Sequence[int] = (2, 2)) -> None:
        super().__init__(network, size)
        self.classes = list(check_classes(classes))

    def combine(self, outputs: list[Tensor]) -> Tensor:
        mean = super().combine([class_probabilities(out.float(), self.classes) for out in outputs])
        counts = torch.tensor(self.classes, device=mean.device)
        per_component = torch.log(mean.clamp_min(1e-12)) - counts.log().view(-1, 1, 1)
        logits = torch.repeat_interleave(per_component, counts, dim=-3)
        return torch.cat([logits, outputs[0].float()[..., int(counts.sum()) :, :, :]], dim=-3)


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
