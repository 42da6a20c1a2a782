"""The comparison report: a table and a figure, as Markdown and HTML, optionally in MLflow.

Files written to the report folder (each atomically):

- ``comparison.csv``: the table of :func:`minivess.experiments.compare.compare_configurations`;
- ``per_volume.csv``: every configuration's per-volume values (``configuration`` column added);
- ``figures/compare.png``: per metric, each volume's mean over seeds per configuration (grey
  lines join a volume across configurations) and the mean with its 95% interval;
- ``report.md`` and ``report.html``: what was compared, the table, the figure.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from minivess.data.io import atomic_path
from minivess.experiments.compare import LOWER_IS_BETTER, Configuration

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE = "figures/compare.png"
_COLUMNS = {
    "configuration": "configuration",
    "mean": "mean",
    "ci": "95% CI",
    "n_volumes": "volumes",
    "n_seeds": "seeds",
    "n_nan": "NaN",
    "mean_diff": "diff vs baseline",
    "diff_ci": "diff 95% CI",
    "p_value": "Wilcoxon p",
    "rank_biserial": "rank-biserial r",
    "verdict": "verdict",
}


def write_report(
    configurations: Sequence[Configuration], table: pd.DataFrame, out_dir: str | Path
) -> list[Path]:
    """Write the report files (see the module doc) into ``out_dir``; returns them."""
    out = Path(out_dir)
    written = [_write(out / "comparison.csv", table.to_csv(index=False))]
    per_volume = pd.concat(
        [c.table.assign(configuration=c.label) for c in configurations], ignore_index=True
    )
    written.append(_write(out / "per_volume.csv", per_volume.to_csv(index=False)))
    figure = comparison_figure(configurations, table)
    with atomic_path(out / FIGURE) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    written.append(out / FIGURE)
    import matplotlib.pyplot as plt

    plt.close(figure)
    sections = _sections(configurations, table)
    written.append(_write(out / "report.md", markdown(sections)))
    written.append(_write(out / "report.html", to_html(sections)))
    return written


def comparison_figure(configurations: Sequence[Configuration], table: pd.DataFrame) -> Figure:
    """Per metric, volumes (seed means) per configuration, paired by grey lines, with means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    labels = [c.label for c in configurations]
    for ax, metric in zip(axes[0], metrics, strict=True):
        volumes = pd.concat(
            [c.matrix(metric).mean(axis=1).rename(c.label) for c in configurations], axis=1
        )
        for _, row in volumes.iterrows():
            ax.plot(range(len(labels)), row.to_numpy(), color="0.75", lw=0.8, marker="o", ms=3)
        rows = table[table["metric"] == metric].set_index("configuration").loc[labels]
        err = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
        ax.errorbar(range(len(labels)), rows["mean"], yerr=err, fmt="s", color="k", capsize=4)
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{metric} ({arrow})", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    fig.tight_layout()
    return fig


def markdown(sections: dict[str, Any]) -> str:
    """The report as GitHub-flavoured Markdown."""
    lines = ["# Comparison of configurations", "", *sections["intro"], ""]
    for metric, rows in sections["tables"].items():
        lines += [f"## {metric}", "", "| " + " | ".join(_COLUMNS.values()) + " |"]
        lines.append("|" + "---|" * len(_COLUMNS))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += [f"![comparison]({FIGURE})", "", *sections["notes"], ""]
    return "\n".join(lines)


def to_html(sections: dict[str, Any]) -> str:
    """The report as a standalone HTML page (the figure linked beside it)."""
    esc = html.escape
    body = ["<h1>Comparison of configurations</h1>"]
    body += [f"<p>{esc(line)}</p>" for line in sections["intro"]]
    for metric, rows in sections["tables"].items():
        head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS.values())
        cells = "".join(
            "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows
        )
        body.append(f"<h2>{esc(metric)}</h2><table><tr>{head}</tr>{cells}</table>")
    body.append(f'<img src="{FIGURE}" alt="comparison figure">')
    body += [f"<p>{esc(line)}</p>" for line in sections["notes"]]
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>minivess comparison</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _sections(configurations: Sequence[Configuration], table: pd.DataFrame) -> dict[str, Any]:
    intro = [
        f"- {c.label}: {len(c.run_ids)} run(s), seeds {sorted(set(c.table['seed']))}, "
        f"folds {sorted(set(c.table['fold']))}, runs {', '.join(c.run_ids)}"
        for c in configurations
    ]
    tables: dict[str, list[list[str]]] = {}
    for _, row in table.iterrows():
        cells = {
            **{k: _fmt(row.get(k)) for k in _COLUMNS},
            "ci": f"{_fmt(row['ci_low'])} to {_fmt(row['ci_high'])}",
            "diff_ci": (
                f"{_fmt(row.get('diff_ci_low'))} to {_fmt(row.get('diff_ci_high'))}"
                if _defined(row.get("mean_diff"))
                else ""
            ),
        }
        tables.setdefault(str(row["metric"]), []).append([cells[k] for k in _COLUMNS])
    notes = [
        f"Baseline: {configurations[0].label}. Intervals: 95% percentile bootstrap over volumes "
        "and, within each volume, seeds. Paired test: each volume's mean over seeds, paired by "
        "volume id; Wilcoxon signed-rank (two-sided, uncorrected for multiple comparisons) and "
        "matched-pairs rank-biserial correlation (+1: higher on every volume). Verdict: whether "
        "the difference's interval excludes 0, in the metric's direction. NaN values (distances "
        "to an empty mask) are left out and counted."
    ]
    return {"intro": intro, "tables": tables, "notes": notes}


def _write(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _defined(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def log_report(
    out_dir: str | Path,
    files: Sequence[Path],
    configurations: Sequence[Configuration],
    *,
    experiment: str | None = None,
) -> str:
    """Log the report files to a new MLflow run tagged ``minivess.kind=compare``.

    Args:
        out_dir: The report folder; files keep their paths below it under ``compare/``.
        files: The files written by :func:`write_report`.
        configurations: What was compared (tags ``minivess.compared`` and
            ``minivess.configurations``).
        experiment: MLflow experiment of the run; default: that of the first compared run.

    Returns:
        The id of the run the report went to.
    """
    from minivess.tracking import TrackedRun
    from minivess.tracking.setup import import_mlflow

    if experiment is None:
        client = import_mlflow().MlflowClient()
        first = client.get_run(configurations[0].run_ids[0]).info.experiment_id
        experiment = client.get_experiment(first).name
    tags = {
        "minivess.kind": "compare",
        "minivess.configurations": ", ".join(c.label for c in configurations),
        "minivess.compared": ",".join(r for c in configurations for r in c.run_ids)[:5000],
    }
    out = Path(out_dir)
    with TrackedRun(experiment, run_name="compare", tags=tags, log_system_metrics=False) as run:
        for path in files:
            parent = path.relative_to(out).parent
            run.log_artifact(path, f"compare/{parent.as_posix()}" if parent.parts else "compare")
    return run.run_id
