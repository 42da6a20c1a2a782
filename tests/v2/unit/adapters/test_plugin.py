"""The example plugin package examples/minivess-unet2d, in-process and installed for real."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from minivess.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "minivess-unet2d"
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


@pytest.fixture
def unet2d(monkeypatch):
    """The example's module imported from its source tree (no install)."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    import minivess_unet2d

    return minivess_unet2d


def test_forward_runs_the_2d_network_on_every_slice(unet2d):
    torch.manual_seed(0)
    adapter = unet2d.UNet2DAdapter.from_config(TINY)
    adapter.network.eval()
    x = torch.randn(2, 1, 16, 24, 5)
    with torch.no_grad():
        logits = adapter.forward(x)
        third_slice = adapter.network.net(x[1:2, :, :, :, 3])
    assert logits.shape == (2, 2, 16, 24, 5)
    torch.testing.assert_close(logits[1:2, :, :, :, 3], third_slice)


def test_predict_volume_reassembles_slices_into_the_input_shape(unet2d):
    torch.manual_seed(0)
    adapter = unet2d.UNet2DAdapter.from_config(TINY)
    image = torch.randn(1, 16, 16, 7)
    probs = adapter.predict_volume(image, roi_size=(16, 16, 1), precision="fp32")
    assert probs.shape == (2, 16, 16, 7)
    adapter.network.eval()
    with torch.no_grad():
        per_slice = torch.softmax(adapter.network.net(image.permute(3, 0, 1, 2)), dim=1)
    torch.testing.assert_close(probs, per_slice.permute(1, 2, 3, 0))

    odd = adapter.predict_volume(torch.randn(1, 37, 41, 11), roi_size=(16, 16, 4))
    assert odd.shape == (2, 37, 41, 11)


def test_size_rule_is_in_plane_only(unet2d):
    adapter = unet2d.UNet2DAdapter.from_config(TINY)
    assert adapter.valid_size((8, 16, 1))
    assert not adapter.valid_size((4, 16, 3))
    assert adapter.pad_to_valid((37, 41, 11)) == (40, 44, 11)


def test_config_errors_name_the_field(unet2d):
    with pytest.raises(ConfigError, match="strides needs len"):
        unet2d.UNet2DAdapter.from_config({"channels": [4, 8, 16], "strides": [2]})


CHECK_INSTALLED = textwrap.dedent(
    """
    import sys
    import torch
    import minivess_unet2d
    from minivess.adapters import ADAPTERS, build_adapter, load_checkpoint

    assert "unet2d" in ADAPTERS.names(), ADAPTERS.names()
    assert ADAPTERS.get("unet2d") is minivess_unet2d.UNet2DAdapter
    adapter = build_adapter("unet2d", {"channels": [4, 8, 16], "strides": [2, 2]})
    assert adapter.forward(torch.zeros(1, 1, 16, 16, 3)).shape == (1, 2, 16, 16, 3)
    probs = adapter.predict_volume(torch.zeros(1, 21, 19, 5), roi_size=(16, 16, 2))
    assert probs.shape == (2, 21, 19, 5), probs.shape
    loaded, info = load_checkpoint(adapter.save_checkpoint(sys.argv[1]))
    assert info.adapter == "unet2d" and loaded.config == adapter.config
    print("plugin ok:", ADAPTERS.names())
    """
)


@pytest.mark.slow
@pytest.mark.integration
def test_installed_plugin_is_found_through_its_entry_point(tmp_path, plugin_site):
    env = dict(os.environ, PYTHONPATH=str(plugin_site))
    done = subprocess.run(
        [sys.executable, "-c", CHECK_INSTALLED, str(tmp_path / "unet2d.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "unet2d" in done.stdout
