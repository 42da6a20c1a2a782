"""Per-voxel disagreement of ensemble members, as uncertainty maps.

With member class probabilities ``p_m`` and their mean ``p``:

* **variance**: the variance across members of P(vessel); 0 when all agree.
* **predictive entropy** ``H(p)``: total uncertainty of the averaged prediction (nats).
* **mutual information** ``H(p) - mean_m H(p_m)``: the part of the entropy due to members
  disagreeing (epistemic, "the models do not know"), as opposed to every member being unsure
  (aleatoric, e.g. a blurred vessel wall).

Prediction gets the mutual information of an ensemble without running its members again:
inside :func:`collect_disagreement`, :meth:`~minivess.ensemble.EnsembleAdapter.predict_volume`
records the map from the member probabilities it combines anyway.

Example:
    >>> members = torch.tensor([[[0.9], [0.1]], [[0.1], [0.9]]])  # 2 members, 2 classes, 1 voxel
    >>> round(float(mutual_information(members)[0]), 3)
    0.368
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from minivess.errors import DataError

_EPS = 1e-12
_RECORDED: ContextVar[list[torch.Tensor] | None] = ContextVar("ensemble_disagreement", default=None)


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


@contextmanager
def collect_disagreement() -> Iterator[list[torch.Tensor]]:
    """Within the block, each ensemble prediction appends its mutual-information map here.

    The context is per thread (and per asyncio task), so concurrent predictions do not mix.

    Example:
        >>> with collect_disagreement() as maps:  # doctest: +SKIP
        ...     probs = ensemble.predict_volume(image, roi_size=(96, 96, 16))
        >>> maps[0].shape == probs.shape[1:]  # doctest: +SKIP
        True
    """
    maps: list[torch.Tensor] = []
    token = _RECORDED.set(maps)
    try:
        yield maps
    finally:
        _RECORDED.reset(token)


def record_disagreement(members: torch.Tensor) -> None:
    """Record the mutual information of ``(members, classes, ...)`` if a collection is open."""
    maps = _RECORDED.get()
    if maps is not None:
        maps.append(mutual_information(members))


def on_grid(maps: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor | None:
    """The last recorded map at spatial ``shape``, or ``None`` if nothing was recorded.

    A model that predicts at its own voxel size records the map on that grid; it is resampled
    linearly to ``shape``, as the probabilities are.
    """
    if not maps:
        return None
    latest = maps[-1].float()
    if tuple(latest.shape) == tuple(shape):
        return latest
    resized = torch.nn.functional.interpolate(
        latest[None, None], size=tuple(shape), mode="trilinear", align_corners=False
    )
    return resized[0, 0]
