"""Entry point of the ``minivess`` command.

User errors (:class:`~minivess.errors.MinivessError`) print one line and exit with code 2;
unexpected errors print one line and exit with code 1. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from minivess import __version__
from minivess.cli.calibrate import calibrate, conformal
from minivess.cli.compare import compare
from minivess.cli.console import console
from minivess.cli.data import data_app
from minivess.cli.demo import demo
from minivess.cli.drift import drift
from minivess.cli.ensemble import ensemble_app
from minivess.cli.evaluate import evaluate
from minivess.cli.experiment import experiment
from minivess.cli.export import export
from minivess.cli.plan import plan
from minivess.cli.predict import predict
from minivess.cli.runs import runs_app
from minivess.cli.serve import serve
from minivess.cli.train import train_command
from minivess.errors import MinivessError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130

# A lab tool does not phone home: telemetry of the libraries we drive is off unless a user
# explicitly turns it back on in their environment.
_PRIVACY_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "True",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
}

app = typer.Typer(
    name="minivess",
    help="3D vessel segmentation MLOps: prepare data, train, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")
app.command("plan")(plan)
app.command("train")(train_command)
app.command("experiment")(experiment)
app.command("compare")(compare)
app.command("evaluate")(evaluate)
app.command("export")(export)
app.command("predict")(predict)
app.command("demo")(demo)
app.add_typer(runs_app, name="runs")
app.add_typer(ensemble_app, name="ensemble")
app.command("calibrate")(calibrate)
app.command("conformal")(conformal)
app.command("drift")(drift)
app.command("serve")(serve)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"minivess {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """minivess: 3D vessel segmentation of two-photon microscopy volumes."""
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    if not debug:  # MLflow logs table creation and system-metric threads at INFO
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn errors into one-line messages and exit codes."""
    for key, value in _PRIVACY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _state["debug"] = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=True)
    except MinivessError as exc:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if _state["debug"]:
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback, and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
