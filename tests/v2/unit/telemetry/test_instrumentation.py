"""What minivess traces: training runs and epochs (the handler) and predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from opentelemetry.trace import StatusCode
from torch import nn

from minivess.data.volume import Volume, affine_from_spacing
from minivess.inference.predictor import Predictor
from minivess.telemetry import DURATION_METRIC
from minivess.training.engine import Trainer
from minivess.training.handlers.telemetry import EPOCH_SPAN, RUN_SPAN, TelemetryHandler
from minivess.training.losses import LOSS_BUILDERS
from minivess.training.optim import build_optimizer

from .conftest import Recorded


class TinyAdapter:
    """A real two-class 3D conv net with the adapter surface the engine uses."""

    name = "tiny"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def _batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(2, 1, 8, 8, 8, generator=generator) for _ in range(3)]
    return [{"image": image, "label": (image > 0.6).float()} for image in images]


def _trainer(loss_fn=None) -> Trainer:
    adapter = TinyAdapter()
    return Trainer(
        adapter,
        build_optimizer("adamw", adapter.network.parameters(), lr=1e-2),
        loss_fn or LOSS_BUILDERS["dice_ce"](),
        _batches(),
        max_epochs=2,
        validator=lambda _adapter: {"dice": 0.5},
    )


def test_training_emits_a_run_span_with_one_child_per_epoch(recorded: Recorded) -> None:
    trainer = _trainer().attach(TelemetryHandler())
    state = trainer.run()
    run = recorded.span(RUN_SPAN)
    epochs = [s for s in recorded.spans() if s.name == EPOCH_SPAN]
    assert [s.attributes["epoch"] for s in epochs] == [1, 2]
    for epoch, record in zip(epochs, state.history, strict=True):
        assert epoch.parent is not None
        assert epoch.parent.span_id == run.context.span_id
        assert epoch.attributes["loss"] == pytest.approx(record["loss"])
        assert epoch.attributes["lr"] == pytest.approx(1e-2)
        assert epoch.attributes["val_dice"] == 0.5
        assert epoch.attributes["iteration"] == 3 * int(record["epoch"])
    assert run.attributes["adapter"] == "tiny"
    assert run.attributes["stop_reason"] == "max_epochs"
    assert run.attributes["best_epoch"] == 1
    assert run.status.status_code is StatusCode.UNSET
    (point,) = [
        p
        for p in recorded.histogram_points(DURATION_METRIC)
        if p.attributes == {"operation": EPOCH_SPAN}
    ]
    assert point.count == 2


def test_a_failing_run_closes_its_spans_as_errors(recorded: Recorded) -> None:
    def broken_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("loss exploded")

    trainer = _trainer(broken_loss).attach(TelemetryHandler())
    with pytest.raises(RuntimeError, match="loss exploded"):
        trainer.run()
    run, epoch = recorded.span(RUN_SPAN), recorded.span(EPOCH_SPAN)
    for failed in (run, epoch):
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.events[0].attributes["exception.message"] == "loss exploded"


def test_prediction_is_traced_with_model_and_volume(recorded: Recorded, checkpoint: Path) -> None:
    predictor = Predictor.from_source(checkpoint)
    volume = Volume(
        np.random.default_rng(0).random((32, 24, 8)).astype(np.float32),
        affine_from_spacing((1.0, 1.0, 2.0)),
    )
    predictor.predict(volume)
    predicted = recorded.span("minivess.predict")
    assert predicted.attributes["adapter"] == "segresnet"
    assert predicted.attributes["backend"] == "torch"
    assert predicted.attributes["shape"] == (32, 24, 8)
    assert predicted.attributes["device"] == "cpu"


@pytest.fixture
def service(checkpoint: Path, monkeypatch: pytest.MonkeyPatch):
    """The REST service's class, serving the tiny checkpoint (no HTTP server)."""
    from minivess.config.settings import get_settings
    from minivess.serving.service import VesselSegmentation

    monkeypatch.setenv("MINIVESS_SERVE__MODEL", str(checkpoint))
    get_settings(reload=True)
    try:
        yield VesselSegmentation.inner()
    finally:
        monkeypatch.delenv("MINIVESS_SERVE__MODEL")
        get_settings(reload=True)


def test_a_service_request_is_traced_around_its_prediction(
    recorded: Recorded, service, tmp_path: Path
) -> None:
    import nibabel as nib

    upload = tmp_path / "volume.nii.gz"
    image = np.random.default_rng(0).random((32, 24, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), upload)
    service._predict(upload, tmp_path, "summary")
    request, predicted = recorded.span("minivess.request"), recorded.span("minivess.predict")
    assert request.attributes["endpoint"] == "summary"
    assert predicted.parent is not None
    assert predicted.parent.span_id == request.context.span_id
