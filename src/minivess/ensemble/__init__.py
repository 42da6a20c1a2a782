"""Ensembles of trained models: combined predictions, weight soups, disagreement maps.

An ensemble is a model adapter (``"ensemble"``), so it is saved as one checkpoint and then
evaluated, logged, registered, served and predicted with like any model.

Example:
    >>> from minivess.ensemble import build_ensemble, save_ensemble  # doctest: +SKIP
    >>> ensemble, extra = build_ensemble(["fold0/best.pt", "fold1/best.pt"])  # doctest: +SKIP
    >>> save_ensemble(ensemble, extra, "ensemble.pt")  # doctest: +SKIP
"""

from minivess.adapters import ADAPTERS
from minivess.ensemble.build import build_ensemble, load_members, save_ensemble
from minivess.ensemble.combine import (
    COMBINES,
    Combine,
    EnsembleAdapter,
    EnsembleConfig,
    combine_probabilities,
)
from minivess.ensemble.disagreement import Disagreement, mutual_information, vessel_variance
from minivess.ensemble.soup import SoupResult, average_weights, greedy_soup
from minivess.ensemble.weights import fit_weights, weights_from_scores

# Registered here as well as by entry point, so an ensemble checkpoint loads in any process
# that imported minivess.ensemble even where the entry point is not installed yet.
ADAPTERS.register(EnsembleAdapter.name, EnsembleAdapter)

__all__ = [
    "COMBINES",
    "Combine",
    "Disagreement",
    "EnsembleAdapter",
    "EnsembleConfig",
    "SoupResult",
    "average_weights",
    "build_ensemble",
    "combine_probabilities",
    "fit_weights",
    "greedy_soup",
    "load_members",
    "mutual_information",
    "save_ensemble",
    "vessel_variance",
    "weights_from_scores",
]
