"""bentofile.yaml: loads with BentoML's own loader and names the service ``minivess serve`` runs.

``bentoml build`` itself takes about a minute on two cores (it imports the service), so it is
not run here; docs/serving.md shows how.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import bentoml
from bentoml._internal.bento.build_config import BentoBuildConfig

from minivess.cli.serve import SERVICE

BENTOFILE = Path(__file__).resolve().parents[4] / "bentofile.yaml"


def test_bentofile_loads_and_points_at_the_service() -> None:
    config = BentoBuildConfig.from_file(str(BENTOFILE)).with_defaults()
    assert config.service == SERVICE
    module, name = SERVICE.split(":")
    assert isinstance(getattr(importlib.import_module(module), name), bentoml.Service)
    assert config.python.lock_packages is False  # building must not need the internet
    root = BENTOFILE.parent
    for pattern in ("pyproject.toml", "README.md", "configs/settings.toml"):
        assert f"/{pattern}" in (config.include or [])
        assert (root / pattern).is_file()
