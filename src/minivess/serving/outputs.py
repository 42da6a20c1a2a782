"""The uncertainty outputs of the service: which ones the served model can give, and what they are.

A model gives the conformal mask only if ``minivess conformal`` stored a threshold in it, and
the prediction sets only if it stored their cut-offs (see :mod:`minivess.uncertainty.head`).
The service asks :func:`require_output` before it reads an upload, so a request for an output
the model cannot give is refused at once, with the command that adds it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from minivess.errors import MinivessError
from minivess.uncertainty.conformal import UNCERTAIN
from minivess.uncertainty.metrics import binary_entropy

if TYPE_CHECKING:
    from minivess.data.volume import Volume
    from minivess.inference import Prediction
    from minivess.uncertainty.head import UncertaintyHead

Output = Literal["conformal", "prediction_sets", "entropy"]
"""A per-voxel uncertainty output, named as its endpoint."""


class OutputUnavailable(MinivessError):
    """The served model cannot give the output asked for (409, with how to add it).

    Args:
        rule: ``no-conformal`` or ``no-prediction-sets``.
        message: What is missing and how to add it.
    """

    status = HTTPStatus.CONFLICT

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message
        super().__init__(f"[{rule}] {message}")


def require_output(head: UncertaintyHead | None, output: Output, source: str) -> None:
    """Refuse ``output`` when the served model's uncertainty head cannot produce it.

    Args:
        head: What the model stores (``Predictor.uncertainty``); ``None`` for nothing.
        output: The output asked for; ``entropy`` needs nothing.
        source: The served model (``serve.model``), named in the fix.

    Raises:
        OutputUnavailable: ``conformal`` without a stored threshold, or ``prediction_sets``
            without stored cut-offs.

    Example:
        >>> require_output(None, "entropy", "best.pt")
        >>> try:
        ...     require_output(None, "conformal", "best.pt")
        ... except OutputUnavailable as refused:
        ...     print(refused.rule, int(refused.status))
        no-conformal 409
    """
    if output == "conformal" and (head is None or head.fnr_control is None):
        missing, rule = "conformal threshold (for the risk-controlled mask)", "no-conformal"
    elif output == "prediction_sets" and (head is None or head.prediction_sets is None):
        missing, rule = "conformal prediction sets", "no-prediction-sets"
    else:
        return
    raise OutputUnavailable(
        rule,
        f"the served model {source} stores no {missing}; calibrate it with `minivess conformal "
        f"-m {source} -d <prepared dataset> -o conformal.pt` and serve that checkpoint "
        "(minivess serve -m conformal.pt)",
    )


def output_volume(prediction: Prediction, output: Output) -> Volume:
    """The map ``output`` of a prediction, on the input's grid.

    * ``conformal``: ``uint8`` risk-controlled mask (1 = vessel);
    * ``prediction_sets``: ``uint8`` 0 background, 1 vessel, 2 uncertain;
    * ``entropy``: ``float32`` binary entropy of P(vessel) (calibrated if the model is), in
      bits: 0 where the model is sure, 1 at P = 0.5.

    Raises:
        OutputUnavailable: The prediction lacks the map (the model stores no such head).
    """
    if output == "entropy":
        probability = prediction.probability
        return probability.with_array(binary_entropy(probability.array))
    found = prediction.conformal_mask if output == "conformal" else prediction.prediction_set
    if found is None:
        require_output(None, output, prediction.model.source)
    assert found is not None  # require_output raised
    return found


def uncertainty_summary(prediction: Prediction, head: UncertaintyHead | None) -> dict[str, Any]:
    """``calibrated``, ``conformal`` and ``uncertain_fraction`` of a prediction, for ``/summary``.

    ``conformal`` is ``{alpha, threshold, vessel_voxels, vessel_fraction}`` of the
    risk-controlled mask, ``uncertain_fraction`` the share of voxels whose prediction set holds
    both classes; each is ``None`` when the model stores no such head.
    """
    conformal = None
    if prediction.conformal_mask is not None and head is not None and head.fnr_control:
        mask = np.asarray(prediction.conformal_mask.array)
        vessel = int(np.count_nonzero(mask))
        conformal = {
            "alpha": head.fnr_control.alpha,
            "threshold": head.fnr_control.threshold,
            "vessel_voxels": vessel,
            "vessel_fraction": vessel / mask.size,
        }
    uncertain = None
    if prediction.prediction_set is not None:
        uncertain = float(np.mean(np.asarray(prediction.prediction_set.array) == UNCERTAIN))
    return {
        "calibrated": prediction.calibrated,
        "conformal": conformal,
        "uncertain_fraction": uncertain,
    }
