"""Prediction of volumes larger than memory: the same sliding window, one block at a time.

:func:`predict_file_chunked` gives the mask that :meth:`~minivess.inference.Predictor.predict`
gives, while holding only one block of the volume in memory:

* **Normalisation** uses the exact percentiles of the whole volume, found in a few streaming
  passes (:func:`streaming_percentiles`), not those of a subsample.
* **The window grid is the global one.** MONAI's blended sliding window (``constant`` or
  ``gaussian`` weights, ``inference.blend``) is position-dependent, so blocks are not
  predicted as small volumes. The output is cut into
  blocks; each block runs every window of the *full volume's* grid that overlaps it (read from
  disk with that window's halo) and blends them exactly as MONAI does over the whole volume.
  Windows that straddle a block boundary run once per block they touch: that is the price of
  exactness, and larger budgets (larger blocks) pay less of it.
* **The output** (``<stem>_mask.nii``, optionally ``<stem>_prob.nii``, and ``_conformal.nii`` /
  ``_sets.nii`` for a model with a conformal head) is an uncompressed NIfTI
  preallocated on disk and written block by block through a memory map, renamed into place
  when complete.

The memory budget is the peak resident memory (RSS) of the whole process. Before planning,
one batch of zero windows runs through the model (torch's and oneDNN's buffers, one batch of
activations) and the process's peak RSS so far is taken as the baseline; what is left, less a
safety margin of ``SAFETY_MB`` for allocator slack, bounds the arrays that scale with the
volume (the statistics slabs, the block's input, its blended logits, weights and outputs, and
the output files' pages the block writes, which are flushed and dropped from memory after each
block). ``budget_covers="arrays"`` gives the arrays-only budget instead (for tests and callers
that account for the process themselves).
"""

from __future__ import annotations

import itertools
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices

from minivess.adapters.inference import (
    GAUSSIAN_SIGMA_SCALE,
    class_mask,
    fit_window,
    window_logits,
)
from minivess.errors import ConfigError, DataError
from minivess.inference.lazy import LazyVolume, drop_pages, nifti_memmap, open_lazy
from minivess.inference.runners import OnnxRunner, TorchRunner

if TYPE_CHECKING:
    from minivess.inference.predictor import Predictor

MB = 1024 * 1024
SAFETY_MB = 8
"""Kept free under a whole-process budget: allocator slack and small Python objects."""
_STAT_BYTES_PER_VOXEL = 24
"""Raw slab, its float32 copy, selection masks and selected values in a statistics pass."""
_INPUT_BYTES_PER_VOXEL = 12
"""Per voxel of a block's input (with halo): the raw read, its float32 copy, the padded image."""
_OUTPUT_BYTES_PER_VOXEL = 30
"""Per voxel of a block's output: 2-class logits and weight sums, softmax, mask and P(vessel)."""
_HEAD_BYTES_PER_VOXEL = 34
"""More per output voxel when the model stores an uncertainty head: the float64 temporaries of
calibration, the calibrated float32 copy, the conformal mask and the prediction-set map."""
_HISTOGRAM_BINS = 4096
_COLLECT_LIMIT = 1 << 20

Progress = Callable[[int, int], None]
"""Called with (blocks done, blocks in all) after each block."""


@dataclass(frozen=True)
class ChunkedResult:
    """What :func:`predict_file_chunked` did.

    Args:
        written: The files written (mask first, then probabilities if asked for, then the
            conformal mask and prediction sets when the model stores them).
        blocks: How many blocks the volume was cut into.
        block_shape: The (H, W, D) size of a full block.
        seconds: Wall time, statistics pass included.
        arrays_mb: The budget the arrays that grow with the volume were planned in.
        baseline_mb: The process's peak RSS after the warm-up batch (``None`` for an
            arrays-only budget).
    """

    written: list[Path]
    blocks: int
    block_shape: tuple[int, int, int]
    seconds: float
    arrays_mb: float = 0.0
    baseline_mb: float | None = None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (``getrusage``), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux


def baseline_rss_mb(predictor: Predictor, shape: tuple[int, int, int]) -> float:
    """The process's peak RSS (MB) after one batch of zero windows through the predictor.

    The batch settles what does not grow with the volume (torch's and oneDNN's buffers, one
    batch of activations), so that the rest of a whole-process budget can go to the arrays.
    A runner that chunked prediction cannot run is not warmed up.
    """
    try:
        window = _window(predictor, shape)
    except ConfigError:
        return peak_rss_mb()
    with _logits_function(predictor) as (logits_of, batch):
        zeros = torch.zeros((batch, 1, *window))
        logits_of(zeros)
    del zeros
    return peak_rss_mb()


def in_memory_bytes(shape: tuple[int, ...], classes: int = 2) -> int:
    """Estimated peak bytes of in-memory prediction of a single-channel volume of ``shape``.

    The float32 input and normalised copy, MONAI's blended logits and weight map, the softmax,
    the mask and P(vessel): the figure ``minivess predict --memory-budget-mb`` compares with.
    """
    return int(np.prod(shape)) * (4 * 2 + 4 * classes * 2 + 4 + 1 + 4)


def streaming_percentiles(
    volume: LazyVolume, percentiles: tuple[float, float], budget_bytes: int
) -> tuple[float, float]:
    """``np.percentile(volume, percentiles)`` (linear method) without loading the volume.

    Order statistics are found by refining a histogram over the values still in play until at
    most ``2**20`` remain, which are then sorted; each refinement is one pass over the file.

    Raises:
        DataError: The volume holds NaN or infinite values (rule ``non-finite``).
    """
    n = int(np.prod(volume.shape))
    slab = max(1, budget_bytes // (_STAT_BYTES_PER_VOXEL * volume.shape[0] * volume.shape[1]))
    lo, hi = math.inf, -math.inf
    for values in _slabs(volume, slab):
        if not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise DataError(volume.path, "non-finite", f"{bad}+ voxel(s) are NaN or infinite")
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    result = []
    for p in percentiles:
        position = float(np.true_divide(p, 100)) * (n - 1)
        k = math.floor(position)
        low = _order_statistic(volume, slab, k, lo, hi)
        high = _order_statistic(volume, slab, k + 1, lo, hi) if position > k else low
        result.append(low + (position - k) * (high - low))
    return result[0], result[1]


def _slabs(volume: LazyVolume, depth: int) -> Iterator[np.ndarray]:
    """The volume as float32 slabs of ``depth`` slices along D (contiguous on disk in NIfTI)."""
    h, w, d = volume.shape
    for start in range(0, d, depth):
        box = (slice(0, h), slice(0, w), slice(start, min(d, start + depth)))
        yield np.asarray(volume.read(box), dtype=np.float32)


def _order_statistic(volume: LazyVolume, slab: int, k: int, lo: float, hi: float) -> float:
    """The ``k``-th smallest value (0-based) of a finite volume whose values lie in [lo, hi]."""
    below, count, closed = 0, int(np.prod(volume.shape)), True
    while True:
        if lo == hi:
            return lo
        if count <= _COLLECT_LIMIT:
            chosen = [v[_within(v, lo, hi, closed)] for v in _slabs(volume, slab)]
            return float(np.sort(np.concatenate(chosen), kind="stable")[k - below])
        counts = np.zeros(_HISTOGRAM_BINS, dtype=np.int64)
        seen_lo, seen_hi = math.inf, -math.inf
        for values in _slabs(volume, slab):
            inside = values[_within(values, lo, hi, closed)]
            if inside.size:
                counts += np.histogram(inside, bins=_HISTOGRAM_BINS, range=(lo, hi))[0]
                seen_lo, seen_hi = (
                    min(seen_lo, float(inside.min())),
                    max(seen_hi, float(inside.max())),
                )
        if seen_lo == seen_hi:
            return seen_lo
        edges = np.histogram_bin_edges([], bins=_HISTOGRAM_BINS, range=(lo, hi))
        cumulative = np.cumsum(counts)
        j = int(np.searchsorted(cumulative, k - below, side="right"))
        below += int(cumulative[j] - counts[j])
        count = int(counts[j])
        closed = closed and j == _HISTOGRAM_BINS - 1
        lo, hi = float(edges[j]), float(edges[j + 1])


def _within(values: np.ndarray, lo: float, hi: float, closed: bool) -> np.ndarray:
    upper = values <= hi if closed else values < hi
    return (values >= lo) & upper


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Starts of MONAI's windows along one axis of ``size`` (already padded to ``window``)."""
    interval = window if window == size else max(int(window * (1 - overlap)), 1)
    return [int(s[0].start) for s in dense_patch_slices((size,), (window,), (interval,))]


def _block_bytes(
    block: list[int],
    padded: tuple[int, int, int],
    window: tuple[int, int, int],
    output_bytes_per_voxel: int,
    mapped_bytes_per_voxel: int,
) -> int:
    """Bytes of one block's buffers and of the output pages it writes.

    Writing an (h, w, d) block into a Fortran-ordered file touches every page of the H x w x d
    span it lies in, which stays resident until the block's pages are dropped.
    """
    halo = math.prod(min(b + 2 * w, p) for b, w, p in zip(block, window, padded, strict=True))
    span = padded[0] * min(block[1], padded[1]) * min(block[2], padded[2])
    return (
        halo * _INPUT_BYTES_PER_VOXEL
        + math.prod(block) * output_bytes_per_voxel
        + span * mapped_bytes_per_voxel
    )


def plan_blocks(
    padded: tuple[int, int, int],
    window: tuple[int, int, int],
    budget_bytes: int,
    *,
    output_bytes_per_voxel: int = _OUTPUT_BYTES_PER_VOXEL,
    mapped_bytes_per_voxel: int = 0,
) -> tuple[int, int, int]:
    """The largest block shape (halving the longest axis) whose buffers fit ``budget_bytes``.

    ``output_bytes_per_voxel`` is what one voxel of the block's output costs (more when the
    model's uncertainty head adds outputs); ``mapped_bytes_per_voxel`` is the bytes per voxel
    of the memory-mapped output files (their written pages count until dropped).

    Raises:
        ConfigError: Even one window-sized block does not fit; says the least budget that does.
    """

    def cost(block: list[int]) -> int:
        return _block_bytes(block, padded, window, output_bytes_per_voxel, mapped_bytes_per_voxel)

    block = list(padded)
    while cost(block) > budget_bytes:
        axis = max(range(3), key=lambda i: block[i] / window[i])
        if block[axis] <= window[axis]:
            least = math.ceil(cost(list(window)) / MB)
            raise ConfigError(
                f"memory budget {budget_bytes / MB:.2f} MB is too small for blocks of one "
                f"{window} window; use at least {least} MB"
            )
        block[axis] = max(window[axis], math.ceil(block[axis] / 2))
    return block[0], block[1], block[2]


def predict_file_chunked(
    predictor: Predictor,
    path: str | Path,
    out_dir: str | Path,
    *,
    memory_budget_mb: float,
    probabilities: bool = False,
    progress: Progress | None = None,
    budget_covers: Literal["process", "arrays"] = "process",
    baseline_mb: float | None = None,
) -> ChunkedResult:
    """Predict a volume block by block into ``<stem>_mask.nii`` (and ``<stem>_prob.nii``).

    Args:
        predictor: A predictor (its settings, network and backend are used as they are).
        path: A ``.nii`` (memory-mapped), ``.nii.gz`` or TIFF volume.
        out_dir: Output folder (created if missing).
        memory_budget_mb: Peak resident memory of the whole process (see the module
            docstring); what the warmed-up process leaves of it decides the block size.
        probabilities: Also write float32 P(vessel) (calibrated when the model stores a
            calibration, as :meth:`Predictor.predict` does).
        progress: Called with (blocks done, total) after each block.
        budget_covers: ``"process"`` (default): the budget is the process's peak RSS;
            ``"arrays"``: it bounds only the arrays that grow with the volume (no warm-up).
        baseline_mb: :func:`baseline_rss_mb` when the caller has already measured it (the
            CLI does, to choose between in-memory and block-wise prediction); ``None``
            measures it here.

    When the model stores a conformal threshold or prediction sets (``minivess conformal``),
    ``<stem>_conformal.nii`` and ``<stem>_sets.nii`` are written too, block by block, exactly as
    :meth:`Predictor.predict_file` writes them for a volume that fits in memory.

    Returns:
        The files written and how the volume was cut.

    Raises:
        DataError: Unreadable input, or NaN/inf voxels; nothing is written.
        ConfigError: A budget too small for one window (says the least budget that works), or
            a model that predicts at its own ``target_spacing_um`` (resampling is done on whole
            volumes, not block by block).
    """
    check_block_wise(predictor)
    if budget_covers not in ("process", "arrays"):
        raise ConfigError(f"budget_covers must be process or arrays; got {budget_covers!r}")
    start = time.perf_counter()
    volume = open_lazy(path)
    inference = predictor.settings.inference
    window = _window(predictor, volume.shape)
    padded: tuple[int, int, int] = tuple(  # type: ignore[assignment]
        max(s, w) for s, w in zip(volume.shape, window, strict=True)
    )
    pad = tuple((p - s) // 2 for p, s in zip(padded, volume.shape, strict=True))
    head = (
        predictor.uncertainty if predictor.uncertainty and not predictor.uncertainty.empty else None
    )
    outputs = _outputs(predictor, Path(path), Path(out_dir), probabilities)
    per_voxel = _OUTPUT_BYTES_PER_VOXEL + (_HEAD_BYTES_PER_VOXEL if head else 0)
    mapped = sum(np.dtype(dtype).itemsize for _, dtype in outputs.values())
    baseline = None
    budget = int(memory_budget_mb * MB)
    if budget_covers == "process":
        least = max(
            _block_bytes(list(window), padded, window, per_voxel, mapped),
            _STAT_BYTES_PER_VOXEL * volume.shape[0] * volume.shape[1],
        )
        baseline = baseline_rss_mb(predictor, volume.shape) if baseline_mb is None else baseline_mb
        budget = _arrays_budget(baseline, memory_budget_mb, least)
    lower, upper = streaming_percentiles(
        volume, predictor.settings.preprocessing.percentiles, budget
    )
    block = plan_blocks(
        padded, window, budget, output_bytes_per_voxel=per_voxel, mapped_bytes_per_voxel=mapped
    )
    starts = [window_starts(p, w, inference.overlap) for p, w in zip(padded, window, strict=True)]
    importance = compute_importance_map(
        window, mode=inference.blend, sigma_scale=GAUSSIAN_SIGMA_SCALE
    )
    importance = importance.float()[None]
    names = [path for path, _ in outputs.values()]
    tiles = list(itertools.product(*(range(0, p, b) for p, b in zip(padded, block, strict=True))))
    with ExitStack() as stack:
        maps = {
            key: stack.enter_context(nifti_memmap(path, volume.shape, dtype, volume))
            for key, (path, dtype) in outputs.items()
        }
        logits_of, batch = stack.enter_context(_logits_function(predictor))
        for done, origin in enumerate(tiles, 1):
            stop = tuple(min(o + b, p) for o, b, p in zip(origin, block, padded, strict=True))
            probs = _blend_block(
                volume,
                (lower, upper),
                origin,
                stop,
                starts,
                window,
                pad,
                importance,
                logits_of,
                batch,
            )
            target, inner = _unpadded(origin, stop, pad, volume.shape)
            maps["mask"][target] = class_mask(probs).numpy()[inner]
            vessel = probs[1].numpy()[inner]
            del probs
            derived = head.apply(vessel) if head is not None else None
            if "prob" in maps:
                maps["prob"][target] = derived.probability if derived is not None else vessel
            if derived is not None and derived.conformal_mask is not None:
                maps["conformal"][target] = derived.conformal_mask
            if derived is not None and derived.prediction_set is not None:
                maps["sets"][target] = derived.prediction_set
            del vessel, derived
            for array in maps.values():
                drop_pages(array)
            if progress is not None:
                progress(done, len(tiles))
    return ChunkedResult(
        names, len(tiles), block, time.perf_counter() - start, budget / MB, baseline
    )


def check_block_wise(predictor: Predictor) -> None:
    """Refuse a model that block-wise prediction cannot run.

    Raises:
        ConfigError: The model predicts at its own ``target_spacing_um`` (resampling is done on
            whole volumes, not block by block).
    """
    model_spacing = predictor.settings.preprocessing.target_spacing_um
    if model_spacing is not None:
        raise ConfigError(
            f"this model predicts at its training voxel size {list(model_spacing)} um, which only "
            "whole-volume prediction resamples to: predict without --memory-budget-mb"
        )


def _arrays_budget(baseline: float, budget_mb: float, least: int) -> int:
    """Bytes a whole-process budget of ``budget_mb`` leaves for the arrays above ``baseline``.

    Raises:
        ConfigError: Fewer than ``least`` bytes are left; says the least budget that works.
    """
    budget = int((budget_mb - baseline - SAFETY_MB) * MB)
    if budget < least:
        needed = math.ceil(baseline + SAFETY_MB + least / MB)
        raise ConfigError(
            f"memory budget {budget_mb:g} MB is too small: the process already peaks at "
            f"{baseline:.0f} MB (interpreter, torch, model, one batch of windows); "
            f"use at least {needed} MB"
        )
    return budget


def _outputs(
    predictor: Predictor, path: Path, out_dir: Path, probabilities: bool
) -> dict[str, tuple[Path, type]]:
    """The files to write, keyed mask, prob, conformal, sets, with their voxel dtypes."""
    from minivess.inference.predictor import (
        CONFORMAL_SUFFIX,
        MASK_SUFFIX,
        PROBABILITY_SUFFIX,
        SETS_SUFFIX,
        output_stem,
    )

    head = (
        predictor.uncertainty if predictor.uncertainty and not predictor.uncertainty.empty else None
    )
    stem = output_stem(path)
    outputs: dict[str, tuple[Path, type]] = {
        "mask": (out_dir / f"{stem}{MASK_SUFFIX.removesuffix('.gz')}", np.uint8)
    }
    if probabilities:
        outputs["prob"] = (out_dir / f"{stem}{PROBABILITY_SUFFIX.removesuffix('.gz')}", np.float32)
    if head is not None and head.fnr_control is not None:
        outputs["conformal"] = (out_dir / f"{stem}{CONFORMAL_SUFFIX.removesuffix('.gz')}", np.uint8)
    if head is not None and head.prediction_sets is not None:
        outputs["sets"] = (out_dir / f"{stem}{SETS_SUFFIX.removesuffix('.gz')}", np.uint8)
    return outputs


def _window(predictor: Predictor, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The window the predictor's runner would use on a volume of ``shape``."""
    roi = predictor.settings.inference.roi_size
    runner = predictor.runner
    if isinstance(runner, TorchRunner):
        adapter = runner.adapter
        window = fit_window(adapter.name, adapter.size_rule, roi, shape)
    elif isinstance(runner, OnnxRunner):
        meta = runner.metadata
        fixed = meta.input_size
        window = (
            list(fixed) if fixed else fit_window(meta.adapter, meta.size_rule.rule(), roi, shape)
        )
    else:
        raise ConfigError(f"chunked prediction cannot run a {type(runner).__name__}")
    return window[0], window[1], window[2]


@contextmanager
def _logits_function(
    predictor: Predictor,
) -> Iterator[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
    """float32 CPU logits of a batch of windows, run as the predictor's runner runs them.

    Yields the function and how many windows to give it per call.
    """
    runner = predictor.runner
    batch = predictor.settings.inference.sw_batch_size
    if isinstance(runner, OnnxRunner):
        yield runner.window_logits, batch
        return
    assert isinstance(runner, TorchRunner)
    precision = predictor.settings.inference.precision
    with window_logits(runner.adapter, precision) as (logits_of, workers):

        def cpu_logits(patch: torch.Tensor) -> torch.Tensor:
            return logits_of(patch).cpu()

        yield cpu_logits, batch * workers


def _blend_block(
    volume: LazyVolume,
    limits: tuple[float, float],
    origin: tuple[int, ...],
    stop: tuple[int, ...],
    starts: list[list[int]],
    window: tuple[int, int, int],
    pad: tuple[int, ...],
    importance: torch.Tensor,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
) -> torch.Tensor:
    """Softmax ``(classes, *block)`` of [origin, stop) from every global window over it."""
    needed = [
        [s for s in axis if s < e and s + w > o]
        for axis, o, e, w in zip(starts, origin, stop, window, strict=True)
    ]
    first = [axis[0] for axis in needed]
    last = [axis[-1] + w for axis, w in zip(needed, window, strict=True)]
    image = _normalised_region(volume, limits, first, last, pad)
    shape = tuple(e - o for o, e in zip(origin, stop, strict=True))
    weights = torch.zeros((1, *shape))
    blended: torch.Tensor | None = None
    corners = list(itertools.product(*needed))
    for i in range(0, len(corners), batch):
        group = corners[i : i + batch]
        patches = torch.stack([image[0][_window_box(c, first, window)][None] for c in group])
        logits = logits_of(patches)
        if blended is None:
            blended = torch.zeros((logits.shape[1], *shape))
        for corner, out in zip(group, logits, strict=True):
            dst, src = _overlap(corner, window, origin, stop)
            at: tuple[Any, ...] = (slice(None), *dst)
            weight = importance[0][src]
            blended[at] += out[(slice(None), *src)] * weight
            weights[at] += weight
    assert blended is not None
    return torch.softmax(blended / weights, dim=0)


def _normalised_region(
    volume: LazyVolume,
    limits: tuple[float, float],
    first: list[int],
    last: list[int],
    pad: tuple[int, ...],
) -> torch.Tensor:
    """``(1, *region)`` float32 in [0, 1] of padded coordinates [first, last), zero outside."""
    from monai.transforms import ScaleIntensityRange

    region = torch.zeros((1, *(b - a for a, b in zip(first, last, strict=True))))
    real = [
        (max(a - p, 0), min(b - p, s))
        for a, b, p, s in zip(first, last, pad, volume.shape, strict=True)
    ]
    raw = volume.read(tuple(slice(a, b) for a, b in real))  # type: ignore[arg-type]
    scale = ScaleIntensityRange(a_min=limits[0], a_max=limits[1], b_min=0.0, b_max=1.0, clip=True)
    scaled = torch.as_tensor(scale(torch.as_tensor(np.asarray(raw, dtype=np.float32)))).float()
    at = tuple(slice(a + p - f, b + p - f) for (a, b), p, f in zip(real, pad, first, strict=True))
    region[0][at] = scaled
    return region


def _window_box(
    corner: tuple[int, ...], first: list[int], window: tuple[int, ...]
) -> tuple[slice, ...]:
    return tuple(slice(c - f, c - f + w) for c, f, w in zip(corner, first, window, strict=True))


def _overlap(
    corner: tuple[int, ...], window: tuple[int, ...], origin: tuple[int, ...], stop: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where a window meets the block: (slices in the block, slices in the window)."""
    dst: list[slice] = []
    src: list[slice] = []
    for c, w, o, e in zip(corner, window, origin, stop, strict=True):
        a, b = max(c, o), min(c + w, e)
        dst.append(slice(a - o, b - o))
        src.append(slice(a - c, b - c))
    return tuple(dst), tuple(src)


def _unpadded(
    origin: tuple[int, ...], stop: tuple[int, ...], pad: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(slices in the volume, slices in the block) of the block's voxels inside the volume."""
    target: list[slice] = []
    inner: list[slice] = []
    for o, e, p, s in zip(origin, stop, pad, shape, strict=True):
        a, b = max(o - p, 0), min(e - p, s)
        target.append(slice(a, b))
        inner.append(slice(a + p - o, b + p - o))
    return tuple(target), tuple(inner)
