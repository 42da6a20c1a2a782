"""VesselNNSource on the six real shared volumes and on small malformed variants in tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from minivess.data.sources import detect_source, get_source
from minivess.data.sources.base import Case
from minivess.data.sources.vesselnn import (
    DEFAULT_SPACING,
    MissingMetadataWarning,
    VesselNNSource,
)
from minivess.errors import DataError

SHARED_IDS = [
    "burgess2014_bbbDisruption",
    "burgess2014_lowerRes_hiSNR",
    "burgess2014_noisySparseVessels",
    "poon2015_BBB_Leakage",
    "poon2015_plaqueVessels",
    "santos2015_lowContrastVessels",
]


@pytest.fixture(scope="module")
def shared_cases(vesselnn_dir: Path) -> dict[str, Case]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetadataWarning)
        return {c.case_id: c for c in VesselNNSource().discover(vesselnn_dir)}


def test_vesselnn_layout_is_detected_through_the_registry(vesselnn_dir: Path, tmp_path: Path):
    assert isinstance(get_source("vesselnn"), VesselNNSource)
    assert isinstance(detect_source(vesselnn_dir), VesselNNSource)
    assert not VesselNNSource.detect(tmp_path)


def test_discovers_the_six_shared_cases_by_upstream_name(shared_cases: dict[str, Case]):
    assert list(shared_cases) == SHARED_IDS
    for case in shared_cases.values():
        assert case.source == "vesselnn"
        assert Path(case.image).name == f"{case.case_id}_BM4D_denoised.tif"
        assert case.label is not None
        assert Path(case.label).name.startswith(case.case_id + "_")


@pytest.mark.parametrize(
    ("case_id", "spacing", "origin"),
    [
        ("poon2015_BBB_Leakage", (0.994, 0.994, 5.0), "metadata"),
        ("burgess2014_lowerRes_hiSNR", (1.59, 1.59, 5.0), "metadata"),
        ("poon2015_plaqueVessels", (2.485, 2.485, 5.0), "metadata"),
        ("santos2015_lowContrastVessels", (0.621, 0.621, 5.0), "known-default"),
    ],
)
def test_spacing_comes_from_ome_metadata_or_upstream_notes(
    shared_cases: dict[str, Case], case_id: str, spacing: tuple[float, ...], origin: str
):
    case = shared_cases[case_id]
    assert case.spacing == pytest.approx(spacing)
    assert case.meta["spacing_source"] == origin


def test_stack_without_metadata_warns(vesselnn_dir: Path):
    with pytest.warns(MissingMetadataWarning, match="santos2015_lowContrastVessels") as record:
        VesselNNSource().discover(vesselnn_dir)
    assert len(record) == 1


@pytest.mark.parametrize(
    ("case_id", "shape", "label_dtype"),
    [
        ("poon2015_BBB_Leakage", (512, 512, 25), np.uint8),
        ("santos2015_lowContrastVessels", (512, 512, 15), np.uint16),
    ],
)
def test_load_gives_xyz_image_and_binary_label(
    shared_cases: dict[str, Case], case_id: str, shape: tuple[int, ...], label_dtype: type
):
    case = shared_cases[case_id]
    image, label = VesselNNSource().load(case)
    assert label is not None
    raw_image = tifffile.imread(case.image)
    raw_label = tifffile.imread(case.label)
    assert raw_label.dtype == label_dtype
    assert image.shape == label.shape == shape
    np.testing.assert_array_equal(image.array, raw_image.transpose(2, 1, 0))
    assert image.spacing == pytest.approx(case.spacing)
    assert label.spacing == pytest.approx(case.spacing)
    assert label.array.dtype == np.uint8
    assert set(np.unique(label.array)) == {0, 1}
    assert int(label.array.sum()) == int(np.count_nonzero(raw_label))


# --- malformed variants -----------------------------------------------------------------------

SMALL = (3, 6, 5)  # (Z, Y, X) on disk


def _ome(x: str = "0.5", z: str = "2.0") -> bytes:
    return (
        f'<?xml version="1.0"?><OME><Image><Pixels DimensionOrder="XYZCT" PhysicalSizeX="{x}" '
        f'PhysicalSizeXUnit="\xb5m" PhysicalSizeY="{x}" PhysicalSizeZ="{z}" SizeX="5" '
        'SizeY="6" SizeZ="3"/></Image></OME>'
    ).encode("latin-1")


def _write_case(
    root: Path,
    name: str,
    label: np.ndarray | None = None,
    label_names: tuple[str, ...] = ("labels_v1",),
    metadata: bytes | None = b"ome",
) -> None:
    """A tiny VesselNN case: a (Z, Y, X) image, its labels, and (by default) valid OME-XML."""
    for folder in ("denoised", "labels", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(
        root / "denoised" / f"{name}_BM4D_denoised.tif",
        rng.integers(0, 255, SMALL, dtype=np.uint8),
        photometric="minisblack",
    )
    if label is None:
        label = np.zeros(SMALL, np.uint8)
        label[1, 2:4, 1:3] = 255
    for suffix in label_names:
        tifffile.imwrite(root / "labels" / f"{name}_{suffix}.tif", label, photometric="minisblack")
    if metadata is not None:
        data = _ome() if metadata == b"ome" else metadata
        (root / "metadata" / f"{name}_metadata.xml.txt").write_bytes(data)


def test_small_variant_loads_with_its_metadata(tmp_path: Path):
    _write_case(tmp_path, "lab2020_stack")
    (case,) = VesselNNSource().discover(tmp_path)
    image, label = VesselNNSource().load(case)
    assert case.spacing == (0.5, 0.5, 2.0)
    assert image.shape == (5, 6, 3)
    assert label is not None
    assert int(label.array.sum()) == 4


def test_missing_label_names_the_image(tmp_path: Path):
    _write_case(tmp_path, "lab2020_stack", label_names=())
    with pytest.raises(DataError, match="lab2020_stack") as exc:
        VesselNNSource().discover(tmp_path)
    assert exc.value.rule == "missing-label"
    assert exc.value.path == tmp_path / "denoised" / "lab2020_stack_BM4D_denoised.tif"


def test_two_matching_labels_are_ambiguous(tmp_path: Path):
    _write_case(tmp_path, "lab2020_stack", label_names=("labels_v1", "labels_v2"))
    with pytest.raises(DataError) as exc:
        VesselNNSource().discover(tmp_path)
    assert exc.value.rule == "ambiguous-label"
    assert "lab2020_stack_labels_v1.tif" in exc.value.message
    assert "lab2020_stack_labels_v2.tif" in exc.value.message


def test_label_goes_to_the_longest_matching_name(tmp_path: Path):
    _write_case(tmp_path, "poon_BBB")
    _write_case(tmp_path, "poon_BBB_noLeakage")
    cases = {c.case_id: c for c in VesselNNSource().discover(tmp_path)}
    assert Path(cases["poon_BBB"].label or "").name == "poon_BBB_labels_v1.tif"
    assert Path(cases["poon_BBB_noLeakage"].label or "").name == "poon_BBB_noLeakage_labels_v1.tif"


@pytest.mark.parametrize(
    "metadata",
    [
        b"\xff\xfe\x00 not xml at all \xb5",
        b'<OME><Image><Pixels SizeX="5" SizeY="6" SizeZ="3"/></Image></OME>',
        _ome(x="abc"),
        _ome(z="0"),
    ],
    ids=["garbage", "no-physical-size", "not-a-number", "zero-size"],
)
def test_unreadable_metadata_is_an_error_naming_the_file(tmp_path: Path, metadata: bytes):
    _write_case(tmp_path, "lab2020_stack", metadata=metadata)
    with pytest.raises(DataError) as exc:
        VesselNNSource().discover(tmp_path)
    assert exc.value.rule == "metadata"
    assert exc.value.path == tmp_path / "metadata" / "lab2020_stack_metadata.xml.txt"


def test_unknown_stack_without_metadata_gets_the_generic_default(tmp_path: Path):
    _write_case(tmp_path, "lab2020_stack", metadata=None)
    with pytest.warns(MissingMetadataWarning, match="lab2020_stack"):
        (case,) = VesselNNSource().discover(tmp_path)
    assert case.spacing == DEFAULT_SPACING
    assert case.meta["spacing_source"] == "default"


def test_label_with_three_values_is_refused(tmp_path: Path):
    label = np.zeros(SMALL, np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 1, 2
    _write_case(tmp_path, "lab2020_stack", label=label)
    (case,) = VesselNNSource().discover(tmp_path)
    with pytest.raises(DataError) as exc:
        VesselNNSource().load(case)
    assert exc.value.rule == "label-binary"
    assert exc.value.path == Path(case.label or "")


def test_label_of_another_shape_is_refused_naming_both_files(tmp_path: Path):
    _write_case(tmp_path, "lab2020_stack", label=np.zeros((3, 6, 4), np.uint8))
    (case,) = VesselNNSource().discover(tmp_path)
    with pytest.raises(DataError) as exc:
        VesselNNSource().load(case)
    assert exc.value.rule == "shape-mismatch"
    assert exc.value.path == Path(case.label or "")
    assert case.image in exc.value.message


def test_folder_without_images_is_an_error(tmp_path: Path):
    (tmp_path / "denoised").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError) as exc:
        VesselNNSource().discover(tmp_path)
    assert exc.value.rule == "no-cases"
