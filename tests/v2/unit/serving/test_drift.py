"""The service's drift monitor: rolling window, verdicts off the request path, failures kept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from minivess.cli.main import app
from minivess.config.settings import ServeSettings
from minivess.data.synthetic import make_vessel_volume
from minivess.data.volume import Volume
from minivess.drift import feature_table, volume_features
from minivess.errors import DataError
from minivess.serving.drift import DriftMonitor, off_status
from minivess.uncertainty import TemperatureScaling

TILE = 16
ROWS_PER_VOLUME = 16  # 64 x 64 in 16 x 16 crops


@pytest.fixture(scope="module")
def volumes() -> list[Volume]:
    return [make_vessel_volume((64, 64, 8), seed=s)[0] for s in range(3)]


def _probability(volume: Volume) -> np.ndarray:
    """A P(vessel) that follows the image, as a model's would."""
    x = np.asarray(volume.array, dtype=np.float32)
    return 1.0 / (1.0 + np.exp(-(x - x.mean()) / (x.std() + 1e-6)))


def _shifted(volume: Volume, seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    x = np.asarray(volume.array, dtype=np.float32)
    return volume.with_array((0.5 * x + 40.0 + rng.normal(0, 10, x.shape)).astype(np.float32))


def _wait(monitor: DriftMonitor, volumes: int, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = monitor.status()
        if status["volumes_seen"] >= volumes and (
            status["volumes_checked"] >= volumes or status["error"] or status["window_rows"] < 2
        ):
            return status
        time.sleep(0.05)
    pytest.fail(f"the monitor did not process {volumes} volumes: {monitor.status()}")


def test_before_the_window_fills_it_is_collecting(volumes: list[Volume]) -> None:
    reference = feature_table(
        volume_features(v, volume_id=str(k), tile=TILE) for k, v in enumerate(volumes)
    )
    updates: list[tuple[int, Any]] = []
    monitor = DriftMonitor(
        reference,
        source="ref.csv",
        window=3 * ROWS_PER_VOLUME,
        tile=TILE,
        listener=lambda rows, result: updates.append((rows, result)),
    ).start()
    try:
        assert monitor.observe(volumes[0], _probability(volumes[0]))
        deadline = time.monotonic() + 30
        while not updates and time.monotonic() < deadline:
            time.sleep(0.05)
        status = monitor.status()
    finally:
        monitor.close()
    assert updates == [(ROWS_PER_VOLUME, None)]
    assert status["status"] == "collecting"
    assert status["window_rows"] == ROWS_PER_VOLUME
    assert status["volumes_received"] == status["volumes_seen"] == 1
    assert status["message"] == f"collecting feature rows: {ROWS_PER_VOLUME} of {3 * 16}"
    assert "p_values" not in status


def test_a_full_queue_skips_volumes_without_blocking(volumes: list[Volume]) -> None:
    reference = volume_features(volumes[0], volume_id="r", tile=TILE)
    monitor = DriftMonitor(reference, source="ref.csv", window=4, tile=TILE, max_pending=1)
    # not started: nothing takes from the queue
    assert monitor.observe(volumes[0], _probability(volumes[0]))
    assert not monitor.observe(volumes[1], _probability(volumes[1]))
    status = monitor.status()
    assert (status["volumes_received"], status["volumes_skipped"]) == (2, 1)


def test_without_a_reference_drift_is_off_and_says_how_to_turn_it_on() -> None:
    status = off_status()
    assert status["status"] == "off"
    assert "serve.drift_reference" in status["message"]
    assert "minivess drift" in status["message"]


def test_an_unreadable_reference_stops_serve_before_bentoml_starts(tmp_path: Path) -> None:
    bad = tmp_path / "features.csv"
    bad.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(
        app, ["serve", "--model", str(tmp_path), "--drift-reference", str(bad)]
    )
    assert isinstance(result.exception, DataError)
    assert "feature table lacks columns" in str(result.exception)


def test_the_service_refuses_an_unreadable_reference_at_start_up(tmp_path: Path) -> None:
    from minivess.serving.service import drift_monitor

    assert drift_monitor(ServeSettings(), None) is None
    with pytest.raises(DataError, match="not a readable CSV"):
        drift_monitor(ServeSettings(drift_reference=tmp_path / "missing.csv"), None)


@pytest.mark.slow
def test_served_volumes_like_the_reference_pass_and_shifted_ones_drift(
    volumes: list[Volume],
) -> None:
    reference = feature_table(
        volume_features(v, volume_id=str(k), tile=TILE, prob=_probability(v))
        for k, v in enumerate(volumes)
    )
    updates: list[tuple[int, Any]] = []
    temperature = TemperatureScaling(scale=0.4)
    monitor = DriftMonitor(
        reference,
        source="ref.csv",
        window=len(reference),
        tile=TILE,
        calibration=temperature,
        listener=lambda rows, result: updates.append((rows, result)),
    ).start()
    try:
        # the service serves calibrated probabilities; the reference holds the model's own
        for volume in volumes:
            monitor.observe(volume, temperature.apply(_probability(volume)))
        same = _wait(monitor, len(volumes))
        for k, volume in enumerate(volumes):
            shifted = _shifted(volume, k)
            monitor.observe(shifted, temperature.apply(_probability(shifted)))
        drifted = _wait(monitor, 2 * len(volumes))
    finally:
        monitor.close()
    assert same["status"] == "ok", same
    assert same["window_rows"] == len(reference)
    assert set(same["p_values"]) == set(same["features"])
    assert "mean_uncertainty" in same["features"]
    assert min(same["p_values"].values()) == pytest.approx(
        1.0
    )  # identical rows, calibration undone
    assert drifted["status"] == "drift", drifted
    assert "intensity_p50" in drifted["drifted_features"]
    assert drifted["volumes_checked"] == 2 * len(volumes)
    assert updates[-1][0] == len(reference)
    assert updates[-1][1].drifted is True


@pytest.mark.slow
def test_a_failing_check_is_recorded_and_the_monitor_keeps_going(volumes: list[Volume]) -> None:
    one_row = pd.DataFrame([volume_features(volumes[0], volume_id="r", tile=64).iloc[0]])
    monitor = DriftMonitor(one_row, source="ref.csv", window=2, tile=TILE).start()
    try:
        monitor.observe(volumes[0], _probability(volumes[0]))
        failed = _wait(monitor, 1)
        monitor.observe(volumes[1], _probability(volumes[1]))
        again = _wait(monitor, 2)
    finally:
        monitor.close()
    assert "too-few-rows" in failed["error"]
    assert failed["status"] == "collecting"
    assert again["volumes_seen"] == 2
