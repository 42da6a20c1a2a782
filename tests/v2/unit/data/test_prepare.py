"""prepare: any source folder -> one canonical dataset, all or nothing, every problem named."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
import tifffile

from minivess.data.io import read_volume
from minivess.data.manifest import (
    MANIFEST_COLUMNS,
    InvalidDatasetError,
    dataset_version,
    file_sha256,
    read_manifest,
)
from minivess.data.prepare import PreparedDataset, prepare_dataset
from minivess.data.sources import Case, DatasetSource
from minivess.data.sources.minivess import DecathlonSource
from minivess.data.sources.vesselnn import MissingMetadataWarning, VesselNNSource
from minivess.data.synthetic import write_synthetic_dataset
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import ConfigError, DataError

SHAPE = (12, 10, 6)


def _label(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[2:5, 3:6, 1:4] = 1
    return label


def _image(shape: tuple[int, ...] = SHAPE, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, shape).astype(dtype)


def _save_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...] = (0.7, 0.7, 2.3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else np.eye(4)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units(xyz="micron")
    nib.save(img, str(path))
    return path


def _decathlon(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    for case_id, (image, label) in cases.items():
        _save_nifti(root / "imagesTr" / f"{case_id}.nii.gz", image)
        _save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label)
    return root


def _good(n: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {f"case{i}": (_image(), _label()) for i in range(n)}


def _vesselnn(root: Path, label_zyx: np.ndarray | None = None, metadata: bytes | None = None):
    """A one-volume VesselNN folder; ``label_zyx``/``metadata`` override the good defaults."""
    zyx = np.random.default_rng(1).integers(0, 255, (4, 8, 8), dtype=np.uint8)
    if label_zyx is None:
        label_zyx = np.zeros(zyx.shape, np.uint8)
        label_zyx[1:3, 2:5, 2:5] = 255
    if metadata is None:
        metadata = (
            b'<OME><Image><Pixels PhysicalSizeX="0.994" PhysicalSizeY="0.994" '
            b'PhysicalSizeZ="5.0" SizeX="8"/></Image></OME>'
        )
    for folder in ("denoised", "labels", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "denoised" / "stack_BM4D_denoised.tif", zyx, photometric="minisblack")
    tifffile.imwrite(root / "labels" / "stack_labels_v1.tif", label_zyx, photometric="minisblack")
    (root / "metadata" / "stack_metadata.xml.txt").write_bytes(metadata)
    return root


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == [], f"temp files left beside {out}: {leftovers}"


def _out(tmp_path: Path) -> Path:
    return tmp_path / "prepared" / "ds"


class ArraySource(DatasetSource):
    """Serves in-memory volumes, for conditions no on-disk layout can produce."""

    name: ClassVar[str] = "arrays"

    def __init__(self, root: Path, volumes: dict[str, tuple[Volume, Volume | None]]) -> None:
        self.root = root
        self.volumes = volumes

    @classmethod
    def detect(cls, root: Path) -> bool:
        return False

    def discover(self, root: Path) -> list[Case]:
        return [
            Case(key.split("#")[0], self.name, str(root / f"{key}.img"), str(root / f"{key}.lbl"))
            for key in self.volumes
        ]

    def load(self, case: Case) -> tuple[Volume, Volume | None]:
        return self.volumes[Path(case.image).stem]


def _vol(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 5.0)) -> Volume:
    return Volume(array, affine_from_spacing(spacing))


# --- the prepared folder -------------------------------------------------------------------


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    root = tmp_path / "synthetic"
    write_synthetic_dataset(root, n=3, seed=0, shape=(24, 24, 8), spacing=(0.9, 0.9, 4.7))
    return root


def test_prepared_folder_has_the_canonical_layout(synthetic_root: Path, tmp_path: Path) -> None:
    out = _out(tmp_path)
    ds = prepare_dataset(synthetic_root, out)

    assert isinstance(ds, PreparedDataset)
    assert ds.out == out
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "images",
        "labels",
        "manifest.csv",
    ]
    manifest = read_manifest(out / "manifest.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert list(manifest["id"]) == ["synth000", "synth001", "synth002"]
    assert list(manifest["image"]) == [f"images/{i}.nii.gz" for i in manifest["id"]]
    assert list(manifest["original_image"]) == [f"imagesTr/{i}.nii.gz" for i in manifest["id"]]
    assert set(manifest["source"]) == {"decathlon"}
    for row in manifest.itertuples():
        assert file_sha256(out / row.image) == row.image_sha256
        assert file_sha256(out / row.label) == row.label_sha256
    info = json.loads((out / "dataset.json").read_text())
    assert info == {
        "name": "ds",
        "source": "decathlon",
        "source_root": str(synthetic_root.resolve()),
        "n_volumes": 3,
        "version": ds.version,
        "created_by": info["created_by"],
    }
    assert info["created_by"].startswith("minivess ")
    assert ds.version == dataset_version(manifest)
    assert [p.name for p in out.parent.iterdir()] == ["ds"]  # no temp dirs left


def test_nifti_round_trips_voxels_dtype_and_spacing(tmp_path: Path) -> None:
    image = np.random.default_rng(2).normal(100, 20, SHAPE).astype(np.float32)
    root = _decathlon(tmp_path / "src", {"a": (image, _label().astype(np.int16) * 1)})
    ds = prepare_dataset(root, _out(tmp_path))

    source = DecathlonSource()
    loaded_image, loaded_label = source.load(source.discover(root)[0])
    assert loaded_label is not None
    got_image = read_volume(ds.out / "images" / "a.nii.gz")
    got_label = read_volume(ds.out / "labels" / "a.nii.gz")
    assert got_image.array.dtype == np.float32
    assert np.array_equal(got_image.array, loaded_image.array)
    assert got_label.array.dtype == np.uint8
    assert np.array_equal(got_label.array, loaded_label.array)
    expected = tuple(float(np.float32(s)) for s in loaded_image.spacing)
    assert got_image.spacing == expected
    assert got_label.spacing == expected
    row = ds.manifest.iloc[0]
    assert (row.spacing_h, row.spacing_w, row.spacing_d) == expected
    assert row["dtype"] == "float32"
    assert row.intensity_min == float(image.min())
    assert row.intensity_max == float(image.max())
    assert row.vessel_fraction == pytest.approx(loaded_label.array.mean())


def test_version_depends_on_content_not_location(synthetic_root: Path, tmp_path: Path) -> None:
    first = prepare_dataset(synthetic_root, tmp_path / "a" / "ds")
    again = prepare_dataset(synthetic_root, tmp_path / "b" / "other-name")
    assert first.version == again.version
    (synthetic_root / "labelsTr" / "synth001.nii.gz").unlink()
    _save_nifti(
        synthetic_root / "labelsTr" / "synth001.nii.gz", _label((24, 24, 8)), (0.9, 0.9, 4.7)
    )
    changed = prepare_dataset(synthetic_root, tmp_path / "c" / "ds")
    assert changed.version != first.version


def test_source_can_be_named_or_given(synthetic_root: Path, tmp_path: Path) -> None:
    detected = prepare_dataset(synthetic_root, tmp_path / "detected")
    named = prepare_dataset(synthetic_root, tmp_path / "named", source="decathlon")
    given = prepare_dataset(synthetic_root, tmp_path / "given", source=DecathlonSource())
    assert detected.version == named.version == given.version


def test_progress_reports_every_volume(synthetic_root: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    prepare_dataset(synthetic_root, _out(tmp_path), progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "synth000"), (2, 3, "synth001"), (3, 3, "synth002")]


# --- atomicity -----------------------------------------------------------------------------


def test_existing_output_is_refused_and_left_alone(synthetic_root: Path, tmp_path: Path) -> None:
    out = _out(tmp_path)
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError) as err:
        prepare_dataset(synthetic_root, out)
    assert err.value.rule == "output-exists"
    assert str(out) in str(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_overwrite_replaces_the_folder(synthetic_root: Path, tmp_path: Path) -> None:
    out = _out(tmp_path)
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    ds = prepare_dataset(synthetic_root, out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert len(read_manifest(out / "manifest.csv")) == 3 == len(ds.manifest)
    assert [p.name for p in out.parent.iterdir()] == ["ds"]


def test_failed_overwrite_keeps_the_old_folder(tmp_path: Path) -> None:
    out = _out(tmp_path)
    good = prepare_dataset(_decathlon(tmp_path / "good", _good()), out)
    bad = _decathlon(tmp_path / "bad", {"a": (_image(), np.zeros(SHAPE, np.uint8))})
    with pytest.raises(DataError):
        prepare_dataset(bad, out, overwrite=True)
    assert read_manifest(out / "manifest.csv")["id"].tolist() == ["case0", "case1"]
    assert json.loads((out / "dataset.json").read_text())["version"] == good.version
    assert [p.name for p in out.parent.iterdir()] == ["ds"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_interrupt_leaves_no_partial_output(
    synthetic_root: Path, tmp_path: Path, overwrite: bool
) -> None:
    out = _out(tmp_path)
    if overwrite:
        prepare_dataset(synthetic_root, out)
        before = file_sha256(out / "manifest.csv")

    def interrupt(done: int, total: int, case_id: str) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(synthetic_root, out, overwrite=overwrite, progress=interrupt)
    if overwrite:
        assert file_sha256(out / "manifest.csv") == before
        assert [p.name for p in out.parent.iterdir()] == ["ds"]
    else:
        _assert_nothing_written(out)


@pytest.mark.parametrize("where", ["same", "parent"])
def test_output_may_not_replace_the_source(synthetic_root: Path, where: str) -> None:
    out = synthetic_root if where == "same" else synthetic_root.parent
    with pytest.raises(DataError) as err:
        prepare_dataset(synthetic_root, out, overwrite=True)
    assert err.value.rule == "output-path"
    assert (synthetic_root / "imagesTr" / "synth000.nii.gz").is_file()


# --- malformed inputs: each names the file and the rule, and writes nothing -----------------


def _truncated_gzip(root: Path) -> str:
    _decathlon(root, _good())
    path = root / "imagesTr" / "case1.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])
    return str(path)


def _tiff_shape_mismatch(root: Path) -> str:
    _vesselnn(root, label_zyx=np.full((4, 8, 7), 255, np.uint8))
    return str(root / "labels" / "stack_labels_v1.tif")


def _non_binary_label(root: Path) -> str:
    label = _label()
    label[0, 0, 0] = 2
    _decathlon(root, {"a": (_image(), label)})
    return str(root / "labelsTr" / "a.nii.gz")


def _non_binary_tiff_label(root: Path) -> str:
    label = np.zeros((4, 8, 8), np.uint8)
    label[1, 1:3, 1:3], label[2, 4:6, 4:6] = 255, 128
    _vesselnn(root, label_zyx=label)
    return str(root / "labels" / "stack_labels_v1.tif")


def _empty_label(root: Path) -> str:
    _decathlon(root, {"a": (_image(), np.zeros(SHAPE, np.uint8))})
    return str(root / "labelsTr" / "a.nii.gz")


def _nan_image(root: Path) -> str:
    image = _image(dtype=np.float32)
    image[3, 3, 3] = np.nan
    _decathlon(root, {"a": (image, _label())})
    return str(root / "imagesTr" / "a.nii.gz")


def _two_d_file(root: Path) -> str:
    _decathlon(root, {"a": (_image(), _label())})
    path = root / "imagesTr" / "a.nii.gz"
    _save_nifti(path, _image()[:, :, 0], spacing=())
    return str(path)


def _zero_spacing(root: Path) -> str:
    _decathlon(root, {"a": (_image(), _label())})
    path = root / "imagesTr" / "a.nii.gz"
    img = nib.Nifti1Image(_image(), None)  # geometry from pixdim alone, which may hold a zero
    img.header.set_zooms((0.7, 0.7, 0.0))
    nib.save(img, str(path))
    return str(path)


def _unknown_layout(root: Path) -> str:
    (root / "volumes").mkdir(parents=True)
    _save_nifti(root / "volumes" / "a.nii.gz", _image())
    return str(root)


def _duplicate_ids(root: Path) -> str:
    _decathlon(root, {"a": (_image(), _label())})
    nib.save(nib.load(str(root / "imagesTr" / "a.nii.gz")), str(root / "imagesTr" / "a.nii"))
    return "imagesTr/a.nii"


def _garbage_metadata(root: Path) -> str:
    _vesselnn(root, metadata=b"\xff\xfe garbage <Pixels PhysicalSizeX=oops")
    return str(root / "metadata" / "stack_metadata.xml.txt")


def _symlink_outside(root: Path) -> str:
    _decathlon(root, _good())
    outside = _save_nifti(root.parent / "elsewhere.nii.gz", _image())
    link = root / "imagesTr" / "case2.nii.gz"
    link.symlink_to(outside)
    _save_nifti(root / "labelsTr" / "case2.nii.gz", _label())
    return str(link)


MALFORMED = {
    "truncated-gzip": (_truncated_gzip, "corrupt-file"),
    "tiff-label-shape-mismatch": (_tiff_shape_mismatch, "shape-mismatch"),
    "non-binary-label": (_non_binary_label, "label-binary"),
    "non-binary-tiff-label": (_non_binary_tiff_label, "label-binary"),
    "empty-label": (_empty_label, "label-empty"),
    "nan-image": (_nan_image, "non-finite"),
    "2d-file": (_two_d_file, "dimensionality"),
    "zero-spacing": (_zero_spacing, "spacing"),
    "unknown-layout": (_unknown_layout, "unknown-layout"),
    "duplicate-ids": (_duplicate_ids, "duplicate-case"),
    "garbage-metadata": (_garbage_metadata, "metadata"),
    "symlink-outside-root": (_symlink_outside, "outside-root"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_is_named_and_nothing_is_written(tmp_path: Path, case: str) -> None:
    make, rule = MALFORMED[case]
    root = tmp_path / "src"
    bad_file = make(root)
    out = _out(tmp_path)
    with pytest.raises(DataError) as err:
        prepare_dataset(root, out)
    message = str(err.value)
    assert bad_file in message
    assert f"[{rule}]" in message
    _assert_nothing_written(out)


def test_every_bad_volume_is_reported_at_once(tmp_path: Path) -> None:
    nan_image = _image(dtype=np.float32)
    nan_image[0, 0, 0] = np.inf
    root = _decathlon(
        tmp_path / "src",
        {
            "a_good": (_image(), _label()),
            "b_empty": (_image(), np.zeros(SHAPE, np.uint8)),
            "c_inf": (nan_image, _label()),
            "d_mismatch": (_image(), _label((12, 10, 5))),
        },
    )
    out = _out(tmp_path)
    with pytest.raises(InvalidDatasetError) as err:
        prepare_dataset(root, out)
    found = {(Path(str(p.path)).name, p.rule) for p in err.value.problems}
    assert found == {
        ("b_empty.nii.gz", "label-empty"),
        ("c_inf.nii.gz", "non-finite"),
        ("d_mismatch.nii.gz", "shape-mismatch"),
    }
    for problem in err.value.problems:
        assert str(problem) in str(err.value)
    _assert_nothing_written(out)


# --- rules a third-party source could break; prepare enforces them itself ------------------


def test_volume_rules_hold_for_any_source(tmp_path: Path) -> None:
    label = _label()
    cases: dict[str, tuple[Volume, Volume | None]] = {
        "flat": (_vol(_image()), _vol(label[:, :, 0])),
        "unlabelled": (_vol(_image()), None),
        "half": (_vol(_image()), _vol(label * 0.5)),
        "shifted": (_vol(_image()), _vol(np.pad(label, 1))),
        "nan_spacing": (_vol(_image(), (1.0, np.nan, 5.0)), _vol(label)),
        "bad id": (_vol(_image()), _vol(label)),
        "twin#1": (_vol(_image()), _vol(label)),
        "twin#2": (_vol(_image()), _vol(label)),
    }
    root = tmp_path / "src"
    root.mkdir()
    out = _out(tmp_path)
    with pytest.raises(InvalidDatasetError) as err:
        prepare_dataset(root, out, source=ArraySource(root, cases))
    found = sorted((Path(str(p.path)).stem, p.rule) for p in err.value.problems)
    assert found == [
        ("bad id", "invalid-id"),
        ("flat", "dimensionality"),
        ("half", "label-binary"),
        ("nan_spacing", "spacing"),
        ("shifted", "shape-mismatch"),
        ("twin#1", "duplicate-id"),
        ("twin#2", "duplicate-id"),
        ("unlabelled", "label-missing"),
    ]
    _assert_nothing_written(out)


def test_files_outside_the_root_are_refused_for_any_source(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (tmp_path / "secret.img").write_text("x")
    (root / "a.img").symlink_to(tmp_path / "secret.img")
    source = ArraySource(root, {"a": (_vol(_image()), _vol(_label()))})
    with pytest.raises(InvalidDatasetError) as err:
        prepare_dataset(root, _out(tmp_path), source=source)
    assert [(p.rule, str(p.path)) for p in err.value.problems] == [
        ("outside-root", str(root / "a.img"))
    ]
    _assert_nothing_written(_out(tmp_path))


@pytest.mark.parametrize(
    ("image", "spacing", "rule"),
    [
        # Positive in float64 but zero once stored as float32 in the NIfTI header.
        (_image(), (1e-50, 1.0, 1.0), "spacing"),
        # Finite voxels whose mean overflows: caught by the manifest schema, not per volume.
        (np.full(SHAPE, 1e308), (1.0, 1.0, 1.0), "non-finite"),
    ],
)
def test_manifest_schema_is_the_final_guard(
    tmp_path: Path, image: np.ndarray, spacing: tuple[float, float, float], rule: str
) -> None:
    root = tmp_path / "src"
    root.mkdir()
    source = ArraySource(root, {"a": (_vol(image, spacing), _vol(_label(), spacing))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow itself
        with pytest.raises(InvalidDatasetError) as err:
            prepare_dataset(root, _out(tmp_path), source=source)
    assert rule in {p.rule for p in err.value.problems}
    assert "'a'" in str(err.value)  # the row is named by its id
    _assert_nothing_written(_out(tmp_path))


@pytest.mark.parametrize("source", [None, "decathlon"])
def test_missing_dataset_folder_is_named(tmp_path: Path, source: str | None) -> None:
    with pytest.raises(DataError) as err:
        prepare_dataset(tmp_path / "nowhere", _out(tmp_path), source=source)
    assert err.value.rule == "missing-folder"
    assert str(tmp_path / "nowhere") in str(err.value)
    _assert_nothing_written(_out(tmp_path))


def test_unknown_source_name_lists_the_valid_ones(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="decathlon, minivess, vesselnn"):
        prepare_dataset(synthetic_root, _out(tmp_path), source="nifti-folder")
    _assert_nothing_written(_out(tmp_path))


def test_empty_source_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    with pytest.raises(DataError) as err:
        prepare_dataset(root, _out(tmp_path), source=ArraySource(root, {}))
    assert err.value.rule == "empty-dataset"
    _assert_nothing_written(_out(tmp_path))


# --- the six real VesselNN volumes --------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_vesselnn(vesselnn_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("prepared") / "vesselnn"
    with pytest.warns(MissingMetadataWarning, match="santos2015_lowContrastVessels"):
        return prepare_dataset(vesselnn_dir, out)


@pytest.mark.slow
def test_real_vesselnn_prepares_six_valid_volumes(prepared_vesselnn: PreparedDataset) -> None:
    manifest = read_manifest(prepared_vesselnn.out / "manifest.csv")
    assert len(manifest) == 6
    assert set(manifest["source"]) == {"vesselnn"}
    assert manifest.set_index("id").loc["santos2015_lowContrastVessels", "spacing_source"] == (
        "known-default"
    )
    assert (manifest["vessel_fraction"] > 0).all()
    assert manifest.equals(prepared_vesselnn.manifest)


@pytest.mark.slow
def test_real_vesselnn_round_trips_voxels_and_spacing(
    prepared_vesselnn: PreparedDataset, vesselnn_dir: Path
) -> None:
    source = VesselNNSource()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        cases = source.discover(vesselnn_dir)
    assert [c.case_id for c in cases] == prepared_vesselnn.manifest["id"].tolist()
    for case in cases:
        image, label = source.load(case)
        assert label is not None
        got_image = read_volume(prepared_vesselnn.out / "images" / f"{case.case_id}.nii.gz")
        got_label = read_volume(prepared_vesselnn.out / "labels" / f"{case.case_id}.nii.gz")
        assert got_image.array.dtype == image.array.dtype
        assert np.array_equal(got_image.array, image.array)
        assert np.array_equal(got_label.array, label.array)
        assert set(np.unique(got_label.array).tolist()) == {0, 1}
        expected = tuple(float(np.float32(s)) for s in image.spacing)
        assert got_image.spacing == expected == got_label.spacing


@pytest.mark.slow
def test_real_vesselnn_version_is_stable(
    prepared_vesselnn: PreparedDataset, vesselnn_dir: Path, tmp_path: Path
) -> None:
    with pytest.warns(MissingMetadataWarning):
        again = prepare_dataset(vesselnn_dir, tmp_path / "vesselnn")
    assert again.version == prepared_vesselnn.version
    assert (tmp_path / "vesselnn" / "manifest.csv").read_bytes() == (
        prepared_vesselnn.out / "manifest.csv"
    ).read_bytes()
