"""MiniVess (EBRAINS folder or zip) and Decathlon sources: discovery, loading, broken inputs."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from minivess.data.io import read_volume
from minivess.data.sources import detect_source
from minivess.data.sources.minivess import DecathlonSource, MiniVessSource
from minivess.errors import DataError

SHAPE = (16, 16, 8)
#: Oblique, offset geometry with float32-exact values, so "preserved exactly" means equality.
AFFINE = np.array(
    [[0.0, -0.5, 0.0, 10.0], [0.75, 0.0, 0.0, -3.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]]
)


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, SHAPE, dtype=np.uint16)


def _label(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) > 0.8).astype(np.uint8)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, affine)
    if affine is not None:
        img.header.set_xyzt_units(xyz="micron")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=2)
    nib.save(img, str(path))
    return path


def _ebrains(base: Path, ids: tuple[str, ...] = ("mv01", "mv02"), meta: bool = True) -> Path:
    for i, case_id in enumerate(ids):
        _save(base / "raw" / f"{case_id}.nii.gz", _image(i))
        _save(base / "seg" / f"{case_id}_y.nii.gz", _label(i))
        if meta:
            (base / "json").mkdir(exist_ok=True)
            (base / "json" / f"{case_id}.json").write_text(json.dumps({"objective": f"25x-{i}"}))
    return base


def _zip(folder: Path, archive: Path, top: str | None = None) -> Path:
    """Zip ``folder``'s contents, under a ``top/`` folder if given, as the EBRAINS download is."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                zf.write(path, f"{top}/{name}" if top else name)
    return archive


def _decathlon(base: Path, suffix: str = "") -> Path:
    for i, case_id in enumerate(("mv01", "mv02")):
        _save(base / "imagesTr" / f"{case_id}{suffix}.nii.gz", _image(i))
        _save(base / "labelsTr" / f"{case_id}.nii.gz", _label(i))
    return base


@pytest.fixture(params=["folder", "nested-folder", "zip", "nested-zip"])
def minivess_root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The same two-case dataset in each form users have it in."""
    if request.param == "folder":
        return _ebrains(tmp_path / "data")
    if request.param == "nested-folder":
        _ebrains(tmp_path / "data" / "minivess")
        return tmp_path / "data"
    folder = _ebrains(tmp_path / "unpacked")
    top = "minivess" if request.param == "nested-zip" else None
    return _zip(folder, tmp_path / "minivess.zip", top)


def _error(call: Callable[..., object], *args: object) -> DataError:
    with pytest.raises(DataError) as info:
        call(*args)
    return info.value


# --- MiniVess: discovery and loading in every form ---------------------------------------------


def test_minivess_discovers_and_loads_every_form_exactly(minivess_root: Path) -> None:
    source = MiniVessSource()
    assert MiniVessSource.detect(minivess_root)
    cases = source.discover(minivess_root)

    assert [c.case_id for c in cases] == ["mv01", "mv02"]
    assert all(c.source == "minivess" for c in cases)
    assert cases[1].meta["acquisition"] == {"objective": "25x-1"}
    assert cases[0].image.endswith("raw/mv01.nii.gz")
    assert str(cases[0].label).endswith("seg/mv01_y.nii.gz")
    for i, case in enumerate(cases):
        image, label = source.load(case)
        assert label is not None
        np.testing.assert_array_equal(image.array, _image(i))
        np.testing.assert_array_equal(label.array, _label(i))
        assert (image.array.dtype, label.array.dtype) == (np.uint16, np.uint8)
        np.testing.assert_array_equal(image.affine, AFFINE)
        np.testing.assert_array_equal(label.affine, AFFINE)
        assert image.spacing == (0.75, 0.5, 2.5)


def test_zip_member_reads_like_the_same_file_on_disk(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "unpacked", ids=("mv01",))
    archive = _zip(folder, tmp_path / "d.zip")
    (case,) = MiniVessSource().discover(archive)
    from_zip, _ = MiniVessSource().load(case)
    on_disk = read_volume(folder / "raw" / "mv01.nii.gz")

    assert case.image == f"{archive}!raw/mv01.nii.gz"
    assert from_zip.source == Path(case.image)
    np.testing.assert_array_equal(from_zip.affine, on_disk.affine)
    np.testing.assert_array_equal(from_zip.array, on_disk.array)
    assert from_zip.header.get_sform(coded=True)[1] == on_disk.header.get_sform(coded=True)[1]


@pytest.mark.parametrize("top", [None, "minivess"])
def test_zip_made_on_macos_ignores_resource_forks(tmp_path: Path, top: str | None) -> None:
    archive = _zip(_ebrains(tmp_path / "unpacked"), tmp_path / "d.zip", top=top)
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(archive, "a") as zf:
        for name in ("raw/._mv01.nii.gz", "seg/._mv01_y.nii.gz"):
            zf.writestr(f"__MACOSX/{prefix}{name}", b"\x00\x05\x16\x07")
            zf.writestr(f"{prefix}{name}", b"\x00\x05\x16\x07")

    assert MiniVessSource.detect(archive)
    assert [c.case_id for c in MiniVessSource().discover(archive)] == ["mv01", "mv02"]


def test_json_folder_is_optional(tmp_path: Path) -> None:
    cases = MiniVessSource().discover(_ebrains(tmp_path / "d", meta=False))
    assert [(c.case_id, c.meta, c.spacing) for c in cases] == [
        ("mv01", {}, None),
        ("mv02", {}, None),
    ]


# --- MiniVess: voxel size from the json side-car -----------------------------------------------


@pytest.mark.parametrize(
    "declared",
    [
        {"spacing": [0.5, 0.5, 2.0]},
        {"voxel_size": [0.5, 0.5, 2.0]},
        {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0},
    ],
)
def test_sidecar_voxel_size_fills_a_header_without_geometry(tmp_path: Path, declared: dict) -> None:
    root = tmp_path / "d"
    _save(root / "raw" / "mv01.nii.gz", _image(0), affine=None)
    _save(root / "seg" / "mv01_y.nii.gz", _label(0), affine=None)
    (root / "json").mkdir()
    (root / "json" / "mv01.json").write_text(json.dumps(declared))

    (case,) = MiniVessSource().discover(root)
    image, label = MiniVessSource().load(case)

    assert case.spacing == (0.5, 0.5, 2.0)
    assert image.spacing == label.spacing == (0.5, 0.5, 2.0)
    assert image.meta["spacing_source"] == "json"
    # The header now agrees with the affine, so writing a prediction keeps this geometry.
    np.testing.assert_array_equal(image.header.get_best_affine(), image.affine)


def test_header_geometry_wins_over_sidecar(tmp_path: Path) -> None:
    root = _ebrains(tmp_path / "d", ids=("mv01",))
    (root / "json" / "mv01.json").write_text(json.dumps({"spacing": [9.0, 9.0, 9.0]}))

    image, _ = MiniVessSource().load(MiniVessSource().discover(root)[0])

    np.testing.assert_array_equal(image.affine, AFFINE)
    assert image.meta["spacing_source"] == "nifti"


def test_header_voxel_size_without_orientation_wins_over_sidecar(tmp_path: Path) -> None:
    root = tmp_path / "d"
    img = nib.Nifti1Image(_image(0), None)
    img.header.set_zooms((0.8, 0.8, 3.0))
    img.header.set_xyzt_units(xyz="micron")
    (root / "raw").mkdir(parents=True)
    nib.save(img, str(root / "raw" / "mv01.nii.gz"))
    _save(root / "seg" / "mv01_y.nii.gz", _label(0))
    (root / "json").mkdir()
    (root / "json" / "mv01.json").write_text(json.dumps({"spacing": [9.0, 9.0, 9.0]}))

    image, _ = MiniVessSource().load(MiniVessSource().discover(root)[0])

    np.testing.assert_allclose(image.spacing, (0.8, 0.8, 3.0))
    assert image.meta["spacing_source"] == "nifti"


@pytest.mark.parametrize(
    "text",
    ['{"objective": "25x"', "[1, 2, 3]", '{"spacing": [1.0, 0.0, 2.0]}', '{"spacing": "big"}'],
)
def test_malformed_sidecar_names_the_file(tmp_path: Path, text: str) -> None:
    root = _ebrains(tmp_path / "d")
    bad = root / "json" / "mv02.json"
    bad.write_text(text)

    err = _error(MiniVessSource().discover, root)

    assert err.rule == "metadata"
    assert err.path == bad


def test_malformed_sidecar_in_zip_names_the_member(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "unpacked")
    (folder / "json" / "mv01.json").write_text("{not json")
    archive = _zip(folder, tmp_path / "d.zip")

    err = _error(MiniVessSource().discover, archive)

    assert (err.rule, err.path) == ("metadata", Path(f"{archive}!json/mv01.json"))


# --- MiniVess: broken datasets -----------------------------------------------------------------


def test_image_without_label_names_the_image(tmp_path: Path) -> None:
    root = _ebrains(tmp_path / "d")
    (root / "seg" / "mv02_y.nii.gz").unlink()

    err = _error(MiniVessSource().discover, root)

    assert (err.rule, err.path) == ("missing-label", root / "raw" / "mv02.nii.gz")
    assert "seg/mv02_y.nii.gz" in err.message


def test_label_without_image_names_the_label(tmp_path: Path) -> None:
    root = _ebrains(tmp_path / "d")
    (root / "raw" / "mv01.nii.gz").unlink()

    err = _error(MiniVessSource().discover, root)

    assert (err.rule, err.path) == ("missing-image", root / "seg" / "mv01_y.nii.gz")


def test_image_without_label_in_zip_names_the_member(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "unpacked")
    (folder / "seg" / "mv01_y.nii.gz").unlink()
    archive = _zip(folder, tmp_path / "d.zip", top="top")

    err = _error(MiniVessSource().discover, archive)

    assert (err.rule, err.path) == ("missing-label", Path(f"{archive}!top/raw/mv01.nii.gz"))


def test_two_files_for_one_case_are_refused(tmp_path: Path) -> None:
    root = _ebrains(tmp_path / "d")
    _save(root / "raw" / "mv01.nii", _image(0))

    assert _error(MiniVessSource().discover, root).rule == "duplicate-case"


def test_empty_raw_folder_is_an_error(tmp_path: Path) -> None:
    for folder in ("raw", "seg"):
        (tmp_path / folder).mkdir()

    assert _error(MiniVessSource().discover, tmp_path).rule == "no-cases"


def test_two_nested_copies_are_ambiguous(tmp_path: Path) -> None:
    _ebrains(tmp_path / "copy1")
    _ebrains(tmp_path / "copy2")

    assert _error(MiniVessSource().discover, tmp_path).rule == "ambiguous-layout"


def test_forcing_minivess_on_another_layout_says_what_is_expected(tmp_path: Path) -> None:
    _decathlon(tmp_path)

    err = _error(MiniVessSource().discover, tmp_path)

    assert err.rule == "layout"
    assert "raw/" in err.message


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_truncated_volume_is_corrupt_when_loaded(tmp_path: Path, form: str) -> None:
    folder = _ebrains(tmp_path / "d")
    path = folder / "raw" / "mv02.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    root = folder if form == "folder" else _zip(folder, tmp_path / "d.zip")
    source = MiniVessSource()
    cases = source.discover(root)

    err = _error(source.load, cases[1])

    assert err.rule == "corrupt-file"
    assert err.path == Path(cases[1].image)
    assert str(err.path).endswith("raw/mv02.nii.gz")


def test_gzip_bomb_in_zip_is_refused(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "d", ids=("mv01",))
    # 4 MiB of zeros gzip to ~4 KiB: past a 1 MiB cap, like a real bomb is past 2 GiB.
    (folder / "raw" / "mv01.nii.gz").write_bytes(gzip.compress(bytes(4 * 1024 * 1024)))
    archive = _zip(folder, tmp_path / "d.zip")
    source = MiniVessSource(max_decompressed_bytes=1024 * 1024)

    err = _error(source.load, source.discover(archive)[0])

    assert (err.rule, err.path) == ("too-large", Path(f"{archive}!raw/mv01.nii.gz"))


def test_zip_member_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "d", ids=("mv01",))
    archive = _zip(folder, tmp_path / "d.zip")
    source = MiniVessSource(max_decompressed_bytes=64)

    err = _error(source.load, source.discover(archive)[0])

    assert err.rule == "too-large"


def test_corrupt_zip_is_not_detected_and_fails_discovery(tmp_path: Path) -> None:
    archive = tmp_path / "minivess.zip"
    archive.write_bytes(b"PK\x03\x04 truncated download")

    assert not MiniVessSource.detect(archive)
    assert _error(MiniVessSource().discover, archive).rule == "corrupt-file"


def test_symlink_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    outside = _save(tmp_path / "elsewhere" / "secret.nii.gz", _image(9))
    root = _ebrains(tmp_path / "d")
    link = root / "raw" / "mv03.nii.gz"
    link.symlink_to(outside)
    _save(root / "seg" / "mv03_y.nii.gz", _label(3))

    err = _error(MiniVessSource().discover, root)

    assert (err.rule, err.path) == ("outside-root", link)


def test_symlink_inside_the_dataset_is_fine(tmp_path: Path) -> None:
    root = _ebrains(tmp_path / "d")
    _save(root / "store" / "mv03.nii.gz", _image(3))
    (root / "raw" / "mv03.nii.gz").symlink_to(root / "store" / "mv03.nii.gz")
    _save(root / "seg" / "mv03_y.nii.gz", _label(3))

    cases = MiniVessSource().discover(root)

    np.testing.assert_array_equal(MiniVessSource().load(cases[2])[0].array, _image(3))


# --- Decathlon ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "_0000"])
def test_decathlon_discovers_and_loads(tmp_path: Path, suffix: str) -> None:
    root = _decathlon(tmp_path / "Dataset001_MiniVess", suffix)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "2PM"}}))
    _save(root / "imagesTs" / "mv99_0000.nii.gz", _image(99))
    _save(root / "imagesTr" / "._mv01.nii.gz", _image(5))  # macOS resource fork
    source = DecathlonSource()

    cases = source.discover(root)

    assert [c.case_id for c in cases] == ["mv01", "mv02"]
    assert cases[0].image == str(root / "imagesTr" / f"mv01{suffix}.nii.gz")
    assert cases[0].label == str(root / "labelsTr" / "mv01.nii.gz")
    image, label = source.load(cases[1])
    assert label is not None
    np.testing.assert_array_equal(image.array, _image(1))
    np.testing.assert_array_equal(label.array, _label(1))
    np.testing.assert_array_equal(image.affine, AFFINE)


def test_decathlon_image_without_label_names_the_image(tmp_path: Path) -> None:
    root = _decathlon(tmp_path, "_0000")
    (root / "labelsTr" / "mv02.nii.gz").unlink()

    err = _error(DecathlonSource().discover, root)

    assert (err.rule, err.path) == ("missing-label", root / "imagesTr" / "mv02_0000.nii.gz")
    assert "labelsTr/mv02.nii.gz" in err.message


def test_decathlon_label_without_image_names_the_label(tmp_path: Path) -> None:
    root = _decathlon(tmp_path)
    _save(root / "labelsTr" / "mv03.nii.gz", _label(3))

    err = _error(DecathlonSource().discover, root)

    assert (err.rule, err.path) == ("missing-image", root / "labelsTr" / "mv03.nii.gz")


def test_decathlon_second_channel_is_refused(tmp_path: Path) -> None:
    root = _decathlon(tmp_path, "_0000")
    _save(root / "imagesTr" / "mv01_0001.nii.gz", _image(7))

    err = _error(DecathlonSource().discover, root)

    assert (err.rule, err.path) == ("channels", root / "imagesTr" / "mv01_0001.nii.gz")


def test_decathlon_symlink_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    outside = _save(tmp_path / "elsewhere" / "mv03.nii.gz", _label(3))
    root = _decathlon(tmp_path / "d")
    _save(root / "imagesTr" / "mv03.nii.gz", _image(3))
    link = root / "labelsTr" / "mv03.nii.gz"
    link.symlink_to(outside)

    err = _error(DecathlonSource().discover, root)

    assert (err.rule, err.path) == ("outside-root", link)


def test_decathlon_truncated_label_is_corrupt_when_loaded(tmp_path: Path) -> None:
    root = _decathlon(tmp_path)
    path = root / "labelsTr" / "mv01.nii.gz"
    path.write_bytes(path.read_bytes()[:100])

    err = _error(DecathlonSource().load, DecathlonSource().discover(root)[0])

    assert (err.rule, err.path) == ("corrupt-file", path)


# --- Detection ---------------------------------------------------------------------------------


def _vesselnn_like(root: Path) -> Path:
    for folder in ("denoised", "labels", "metadata"):
        (root / folder).mkdir(parents=True)
    (root / "denoised" / "a_BM4D_denoised.tif").write_bytes(b"")
    return root


def test_detect_claims_only_its_own_layout(tmp_path: Path) -> None:
    folder = _ebrains(tmp_path / "ebrains")
    nested = _ebrains(tmp_path / "outer" / "inner").parent
    archive = _zip(folder, tmp_path / "minivess.zip", top="minivess")
    decathlon = _decathlon(tmp_path / "decathlon")
    vesselnn = _vesselnn_like(tmp_path / "vesselnn")
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("imagesTr/mv01.nii.gz", b"")
    not_a_zip = tmp_path / "notes.txt"
    not_a_zip.write_text("raw/ seg/")

    for root in (folder, nested, archive):
        assert MiniVessSource.detect(root), root
        assert not DecathlonSource.detect(root), root
    assert DecathlonSource.detect(decathlon)
    for root in (decathlon, vesselnn, other_zip, not_a_zip, tmp_path / "missing"):
        assert not MiniVessSource.detect(root), root
    for root in (vesselnn, other_zip, not_a_zip, tmp_path / "missing"):
        assert not DecathlonSource.detect(root), root


def test_detect_source_picks_the_matching_layout(tmp_path: Path) -> None:
    archive = _zip(_ebrains(tmp_path / "ebrains"), tmp_path / "minivess.zip")

    assert detect_source(tmp_path / "ebrains").name == "minivess"
    assert detect_source(archive).name == "minivess"
    assert detect_source(_decathlon(tmp_path / "decathlon")).name == "decathlon"
    assert detect_source(_vesselnn_like(tmp_path / "vesselnn")).name == "vesselnn"
