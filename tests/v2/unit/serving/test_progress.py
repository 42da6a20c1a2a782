"""Task progress: the board, the submit middleware, and windows counted by the sliding window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from minivess.adapters.inference import blend_windows, count_windows, window_progress
from minivess.data.volume import Volume, affine_from_spacing
from minivess.inference import Predictor
from minivess.serving.progress import UNTRACKED, RegisterSubmittedTasks, TaskProgress


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_task_moves_through_its_stages_with_windows_and_fraction() -> None:
    board = TaskProgress()
    board.queued("t1")
    assert board.get("t1") == {
        "task_id": "t1",
        "stage": "queued",
        "windows_done": 0,
        "windows_total": 0,
        "fraction": 0.0,
    }
    task = board.track("t1")
    task.stage("predicting")
    task.windows(3, 12)
    assert board.get("t1") == {
        "task_id": "t1",
        "stage": "predicting",
        "windows_done": 3,
        "windows_total": 12,
        "fraction": 0.25,
    }
    task.windows(12, 12)
    task.stage("done")
    assert board.get("t1")["fraction"] == 1.0  # type: ignore[index]
    assert board.get("unknown") is None


def test_a_failed_task_keeps_the_reason() -> None:
    board = TaskProgress()
    board.track("t2").failed("[corrupt-file] cannot read the NIfTI header")
    found = board.get("t2")
    assert found is not None
    assert found["stage"] == "failed"
    assert found["error"] == "[corrupt-file] cannot read the NIfTI header"


def test_a_synchronous_request_reports_nowhere() -> None:
    board = TaskProgress()
    for tracker in (UNTRACKED, board.track(None)):
        tracker.stage("reading")
        tracker.windows(1, 2)
        tracker.failed("x")
    assert len(board) == 0


def test_finished_tasks_are_forgotten_after_a_while_and_running_ones_kept() -> None:
    clock = Clock()
    board = TaskProgress(keep_s=60.0, clock=clock)
    board.track("finished").stage("done")
    board.track("failed").failed("boom")
    board.track("running").stage("predicting")
    clock.now = 61.0
    assert board.get("finished") is None
    assert board.get("failed") is None
    assert board.get("running") is not None


def test_at_most_max_tasks_are_remembered_oldest_first_out() -> None:
    board = TaskProgress(max_tasks=3)
    for k in range(5):
        board.queued(f"t{k}")
    assert len(board) == 3
    assert [board.get(f"t{k}") is not None for k in range(5)] == [False, False, True, True, True]


async def _submit(request: Request) -> Response:
    """What BentoML 1.4 answers to an accepted submit."""
    return JSONResponse({"task_id": "abc123", "status": "in_progress"})


async def _refuse(request: Request) -> Response:
    return JSONResponse({"error": "[upload-size] too large", "task_id": "never"}, status_code=413)


@pytest.fixture
def submitted() -> tuple[TestClient, TaskProgress]:
    board = TaskProgress()
    app = Starlette(
        routes=[
            Route("/segment_async/submit", _submit, methods=["POST"]),
            Route("/other", _submit, methods=["POST"]),
            Route("/refused", _refuse, methods=["POST"]),
        ]
    )
    inner = RegisterSubmittedTasks(app, path="/refused", board=board)
    outer = RegisterSubmittedTasks(inner, path="/segment_async/submit", board=board)
    return TestClient(outer), board


def test_an_accepted_submit_is_queued_before_the_client_sees_its_id(
    submitted: tuple[TestClient, TaskProgress],
) -> None:
    client, board = submitted
    response = client.post("/segment_async/submit")
    assert response.status_code == 200
    assert response.json() == {"task_id": "abc123", "status": "in_progress"}
    assert int(response.headers["content-length"]) == len(response.content)
    found = board.get("abc123")
    assert found is not None
    assert found["stage"] == "queued"


def test_other_paths_and_refused_submits_register_nothing(
    submitted: tuple[TestClient, TaskProgress],
) -> None:
    client, board = submitted
    assert client.post("/other").status_code == 200
    refused = client.post("/refused")
    assert refused.status_code == 413
    assert refused.json()["error"] == "[upload-size] too large"
    assert len(board) == 0


def _recorder() -> tuple[list[tuple[int, int]], Callable[[int, int], None]]:
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


@pytest.mark.parametrize(
    ("spatial", "window", "overlap", "batch"),
    [
        ((160, 160, 20), (64, 64, 16), 0.25, 1),
        ((96, 80, 10), (64, 64, 8), 0.5, 3),
        ((30, 20, 6), (64, 64, 16), 0.25, 2),  # smaller than the window: padded, one window
        ((64, 64, 16), (64, 64, 16), 0.25, 1),
        ((130, 70, 33), (32, 48, 16), (0.25, 0.5, 0.0), 4),
    ],
)
def test_windows_counted_are_the_windows_monai_runs(
    spatial: tuple[int, int, int],
    window: tuple[int, int, int],
    overlap: float | tuple[float, float, float],
    batch: int,
) -> None:
    ran = []

    def logits(patch: torch.Tensor) -> torch.Tensor:
        ran.append(int(patch.shape[0]))
        return torch.zeros((patch.shape[0], 2, *patch.shape[2:]))

    calls, progress = _recorder()
    volume = torch.zeros((1, 1, *spatial))
    with window_progress(progress):
        blend_windows(volume, logits, window=window, overlap=overlap, sw_batch_size=batch)
    total = count_windows(spatial, window, overlap)
    assert sum(ran) == total
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) == len(ran) + 1


def test_prediction_reports_its_windows_and_nothing_outside_the_block(checkpoint: Path) -> None:
    predictor = Predictor.from_source(checkpoint)
    rng = np.random.default_rng(0)
    volume = Volume(rng.random((96, 80, 10)).astype(np.float32), affine_from_spacing((1, 1, 2)))
    calls, progress = _recorder()
    with_progress = predictor.predict(volume, progress=progress)
    assert calls[0][0] == 0
    assert calls[-1][0] == calls[-1][1] > 1
    calls.clear()
    without = predictor.predict(volume)
    assert calls == []
    np.testing.assert_array_equal(with_progress.mask.array, without.mask.array)
