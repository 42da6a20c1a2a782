"""Plan -> train -> predict with resampling, on volumes of three voxel sizes.

One tiny run (a couple of optimiser steps) trained from ``minivess plan`` on synthetic volumes
at 0.5, 1 and 2 um in-plane; its checkpoint must predict every volume on the volume's own grid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from minivess.adapters import ModelAdapter, load_checkpoint
from minivess.config.experiment import ExperimentConfig, compose
from minivess.data.io import read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.inference import PredictionSettings, Predictor
from minivess.metrics import dice_per_volume

#: In-plane voxel size (um) and in-plane voxels of the three volumes: the same 48 um field.
GRIDS = ((0.5, 96), (1.0, 48), (2.0, 24))
DEPTH = (8, 5.0)
TINY = ["model.params.init_filters=4", "model.params.num_groups=4"]


@pytest.fixture(scope="module")
def mixed_spacing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset of three synthetic volumes whose vessels are alike in micrometres."""
    from minivess.data.prepare import prepare_dataset
    from minivess.data.splits import save_splits, splits_for_prepared
    from minivess.data.synthetic import make_vessel_volume

    root = tmp_path_factory.mktemp("mixed")
    for i, (spacing, n) in enumerate(GRIDS):
        image, label = make_vessel_volume((n, n, DEPTH[0]), (spacing, spacing, DEPTH[1]), seed=i)
        write_nifti(root / "imagesTr" / f"v{i}.nii.gz", image.array, image)
        write_nifti(root / "labelsTr" / f"v{i}.nii.gz", label.array, label)
    prepared = prepare_dataset(root, root / "prepared")
    save_splits(splits_for_prepared(prepared.out, k=3, seed=0), prepared.out / "splits.json")
    return prepared.out


@pytest.fixture(scope="module")
def planned_run(
    mixed_spacing: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentConfig, Path]:
    """``minivess plan`` on the dataset, then one epoch of training from the plan."""
    from minivess.cli.main import main
    from minivess.cli.train import with_plan
    from minivess.training.recipe import train

    plan = tmp_path_factory.mktemp("plan") / "plan.yaml"
    args = ["plan", str(mixed_spacing), *TINY, "--device", "cpu", "--memory-gb", "0.05"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "-o", str(plan)])
    assert exit_info.value.code == 0
    user = [
        "training.max_epochs=1",
        "training.scheduler.warmup_epochs=0",
        "training.precision=fp32",
        "inference.precision=fp32",
        "data.augmentation.enabled=false",
    ]
    overrides, _ = with_plan(plan, user)
    cfg = compose(overrides)
    result = train(cfg, tmp_path_factory.mktemp("run") / "run")
    return cfg, result.best_checkpoint


def _prepared_images(folder: Path) -> list[Path]:
    return sorted((folder / "images").glob("*.nii.gz"))


def test_the_plan_resamples_and_training_keeps_the_spacing(planned_run: Any) -> None:
    cfg, checkpoint = planned_run
    assert cfg.data.target_spacing_um == (1.0, 1.0, None)
    _, info = load_checkpoint(checkpoint)
    assert info.extra["preprocessing"]["target_spacing_um"] == [1.0, 1.0, None]
    settings = PredictionSettings.from_checkpoint(info)
    assert settings.preprocessing.target_spacing_um == (1.0, 1.0, None)
    history = json.loads((checkpoint.parent.parent / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1.0]
    assert 0.0 <= history[0]["val_dice"] <= 1.0  # validated on the original grid


def test_every_prediction_has_the_input_shape_and_affine(
    planned_run: Any, mixed_spacing: Path, tmp_path: Path
) -> None:
    _, checkpoint = planned_run
    predictor = Predictor.from_source(checkpoint)
    for path in _prepared_images(mixed_spacing):
        source = read_volume(path)
        written = predictor.predict_file(path, tmp_path / "out", probabilities=True)
        for output in written:
            result = read_volume(output)
            assert result.shape == source.shape, output.name
            np.testing.assert_allclose(result.affine, source.affine, atol=1e-6)
        mask = read_volume(written[0]).array
        prob = read_volume(written[1]).array
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert float(prob.min()) >= 0.0
        assert float(prob.max()) <= 1.0
        np.testing.assert_array_equal(mask, (prob > 0.5).astype(mask.dtype))


def _window_voxels(predictor: Predictor, volume: Volume) -> int:
    """Voxels the network was run on (summed over sliding windows) to predict ``volume``."""
    seen: list[int] = []
    network = predictor.adapter.network
    handle = network.register_forward_pre_hook(
        lambda _, args: seen.append(int(np.prod(args[0].shape[2:])) * int(args[0].shape[0]))
    )
    try:
        predictor.probabilities(volume)
    finally:
        handle.remove()
    return sum(seen)


def _without_spacing(checkpoint: Path) -> Predictor:
    """The same weights and settings, predicting on the input's grid."""
    adapter, info = load_checkpoint(checkpoint)
    stored = info.extra["preprocessing"]
    preprocessing = {k: v for k, v in stored.items() if k != "target_spacing_um"}
    return Predictor(
        adapter, PredictionSettings.from_extra({**info.extra, "preprocessing": preprocessing})
    )


def test_the_network_runs_at_the_training_spacing(planned_run: Any, mixed_spacing: Path) -> None:
    _, checkpoint = planned_run
    resampling = Predictor.from_source(checkpoint)
    plain = _without_spacing(checkpoint)
    fine, _, coarse = (read_volume(p) for p in _prepared_images(mixed_spacing))
    assert (fine.spacing[0], coarse.spacing[0]) == (0.5, 2.0)
    # 96x96 at 0.5 um is seen as 48x48; 24x24 at 2 um is seen as 48x48
    assert _window_voxels(resampling, fine) < _window_voxels(plain, fine)
    assert _window_voxels(resampling, coarse) > _window_voxels(plain, coarse)


def test_validation_during_training_scores_on_the_original_grid(
    planned_run: Any, mixed_spacing: Path
) -> None:
    from minivess.data.datasets import build_loaders
    from minivess.training.validation import WholeVolumeValidator, validation_volumes

    cfg, checkpoint = planned_run
    adapter, _ = load_checkpoint(checkpoint)
    volumes = validation_volumes(build_loaders(cfg.data, 1, seed=0)[1])
    validator = WholeVolumeValidator(
        volumes,
        roi_size=cfg.inference.roi_size,
        overlap=cfg.inference.overlap,
        precision="fp32",
        target_spacing_um=cfg.data.target_spacing_um,
    )
    validator(adapter)
    predictor = Predictor.from_source(checkpoint)
    for case_id, scores in validator.last_per_volume.items():
        image = read_volume(mixed_spacing / "images" / f"{case_id}.nii.gz")
        label = read_volume(mixed_spacing / "labels" / f"{case_id}.nii.gz").array > 0
        mask = predictor.predict(image).mask.array > 0
        expected = float(dice_per_volume(torch.as_tensor(mask)[None], torch.as_tensor(label)[None]))
        assert scores["dice"] == pytest.approx(expected, abs=1e-6)


def test_block_by_block_prediction_refuses_a_resampling_model(
    planned_run: Any, mixed_spacing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minivess.cli.main import main

    _, checkpoint = planned_run
    image = _prepared_images(mixed_spacing)[0]
    args = ["predict", str(image), "-m", str(checkpoint), "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--memory-budget-mb", "1"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "predict without --memory-budget-mb" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_exported_metadata_keeps_the_training_spacing(planned_run: Any) -> None:
    from minivess.export.metadata import OnnxMetadata
    from minivess.export.onnx import describe

    _, checkpoint = planned_run
    adapter, info = load_checkpoint(checkpoint)
    meta = describe(adapter, PredictionSettings.from_checkpoint(info), info)
    back = OnnxMetadata.from_props(meta.to_props(), checkpoint)
    assert back.settings.preprocessing.target_spacing_um == (1.0, 1.0, None)


def test_a_checkpoint_without_the_setting_predicts_as_before(
    checkpoint: Path, tiny_adapter: ModelAdapter
) -> None:
    """Checkpoints written before ``target_spacing_um`` existed load and predict unchanged."""
    from minivess.data.synthetic import make_vessel_volume
    from minivess.data.transforms import normalise_intensity

    _, info = load_checkpoint(checkpoint)
    assert "target_spacing_um" not in info.extra["preprocessing"]
    predictor = Predictor.from_source(checkpoint)
    assert predictor.settings.preprocessing.target_spacing_um is None
    image, _ = make_vessel_volume((40, 36, 12), (1.5, 1.5, 5.0), seed=3)
    inference = predictor.settings.inference
    # the path before resampling existed: normalise, sliding window on the input's grid
    direct = tiny_adapter.predict_volume(
        normalise_intensity(image.array[None], (1.0, 99.8)),
        roi_size=inference.roi_size,
        overlap=inference.overlap,
        sw_batch_size=inference.sw_batch_size,
        precision=inference.precision,
    )
    assert torch.equal(predictor.probabilities(image), direct)
    # a target equal to the volume's own spacing is no resampling at all
    own = {**info.extra["preprocessing"], "target_spacing_um": [1.5, 1.5, 5.0]}
    same = Predictor(
        tiny_adapter, PredictionSettings.from_extra({**info.extra, "preprocessing": own})
    )
    assert torch.equal(same.probabilities(image), direct)


def test_a_bad_stored_spacing_is_a_checkpoint_error(tmp_path: Path, tiny_adapter: Any) -> None:
    from minivess.adapters import CheckpointError

    bad = {
        "preprocessing": {
            "percentile_lower": 1,
            "percentile_upper": 99.8,
            "target_spacing_um": [1, -1, 5],
        },
        "inference": {
            "roi_size": [32, 32, 16],
            "overlap": 0.25,
            "sw_batch_size": 1,
            "precision": "fp32",
        },
    }
    path = tiny_adapter.save_checkpoint(tmp_path / "bad.pt", extra=bad)
    with pytest.raises(CheckpointError, match="target_spacing_um"):
        Predictor.from_source(path)


def test_a_real_volume_is_predicted_on_its_own_grid(planned_run: Any, vesselnn_dir: Path) -> None:
    """A crop of poon2015_plaqueVessels (2.485 um in-plane) through a model trained at 1 um."""
    from minivess.data.io import parse_ome_spacing, read_tiff
    from minivess.data.volume import affine_from_spacing

    name = "poon2015_plaqueVessels"
    image = read_tiff(next((vesselnn_dir / "denoised").glob(f"{name}_*")))
    spacing = parse_ome_spacing(
        (vesselnn_dir / "metadata" / f"{name}_metadata.xml.txt").read_bytes()
    )
    assert spacing is not None
    assert spacing[0] == pytest.approx(2.485, abs=1e-3)
    affine = affine_from_spacing(spacing)
    affine[:3, 3] = (12.0, -3.0, 40.0)  # an origin the outputs must keep
    crop = Volume(np.ascontiguousarray(image.array[0:40, 96:130, :]), affine)
    _, checkpoint = planned_run
    predictor = Predictor.from_source(checkpoint)
    prediction = predictor.predict(crop)
    for output in (prediction.mask, prediction.probability):
        assert output.shape == crop.shape
        np.testing.assert_array_equal(output.affine, crop.affine)
    # the network saw the crop at 1 um: about 2.5x as many in-plane voxels per axis
    assert _window_voxels(predictor, crop) > 4 * _window_voxels(_without_spacing(checkpoint), crop)


def test_the_pyfunc_flavour_refuses_bare_arrays_for_a_resampling_model(planned_run: Any) -> None:
    from types import SimpleNamespace

    from minivess.errors import ConfigError
    from minivess.tracking.pyfunc import CHECKPOINT_ARTIFACT, MinivessPyfunc

    _, checkpoint = planned_run
    model = MinivessPyfunc()
    model.load_context(SimpleNamespace(artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)}))
    with pytest.raises(ConfigError, match="carries no voxel size"):
        model.predict(None, np.zeros((1, 16, 16, 8), np.float32))
