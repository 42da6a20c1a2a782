"""Registry promotion: the champion alias moves only to a better model on the same split."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from minivess.errors import MinivessError
from minivess.tracking import CHAMPION, TrackedRun, log_model, register_and_promote


def _trained(checkpoint: Path, dice: float, *, with_model: bool = True) -> str:
    with TrackedRun("exp", log_system_metrics=False) as run:
        run.log_metrics({"val_dice": dice - 0.2}, step=1)
        run.log_metrics({"val_dice": dice}, step=2)
        if with_model:
            log_model(checkpoint)
    return run.run_id


def _champion(name: str):
    return mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)


def test_champion_moves_only_to_a_strictly_better_model(tracking: str, checkpoint: Path) -> None:
    first = register_and_promote(_trained(checkpoint, 0.70), "vessels", split_id="s1")
    assert (first.version, first.promoted, first.reason) == ("1", True, "no champion yet")

    worse = register_and_promote(_trained(checkpoint, 0.65), "vessels", split_id="s1")
    assert (worse.version, worse.promoted, worse.previous) == ("2", False, "1")
    assert "does not beat champion v1" in worse.reason
    equal = register_and_promote(_trained(checkpoint, 0.70), "vessels", split_id="s1")
    assert not equal.promoted

    better_run = _trained(checkpoint, 0.80)
    better = register_and_promote(better_run, "vessels", split_id="s1")
    assert (better.version, better.promoted, better.value) == ("4", True, 0.80)
    champion = _champion("vessels")
    assert str(champion.version) == "4"
    assert champion.run_id == better_run
    assert champion.tags == {"split_id": "s1", "val_dice": "0.8"}


def test_champion_uri_loads_the_promoted_version(tracking: str, checkpoint: Path) -> None:
    register_and_promote(_trained(checkpoint, 0.5), "vessels", split_id="s1")
    better = register_and_promote(_trained(checkpoint, 0.6), "vessels", split_id="s1")
    loaded = mlflow.pyfunc.load_model(f"models:/vessels@{CHAMPION}")
    version = mlflow.MlflowClient().get_model_version("vessels", better.version)
    assert version.source == f"models:/{loaded.model_id}"


def test_a_champion_from_another_split_is_never_replaced(tracking: str, checkpoint: Path) -> None:
    register_and_promote(_trained(checkpoint, 0.5), "vessels", split_id="fold0")
    other = register_and_promote(_trained(checkpoint, 0.99), "vessels", split_id="fold1")
    assert not other.promoted
    assert "'fold0'" in other.reason
    assert "'fold1'" in other.reason
    assert "not comparable" in other.reason
    assert str(_champion("vessels").version) == "1"


def test_a_champion_ranked_by_another_metric_is_kept(tracking: str, checkpoint: Path) -> None:
    register_and_promote(_trained(checkpoint, 0.5), "vessels", split_id="s1")
    run_id = _trained(checkpoint, 0.9)
    mlflow.MlflowClient().log_metric(run_id, "val_cldice", 0.9)
    result = register_and_promote(run_id, "vessels", split_id="s1", metric="val_cldice")
    assert not result.promoted
    assert "no val_cldice tag" in result.reason


def test_missing_metric_lists_what_the_run_has(tracking: str, checkpoint: Path) -> None:
    with pytest.raises(MinivessError, match=r"no metric 'dice'.*val_dice"):
        register_and_promote(_trained(checkpoint, 0.5), "vessels", split_id="s1", metric="dice")


def test_run_without_a_logged_model_is_a_clear_error(tracking: str, checkpoint: Path) -> None:
    run_id = _trained(checkpoint, 0.5, with_model=False)
    with pytest.raises(MinivessError, match="logged no model named 'model'"):
        register_and_promote(run_id, "vessels", split_id="s1")
