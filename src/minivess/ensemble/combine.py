"""An ensemble of trained networks that is itself a model adapter.

:class:`EnsembleAdapter` holds its members' networks in one ``nn.ModuleList``, so an ensemble
is saved, loaded, logged to MLflow, registered, served and predicted with exactly like any
single model: one checkpoint file rebuilds every member from the configs stored in the
ensemble's own config. Its network maps a patch to ``log`` of the combined class
probabilities; the softmax that sliding-window prediction applies turns them back into the
combination itself:

* ``mean``: the mean of the members' softmax probabilities;
* ``weighted``: a weighted mean (weights from validation scores, or fitted on validation
  voxels, see :mod:`minivess.ensemble.weights`);
* ``vote``: the fraction of members voting for each class (majority vote under argmax;
  ties go to background).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Self, get_args

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from minivess.adapters.base import AdapterConfig, ModelAdapter, SizeRule
from minivess.adapters.inference import Precision, class_mask

Combine = Literal["mean", "weighted", "vote"]
"""How member probabilities become the ensemble's."""
COMBINES: tuple[str, ...] = get_args(Combine)
_FLOOR = 1e-8  # log(0) would give -inf logits and NaN after blending


class MemberSpec(BaseModel):
    """One member: its adapter's registry name and that adapter's config."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    adapter: str
    """Registry name of the member's adapter (``"segresnet"``)."""
    config: dict[str, Any]
    """The member adapter's config as plain values."""
    name: str = ""
    """Where the member came from (checkpoint path or model URI), for model cards."""


class EnsembleConfig(AdapterConfig):
    """Hyper-parameters of :class:`EnsembleAdapter`."""

    members: tuple[MemberSpec, ...] = Field(min_length=2)
    """The member models (at least two)."""
    combine: Combine = "mean"
    """``mean``, ``weighted`` or ``vote``."""
    weights: tuple[float, ...] | None = None
    """One non-negative weight per member for ``weighted`` (normalised to sum 1)."""

    @model_validator(mode="after")
    def _check_weights(self) -> Self:
        if self.combine == "weighted":
            if self.weights is None or len(self.weights) != len(self.members):
                raise ValueError(f"weighted needs one weight per member ({len(self.members)})")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
        elif self.weights is not None:
            raise ValueError(f"weights are only used by combine='weighted', not {self.combine!r}")
        return self


def combine_probabilities(
    members: torch.Tensor, combine: Combine, weights: Sequence[float] | torch.Tensor | None = None
) -> torch.Tensor:
    """Combine member probabilities ``(members, C, ...)`` into ``(C, ...)``.

    Args:
        members: Softmax probabilities of each member.
        combine: ``mean``, ``weighted`` (needs ``weights``) or ``vote``.
        weights: One non-negative weight per member (normalised here).

    Example:
        >>> members = torch.tensor([[[0.2], [0.8]], [[0.6], [0.4]], [[0.3], [0.7]]])
        >>> combine_probabilities(members, "vote")[:, 0].tolist()
        [0.3333333432674408, 0.6666666865348877]
    """
    if combine == "vote":
        masks = torch.stack([class_mask(member) for member in members])
        return torch.stack([(masks == c).float().mean(0) for c in range(members.shape[1])])
    n = members.shape[0]
    if weights is None or combine == "mean":
        w = torch.full((n,), 1.0 / n)
    else:
        w = torch.as_tensor(weights, dtype=torch.float32)
    w = (w / w.sum()).to(members.device, torch.float32).view(-1, *([1] * (members.dim() - 1)))
    return (w * members.float()).sum(0)


class EnsembleNetwork(nn.Module):
    """Log of the combined class probabilities of several networks on the same patch.

    Args:
        members: The member networks (each maps a patch to class logits).
        combine: ``mean``, ``weighted`` or ``vote``.
        weights: Normalised member weights (used by ``mean``/``weighted``).
    """

    weights: torch.Tensor

    def __init__(self, members: Sequence[nn.Module], combine: Combine, weights: Sequence[float]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``log`` of the combined probabilities ``(B, C, H, W, D)``."""
        probs = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])
        combined = combine_probabilities(probs, self.combine, self.weights)
        return torch.log(combined.clamp_min(_FLOOR))


class EnsembleAdapter(ModelAdapter):
    """Several trained models predicting as one (see the module docstring).

    Build it from checkpoints with :func:`minivess.ensemble.build_ensemble`; its members'
    weights live in its own state dict, so ``save_checkpoint`` writes one self-contained file.

    Example:
        >>> ensemble, extra = build_ensemble(["a.pt", "b.pt"], combine="mean")  # doctest: +SKIP
        >>> ensemble.save_checkpoint("ensemble.pt", extra=extra)  # doctest: +SKIP
    """

    name = "ensemble"
    config_class = EnsembleConfig

    @property
    def config(self) -> EnsembleConfig:
        """The validated hyper-parameters."""
        return self._config  # type: ignore[return-value]

    def build_network(self, config: AdapterConfig) -> nn.Module:
        """The members, rebuilt by name from the adapter registry, inside one module."""
        from minivess.adapters import build_adapter

        assert isinstance(config, EnsembleConfig)
        self.members = [build_adapter(m.adapter, m.config) for m in config.members]
        channels = {(m.in_channels, m.out_channels) for m in self.members}
        if channels != {(config.in_channels, config.out_channels)}:
            from minivess.errors import ConfigError

            raise ConfigError(
                f"ensemble members must all map {config.in_channels} input channels to "
                f"{config.out_channels} classes; got (in, out) = {sorted(channels)}"
            )
        # bf16 autocast only where every member was measured to gain from it
        self.bf16_on_cpu = all(m.bf16_on_cpu for m in self.members)  # type: ignore[misc]
        self.cpu_window_threads = all(m.cpu_window_threads for m in self.members)  # type: ignore[misc]
        return EnsembleNetwork([m.network for m in self.members], config.combine, self._weights())

    def _weights(self) -> list[float]:
        """Normalised member weights (uniform unless ``combine="weighted"``)."""
        n = len(self.members)
        if self.config.weights is None:
            return [1.0 / n] * n
        total = sum(self.config.weights)
        return [w / total for w in self.config.weights]

    @property
    def size_rule(self) -> SizeRule:
        """Sizes every member accepts: per axis the lcm of divisors and the largest minimum."""
        rules = [m.size_rule for m in self.members]
        divisor = tuple(math.lcm(*(r.divisor[i] for r in rules)) for i in range(3))
        minimum = tuple(max(r.minimum[i] for r in rules) for i in range(3))
        return SizeRule(divisor, minimum)  # type: ignore[arg-type]

    def predict_volume(
        self,
        image: np.ndarray | torch.Tensor,
        *,
        roi_size: Sequence[int],
        overlap: float | Sequence[float] = 0.25,
        sw_batch_size: int = 1,
        precision: Precision = "auto",
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """The combination of the members' whole-volume probabilities, ``(C, H, W, D)``.

        Each member runs its own sliding window (its logits blended as a single model's are),
        so the ensemble of one volume is exactly the combination of what each
        member predicts alone; :attr:`network` combines per patch instead, for export. Inside
        :func:`~minivess.ensemble.disagreement.collect_disagreement`, the members' mutual
        information is recorded from the same member probabilities.
        """
        from minivess.ensemble.disagreement import record_disagreement

        if device is not None:
            self.network.to(device)
        members = self.member_probabilities(
            image,
            roi_size=roi_size,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            precision=precision,
        )
        record_disagreement(members)
        return combine_probabilities(members, self.config.combine, self._weights())

    def member_probabilities(
        self,
        image: np.ndarray | torch.Tensor,
        *,
        roi_size: Sequence[int],
        overlap: float | Sequence[float] = 0.25,
        sw_batch_size: int = 1,
        precision: Precision = "auto",
    ) -> torch.Tensor:
        """Each member's own sliding-window probabilities, ``(members, C, H, W, D)``.

        The disagreement maps of :mod:`minivess.ensemble.disagreement` are computed from these.
        """
        return torch.stack(
            [
                m.predict_volume(
                    image,
                    roi_size=roi_size,
                    overlap=overlap,
                    sw_batch_size=sw_batch_size,
                    precision=precision,
                )
                for m in self.members
            ]
        )
