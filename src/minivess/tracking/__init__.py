"""Experiment tracking with MLflow: runs, a training handler, models, a registry and SQL.

Importing this package does not import MLflow; it is loaded on first use, so a user who turned
tracking off pays nothing.

Example:
    >>> configure_tracking()  # doctest: +SKIP
    >>> with TrackedRun(config=cfg, dataset_dir=cfg.data.dataset_dir) as run:  # doctest: +SKIP
    ...     trainer.attach(MLflowHandler(run)).run()
    ...     info = log_model(checkpointer.best)
    >>> register_and_promote(run.run_id, "minivess", split_id=split_id)  # doctest: +SKIP
"""

from minivess.tracking.handler import MLflowHandler
from minivess.tracking.model import log_model
from minivess.tracking.plots import log_overlays
from minivess.tracking.query import leaderboard, query_runs, runs_frame
from minivess.tracking.registry import CHAMPION, Promotion, register_and_promote
from minivess.tracking.run import TrackedRun
from minivess.tracking.setup import configure_tracking

__all__ = [
    "CHAMPION",
    "MLflowHandler",
    "Promotion",
    "TrackedRun",
    "configure_tracking",
    "leaderboard",
    "log_model",
    "log_overlays",
    "query_runs",
    "register_and_promote",
    "runs_frame",
]
