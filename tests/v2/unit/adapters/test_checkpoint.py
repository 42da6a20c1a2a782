from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import minivess
from minivess.adapters import (
    CheckpointError,
    build_adapter,
    load_checkpoint,
    save_checkpoint,
)
from minivess.errors import ConfigError, MinivessError

from .conftest import TINY_SEGRESNET

ROI = (16, 16, 8)


def _run_state():
    """What a trainer keeps beside the weights, apart from optimizer state."""
    return {
        "epoch": 3,
        "run_id": "abc123",
        "metrics": {"dice": 0.71, "losses": [0.9, 0.5]},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }


def test_checkpoint_alone_reproduces_identical_predictions(tmp_path, tiny_segresnet, odd_image):
    path = tiny_segresnet.save_checkpoint(tmp_path / "model.pt", data_version="dvc:1f2e")
    expected = tiny_segresnet.predict_volume(odd_image, roi_size=ROI, precision="fp32")
    del tiny_segresnet

    adapter, info = load_checkpoint(path)

    assert torch.equal(adapter.predict_volume(odd_image, roi_size=ROI, precision="fp32"), expected)
    assert adapter.name == info.adapter == "segresnet"
    assert adapter.config == build_adapter("segresnet", TINY_SEGRESNET).config
    assert info.data_version == "dvc:1f2e"
    assert info.code_version["minivess"] == minivess.__version__
    assert info.path == path


def test_checkpoint_loads_with_weights_only(tmp_path, tiny_segresnet):
    extra = _run_state()
    path = save_checkpoint(tiny_segresnet, tmp_path / "last.pt", extra=extra)

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "minivess-checkpoint"
    assert raw["format_version"] == 1
    assert raw["adapter"] == "segresnet"

    _, info = load_checkpoint(path)
    assert info.extra["epoch"] == 3
    assert info.extra["run_id"] == "abc123"
    assert info.extra["metrics"] == {"dice": 0.71, "losses": [0.9, 0.5]}
    assert torch.equal(info.extra["rng"]["torch"], extra["rng"]["torch"])
    random.setstate(info.extra["rng"]["python"])


@pytest.mark.slow  # the first optimizer pulls in torch._dynamo (~7 s on a loaded 2-core box)
def test_optimizer_and_scheduler_state_survive_a_checkpoint(tmp_path, tiny_segresnet):
    optimizer = torch.optim.AdamW(tiny_segresnet.network.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    tiny_segresnet.forward(torch.randn(1, 1, 8, 8, 4)).mean().backward()
    optimizer.step()
    scheduler.step()
    extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    path = save_checkpoint(tiny_segresnet, tmp_path / "last.pt", extra=extra)

    torch.load(path, weights_only=True)
    adapter, info = load_checkpoint(path)
    resumed = torch.optim.AdamW(adapter.network.parameters(), lr=1e-3)
    resumed.load_state_dict(info.extra["optimizer"])
    resumed_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(resumed, T_max=10)
    resumed_scheduler.load_state_dict(info.extra["scheduler"])
    assert resumed.state_dict()["state"][0]["step"] == 1
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()


def test_unstorable_extra_is_named_and_leaves_the_old_file(tmp_path, tiny_segresnet):
    path = save_checkpoint(tiny_segresnet, tmp_path / "model.pt", extra={"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"extra\['rng'\]\['numpy'\].*numpy"):
        save_checkpoint(tiny_segresnet, path, extra={"epoch": 2, "rng": {"numpy": np.zeros(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match=r"corrupt\.pt.*\[unreadable\]") as caught:
        load_checkpoint(path)
    assert isinstance(caught.value, MinivessError)
    assert caught.value.path == path


def test_truncated_file_names_the_file(tmp_path, tiny_segresnet):
    full = tiny_segresnet.save_checkpoint(tmp_path / "full.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*\[unreadable\]"):
        load_checkpoint(path)


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"\[missing\]"):
        load_checkpoint(tmp_path / "nope.pt")


def test_bare_state_dict_is_not_a_checkpoint(tmp_path, tiny_segresnet):
    path = tmp_path / "weights.pt"
    torch.save(tiny_segresnet.network.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"\[format\].*not a minivess checkpoint"):
        load_checkpoint(path)


def _tampered(tmp_path, source, **changes):
    path = source.save_checkpoint(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return path


def test_checkpoint_of_an_uninstalled_adapter_lists_installed_ones(tmp_path, tiny_segresnet):
    path = _tampered(tmp_path, tiny_segresnet, adapter="mystery-net")
    with pytest.raises(CheckpointError, match=r"mystery-net.*segresnet.*swinunetr"):
        load_checkpoint(path)


def test_newer_format_version_asks_for_an_upgrade(tmp_path, tiny_segresnet):
    path = _tampered(tmp_path, tiny_segresnet, format_version=2)
    with pytest.raises(CheckpointError, match="upgrade minivess"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config_are_reported(tmp_path, tiny_segresnet):
    config = dict(TINY_SEGRESNET, init_filters=8)
    path = _tampered(tmp_path, tiny_segresnet, config=config)
    with pytest.raises(CheckpointError, match=r"\[state-dict\]"):
        load_checkpoint(path)
