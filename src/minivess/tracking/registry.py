"""Register a run's model and move the ``champion`` alias only to a better model.

Each registered version is tagged with ``split_id`` and the value of the promotion metric
(``<metric>: <value>``). The alias moves when the new version's metric is strictly higher than
the champion's *on the same split*: scores on different validation splits are not comparable,
so a champion evaluated on another split is never replaced automatically; the returned
:class:`Promotion` says why, and a person decides (``MlflowClient().set_registered_model_alias``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from minivess.errors import MinivessError
from minivess.tracking.model import MODEL_NAME
from minivess.tracking.setup import ensure_configured, import_mlflow

CHAMPION = "champion"
"""Alias of the model version that serving loads (``models:/<name>@champion``)."""
SPLIT_TAG = "split_id"


@dataclass(frozen=True)
class Promotion:
    """Outcome of :func:`register_and_promote`.

    Args:
        version: The newly registered model version.
        promoted: Whether ``champion`` now points at it.
        reason: Why (or why not), in one sentence for logs and the CLI.
        value: The new version's metric value.
        previous: The champion version before the call, if any.
    """

    version: str
    promoted: bool
    reason: str
    value: float
    previous: str | None = None


def register_and_promote(
    run_id: str,
    model_name: str,
    *,
    split_id: str,
    metric: str = "val_dice",
    artifact_name: str = MODEL_NAME,
) -> Promotion:
    """Register the model logged by ``run_id`` and promote it if it beats the champion.

    Args:
        run_id: Run that logged the model (with :func:`~minivess.tracking.model.log_model`).
        model_name: Registered model name; created if missing.
        split_id: Identifies the validation data the metric was measured on (e.g. the splits
            file version and fold); only versions with the same ``split_id`` are compared.
        metric: Run metric to rank by, higher is better (its latest value is used).
        artifact_name: Name the model was logged under in the run.

    Returns:
        The new version, whether it became champion, and why.

    Raises:
        MinivessError: The run has no such metric or logged model.

    Example:
        >>> result = register_and_promote(run_id, "vessels", split_id="f0")  # doctest: +SKIP
        >>> result.promoted, result.reason  # doctest: +SKIP
        (True, 'no champion yet')
    """
    ensure_configured()
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if metric not in run.data.metrics:
        known = ", ".join(sorted(run.data.metrics)) or "none"
        raise MinivessError(
            f"run {run_id} has no metric {metric!r} to rank by (it has: {known}); "
            "pass one of those as the promotion metric"
        )
    value = float(run.data.metrics[metric])
    champion = _champion(client, model_name)
    registered = mlflow.register_model(
        _model_uri(client, run, artifact_name),
        model_name,
        tags={SPLIT_TAG: split_id, metric: repr(value)},
    )
    version = str(registered.version)
    promoted, reason = _decide(champion, metric, value, split_id)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    previous = str(champion.version) if champion is not None else None
    return Promotion(version, promoted, reason, value, previous)


def _decide(champion: Any, metric: str, value: float, split_id: str) -> tuple[bool, str]:
    if champion is None:
        return True, "no champion yet"
    tags = champion.tags or {}
    current = f"champion v{champion.version}"
    if tags.get(SPLIT_TAG) != split_id:
        return False, (
            f"{current} was validated on split {tags.get(SPLIT_TAG)!r}, this model on "
            f"{split_id!r}: scores are not comparable, so the alias stays; move it by hand if "
            "this model should serve"
        )
    if metric not in tags:
        return False, f"{current} carries no {metric} tag to compare with; the alias stays"
    best = float(tags[metric])
    if math.isnan(value) or not value > best:
        return False, f"{metric} {value:.4f} does not beat {current} ({best:.4f})"
    return True, f"{metric} {value:.4f} beats {current} ({best:.4f})"


def _champion(client: Any, model_name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:  # no such model yet, or no champion alias
        return None


def _model_uri(client: Any, run: Any, artifact_name: str) -> str:
    """``models:/<model_id>`` of the model the run logged as ``artifact_name``."""
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    for output in outputs:
        model = client.get_logged_model(output.model_id)
        if model.name == artifact_name:
            return f"models:/{model.model_id}"
    raise MinivessError(
        f"run {run.info.run_id} logged no model named {artifact_name!r}; "
        "log it first with minivess.tracking.log_model(checkpoint)"
    )
