"""``minivess export`` and ``minivess predict --backend``: one model, two runtimes, one mask."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from minivess.cli.export import export
from minivess.cli.main import EXIT_USER_ERROR, main
from minivess.cli.predict import predict
from minivess.data.io import read_volume, write_nifti
from minivess.data.volume import Volume
from minivess.errors import ConfigError
from minivess.export import load_onnx

if TYPE_CHECKING:
    from tests.v2.conftest import OnnxModel


def cli() -> typer.Typer:
    """Both commands as the ``minivess`` app registers them."""
    app = typer.Typer()
    app.command("export")(export)
    app.command("predict")(predict)
    return app


@pytest.fixture(scope="module")
def real_nifti(vesselnn_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 x 96 x 26 crop of a real VesselNN volume as NIfTI."""
    volume = read_volume(next((vesselnn_dir / "denoised").glob("poon2015_plaqueVessels_*")))
    crop = np.ascontiguousarray(volume.array[64:192, 200:296])
    path = tmp_path_factory.mktemp("cli-export") / "plaque.nii.gz"
    return write_nifti(path, crop, like=Volume(crop, volume.affine))


def mask_of(folder: Path) -> np.ndarray:
    return np.asarray(cast(Any, nib.load(str(folder / "plaque_mask.nii.gz"))).dataobj)


def test_export_writes_a_file_that_predicts_like_the_checkpoint(
    onnx_model: OnnxModel, onnx_cache: Path, real_nifti: Path, tmp_path: Path
) -> None:
    target = tmp_path / "model.onnx"
    runner = CliRunner()
    result = runner.invoke(
        cli(), ["export", "--model", str(onnx_model.checkpoint), "--out", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(target)]
    assert load_onnx(target)[1].adapter == "segresnet"
    masks = {}
    for name, args in {
        "torch": ["--model", str(onnx_model.checkpoint), "--backend", "torch"],
        "onnx": ["--model", str(onnx_model.checkpoint), "--backend", "onnx"],
        "file": ["--model", str(target)],
    }.items():
        out = tmp_path / name
        done = runner.invoke(cli(), ["predict", str(real_nifti), *args, "--out", str(out)])
        assert done.exit_code == 0, done.output
        masks[name] = mask_of(out)
    for name in ("onnx", "file"):
        agreement = float((masks[name] == masks["torch"]).mean())
        print(f"{name} vs torch mask agreement {agreement:.6f}")
        assert agreement >= 0.9999
    np.testing.assert_array_equal(masks["onnx"], masks["file"])


def test_out_must_be_an_onnx_file(onnx_model: OnnxModel, tmp_path: Path) -> None:
    args = ["export", "--model", str(onnx_model.checkpoint), "--out", str(tmp_path / "m.pt")]
    result = CliRunner().invoke(cli(), args)
    assert isinstance(result.exception, ConfigError)
    assert not (tmp_path / "m.pt").exists()


def test_corrupt_onnx_model_is_one_line_error(
    onnx_model: OnnxModel, real_nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(onnx_model.onnx.read_bytes()[:4096])
    with pytest.raises(SystemExit) as code:
        main(["predict", str(real_nifti), "--model", str(broken), "--out", str(tmp_path / "o")])
    assert code.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error:")
    assert "[unreadable] not a readable ONNX model" in " ".join(err.split())
    assert not (tmp_path / "o").exists()
