"""Before training: an unwritable folder or a full disk stops the run at once, with a clear error.

The full disk is a real one for the write: the file-size limit of this process
(``RLIMIT_FSIZE``) is lowered below a checkpoint's size, so the kernel refuses the write with
``EFBIG`` exactly where a full disk refuses it with ``ENOSPC``.
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from minivess.adapters import load_checkpoint
from minivess.errors import MinivessError
from minivess.training.engine import Trainer
from minivess.training.handlers.checkpoint import Checkpointer
from minivess.training.preflight import (
    HEADROOM_BYTES,
    check_free_space,
    check_writable,
    checkpoint_budget,
)


def test_writable_folder_is_created_and_left_clean(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "a"
    check_writable(run_dir)
    assert run_dir.is_dir()
    assert list(run_dir.iterdir()) == []


def test_folder_below_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(MinivessError, match=r"cannot write to the output folder .*runs/a"):
        check_writable(blocker / "a")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(MinivessError, match="Permission denied"):
            check_writable(folder / "run")
    finally:
        folder.chmod(0o755)


def test_more_space_than_the_disk_has_is_refused_with_both_figures(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(MinivessError, match=r"MiB free, the run needs about \d+ MiB"):
        check_free_space(tmp_path, free + 2**30)
    check_free_space(tmp_path, 1)


def test_budget_counts_weights_and_optimizer_state_of_every_checkpoint(tiny_adapter: Any) -> None:
    weights = sum(t.numel() * t.element_size() for t in tiny_adapter.network.state_dict().values())
    assert checkpoint_budget(tiny_adapter.network) == 9 * weights + HEADROOM_BYTES


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_failed_checkpoint_write_keeps_the_previous_one_and_says_how_to_resume(
    tiny_adapter: Any, tmp_path: Path
) -> None:
    optimizer = torch.optim.AdamW(tiny_adapter.network.parameters())
    trainer = Trainer(tiny_adapter, optimizer, lambda a, b: a.sum(), [], max_epochs=2)
    checkpoints = Checkpointer(tmp_path / "run" / "checkpoints")
    trainer.state.epoch, trainer.state.best_epoch = 1, 1
    last = checkpoints.save(trainer)
    saved = last.read_bytes()

    trainer.state.epoch = 2
    with torch.no_grad():
        next(tiny_adapter.network.parameters()).add_(1.0)
    with (
        _file_size_limit(len(saved) // 2),
        pytest.raises(MinivessError, match=r"File too large.*last\.pt is intact.*--resume"),
    ):
        checkpoints.save(trainer)

    assert last.read_bytes() == saved
    _, info = load_checkpoint(last)
    assert info.extra["trainer"]["train_state"]["epoch"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]
