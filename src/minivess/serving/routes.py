"""The service's ``GET`` endpoints: drift status and task progress (BentoML APIs are ``POST``).

They are plain async Starlette routes mounted beside the BentoML APIs, so they answer on the
event loop even while a prediction holds BentoML's one worker thread. Errors have the shape of
every other refusal: ``{"error": "[rule] what is wrong; how to fix it"}``.
"""

from __future__ import annotations

from http import HTTPStatus

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from minivess.serving.progress import TaskProgress

DRIFT_PATH = "/drift"
PROGRESS_PATH = "/segment_async/progress"


def monitor_routes(board: TaskProgress) -> Starlette:
    """``GET /drift`` and ``GET /segment_async/progress?task_id=...`` as a Starlette app.

    Args:
        board: Where the asynchronous tasks report their progress.
    """

    async def drift(request: Request) -> JSONResponse:
        try:
            service = bentoml.get_current_service()
        except BentoMLException:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, "not-ready", "the model is loading")
        return JSONResponse(service.drift_status())

    async def progress(request: Request) -> JSONResponse:
        task_id = request.query_params.get("task_id")
        if not task_id:
            return _error(
                HTTPStatus.BAD_REQUEST,
                "missing-task-id",
                "pass the id that POST /segment_async/submit answered: ?task_id=<id>",
            )
        found = board.get(task_id)
        if found is None:
            return _error(
                HTTPStatus.NOT_FOUND,
                "unknown-task",
                f"no task {task_id[:80]!r} on this server; submit one with POST "
                "/segment_async/submit (finished tasks are forgotten after an hour, and all "
                "on restart)",
            )
        return JSONResponse(found)

    return Starlette(
        routes=[
            Route(DRIFT_PATH, drift, methods=["GET"]),
            Route(PROGRESS_PATH, progress, methods=["GET"]),
        ]
    )


def _error(status: HTTPStatus, rule: str, message: str) -> JSONResponse:
    return JSONResponse({"error": f"[{rule}] {message}"}, status_code=int(status))
