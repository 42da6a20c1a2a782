"""Planning rules: patch, patches per step, resampling, sampling, and plan files as overrides."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from minivess.adapters import ModelAdapter, SizeRule
from minivess.config.experiment import compose
from minivess.config.model import ModelConfig
from minivess.data.prepare import PreparedDataset
from minivess.errors import ConfigError
from minivess.planning import (
    DatasetFingerprint,
    MemoryModel,
    Plan,
    VolumeFingerprint,
    derive_plan,
    fingerprint_dataset,
)
from minivess.planning.plan import plan_patch, plan_patches_per_step, resampling_decision

#: 100 activation elements per voxel and no parameters: a patch costs 800 bytes per voxel.
SIMPLE = MemoryModel(activations_per_voxel=100.0, n_parameters=0)


def volume(
    case: str,
    spacing: tuple[float, float, float] = (1.0, 1.0, 5.0),
    radius_um: float = 4.0,
    fraction: float = 0.2,
    shape: tuple[int, int, int] = (512, 512, 16),
) -> VolumeFingerprint:
    in_plane = (spacing[0] + spacing[1]) / 2
    return VolumeFingerprint(
        id=case,
        shape=shape,
        spacing=spacing,
        vessel_fraction=fraction,
        intensity={"p50": 10.0},
        radius_um={"p10": radius_um / 2, "p50": radius_um, "p90": radius_um * 2},
        radius_voxels={"p10": radius_um / 2 / in_plane, "p50": radius_um / in_plane, "p90": 0},
    )


def dataset(*volumes: VolumeFingerprint) -> DatasetFingerprint:
    return DatasetFingerprint(Path("/data/x"), "x", "v" * 64, volumes)


def test_patch_is_the_median_shape_when_the_budget_allows() -> None:
    patch, _ = plan_patch((60, 70, 15), (1, 1, 5), SizeRule.uniform(8), SIMPLE, 1e12)
    assert patch == (64, 72, 16)  # grown to the size rule


def test_patch_shrinks_the_largest_physical_extent_until_two_fit() -> None:
    budget = 2 * 800 * 96 * 96 * 16  # exactly two 96x96x16 patches
    patch, reason = plan_patch((512, 512, 15), (1.0, 1.0, 5.0), SizeRule.uniform(8), SIMPLE, budget)
    assert patch == (96, 96, 16)
    assert "95" not in reason
    assert "96 x 96 x 80 um" in reason
    assert SIMPLE.step_bytes(patch, 2) <= budget


def test_depth_shrinks_first_when_it_spans_the_most_micrometres() -> None:
    budget = 2 * 800 * 64 * 64 * 16
    patch, _ = plan_patch((64, 64, 32), (1.0, 1.0, 5.0), SizeRule.uniform(8), SIMPLE, budget)
    assert patch == (64, 64, 16)


def test_patch_respects_a_coarse_size_rule() -> None:
    rule = SizeRule((32, 32, 32), (64, 64, 32))  # SwinUNETR's
    patch, _ = plan_patch((512, 512, 15), (1, 1, 5), rule, SIMPLE, 2 * 800 * 128 * 128 * 32)
    assert rule.valid(patch)
    assert patch[2] == 32


def test_a_budget_below_two_minimal_patches_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot hold 2 patches"):
        plan_patch((512, 512, 16), (1, 1, 5), SizeRule.uniform(8), SIMPLE, 1000.0)


def test_patches_per_step_fill_the_budget_within_bounds() -> None:
    per_patch = 800 * 32 * 32 * 8
    n, _ = plan_patches_per_step((32, 32, 8), SIMPLE, 7.5 * per_patch, 10**9)
    assert n == 7
    n, _ = plan_patches_per_step((32, 32, 8), SIMPLE, 1.0 * per_patch, 10**9)
    assert n == 2  # at least two, whatever the budget
    n, reason = plan_patches_per_step((32, 32, 8), SIMPLE, 100 * per_patch, 32 * 32 * 8 * 80)
    assert n == 4
    assert "5%" in reason


def test_no_resampling_when_spacing_is_alike() -> None:
    fp = dataset(volume("a", (1.0, 1.0, 5.0)), volume("b", (1.5, 1.5, 5.0)))
    decision = resampling_decision(fp)
    assert not decision.resample
    assert "1.50x" in decision.reason
    assert "depth is never resampled" in decision.reason


def test_no_resampling_when_vessels_are_alike_in_voxels() -> None:
    # every lab images its vessels at about 4 voxels radius, whatever the spacing
    fp = dataset(
        volume("a", (0.6, 0.6, 5.0), radius_um=2.4),
        volume("b", (1.0, 1.0, 5.0), radius_um=4.0),
        volume("c", (2.5, 2.5, 5.0), radius_um=10.0),
    )
    decision = resampling_decision(fp)
    assert not decision.resample
    assert decision.target_spacing_um is None
    assert "more alike in voxels" in decision.reason


def test_resampling_when_vessels_are_alike_in_micrometres() -> None:
    fp = dataset(
        volume("a", (0.6, 0.6, 5.0), radius_um=4.0),
        volume("b", (1.0, 1.0, 5.0), radius_um=4.2),
        volume("c", (2.5, 2.5, 5.0), radius_um=3.9),
    )
    decision = resampling_decision(fp)
    assert decision.resample
    # depth (5x the in-plane spacing) is never resampled: each volume keeps its own
    assert decision.target_spacing_um == [1.0, 1.0, None]
    assert "depth is never resampled" in decision.reason


def test_near_isotropic_depth_is_resampled_with_the_plane() -> None:
    fp = dataset(
        volume("a", (0.6, 0.6, 1.0), radius_um=4.0),
        volume("b", (1.0, 1.0, 2.0), radius_um=4.2),
        volume("c", (2.5, 2.5, 3.0), radius_um=3.9),
    )
    assert resampling_decision(fp).target_spacing_um == [1.0, 1.0, 2.0]


ALIKE_IN_UM = (
    volume("fine", (0.5, 0.5, 5.0), radius_um=4.0, shape=(512, 512, 16)),
    volume("mid", (1.0, 1.0, 5.0), radius_um=4.2, shape=(256, 256, 16)),
    volume("coarse", (2.0, 2.0, 5.0), radius_um=3.9, shape=(128, 128, 16)),
)


@pytest.fixture
def resampling_plan(tmp_path: Path) -> Path:
    plan = derive_plan(
        dataset(*ALIKE_IN_UM), ModelConfig(name="segresnet"), memory_gb=1.0, memory=SIMPLE
    )
    return plan.save(tmp_path / "plan.yaml")


def test_a_resampling_plan_sets_the_training_spacing(resampling_plan: Path) -> None:
    plan = Plan.load(resampling_plan)
    setting = plan.settings["data.target_spacing_um"]
    assert setting.value == [1.0, 1.0, None]
    assert "median 1.000 um" in setting.reason
    cfg = compose(plan.overrides())
    assert cfg.data.target_spacing_um == (1.0, 1.0, None)


def test_the_patch_is_planned_on_the_resampled_volumes(resampling_plan: Path) -> None:
    # resampled to 1 um every volume is 256x256x16 (512 x 0.5, 256 x 1, 128 x 2), so the median
    # shape the patch starts from is 256x256x16, whatever the prepared shapes
    plan = Plan.load(resampling_plan)
    assert "(256, 256, 16)" in plan.settings["data.patch_size"].reason


def test_the_command_line_overrides_the_planned_spacing(resampling_plan: Path) -> None:
    from minivess.cli.train import with_plan

    for user, expected in (
        (["data.target_spacing_um=null"], None),
        (["data.target_spacing_um=[0.8,0.8,null]"], (0.8, 0.8, None)),
        ([], (1.0, 1.0, None)),
    ):
        overrides, logged = with_plan(resampling_plan, user)
        assert compose(overrides).data.target_spacing_um == expected
        assert logged == (resampling_plan,)


def test_a_plan_without_resampling_trains_at_the_prepared_spacing() -> None:
    fp = dataset(volume("a", (1.0, 1.0, 5.0)), volume("b", (1.5, 1.5, 5.0)))
    plan = derive_plan(fp, ModelConfig(name="segresnet"), memory_gb=1.0, memory=SIMPLE)
    assert plan.settings["data.target_spacing_um"].value is None
    assert compose(plan.overrides()).data.target_spacing_um is None


@pytest.mark.parametrize(("fraction", "ratio"), [(0.03, [2.0, 1.0]), (0.2, [1.0, 1.0])])
def test_sparse_vessels_oversample_foreground(fraction: float, ratio: list[float]) -> None:
    fp = dataset(volume("a", fraction=fraction), volume("b", fraction=0.4))
    plan = derive_plan(fp, ModelConfig(name="segresnet"), memory_gb=1.0, memory=SIMPLE)
    assert plan.settings["data.pos_neg_ratio"].value == ratio


def test_cpu_and_gpu_windows() -> None:
    fp = dataset(volume("a"), volume("b"))
    cpu = derive_plan(fp, ModelConfig(name="segresnet"), memory_gb=1.0, memory=SIMPLE)
    gpu = derive_plan(fp, ModelConfig(), device="cuda", memory_gb=8.0, memory=SIMPLE)
    assert cpu.settings["inference.overlap"].value == 0.25
    assert gpu.settings["inference.overlap"].value == 0.5
    for plan in (cpu, gpu):
        assert plan.settings["inference.roi_size"].value == plan.settings["data.patch_size"].value
        assert plan.estimated_step_gb <= plan.memory_budget_gb


def test_memory_probe_counts_activations_and_parameters(tiny_adapter: ModelAdapter) -> None:
    params = tiny_adapter.config.model_dump(mode="json")
    small = MemoryModel.probe(ModelConfig(name="segresnet", params=params))
    wide = MemoryModel.probe(ModelConfig(name="segresnet", params={**params, "init_filters": 8}))
    assert 0 < small.activations_per_voxel < wide.activations_per_voxel
    assert 0 < small.n_parameters < wide.n_parameters
    assert small.step_bytes((32, 32, 16), 4) == pytest.approx(
        4 * 8 * small.activations_per_voxel * 32 * 32 * 16 + 16 * small.n_parameters
    )


@pytest.fixture(scope="module")
def synthetic_plan(prepared_synthetic: PreparedDataset, tmp_path_factory: pytest.TempPathFactory):
    model = compose(
        [
            f"data.dataset_dir={prepared_synthetic.out}",
            f"data.splits_file={prepared_synthetic.out}/splits.json",
            "model.params.init_filters=4",
            "model.params.num_groups=4",
        ]
    ).model
    plan = derive_plan(
        fingerprint_dataset(prepared_synthetic.out),
        model,
        memory_gb=0.05,
        model_overrides=["model.params.init_filters=4", "model.params.num_groups=4"],
    )
    return plan.save(tmp_path_factory.mktemp("plan") / "plan.yaml")


def test_plan_file_round_trips(synthetic_plan: Path) -> None:
    plan = Plan.load(synthetic_plan)
    assert plan.model == "segresnet"
    assert plan.settings["data.patch_size"].reason
    assert plan.fingerprint["n_volumes"] == 4
    assert plan.estimated_step_gb <= plan.memory_budget_gb == 0.05


def test_plan_overrides_compose_into_the_planned_experiment(synthetic_plan: Path) -> None:
    plan = Plan.load(synthetic_plan)
    cfg = compose(plan.overrides())
    assert list(cfg.data.patch_size) == plan.settings["data.patch_size"].value
    assert list(cfg.inference.roi_size) == plan.settings["inference.roi_size"].value
    assert cfg.training.batch_size * cfg.data.samples_per_volume >= 2
    assert str(cfg.data.dataset_dir) == plan.settings["data.dataset_dir"].value
    assert cfg.model.params["init_filters"] == 4  # the network the plan was made for


def test_user_overrides_beat_the_plan(synthetic_plan: Path) -> None:
    plan = Plan.load(synthetic_plan)
    user = ["data.patch_size=[32,32,16]", "model.params.init_filters=8"]
    cfg = compose([*plan.overrides(user), *user])
    assert cfg.data.patch_size == (32, 32, 16)
    assert cfg.model.params["init_filters"] == 8
    assert list(cfg.inference.roi_size) == plan.settings["inference.roi_size"].value


def test_a_plan_for_another_model_is_refused(synthetic_plan: Path) -> None:
    with pytest.raises(ConfigError, match="made for model=segresnet"):
        Plan.load(synthetic_plan).overrides(["model=swinunetr"])


def test_unreadable_plans_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Plan.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: .*settings"):
        Plan.load(bad)


def test_plan_numbers_are_finite(synthetic_plan: Path) -> None:
    plan = Plan.load(synthetic_plan)
    assert math.isfinite(plan.estimated_step_gb)
    assert np.all(np.array(plan.settings["data.patch_size"].value) % 8 == 0)
