"""``minivess data``: get, generate, prepare and split datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import TaskID

from minivess.cli.console import console, progress_bar

data_app = typer.Typer(help="Get, generate, prepare and split datasets.", no_args_is_help=True)


@data_app.command("prepare")
def prepare(
    source_dir: Path = typer.Argument(
        ...,
        help="Dataset folder (VesselNN, MiniVess EBRAINS folder or .zip, Decathlon).",
        envvar="MINIVESS_VESSELNN_DIR",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Output folder [default: data/prepared/<source name>]."
    ),
    source: str = typer.Option(None, "--source", help="Force a layout instead of detecting it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    k: int = typer.Option(3, "--folds", "-k", min=2, help="Number of cross-validation folds."),
    seed: int = typer.Option(42, "--seed", help="Seed of the fold assignment."),
    splits_out: Path = typer.Option(
        None, "--splits", help="Where to write the splits JSON [default: <out>/splits.json]."
    ),
) -> None:
    """Turn a dataset folder into a validated dataset (NIfTI pairs, manifest, splits)."""
    from minivess.data.prepare import prepare_dataset
    from minivess.data.sources import detect_source, get_source
    from minivess.data.splits import save_splits, splits_for_prepared

    src = get_source(source) if source else detect_source(source_dir)
    target = out or Path("data") / "prepared" / src.name
    with progress_bar("prepare") as bar:
        task = bar.add_task("prepare", total=None, item="")

        def report(done: int, total: int, case_id: str) -> None:
            bar.update(task, completed=done, total=total, item=case_id)

        prepared = prepare_dataset(
            source_dir, target, source=src.name, overwrite=overwrite, progress=report
        )
    n = len(prepared.manifest)
    splits = splits_for_prepared(prepared.out, k=min(k, n), seed=seed)
    splits_path = splits_out or prepared.out / "splits.json"
    save_splits(splits, splits_path)
    console.print(
        f"[green]prepared[/] {n} volumes from {source_dir} ({src.name}) -> {prepared.out}\n"
        f"  version {prepared.version[:12]}, splits {splits_path}",
        highlight=False,
    )


@data_app.command("download")
def download(
    dest: Path = typer.Option(
        Path("data/raw/vesselnn"), "--dest", help="Folder to download into (upstream layout)."
    ),
    base_url: str = typer.Option(
        None, "--base-url", help="Mirror serving the upstream layout [default: pinned GitHub]."
    ),
    names: list[str] = typer.Option(None, "--name", help="Only these volumes (repeatable)."),
) -> None:
    """Download the VesselNN volumes at the pinned commit, verified by sha256 (resumable)."""
    from minivess.data import download as dl

    with progress_bar("download") as bar:
        tasks: dict[str, TaskID] = {}

        def report(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task("download", total=total, item=name)
            bar.update(tasks[name], completed=done, total=total)

        files = dl.download_vesselnn(
            dest, base_url=base_url or dl.DEFAULT_BASE_URL, names=names or None, progress=report
        )
    console.print(f"[green]verified[/] {len(files)} files in {dest}", highlight=False)


@data_app.command("pull")
def pull(
    repo: Path = typer.Option(Path("."), "--repo", help="The DVC repository (or a folder in it)."),
    remote: str = typer.Option(
        None, "--remote", "-r", help="Remote named in .dvc/config [default: dvc.remote or core]."
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Hash every pulled file against DVC's md5 records."
    ),
) -> None:
    """Pull the DVC-tracked data: resumes after a kill, refuses damaged remote copies."""
    from minivess.config.settings import get_settings
    from minivess.data.dvc_pull import pull as dvc_pull

    settings = get_settings()
    remote_url = None if remote else settings.dvc.remote
    if remote_url and "://" not in remote_url:  # a folder, relative to the project root
        remote_url = str((settings.root / remote_url).resolve())
    report = dvc_pull(repo, remote=remote, remote_url=remote_url, verify=verify)
    if report.reclaimed_files:
        console.print(
            f"removed {report.reclaimed_files} partial copies left by an interrupted pull "
            f"({report.reclaimed_bytes} bytes)",
            highlight=False,
        )
    console.print(
        f"[green]pulled[/] from {report.remote}: {report.fetched} fetched, {report.added} "
        f"added, {report.modified} modified",
        highlight=False,
        soft_wrap=True,
    )
    if report.repaired_files:
        console.print(
            f"[yellow]pulled again[/] {report.repaired_files} files that differed from DVC's "
            "records (damaged cache copies deleted first)",
            highlight=False,
            soft_wrap=True,
        )
    if verify:
        console.print(
            f"[green]verified[/] {report.verified_files} files ({report.verified_bytes} bytes) "
            "against the md5 DVC records",
            highlight=False,
        )


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder (Decathlon layout: imagesTr/, labelsTr/)."),
    n: int = typer.Option(4, "--n", min=1, help="Number of volumes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first volume (volume i uses seed+i)."),
    shape: tuple[int, int, int] = typer.Option((96, 96, 24), "--shape", help="Volume shape."),
) -> None:
    """Generate synthetic two-photon-like vessel volumes for demos and tests (not for accuracy)."""
    from minivess.data.synthetic import write_synthetic_dataset

    files = write_synthetic_dataset(out, n=n, seed=seed, shape=shape)
    console.print(f"[green]wrote[/] {len(files)} synthetic volumes to {out}", highlight=False)
