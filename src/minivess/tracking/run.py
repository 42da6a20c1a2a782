"""One tracked run: config, provenance and data logged at start, a final status at the end."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel

from minivess.errors import ConfigError, MinivessError
from minivess.tracking.buffer import TrackingSpool, deliverer, is_permanent, quick_http
from minivess.tracking.provenance import (
    config_dict,
    flatten_params,
    log_dataset_input,
    provenance_tags,
)
from minivess.tracking.setup import ensure_configured, ensure_experiment, import_mlflow

CONFIG_ARTIFACT = "config.yaml"
"""Artifact holding the full resolved config (parameters may be truncated)."""
logger = logging.getLogger("minivess.tracking")
_BATCH = 100  # MLflow accepts at most 100 params per log_batch request


class TrackedRun:
    """An MLflow run that records what it was made of; use it as a context manager.

    On entry it starts (or resumes) the run and logs the flattened config as parameters, the
    full config as ``config.yaml``, provenance tags (``git_commit``, ``minivess_version``,
    ``torch_version``, ``monai_version``, ``python_version``, ``host``, ``cpu``, ``gpu``), the
    dataset as an MLflow dataset input with tags ``dataset`` and ``dataset_version``, and
    system metrics (CPU, memory, GPU) in the background. On exit the run is marked
    ``FINISHED``, ``FAILED`` (an exception) or ``KILLED`` (Ctrl-C).

    Args:
        experiment: Experiment name, created if missing; ``None`` uses the deployment setting
            ``tracking.experiment``. Ignored when resuming.
        run_name: Display name of a new run.
        config: The resolved experiment config (a pydantic model or a mapping of JSON values).
        dataset_dir: A prepared dataset folder (``dataset.json`` + ``manifest.csv``).
        resume_run_id: Continue this run instead of starting a new one; its parameters must
            equal ``config``'s.
        tags: Further tags.
        log_system_metrics: Sample CPU/memory/GPU use into ``system/*`` metrics.
        spool_dir: Keep metrics, tags, artifacts and the final status that cannot reach the
            store here and deliver them later (see :mod:`minivess.tracking.buffer`), so an
            outage of the tracking server never stops training; ``None`` lets errors surface.

    Raises:
        MinivessError: Unreachable tracking server, unknown ``resume_run_id``, or a resumed
            run whose logged parameters differ from ``config``.

    Example:
        >>> with TrackedRun("minivess", config=cfg, dataset_dir=cfg.data.dataset_dir) as run:
        ...     trainer.attach(MLflowHandler(run)).run()  # doctest: +SKIP
    """

    def __init__(
        self,
        experiment: str | None = None,
        *,
        run_name: str | None = None,
        config: BaseModel | Mapping[str, Any] | None = None,
        dataset_dir: str | Path | None = None,
        resume_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_system_metrics: bool = True,
        spool_dir: str | Path | None = None,
    ) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.config = config_dict(config) if config is not None else None
        self.dataset_dir = dataset_dir
        self.resume_run_id = resume_run_id
        self.tags = dict(tags or {})
        self.log_system_metrics = log_system_metrics and _has_psutil()
        self._run_id: str | None = None
        self._client: Any = None
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.spool: TrackingSpool | None = None
        self._quick_http = ExitStack()

    @property
    def run_id(self) -> str:
        """The MLflow run id (available once started)."""
        if self._run_id is None:
            raise MinivessError("the run has not started: use `with TrackedRun(...) as run:`")
        return self._run_id

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def start(self) -> Self:
        """Start or resume the run and log config, provenance and dataset."""
        ensure_configured()
        mlflow = import_mlflow()
        self._client = mlflow.MlflowClient()
        active = self._start_mlflow_run(mlflow)
        self._run_id = active.info.run_id
        if self.spool_dir is not None:
            # fail fast while spooling: the spool retries, MLflow's own retries would stall
            # training for minutes per call (and its system-metrics sampler with it)
            self._quick_http.enter_context(quick_http())
            self.spool = TrackingSpool(self.spool_dir, self._run_id, ensure_configured())
            self.spool.flush(deliverer(self._client, self._run_id), force=True)
        try:
            self._log_inputs()
        except BaseException:
            self.end("FAILED")
            raise
        return self

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` and stop system metrics.

        With a spool, pending records are delivered first; if the store is still unreachable
        the status joins them and the user is told how to deliver them later.
        """
        mlflow = import_mlflow()
        if self.spool is not None:
            self._end_spooled(mlflow, status)
            return
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._run_id:
            mlflow.end_run(status)
        elif self._run_id is not None:
            self._client.set_terminated(self._run_id, status)

    def _end_spooled(self, mlflow: Any, status: str) -> None:
        assert self.spool is not None
        deliver = deliverer(self._client, self.run_id)
        try:
            self.spool.flush(deliver, force=True)
            active = mlflow.active_run()
            ended = False
            if active is not None and active.info.run_id == self._run_id:
                try:
                    mlflow.end_run(status)  # leaves the active-run stack even if it fails
                    ended = True
                except Exception as exc:
                    if is_permanent(exc):
                        raise
                    _stop_system_metrics(mlflow, self.run_id)
            if not ended:
                self.spool.submit({"kind": "end", "status": status}, deliver)
        finally:
            self._quick_http.close()
        left = len(self.spool.pending())
        if left:
            logger.warning(
                "tracking store %s unreachable at the end of run %s: %d records kept in %s; "
                "deliver them with `minivess runs sync %s`",
                self.spool.uri,
                self.run_id,
                left,
                self.spool.directory,
                self.spool.directory.parent,
            )

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log ``metrics`` at ``step`` in one request (values as float64, NaN allowed)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if self.spool is not None:
            values = {key: float(value) for key, value in metrics.items()}
            record = {"kind": "metrics", "step": int(step), "timestamp": now, "metrics": values}
            self.spool.submit(record, deliverer(self._client, self.run_id))
            return
        batch = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch, synchronous=True)

    @property
    def buffering(self) -> bool:
        """Whether calls are being kept in the spool because the store did not answer."""
        return self.spool is not None and self.spool.pending_file.is_file()

    def logged_steps(self, key: str) -> set[int]:
        """Steps at which ``key`` was logged: in the store, or kept in the spool."""
        steps = {int(m.step) for m in self._client.get_metric_history(self.run_id, key)}
        if self.spool is not None:
            steps |= {
                int(r["step"])
                for r in self.spool.pending()
                if r.get("kind") == "metrics" and key in r["metrics"]
            }
        return steps

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) tags of the run."""
        from mlflow.entities import RunTag

        if self.spool is not None:
            record = {"kind": "tags", "tags": {key: str(value) for key, value in tags.items()}}
            self.spool.submit(record, deliverer(self._client, self.run_id))
            return
        entries = [RunTag(key, str(value)) for key, value in tags.items()]
        self._client.log_batch(self.run_id, tags=entries, synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file into the run's artifacts (under ``artifact_path``)."""
        if self.spool is None:
            self._client.log_artifact(self.run_id, str(path), artifact_path)
            return
        self.spool.submit_file(path, artifact_path, deliverer(self._client, self.run_id))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure as ``artifact_file`` (e.g. ``plots/loss.png``)."""
        if self.spool is None:
            self._client.log_figure(self.run_id, figure, artifact_file)
            return
        import tempfile

        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="minivess-figure-") as tmp:
            path = Path(tmp) / name
            figure.savefig(path)
            self.spool.submit_file(path, folder or None, deliverer(self._client, self.run_id))

    # -- internals --------------------------------------------------------------------------
    def _start_mlflow_run(self, mlflow: Any) -> Any:
        if self.resume_run_id is not None:
            self._check_resumable(self.resume_run_id)
            return mlflow.start_run(
                run_id=self.resume_run_id, log_system_metrics=self.log_system_metrics
            )
        if self.experiment is None:
            from minivess.config.settings import get_settings

            self.experiment = get_settings().tracking.experiment
        return mlflow.start_run(
            experiment_id=ensure_experiment(self.experiment),
            run_name=self.run_name,
            log_system_metrics=self.log_system_metrics,
        )

    def _check_resumable(self, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise MinivessError(
                f"no run {run_id!r} at {ensure_configured()}; check the id "
                "(`minivess runs`) or start a new run"
            ) from None
        if self.config is None:
            return
        logged, wanted = run.data.params, flatten_params(self.config)
        changed = sorted(k for k, v in wanted.items() if k in logged and logged[k] != v)
        if changed:
            shown = ", ".join(f"{k}: {logged[k]!r} -> {wanted[k]!r}" for k in changed[:5])
            raise ConfigError(
                f"cannot resume run {run_id}: its config differs ({shown}); resume with the "
                "config it was started with, or start a new run"
            )

    def _log_inputs(self) -> None:
        from mlflow.entities import Param

        tags = {**provenance_tags(), **self.tags}
        if self.dataset_dir is not None:
            tags.update(log_dataset_input(self.dataset_dir))
        self.set_tags(tags)
        if self.config is None:
            return
        params = [Param(k, v) for k, v in flatten_params(self.config).items()]
        for start in range(0, len(params), _BATCH):
            self._client.log_batch(
                self.run_id, params=params[start : start + _BATCH], synchronous=True
            )
        self._client.log_dict(self.run_id, self.config, CONFIG_ARTIFACT)


def _has_psutil() -> bool:
    return importlib.util.find_spec("psutil") is not None


def _stop_system_metrics(mlflow: Any, run_id: str) -> None:
    """Stop the system-metrics sampler of ``run_id`` (what ``mlflow.end_run`` would do)."""
    monitors = getattr(mlflow.tracking.fluent, "run_id_to_system_metrics_monitor", {})
    monitor = monitors.pop(run_id, None)
    if monitor is not None:
        monitor.finish()
