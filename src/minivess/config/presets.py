"""Named experiment presets, stored for Hydra with hydra-zen.

The primary config ``minivess_experiment`` is built from :class:`ExperimentConfig` itself: its
values are the pydantic field defaults, so no default is written twice. Three groups refine it,
applied in this order (a later one wins where they overlap):

``data``
    ``vesselnn``: the prepared VesselNN dataset under the deployment setting ``data.root``
    (``<data.root>/vesselnn`` with its ``splits.json``).
``profile``
    ``quick`` (default): SegResNet-sized bf16 CPU run meant to finish within about 15 minutes
    on 2 cores: 96x96x16 patches, 2 per step (from one volume), AdamW 2e-3 with 2 warm-up epochs and
    cosine decay, Dice + CE, 180 epochs of 4 steps (720 steps), at most 13 min of training.
    ``full``: GPU-sized: 128x128x32 patches, 8 per step, 1000 epochs, early stopping.
``model``
    ``segresnet`` (default, 16 initial filters) or ``swinunetr`` (feature size 12), each with
    the patch and window sizes it accepts (SwinUNETR: every axis a multiple of 32).

Values may refer to deployment settings with ``${minivess.settings:KEY}``, e.g.
``${minivess.settings:data.root}``; secrets cannot be read this way.

Example:
    >>> from minivess.config.experiment import compose
    >>> cfg = compose(["profile=quick", "model=swinunetr"])  # doctest: +SKIP
    >>> cfg.data.patch_size  # doctest: +SKIP
    (64, 64, 32)
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from hydra_zen import ZenStore, builds
from omegaconf import MISSING, OmegaConf
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from minivess.config.experiment import ExperimentConfig
from minivess.config.model import ModelConfig
from minivess.config.settings import get_settings
from minivess.errors import ConfigError

PRIMARY_CONFIG = "minivess_experiment"
"""Name of the primary config in Hydra's config store."""
SETTINGS_RESOLVER = "minivess.settings"


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The raw field defaults of ``model`` as a plain (YAML-ready) tree.

    A nested model declared with an instance default contributes that instance's values; one
    that is required or built by a default factory contributes its own field defaults, taken
    as declared rather than validated, so that e.g. ``model.params`` starts empty and the chosen
    model preset fills it. Other required fields become Hydra's ``"???"`` (missing: a preset or
    an override must set them).

    Args:
        model: A pydantic model class.

    Returns:
        ``{field: default}`` for every field of ``model``.
    """
    node: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(field.default, BaseModel):
            node[name] = field.default.model_dump(mode="json")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            node[name] = field_defaults(annotation)
        elif field.is_required():
            node[name] = MISSING
        else:
            node[name] = to_jsonable_python(field.get_default(call_default_factory=True))
    return node


def _setting(key: str) -> str:
    """Resolver ``${minivess.settings:data.root}``: a deployment setting as a string."""
    if key.split(".")[0] == "secrets":
        raise ConfigError(f"${{{SETTINGS_RESOLVER}:{key}}}: secrets cannot go into configs")
    try:
        return str(attrgetter(key)(get_settings()))
    except AttributeError:
        raise ConfigError(f"${{{SETTINGS_RESOLVER}:{key}}}: no such deployment setting") from None


PRIMARY_NODE = builds(
    ExperimentConfig,
    **field_defaults(ExperimentConfig),
    hydra_convert="all",
    hydra_defaults=[
        "_self_",
        {"data": "vesselnn"},
        {"profile": "quick"},
        {"model": "segresnet"},
    ],
)
"""Structured config of :class:`ExperimentConfig`; instantiating it validates the experiment."""

VESSELNN = {
    "dataset_dir": "${" + SETTINGS_RESOLVER + ":data.root}/vesselnn",
    "splits_file": "${.dataset_dir}/splits.json",
}

QUICK = {
    "name": "quick",
    "data": {"patch_size": [96, 96, 16], "samples_per_volume": 2, "cache": "memory"},
    # Windows of the training patch size: 128x128x32 windows pad thin stacks (Z 10-26) with
    # zeros the network never saw and cost 3 Dice points on poon2015_BBB_Leakage.
    "inference": {"roi_size": [96, 96, 16], "precision": "bf16"},
    "training": {
        # 720 steps: what 12.5 min of bf16 steps (~1 s each on 2 cores) allow, so the cosine
        # schedule completes instead of being cut by the time limit.
        "max_epochs": 180,
        "batch_size": 1,
        "val_every_n_epochs": 45,
        "precision": "bf16",
        "device": "cpu",
        "max_time_minutes": 13,
        "optimizer": {"name": "adamw", "lr": 2e-3},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 2},
        "loss": {"name": "dice_ce"},
    },
}

FULL = {
    "name": "full",
    "data": {"patch_size": [128, 128, 32], "samples_per_volume": 4, "num_workers": 4},
    "inference": {"roi_size": [128, 128, 32], "sw_batch_size": 4, "precision": "auto"},
    "training": {
        "max_epochs": 1000,
        "batch_size": 2,
        "val_every_n_epochs": 25,
        "precision": "auto",
        "device": "auto",
        "early_stopping_patience": 10,
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "scheduler": {"name": "warmup_cosine", "warmup_epochs": 20},
        "loss": {"name": "dice_ce"},
    },
}

# Every adapter parameter is spelled out, so any of them can be overridden by name
# (model.params.dropout_prob=0.1) without Hydra's "+" prefix.
SEGRESNET = {
    "model": ModelConfig(name="segresnet", params={"init_filters": 16}).model_dump(mode="json")
}

SWINUNETR = {
    "model": ModelConfig(name="swinunetr", params={"feature_size": 12}).model_dump(mode="json"),
    "data": {"patch_size": [64, 64, 32]},
    "inference": {"roi_size": [64, 64, 32]},
}

store = ZenStore(name="minivess", overwrite_ok=True)
"""Every minivess preset; :func:`register_configs` hands them to Hydra."""
store(PRIMARY_NODE, name=PRIMARY_CONFIG)
store(VESSELNN, group="data", name="vesselnn")
store(QUICK, group="profile", name="quick", package="_global_")
store(FULL, group="profile", name="full", package="_global_")
store(SEGRESNET, group="model", name="segresnet", package="_global_")
store(SWINUNETR, group="model", name="swinunetr", package="_global_")


def _register_plugin_models() -> None:
    from minivess.adapters import ADAPTERS

    for name in ADAPTERS.names():
        if name in ("segresnet", "swinunetr"):
            continue
        try:
            preset = {"model": ModelConfig(name=name).model_dump(mode="json")}
        except (ConfigError, ValidationError):
            continue  # a plugin with required parameters: select it with model.name=...
        store(preset, group="model", name=name, package="_global_")


def register_configs() -> None:
    """Put the presets into Hydra's global config store and register the settings resolver.

    Safe to call repeatedly: entries and the resolver are replaced, not duplicated. Every
    installed adapter plugin whose parameters all have defaults gets a ``model=<name>`` preset
    too, so ``minivess train model=unet2d model.params.channels=[8,16,32]`` works for plugins.
    """
    _register_plugin_models()
    store.add_to_hydra_store(overwrite_ok=True)
    OmegaConf.register_new_resolver(SETTINGS_RESOLVER, _setting, replace=True)
