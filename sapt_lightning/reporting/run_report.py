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
    data = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(cols), 1.0 + 0.6 * len(rows)))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if not np.isnan(data[i, j]):
                ax.text(
                    j,
                    i,
                    fmt.format(data[i, j]),
                    ha="center",
                    va="center",
                    color="white" if data[i, j] < (vmax or np.nanmax(data)) * 0.6 else "black",
                    fontsize=8,
                )
    ax.set_title(title)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scores_over_time(matrix: list[list[float | None]], names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for j, name in enumerate(names):
        xs = [i + 1 for i in range(j, len(matrix))]
        ax.plot(xs, [matrix[i][j] for i in range(j, len(matrix))], marker="o", label=name)
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("score (%)")
    ax.set_xticks(range(1, len(matrix) + 1))
    ax.set_title("Score of each task over the stream")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    names = results["order"]
    short = [n[:14] for n in names]
    plots = {
        "score_matrix": heatmap(
            results["matrix"],
            short,
            short,
            "Score after training each task (%)",
            run_dir / "score_matrix.png",
            vmax=100,
            axes=("evaluated task", "after training task"),
        ),
        "scores_over_time": scores_over_time(results["matrix"], short, run_dir / "scores_over_time.png"),
    }
    blocks = [f"block {k + 1}" for k in range(len(names))]
    for split in ("test", "train"):
        if results.get("attention"):
            plots[f"attention_{split}"] = heatmap(
                results["attention"][split],
                short,
                blocks,
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
