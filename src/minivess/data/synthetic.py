"""Synthetic two-photon-like vessel volumes with exact labels, for tests and offline demos.

Each volume is a small forest of branching tubes grown in micrometres and drawn into the
(possibly anisotropic) voxel grid, then imaged the way a two-photon microscope would see it:
an axially elongated PSF, low structured background, exponential signal loss with depth along
the last axis (D), Poisson shot noise and Gaussian read noise, stored as 8-bit like the real
VesselNN / MiniVess stacks. Everything comes from one seed, so the same call gives the same
arrays on every machine.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage

from minivess.data.io import write_nifti
from minivess.data.volume import Volume, affine_from_spacing
from minivess.errors import ConfigError

Shape = tuple[int, int, int]
Spacing = tuple[float, float, float]

#: Radius (um) of a tree's root vessel, drawn uniformly: cortical arterioles and venules.
ROOT_RADIUS_UM = (4.0, 7.0)
#: Capillary radius (um): branches never get thinner, so capillary beds keep branching.
CAPILLARY_RADIUS_UM = 2.0
#: Length of a segment between branch points, in units of its radius.
SEGMENT_LENGTH_RADII = (10.0, 25.0)
#: Spread of a branch's angle away from its parent's direction, in degrees.
BRANCH_ANGLE_DEG = (25.0, 65.0)
#: Vertex spacing (um) of grown centre lines and the direction jitter per vertex (tortuosity).
WALK_STEP_UM, WALK_JITTER = 2.0, 0.08
#: Scale on the depth part of new directions: vessels run mostly parallel to the imaging
#: plane, as in the real stacks (a 5 um step in D would otherwise cut capillaries into dots).
DEPTH_DAMPING = 0.35
#: Gaussian PSF sigma (um) along (H, W, D): the two-photon focus is ~5x longer axially.
PSF_SIGMA_UM = (0.6, 0.6, 3.0)
#: Depth (um) over which the detected signal falls by a factor e (scattering in tissue).
ATTENUATION_LENGTH_UM = 200.0
#: Expected photons from the brightest vessel at the surface; sets the shot-noise level.
PEAK_PHOTONS = 25.0
#: Detector read noise (photons, Gaussian sigma) and the 8-bit dark offset and gain.
READ_NOISE_PHOTONS, DARK_OFFSET, GRAY_PER_PHOTON = 1.5, 4.0, 6.0
#: Relative spread of dye brightness along and between vessels, and its scale (um).
VESSEL_VARIATION, VESSEL_VARIATION_SCALE_UM = 0.12, 20.0
#: Mean background relative to vessel brightness, and the scale (um) of its structure.
BACKGROUND_LEVEL, BACKGROUND_SCALE_UM = 0.12, 8.0
#: Upper bound on segments per volume, so a tiny target grid cannot loop for long.
_MAX_SEGMENTS = 5000


def make_vessel_volume(
    shape: Shape = (96, 96, 24),
    spacing: Spacing = (1.0, 1.0, 5.0),
    seed: int = 0,
    *,
    n_trees: int = 3,
    vessel_fraction: float = 0.08,
) -> tuple[Volume, Volume]:
    """A seeded synthetic two-photon vessel volume and its exact binary label.

    Trees enter through the side faces (H and W) and branch following Murray's law down to
    capillary size; once every branch has left the field of view, capillaries sprout from the
    side of grown vessels. Growth stops at about ``vessel_fraction`` vessel voxels. Every
    vessel hangs from one of the ``n_trees`` roots, so the label has at most that many
    26-connected components.

    Args:
        shape: Voxels along (H, W, D); D is depth, along which the signal attenuates.
        spacing: Voxel size in micrometres along (H, W, D).
        seed: Seed of everything random; equal seeds give identical volumes.
        n_trees: Number of vessel trees.
        vessel_fraction: Target fraction of vessel voxels, in (0, 0.5).

    Returns:
        ``(image, label)``: uint8 image (0-255) and uint8 label (0 or 1), both with the
        diagonal affine of ``spacing``.

    Raises:
        ConfigError: A shape, spacing or parameter that cannot describe a volume.

    Example:
        >>> image, label = make_vessel_volume((64, 64, 16), (1.0, 1.0, 5.0), seed=1)
        >>> image.array.dtype, label.shape, image.spacing
        (dtype('uint8'), (64, 64, 16), (1.0, 1.0, 5.0))
        >>> round(float(label.array.mean()), 2)  # vessel_fraction defaults to 0.08
        0.08
    """
    shape, spacing = _check_args(shape, spacing, n_trees, vessel_fraction)
    geometry_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    mask = np.zeros(shape, dtype=bool)
    _grow_forest(geometry_rng, mask, spacing, n_trees, vessel_fraction)
    image = _image_vessels(noise_rng, mask, spacing)
    affine = affine_from_spacing(spacing)
    label = Volume(mask.astype(np.uint8), affine.copy(), meta={"synthetic_seed": int(seed)})
    return Volume(image, affine, meta={"synthetic_seed": int(seed)}), label


def _check_args(
    shape: Shape, spacing: Spacing, n_trees: int, vessel_fraction: float
) -> tuple[Shape, Spacing]:
    if len(shape) != 3 or not all(int(s) == s and s >= 2 for s in shape):
        raise ConfigError(f"shape must be three integers >= 2, got {tuple(shape)}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"spacing must be three positive micrometre sizes, got {spacing}")
    if n_trees < 1:
        raise ConfigError(f"n_trees must be at least 1, got {n_trees}")
    if not 0 < vessel_fraction < 0.5:
        raise ConfigError(f"vessel_fraction must be in (0, 0.5), got {vessel_fraction}")
    h, w, d = (int(s) for s in shape)
    sh, sw, sd = (float(s) for s in spacing)
    return (h, w, d), (sh, sw, sd)


Tube = tuple[np.ndarray, float]


def paint_tubes(mask: np.ndarray, spacing: Spacing, tubes: Iterable[Tube]) -> None:
    """Set to ``True`` every voxel of ``mask`` inside any of the given tubes.

    A tube is ``(path_um, radius_um)``: an ``(N, 3)`` centre line in micrometres and a radius.
    Voxel ``(i, j, k)`` has its centre at ``(i, j, k) * spacing`` micrometres (the convention of
    :func:`~minivess.data.volume.affine_from_spacing`) and is inside when that centre lies
    within ``radius_um`` of the centre line, so a tube spans ``radius_um / spacing`` voxels to
    each side along each axis. The voxel nearest each centre-line point is always set, so a
    tube thinner than a voxel still shows as one 26-connected piece. Parts outside the mask
    are clipped away.

    Args:
        mask: 3D boolean array, painted in place.
        spacing: Voxel size in micrometres along the mask's axes.
        tubes: ``(path_um, radius_um)`` pairs.

    Example:
        >>> mask = np.zeros((20, 21, 9), bool)
        >>> line = np.array([[0.0, 10.0, 20.0], [19.0, 10.0, 20.0]])  # along H, in um
        >>> paint_tubes(mask, (1.0, 1.0, 5.0), [(line, 5.0)])
        >>> int(mask[10].sum(axis=0).max()), int(mask[10].sum(axis=1).max())  # W, D widths
        (11, 3)
    """
    if mask.dtype != bool or mask.ndim != 3 or not mask.flags.c_contiguous:
        raise ValueError("mask must be a C-contiguous 3D boolean array")
    sp = np.asarray(spacing, dtype=np.float64)
    paths, by_radius = [], defaultdict(list)
    for path_um, radius_um in tubes:
        path = np.asarray(path_um, dtype=np.float64).reshape(-1, 3)
        paths.append(path)
        by_radius[float(radius_um)].append(path)
    if not paths:
        return
    upper = np.asarray(mask.shape) - 1
    # Centre-line points under a voxel apart: their nearest voxels form a 26-connected chain.
    nearest = np.rint(np.concatenate(_split(paths, 0.9 * float(sp.min()))) / sp).astype(np.intp)
    nearest = nearest[((nearest >= 0) & (nearest <= upper)).all(axis=1)]
    mask[tuple(nearest.T)] = True
    for radius_um, group in by_radius.items():
        _paint_capsules(mask, sp, *_split(group, radius_um), radius_um)


def _split(paths: list[np.ndarray], step: float) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of pieces no longer than ``step`` covering all the polylines.

    A single-point path becomes one piece of length zero (a sphere).
    """
    paths = [p if len(p) > 1 else np.concatenate([p, p]) for p in paths]
    starts = np.concatenate([p[:-1] for p in paths])
    edges = np.concatenate([np.diff(p, axis=0) for p in paths])
    parts = np.maximum(1, np.ceil(np.sqrt((edges**2).sum(axis=1)) / step)).astype(np.intp)
    edge = np.repeat(np.arange(len(parts)), parts)
    first = np.repeat(np.cumsum(parts) - parts, parts)
    piece = edges[edge] / parts[edge, None]
    begin = starts[edge] + (np.arange(len(edge)) - first)[:, None] * piece
    return begin, begin + piece


def _paint_capsules(
    mask: np.ndarray, sp: np.ndarray, starts: np.ndarray, ends: np.ndarray, radius_um: float
) -> None:
    """Set the voxels within ``radius_um`` of each line piece (``radius_um`` long at most).

    The squared distance of voxel ``v`` to piece ``a + t d`` is ``|w|^2 - 2 t w.d + t^2 |d|^2``
    with ``w = v - a`` and ``t`` clipped to [0, 1]; ``|w|^2`` and ``w.d`` are sums of per-axis
    tables, so each (piece, voxel) pair costs a few gathers, and voxels are set by flat index.
    """
    # Every voxel within reach of a piece lies within 1.5 radii of the piece's middle.
    offsets = _ball_offsets(1.5 * radius_um, (float(sp[0]), float(sp[1]), float(sp[2])))
    half = -offsets.min(axis=0)
    steps = [np.arange(-h, h + 1) for h in half]
    column = offsets + half  # offset -> position in the per-axis tables
    strides = np.array(mask.strides) // mask.itemsize
    flat_mask = mask.reshape(-1)
    chunk = max(1, 500_000 // len(offsets))
    pieces = ends - starts
    for first in range(0, len(starts), chunk):
        a, d = starts[first : first + chunk], pieces[first : first + chunk]
        base = np.rint((a + 0.5 * d) / sp).astype(np.intp)
        ww = np.zeros((len(a), len(offsets)))
        wd = np.zeros_like(ww)
        inside = np.ones(ww.shape, dtype=bool)
        for axis in range(3):
            voxel = base[:, axis, None] + steps[axis]  # (pieces, table): indices on this axis
            w = voxel * sp[axis] - a[:, axis, None]
            ww += (w**2)[:, column[:, axis]]
            wd += (w * d[:, axis, None])[:, column[:, axis]]
            inside &= ((voxel >= 0) & (voxel < mask.shape[axis]))[:, column[:, axis]]
        dd = np.maximum((d**2).sum(axis=1), 1e-12)[:, None]
        t = np.clip(wd / dd, 0.0, 1.0)
        # The tolerance keeps voxels exactly one radius away, whatever the rounding.
        inside &= ww - 2 * t * wd + t * t * dd <= radius_um**2 * (1 + 1e-9)
        flat = (base @ strides)[:, None] + offsets @ strides
        flat_mask[flat[inside]] = True


@functools.lru_cache(maxsize=64)
def _ball_offsets(radius_um: float, spacing: Spacing) -> np.ndarray:
    """Voxel offsets from a point's nearest voxel to voxels within ``radius_um`` of the point."""
    semi = radius_um / np.asarray(spacing)
    half = np.ceil(semi).astype(int) + 1
    grid = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    offsets = np.stack(grid, axis=-1).reshape(-1, 3)
    # The point lies within half a voxel of its nearest voxel: drop offsets beyond reach.
    slack = np.clip(np.abs(offsets) - 0.5, 0, None) / semi
    return offsets[(slack**2).sum(axis=1) <= 1.0 + 1e-9]


@dataclass(frozen=True)
class _Sprout:
    """Where a segment still to be grown starts."""

    start: np.ndarray
    direction: np.ndarray
    radius_um: float


def _grow_forest(
    rng: np.random.Generator, mask: np.ndarray, spacing: Spacing, n_trees: int, fraction: float
) -> None:
    """Grow trees breadth-first into ``mask`` until about ``fraction`` of it is vessel.

    Segments are painted in rounds; each round grows what the running ratio of painted voxels
    to tube volume predicts will close most of the remaining gap, so the target is approached
    from below without counting voxels after every segment.
    """
    sp = np.asarray(spacing)
    # The field of view in um: every point inside rounds to a voxel of the mask.
    low, high = -0.5 * sp, (np.asarray(mask.shape) - 0.5) * sp
    queue = deque(_root(rng, low, high) for _ in range(n_trees))
    grown: list[Tube] = []
    vertices_before: list[int] = [0]  # running vertex count, to pick side sprouts in O(log n)
    target = fraction * mask.size
    voxel_um3 = float(np.prod(sp))
    painted, estimated, ratio, share = 0, 0.0, 1.0, 0.3
    while painted < 0.98 * target and len(grown) < _MAX_SEGMENTS:
        first = len(grown)
        budget = estimated + share * (target - painted) / ratio
        while estimated < budget and len(grown) < _MAX_SEGMENTS:
            sprout = queue.popleft() if queue else _side_sprout(rng, grown, vertices_before)
            path, exited = _walk(rng, sprout, low, high)
            grown.append((path, sprout.radius_um))
            vertices_before.append(vertices_before[-1] + len(path))
            length = np.sqrt((np.diff(path, axis=0) ** 2).sum(axis=1)).sum()
            estimated += length * math.pi * sprout.radius_um**2 / voxel_um3
            if not exited:
                queue.extend(_branch(rng, sprout, path))
        paint_tubes(mask, spacing, grown[first:])
        painted = int(np.count_nonzero(mask))
        ratio, share = max(painted, 1) / max(estimated, 1e-9), 0.8


def _root(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> _Sprout:
    """A root vessel entering through a random side face (H or W), heading inwards."""
    axis = int(rng.integers(2))
    sign = 1.0 if rng.integers(2) == 0 else -1.0
    start = rng.uniform(low, high)
    start[axis] = (low[axis] if sign > 0 else high[axis]) + sign * 1e-3 * (high[axis] - low[axis])
    direction = rng.normal(0.0, 0.5, 3)
    direction[axis] = sign
    return _Sprout(start, _flatten(direction), float(rng.uniform(*ROOT_RADIUS_UM)))


def _side_sprout(
    rng: np.random.Generator, grown: list[Tube], vertices_before: list[int]
) -> _Sprout:
    """A capillary leaving a random vertex of a grown vessel, roughly perpendicular to it."""
    vertex = int(rng.integers(vertices_before[-1]))
    index = bisect.bisect_right(vertices_before, vertex) - 1
    path = grown[index][0]
    at = vertex - vertices_before[index]
    heading = _unit(path[min(at + 1, len(path) - 1)] - path[max(at - 1, 0)])
    direction = _flatten(_perpendicular(rng, heading) + 0.3 * heading)
    return _Sprout(path[at], direction, CAPILLARY_RADIUS_UM)


def _walk(
    rng: np.random.Generator, sprout: _Sprout, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, bool]:
    """A tortuous centre line from the sprout, cut where it leaves the field of view."""
    length = rng.uniform(*SEGMENT_LENGTH_RADII) * sprout.radius_um
    n = max(2, math.ceil(length / WALK_STEP_UM))
    # The heading is a random walk around the start direction, so the tube bends smoothly.
    jitter = rng.normal(0.0, WALK_JITTER, (n, 3)) * (1.0, 1.0, DEPTH_DAMPING)
    heading = sprout.direction + np.cumsum(jitter, axis=0)
    heading *= WALK_STEP_UM / np.sqrt((heading**2).sum(axis=1, keepdims=True))
    path = sprout.start + np.cumsum(np.concatenate([np.zeros((1, 3)), heading]), axis=0)
    outside = ~((path >= low) & (path < high)).all(axis=1)
    if outside.any():
        return path[: max(1, int(outside.argmax()))], True
    return path, False


def _branch(rng: np.random.Generator, parent: _Sprout, path: np.ndarray) -> list[_Sprout]:
    """Two daughters at the end of ``path``: Murray's law radii, on both sides of the parent."""
    heading = _unit(path[-1] - path[-2]) if len(path) > 1 else parent.direction
    share = rng.uniform(0.3, 0.7)  # fraction of the parent's r^3 that the first daughter takes
    normal = _perpendicular(rng, heading)
    daughters = []
    for sign, part in ((1.0, share), (-1.0, 1.0 - share)):
        # Radii on a 0.25 um grid so that tubes of equal radius are painted together.
        radius = max(round(4 * parent.radius_um * part ** (1 / 3)) / 4, CAPILLARY_RADIUS_UM)
        angle = math.radians(rng.uniform(*BRANCH_ANGLE_DEG))
        direction = _flatten(math.cos(angle) * heading + sign * math.sin(angle) * normal)
        daughters.append(_Sprout(path[-1], direction, radius))
    return daughters


def _perpendicular(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``v``."""
    w = rng.normal(size=3)
    return _unit(w - (w @ v) * v)


def _flatten(v: np.ndarray) -> np.ndarray:
    """The unit vector along ``v`` tilted towards the imaging plane (H, W)."""
    return _unit(v * (1.0, 1.0, DEPTH_DAMPING))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(math.sqrt(float(v @ v)), 1e-12)


def _smooth_noise(rng: np.random.Generator, shape: Shape, sigma_vox: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-smoothed white noise (periodic, filtered by FFT).

    The FFT costs the same for any smoothing scale, where a direct filter grows with it.
    """
    axes = [scipy.fft.fftfreq(n) for n in shape[:-1]] + [scipy.fft.rfftfreq(shape[-1])]
    gains = [np.exp(-2 * (math.pi * s * f) ** 2) for s, f in zip(sigma_vox, axes, strict=True)]
    transfer = (gains[0][:, None, None] * gains[1][:, None] * gains[2]).astype(np.float32)
    transfer[0, 0, 0] = 0.0  # remove the mean
    white = rng.standard_normal(shape, dtype=np.float32)
    field = scipy.fft.irfftn(scipy.fft.rfftn(white) * transfer, s=shape)
    return (field / max(float(field.std()), 1e-6)).astype(np.float32)


def _image_vessels(rng: np.random.Generator, mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """8-bit two-photon image of the vessels in ``mask``: PSF, background, depth loss, noise."""
    sp = np.asarray(spacing)
    shape: Shape = mask.shape
    # Dye brightness varies mildly and smoothly along and between vessels.
    dye = 1.0 + VESSEL_VARIATION * _smooth_noise(rng, shape, VESSEL_VARIATION_SCALE_UM / sp)
    signal = ndimage.gaussian_filter(mask * dye, np.asarray(PSF_SIGMA_UM) / sp)
    texture = _smooth_noise(rng, shape, BACKGROUND_SCALE_UM / sp)
    signal += BACKGROUND_LEVEL * np.clip(1.0 + 0.5 * texture, 0.0, None)
    depth_um = np.arange(shape[2]) * sp[2]
    signal *= (PEAK_PHOTONS * np.exp(-depth_um / ATTENUATION_LENGTH_UM)).astype(np.float32)
    photons = rng.poisson(signal).astype(np.float32)
    photons += READ_NOISE_PHOTONS * rng.standard_normal(shape, dtype=np.float32)
    gray = DARK_OFFSET + GRAY_PER_PHOTON * photons
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def write_synthetic_dataset(
    root: str | Path,
    n: int = 4,
    *,
    seed: int = 0,
    shape: Shape = (96, 96, 24),
    spacing: Spacing = (1.0, 1.0, 5.0),
) -> list[Path]:
    """Write ``n`` synthetic image/label pairs in the Medical Segmentation Decathlon layout.

    Files are ``root/imagesTr/synthNNN.nii.gz`` and ``root/labelsTr/synthNNN.nii.gz`` (same
    name for a pair), volume ``i`` made by :func:`make_vessel_volume` with seed ``seed + i``.
    Each file is written atomically, so an interrupted run leaves only complete files.

    Args:
        root: Dataset folder (created if missing).
        n: Number of pairs.
        seed: Seed of the first pair.
        shape: Voxels along (H, W, D) of every volume.
        spacing: Voxel size in micrometres, stored in the NIfTI affine.

    Returns:
        The image paths, in order; each label has the same name under ``labelsTr``.

    Raises:
        ConfigError: ``n`` is below 1, or the shape or spacing is invalid.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     paths = write_synthetic_dataset(root, n=2, shape=(32, 32, 8))
        ...     [str(p.relative_to(root)) for p in paths]
        ['imagesTr/synth000.nii.gz', 'imagesTr/synth001.nii.gz']
    """
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    root = Path(root)
    images = []
    for i in range(n):
        image, label = make_vessel_volume(shape, spacing, seed + i)
        name = f"synth{i:03d}.nii.gz"
        images.append(write_nifti(root / "imagesTr" / name, image.array, image))
        write_nifti(root / "labelsTr" / name, label.array, label)
    return images
