"""How much memory one training step of an adapter needs, measured on a small probe patch.

A forward pass of a probe patch with hooks on every leaf module counts the elements the
network produces per input voxel; training keeps those activations for the backward pass and
holds a gradient of the same size at the peak, so a patch costs about
``8 bytes x elements per voxel x voxels`` in float32. Weights add 16 bytes per parameter
(weights, gradients and AdamW's two moments). This works for any adapter without knowing its
architecture; it ignores allocator slack and framework overhead, which the budget must leave.

Example:
    >>> memory = MemoryModel.probe(ModelConfig(name="segresnet"))  # doctest: +SKIP
    >>> round(memory.step_bytes((96, 96, 16), 2) / 1e9, 2)  # doctest: +SKIP
    0.98
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minivess.config.model import ModelConfig

ACTIVATION_BYTES = 8
"""Bytes per activation element in a float32 step: the saved value and its gradient."""
PARAMETER_BYTES = 16
"""Bytes per parameter: float32 weight, gradient and AdamW's two moments."""
PROBE_SHAPE = (64, 64, 16)
"""Probe patch (H, W, D), grown to the adapter's nearest valid size."""


@dataclass(frozen=True)
class MemoryModel:
    """Memory of a training step as a function of patch size and patches per step.

    Args:
        activations_per_voxel: Elements output by all leaf modules per input voxel.
        n_parameters: Trainable parameters of the network.
    """

    activations_per_voxel: float
    n_parameters: int

    @classmethod
    def probe(cls, model: ModelConfig) -> MemoryModel:
        """Measure an adapter with one forward pass of a probe patch (no gradients).

        Args:
            model: The adapter and its parameters.

        Returns:
            The adapter's memory model.
        """
        import torch

        from minivess.adapters import build_adapter

        adapter = build_adapter(model.name, model.params)
        shape = adapter.size_rule.pad_to_valid(PROBE_SHAPE)
        counted = [0]

        def count(_module: Any, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                counted[0] += output.numel()

        network = adapter.network
        leaves = [m for m in network.modules() if not any(True for _ in m.children())]
        hooks = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                network.eval()(torch.zeros(1, adapter.in_channels, *shape))
        finally:
            for hook in hooks:
                hook.remove()
        n_parameters = sum(p.numel() for p in network.parameters() if p.requires_grad)
        return cls(counted[0] / math.prod(shape), int(n_parameters))

    def patch_bytes(self, patch: Sequence[int]) -> float:
        """Bytes one patch of spatial size ``patch`` (H, W, D) costs in a training step."""
        return ACTIVATION_BYTES * self.activations_per_voxel * math.prod(patch)

    def fixed_bytes(self) -> float:
        """Bytes the weights, gradients and optimiser state cost whatever the patch."""
        return float(PARAMETER_BYTES * self.n_parameters)

    def step_bytes(self, patch: Sequence[int], n_patches: int) -> float:
        """Bytes of a step on ``n_patches`` patches of size ``patch``."""
        return n_patches * self.patch_bytes(patch) + self.fixed_bytes()
