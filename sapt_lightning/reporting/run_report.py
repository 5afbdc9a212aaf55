"""End-of-run report: report.md and PNG plots in the run directory.

Plots: the score matrix, the attention of each task's inputs over the blocks (test
and training inputs, like the paper's Figure 3), and each task's score over time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt
import numpy as np

from ..metrics.matrix import format_matrix

DPI = 120
LABEL_CHARS = 24  # task names longer than this are cut with an ellipsis on plot axes


def task_labels(names: list[str]) -> list[str]:
    """Axis labels 'k name', numbered in stream order so a cut name stays identifiable."""
    labels = []
    for k, name in enumerate(names, start=1):
        label = f"{k} {name}"
        labels.append(label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026")
    return labels


def _cell_fontsize(n: int) -> float:
    return 9.0 if n <= 6 else 8.0 if n <= 10 else 7.5


def heatmap(
    values: list[list[float | None]],
    rows: list[str],
    cols: list[str],
    title: str,
    path: Path,
    vmax: float | None = None,
    fmt: str = "{:.0f}",
    axes: tuple[str, str] = ("", ""),
) -> Path:
    """A matrix with its values written in the cells; sized so that 2 to 15 tasks stay legible."""
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    width = max(6.0, 2.8 + 0.5 * len(cols))
    height = max(4.2, 2.2 + 0.42 * len(rows))
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45 if max(map(len, cols)) > 3 else 0, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    top = vmax if vmax is not None else (np.nanmax(data) if np.isfinite(data).any() else 1.0)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(
                    j,
                    i,
                    fmt.format(data[i, j]),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] < top * 0.6 else "black",
                    fontsize=_cell_fontsize(max(len(rows), len(cols))),
                )
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(axes[0], fontsize=10)
    ax.set_ylabel(axes[1], fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def scores_over_time(matrix: list[list[float | None]], names: list[str], path: Path) -> Path:
    """One line per task from the step it is learnt; the score axis is fixed at 0-100 so runs compare."""
    n = len(matrix)
    legend_cols = 1 if n <= 8 else 2
    fig, ax = plt.subplots(figsize=(max(6.5, 4.0 + 0.3 * n) + 1.6 * legend_cols, 4.2), layout="constrained")
    for j, name in enumerate(names):
        xs = [i + 1 for i in range(j, n)]
        ax.plot(xs, [matrix[i][j] for i in range(j, n)], marker="o", markersize=4, label=name)
    ax.set_xlabel("tasks trained", fontsize=10)
    ax.set_ylabel("score (%)", fontsize=10)
    ax.set_ylim(-2, 102)
    ax.set_xlim(0.5, n + 0.5)
    ax.set_xticks(range(1, n + 1))
    ax.tick_params(labelsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Score of each task over the stream", fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=legend_cols, frameon=False)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    names = results["order"]
    short = task_labels(names)
    numbers = [str(k + 1) for k in range(len(names))]
    plots = {
        "score_matrix": heatmap(
            results["matrix"],
            short,
            numbers,
            "Score after training each task (%)",
            run_dir / "score_matrix.png",
            vmax=100,
            axes=("evaluated task (numbered as on the left)", "after training task"),
        ),
        "scores_over_time": scores_over_time(results["matrix"], short, run_dir / "scores_over_time.png"),
    }
    for split in ("test", "train"):
        if results.get("attention"):
            plots[f"attention_{split}"] = heatmap(
                results["attention"][split],
                short,
                numbers,
                f"Attention of {split} inputs over task blocks",
                run_dir / f"attention_{split}.png",
                vmax=1,
                fmt="{:.2f}",
                axes=("PET block (task order)", f"{split} inputs of task"),
            )
    s = results["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    lines = [
        f"# {results['method']} on {results['benchmark']}",
        "",
        f"AP {fmt(s['ap'])} · F.Ra {fmt(s['f_ra'])} · FWT {fmt(s['fwt'])} · BWT {fmt(s['bwt'])}",
        "",
        "Score matrix (row i: after training task i; percent):",
        "",
        "```",
        format_matrix(names, results["matrix"]),
        "```",
        "",
    ]
    lines += [f"![{key}]({p.name})" for key, p in plots.items()]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return plots
