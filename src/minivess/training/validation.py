"""Validation by sliding-window prediction of whole held-out volumes, never patches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from minivess.adapters.inference import Blend, class_mask, window_blending
from minivess.data.resample import predict_at_spacing
from minivess.data.volume import spacing_from_affine
from minivess.metrics import Dice, IoU, dice_per_volume, iou_per_volume


@dataclass(frozen=True)
class ValidationVolume:
    """One held-out volume, normalised as the model sees it.

    Args:
        case_id: Volume id in the dataset.
        image: ``(C, H, W, D)`` float32 normalised image.
        label: ``(H, W, D)`` binary label.
        spacing: Voxel size (H, W, D) in micrometres.
    """

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    spacing: tuple[float, float, float]


def validation_volumes(loader: Iterable[dict[str, object]]) -> list[ValidationVolume]:
    """Materialise a validation loader (one whole volume per batch) once, for every validation."""
    volumes: list[ValidationVolume] = []
    for batch in loader:
        image, label = batch["image"], batch["label"]
        if not isinstance(image, torch.Tensor) or not isinstance(label, torch.Tensor):
            raise TypeError("validation batches must hold 'image' and 'label' tensors")
        affine = torch.as_tensor(getattr(image, "affine", torch.eye(4)))
        spacing = spacing_from_affine((affine[0] if affine.ndim == 3 else affine).numpy())
        case_id = batch.get("id", [f"volume{len(volumes)}"])
        volumes.append(
            ValidationVolume(
                case_id=str(case_id[0] if isinstance(case_id, list | tuple) else case_id),
                image=torch.as_tensor(image[0]).float().clone(),
                label=(torch.as_tensor(label[0, 0]) > 0).to(torch.uint8).clone(),
                spacing=spacing,
            )
        )
    return volumes


class WholeVolumeValidator:
    """Mean Dice and IoU of sliding-window predictions over the held-out volumes.

    Under ``torchrun`` each rank predicts its shard of the volumes and the means are gathered
    over all ranks (TorchMetrics syncs on ``compute``), so every rank sees the same numbers.

    Surface metrics (NSD, HD95) are left to ``minivess evaluate``: they cost seconds per
    512x512 volume, too much to pay at every validation.

    Args:
        volumes: Held-out volumes.
        roi_size: Sliding-window size.
        overlap: Window overlap fraction.
        sw_batch_size: Windows per forward pass.
        precision: Inference precision (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"auto"``).
        blend: How overlapping windows are averaged (``"constant"`` or ``"gaussian"``), as
            the checkpoint will predict.
        target_spacing_um: The voxel size training resamples to: each volume is predicted
            there and its probabilities resampled back, as :class:`~minivess.inference.Predictor`
            does, so metrics are taken on the volume's own grid. ``None`` predicts on it.
    """

    def __init__(
        self,
        volumes: Sequence[ValidationVolume],
        *,
        roi_size: Sequence[int],
        overlap: float = 0.25,
        sw_batch_size: int = 1,
        precision: str = "auto",
        blend: Blend = "constant",
        target_spacing_um: Sequence[float | None] | None = None,
    ) -> None:
        self.volumes = list(volumes)
        self.target_spacing_um = target_spacing_um
        self.roi_size = tuple(roi_size)
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.precision = precision
        self.blend = blend
        self.last_per_volume: dict[str, dict[str, float]] = {}

    def __call__(self, adapter: object) -> dict[str, float]:
        """Predict every volume and return ``{"dice": mean, "iou": mean}``."""
        dice, iou = Dice(), IoU()
        per_volume: dict[str, dict[str, float]] = {}
        for vol in self.volumes:
            with window_blending(self.blend):
                probs = predict_at_spacing(
                    lambda image: adapter.predict_volume(  # type: ignore[attr-defined]
                        image,
                        roi_size=self.roi_size,
                        overlap=self.overlap,
                        sw_batch_size=self.sw_batch_size,
                        precision=self.precision,
                    ),
                    vol.image,
                    vol.spacing,
                    self.target_spacing_um,
                )
            pred = class_mask(probs)[None]
            target = vol.label[None]
            dice.update(pred, target)
            iou.update(pred, target)
            per_volume[vol.case_id] = {
                "dice": float(dice_per_volume(pred.bool(), target.bool())[0]),
                "iou": float(iou_per_volume(pred.bool(), target.bool())[0]),
            }
        self.last_per_volume = per_volume
        return {"dice": float(dice.compute()), "iou": float(iou.compute())}
