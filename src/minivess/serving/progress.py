"""Progress of the asynchronous segmentation tasks: stage and sliding windows done, by task id.

BentoML 1.4 answers ``POST /segment_async/submit`` with a ``task_id`` and runs the task later
in the same worker; inside the task the id is ``ctx.request.state.task_id`` (BentoML sets it
before calling the task). :class:`RegisterSubmittedTasks` records each id as ``queued`` from
the submit response itself, so a client that polls at once never sees an unknown id; the task
then moves it through ``reading``, ``predicting`` (with windows done / total from the sliding
window), ``writing`` and ``done`` (or ``failed``).

The board lives in the worker's memory: it is lost on restart, and it keeps at most
``max_tasks`` tasks, forgetting finished ones ``keep_s`` seconds after they finished.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from minivess.serving.guard import ASGIApp, Message, Receive, Scope, Send

Stage = Literal["queued", "reading", "predicting", "writing", "done", "failed"]
"""Where a task is: waiting, reading the upload, in the sliding window, writing, finished."""
FINISHED: frozenset[str] = frozenset({"done", "failed"})
MAX_TASKS = 1000
KEEP_S = 3600.0


@dataclass
class _Entry:
    stage: Stage
    updated: float
    windows_done: int = 0
    windows_total: int = 0
    error: str | None = None


class TaskProgress:
    """Progress of tasks by id, shared by the worker's threads.

    Args:
        max_tasks: Most tasks remembered; beyond it the oldest are forgotten first.
        keep_s: Seconds a finished task stays visible.
        clock: Monotonic time source.
    """

    def __init__(
        self,
        *,
        max_tasks: int = MAX_TASKS,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_tasks = max_tasks
        self.keep_s = keep_s
        self._clock = clock
        self._tasks: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def queued(self, task_id: str) -> None:
        """Record a submitted task that has not started yet."""
        self._update(task_id, stage="queued")

    def track(self, task_id: str | None) -> TaskTracker:
        """The tracker the task ``task_id`` reports through (``None``: reports nowhere)."""
        return TaskTracker(self if task_id is not None else None, task_id or "")

    def get(self, task_id: str) -> dict[str, Any] | None:
        """``{task_id, stage, windows_done, windows_total, fraction[, error]}``, or ``None``."""
        with self._lock:
            self._forget_old()
            entry = self._tasks.get(task_id)
            if entry is None:
                return None
            if entry.stage == "done":
                fraction = 1.0
            else:
                fraction = entry.windows_done / entry.windows_total if entry.windows_total else 0.0
            found: dict[str, Any] = {
                "task_id": task_id,
                "stage": entry.stage,
                "windows_done": entry.windows_done,
                "windows_total": entry.windows_total,
                "fraction": fraction,
            }
            if entry.error is not None:
                found["error"] = entry.error
            return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    def _update(self, task_id: str, **changes: Any) -> None:
        with self._lock:
            now = self._clock()
            entry = self._tasks.get(task_id)
            if entry is None:
                entry = self._tasks[task_id] = _Entry(stage="queued", updated=now)
                self._forget_old()  # on new tasks only: a window update stays O(1)
            for name, value in changes.items():
                setattr(entry, name, value)
            entry.updated = now

    def _forget_old(self) -> None:
        """Drop finished tasks older than ``keep_s``, then the oldest beyond ``max_tasks``."""
        cutoff = self._clock() - self.keep_s
        for task_id in [
            k for k, e in self._tasks.items() if e.stage in FINISHED and e.updated < cutoff
        ]:
            del self._tasks[task_id]
        while len(self._tasks) > self.max_tasks:
            self._tasks.popitem(last=False)


@dataclass(frozen=True)
class TaskTracker:
    """What one running task reports; every call is a no-op without a board.

    Args:
        board: Where the reports go; ``None`` for a request that is not a task.
        task_id: The task's id.
    """

    board: TaskProgress | None
    task_id: str

    def stage(self, stage: Stage) -> None:
        """Enter ``stage``."""
        if self.board is not None:
            self.board._update(self.task_id, stage=stage)

    def windows(self, done: int, total: int) -> None:
        """Sliding windows done out of ``total`` (a :data:`WindowProgress` callback)."""
        if self.board is not None:
            self.board._update(self.task_id, windows_done=done, windows_total=total)

    def failed(self, error: str) -> None:
        """End in ``failed`` with the message the client gets."""
        if self.board is not None:
            self.board._update(self.task_id, stage="failed", error=error)


UNTRACKED = TaskTracker(None, "")
"""The tracker of a synchronous request."""


class RegisterSubmittedTasks:
    """ASGI middleware: record the ``task_id`` of each accepted submit as ``queued``.

    The id is taken from the submit response before it is sent on, so it is on the board by
    the time the client can ask for it.

    Args:
        app: The ASGI application behind it.
        path: URL path of the submit endpoint.
        board: Where to record the ids.
    """

    def __init__(self, app: ASGIApp, *, path: str, board: TaskProgress) -> None:
        self.app = app
        self.path = path
        self.board = board

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, reading the task id from a successful answer."""
        if scope["type"] != "http" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._recording(send))

    def _recording(self, send: Send) -> Send:
        held: list[Message] = []
        body = b""

        async def recording(message: Message) -> None:
            nonlocal body
            if message["type"] == "http.response.start" and message["status"] == 200:
                held.append(message)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            self._record(body)
            await send(held.pop())
            await send({"type": "http.response.body", "body": body})

        return recording

    def _record(self, body: bytes) -> None:
        try:
            task_id = json.loads(body).get("task_id")
        except (ValueError, AttributeError):
            return
        if isinstance(task_id, str) and task_id:
            self.board.queued(task_id)
