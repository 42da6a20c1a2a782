"""Prediction settings read from a checkpoint's ``extra``, with errors naming the bad key."""

from __future__ import annotations

import pytest

from minivess.errors import ConfigError
from minivess.inference import PredictionSettings

from .conftest import PREDICTION_EXTRA


def test_training_extras_round_trip() -> None:
    settings = PredictionSettings.from_extra(PREDICTION_EXTRA)
    assert settings.preprocessing.percentiles == (1.0, 99.8)
    assert settings.inference.roi_size == (32, 32, 8)
    assert settings.inference.overlap == 0.25
    assert settings.inference.sw_batch_size == 4
    assert settings.inference.precision == "fp32"


def test_checkpoints_from_before_the_blend_setting_keep_gaussian_blending() -> None:
    window = {k: v for k, v in PREDICTION_EXTRA["inference"].items() if k != "blend"}
    old = {**PREDICTION_EXTRA, "inference": window}
    assert PredictionSettings.from_extra(old).inference.blend == "gaussian"
    for blend in ("constant", "gaussian"):
        stated = {**PREDICTION_EXTRA, "inference": {**window, "blend": blend}}
        assert PredictionSettings.from_extra(stated).inference.blend == blend


def test_training_writes_the_configured_blending_into_checkpoints() -> None:
    from minivess.config.experiment import compose
    from minivess.training.recipe import checkpoint_extras

    default = checkpoint_extras(compose())
    assert default["inference"]["blend"] == "constant"
    assert PredictionSettings.from_extra(default).inference.blend == "constant"
    gaussian = compose(["inference.blend=gaussian"])
    assert checkpoint_extras(gaussian)["inference"]["blend"] == "gaussian"


def test_settings_written_back_to_extra_read_as_equal() -> None:
    import json

    settings = PredictionSettings.from_extra(PREDICTION_EXTRA)
    extra = json.loads(json.dumps(settings.to_extra()))  # plain JSON, as checkpoints store it
    assert PredictionSettings.from_extra(extra) == settings
    assert extra["inference"]["roi_size"] == [32, 32, 8]


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"inference": PREDICTION_EXTRA["inference"]}, "'preprocessing'"),
        ({"preprocessing": PREDICTION_EXTRA["preprocessing"]}, "'inference'"),
        (
            {
                **PREDICTION_EXTRA,
                "inference": {**PREDICTION_EXTRA["inference"], "roi_size": [0, 4, 4]},
            },
            "inference.roi_size",
        ),
        (
            {**PREDICTION_EXTRA, "preprocessing": {"percentile_lower": 99, "percentile_upper": 1}},
            "preprocessing",
        ),
    ],
)
def test_missing_or_invalid_settings_name_the_key(extra: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PredictionSettings.from_extra(extra)


def test_precision_override_is_validated() -> None:
    settings = PredictionSettings.from_extra(PREDICTION_EXTRA)
    assert settings.with_precision("auto").inference.precision == "auto"
    assert settings.with_precision("auto").inference.roi_size == (32, 32, 8)
    with pytest.raises(ConfigError, match=r"inference\.precision"):
        settings.with_precision("fp8")
