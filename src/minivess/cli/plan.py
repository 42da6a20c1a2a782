"""``minivess plan``: fingerprint a prepared dataset and write the experiment defaults it implies.

The rules live in :mod:`minivess.planning.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from minivess.cli.console import console

if TYPE_CHECKING:
    from minivess.planning import Plan


def plan(
    data: Path = typer.Argument(..., help="A prepared dataset folder (minivess data prepare)."),
    model_overrides: list[str] = typer.Argument(
        None,
        help="Model overrides the plan is for, e.g. [bold]model=swinunetr[/] or "
        "[bold]model.params.init_filters=8[/].",
        show_default=False,
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Plan file \\[default: <data>/plan.yaml]."),
    device: str = typer.Option(
        None, "--device", help="cpu or cuda \\[default: cuda when visible, else cpu]."
    ),
    memory_gb: float = typer.Option(
        None,
        "--memory-gb",
        min=0.01,
        help="Step-memory budget in GB \\[default: 1 on a CPU, 80% of the GPU's memory].",
    ),
    splits: Path = typer.Option(
        None, "--splits", help="Splits file \\[default: <data>/splits.json]."
    ),
) -> None:
    """Plan patch size, batch, window, sampling and resampling for a dataset and a model.

    Train from it with [bold]minivess train --plan <data>/plan.yaml[/] (overrides still win).
    """
    from minivess.config.experiment import compose
    from minivess.errors import ConfigError
    from minivess.planning import derive_plan, fingerprint_dataset

    overrides = [o for o in model_overrides or []]
    if any(not o.lstrip("+~").startswith("model") for o in overrides):
        raise ConfigError("only model=... and model.params... overrides shape a plan")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")
    placeholder = [f"data.dataset_dir={data}", f"data.splits_file={data}/splits.json"]
    model = compose([*placeholder, *overrides]).model
    console.print(f"fingerprinting {data} ...", highlight=False)
    fingerprint = fingerprint_dataset(data)
    result = derive_plan(
        fingerprint,
        model,
        device=device,  # type: ignore[arg-type]
        memory_gb=memory_gb,
        splits_file=splits,
        model_overrides=overrides,
    )
    target = result.save(out or data / "plan.yaml")
    _print(result, target)


def _print(result: Plan, target: Path) -> None:
    lines = [f"  {key} = {setting.value}" for key, setting in result.settings.items()]
    verdict = "resample" if result.resampling.resample else "no resampling"
    console.print(
        f"[green]plan[/] for {result.model} on {result.device} "
        f"(budget {result.memory_budget_gb} GB, step ~{result.estimated_step_gb} GB):\n"
        + "\n".join(lines)
        + f"\n  {verdict}: {result.resampling.reason}\n"
        f"wrote {target}; train with: minivess train --plan {target}",
        highlight=False,
        soft_wrap=True,
    )
    if result.resampling.resample:
        console.print(
            "[yellow]note[/]: training resamples to data.target_spacing_um and the model "
            "predicts every volume on its own grid; data.target_spacing_um=null trains at the "
            "prepared spacing",
            highlight=False,
        )
