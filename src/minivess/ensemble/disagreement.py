"""Per-voxel disagreement of ensemble members, as uncertainty maps.

With member class probabilities ``p_m`` and their mean ``p``:

* **variance**: the variance across members of P(vessel); 0 when all agree.
* **predictive entropy** ``H(p)``: total uncertainty of the averaged prediction (nats).
* **mutual information** ``H(p) - mean_m H(p_m)``: the part of the entropy due to members
  disagreeing (epistemic, "the models do not know"), as opposed to every member being unsure
  (aleatoric, e.g. a blurred vessel wall).

Example:
    >>> members = torch.tensor([[[0.9], [0.1]], [[0.1], [0.9]]])  # 2 members, 2 classes, 1 voxel
    >>> round(float(mutual_information(members)[0]), 3)
    0.368
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minivess.errors import DataError

_EPS = 1e-12


def _check(members: torch.Tensor) -> torch.Tensor:
    if members.dim() < 2 or members.shape[0] < 2:
        raise DataError(
            None,
            "ensemble-shape",
            f"expected (members >= 2, classes, ...) probabilities, got {tuple(members.shape)}",
        )
    return members.double()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the class axis 0 of ``(classes, ...)`` probabilities."""
    p = probs.double().clamp_min(_EPS)
    return -(p * p.log()).sum(0)


def vessel_variance(members: torch.Tensor, vessel_class: int = 1) -> torch.Tensor:
    """Variance across members of P(vessel), ``(...)`` float32."""
    m = _check(members)
    return m[:, vessel_class].var(0, unbiased=False).float()


def predictive_entropy(members: torch.Tensor) -> torch.Tensor:
    """Entropy of the members' mean probabilities, ``(...)`` float32."""
    return entropy(_check(members).mean(0)).float()


def mutual_information(members: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean minus the mean member entropy (>= 0), ``(...)`` float32."""
    m = _check(members)
    expected = torch.stack([entropy(member) for member in m]).mean(0)
    return (entropy(m.mean(0)) - expected).clamp_min(0.0).float()


@dataclass(frozen=True)
class Disagreement:
    """The three disagreement maps of one volume (``(H, W, D)`` float32 each)."""

    variance: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor

    @classmethod
    def from_members(cls, members: torch.Tensor) -> Disagreement:
        """All maps from ``(members, classes, H, W, D)`` probabilities."""
        return cls(
            vessel_variance(members), predictive_entropy(members), mutual_information(members)
        )
