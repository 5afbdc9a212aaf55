"""`python -m sapt_lightning.report <dir> [<dir> ...] [--out DIR]`: one table over many runs.

Every finished run leaves results.json in its run directory; a sweep leaves one per
numbered job folder. This collects them, groups runs that differ only in the seed,
and writes comparison.md, comparison.csv and comparison.png (into --out, default the first
directory) with mean ± std over seeds next to the paper's published numbers, for the row each
run's method names in its config (`method.paper_name`).

Deliberately light: json, csv, yaml, statistics and matplotlib only (no torch, no pandas),
so it runs anywhere the results were copied to.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UserError
from ..utils.paths import check_output_dir
from .paper import PaperMatch, find
from .per_task import per_task_sections
from .results import RESULTS_FILE, find_results, get, paper_names, read_results
from .stats import EMPTY, STD_NOTE, Stat, fmt_number, fmt_stat, mean_std

METRICS: tuple[str, ...] = ("ap", "f_ra", "fwt", "bwt", "unseen")
METRIC_LABELS: dict[str, str] = {"ap": "AP", "f_ra": "F.Ra", "fwt": "FWT", "bwt": "BWT", "unseen": "Unseen"}
#: Shown only when some run has it (eval.unseen_tasks, the paper's Table 3).
OPTIONAL_METRICS: tuple[str, ...] = ("unseen",)
KEY_FIELDS: tuple[str, ...] = ("method", "pet", "ablation", "benchmark", "order", "backbone", "fidelity", "label")


class ReportError(UserError):
    """Nothing usable to report on: main prints it as one line and exits 2."""


class GroupKey(NamedTuple):
    """What identifies a configuration; runs sharing it differ only in the seed."""

    method: str
    pet: str
    ablation: str
    benchmark: str
    order: str
    backbone: str
    fidelity: str
    label: str


@dataclass
class Run:
    """The parts of one results.json the report needs."""

    path: Path
    key: GroupKey
    seed: int
    metrics: dict[str, float | None]
    ablations: list[str]
    paper_names: dict[str, str] = field(default_factory=dict)  # pet type -> the method's paper row
    tasks: list[str] = field(default_factory=list)  # the stream, in order
    diagonal: list[float | None] = field(default_factory=list)  # each task's score right after learning it
    trivial: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> majority / copy_input scores
    attention: list[float] | None = None  # test inputs' mean weight on their own task's block
    wall_s: float | None = None  # the run's wall time (results.json `wall_s`)


@dataclass
class Group:
    """All seeds of one configuration, their statistics and the matching paper row."""

    key: GroupKey
    runs: list[Run] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)
    paper: PaperMatch | None = None
    paper_gap: str = ""  # why `paper` is None
    wall: Stat = field(default_factory=lambda: Stat(None, None, 0))  # minutes per run

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)


# --------------------------------------------------------------------------- collect


def _ablation_names(raw: Any) -> list[str]:
    """results.json stores a sorted list; accept a {name: true} dict too (the config's form)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return sorted(str(k) for k, v in raw.items() if v)
    if isinstance(raw, list):
        return sorted(str(a) for a in raw)
    raise ValueError(f"'ablations' must be a list, got {type(raw).__name__}")


def _order_label(order_cfg: Any, tasks: Any) -> str:
    """The paper order id ("1".."4"), or the tasks themselves for a custom stream (two
    custom streams of different tasks must not be averaged together)."""
    if isinstance(order_cfg, dict) and order_cfg.get("id") is not None:
        return str(order_cfg["id"])
    names = [str(t) for t in tasks] if isinstance(tasks, list) else []
    if not names:
        return "custom"
    shown = ",".join(names[:3]) + (f",…(+{len(names) - 3})" if len(names) > 3 else "")
    return f"custom[{shown}]"


def _unseen_mean(data: dict[str, Any]) -> float | None:
    """Mean score over the unseen tasks of a run (paper Table 3's Avg), None without any."""
    scores = data.get("unseen")
    if not isinstance(scores, dict) or not scores:
        return None
    return statistics.fmean(_metric(v, "unseen") or 0.0 for v in scores.values())


def _metric(value: Any, name: str) -> float | None:
    """A summary value as float; None stays None (a metric the run could not compute)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"summary['{name}'] is not a number: {value!r}")
    return float(value)


def parse_run(path: Path) -> Run:
    """One results.json -> Run; raises ValueError (ResultsError included) with the reason to skip it."""
    data = read_results(path)
    metrics = {m: _metric(get(data, f"summary.{m}"), m) for m in METRICS if m not in OPTIONAL_METRICS}
    metrics["unseen"] = _unseen_mean(data)
    ablations = _ablation_names(data.get("ablations"))
    config = data["config"]
    key = GroupKey(
        method=data["method"],
        pet=str(get(data, "config.pet.type")),
        ablation="+".join(ablations) if ablations else "none",
        benchmark=data["benchmark"],
        order=_order_label(config.get("order"), data.get("order")),
        backbone=str(get(data, "config.backbone.name")),
        fidelity=str(config.get("fidelity", {}).get("name", "clean")),
        label=str(data.get("label") or ""),
    )
    matrix = data.get("matrix") or []
    tasks = [str(t) for t in data.get("order") or []]
    own = (data.get("attention") or {}).get("test")
    return Run(
        path=path,
        key=key,
        seed=data["seed"],
        metrics=metrics,
        ablations=ablations,
        paper_names=paper_names(data),
        tasks=tasks,
        diagonal=[_metric(row[i], "matrix") if i < len(row) else None for i, row in enumerate(matrix)],
        trivial=data.get("trivial") or {},
        attention=[float(row[i]) for i, row in enumerate(own)] if own else None,
        wall_s=_metric(data.get("wall_s"), "wall_s"),
    )


def collect(directories: Sequence[Path], warn: Any = None) -> list[Run]:
    """Parse every results.json under the directories; each problem becomes one stderr line.

    Skipping instead of failing keeps one broken or half-copied run from hiding a whole
    sweep; the message names the file so it can be fixed. Files reached twice (overlapping
    arguments) are read once.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    runs: list[Run] = []
    seen: set[Path] = set()
    for directory in directories:
        if not directory.exists():
            warn(f"skipped: {directory}: no such file or directory")
            continue
        paths = find_results(directory)
        if not paths:
            warn(f"skipped: no {RESULTS_FILE} under {directory}")
            continue
        for path in paths:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                runs.append(parse_run(path))
            except ValueError as err:
                warn(f"skipped: {path}: {err}")
    return runs


# --------------------------------------------------------------------------- aggregate


def group_runs(runs: Iterable[Run], warn: Any = None) -> list[Group]:
    """Runs -> one Group per configuration with statistics and paper numbers, in a stable order.

    A seed seen twice in one group (the same run copied into two sweeps) is reported,
    since averaging it twice would shrink the std.
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    groups: dict[GroupKey, Group] = {}
    for run in runs:
        groups.setdefault(run.key, Group(run.key)).runs.append(run)
    for group in groups.values():
        seeds = group.seeds
        duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
        if duplicates:
            where = ", ".join(str(r.path) for r in group.runs if r.seed in duplicates)
            warn(f"warning: {'/'.join(group.key)}: seed(s) {duplicates} appear more than once ({where})")
        group.stats = {m: mean_std([r.metrics[m] for r in group.runs]) for m in METRICS}
        group.wall = mean_std([None if r.wall_s is None else r.wall_s / 60 for r in group.runs])
        k = group.key
        order_id = int(k.order) if k.order.isdigit() else None
        # a labelled variant (fig6's replay volumes, ...) is not the paper's default configuration
        first = group.runs[0]
        match = (
            "a labelled variant, not the paper's setting"
            if k.label
            else find(first.paper_names, k.pet, first.ablations, k.benchmark, order_id, k.backbone)
        )
        group.paper, group.paper_gap = (match, "") if isinstance(match, PaperMatch) else (None, match)
    return sorted(groups.values(), key=_sort_key)


def _sort_key(group: Group) -> tuple:
    """Benchmark, then order (paper orders numerically, custom last), then the rest by name."""
    k = group.key
    order = (0, int(k.order), "") if k.order.isdigit() else (1, 0, k.order)
    return (k.benchmark, order, k.backbone, k.method, k.pet, k.ablation != "none", k.ablation)


# --------------------------------------------------------------------------- format


def fmt_paper(paper: PaperMatch | None) -> str:
    """'AP / F.Ra (source)', empty when the paper has no such configuration."""
    if paper is None:
        return ""
    return f"{fmt_number(paper.scores.ap)} / {fmt_number(paper.scores.f_ra)} ({paper.source})"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def shown_keys(groups: Sequence[Group]) -> list[str]:
    """Key columns of the table: those that differ between rows (the method always)."""
    return [k for k in KEY_FIELDS if k == "method" or len({getattr(g.key, k) for g in groups}) > 1]


def shown_metrics(groups: Sequence[Group]) -> list[str]:
    return [m for m in METRICS if m not in OPTIONAL_METRICS or any(g.stats[m].n for g in groups)]


def common_paper_gap(groups: Sequence[Group]) -> str | None:
    """The reason no row has paper numbers, when it is one reason for all (the column is then dropped)."""
    gaps = {g.paper_gap for g in groups}
    return gaps.pop() if all(g.paper is None for g in groups) and len(gaps) == 1 else None


def caption(groups: Sequence[Group]) -> str:
    """What every row shares, said once instead of repeated in a column."""
    shown = shown_keys(groups)
    same = [f"{k} {getattr(groups[0].key, k)}" for k in KEY_FIELDS if k not in shown and getattr(groups[0].key, k)]
    parts = [f"All rows: {', '.join(same)}." if same else ""]
    gap = common_paper_gap(groups)
    if gap:
        parts.append(f"No paper numbers: {gap}.")
    return " ".join(p for p in parts if p)


def _paper_cell(group: Group) -> str:
    return fmt_paper(group.paper) if group.paper else f"{EMPTY} ({group.paper_gap})"


def _wall_cell(group: Group) -> str:
    return EMPTY if group.wall.mean is None else f"{group.wall.mean:.1f}"


def table_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the Markdown table (one row per group)."""
    metrics, keys = shown_metrics(groups), shown_keys(groups)
    with_paper = common_paper_gap(groups) is None
    header = [*keys, "seeds", *(METRIC_LABELS[m] for m in metrics), "min/run"]
    header += ["paper AP / F.Ra"] if with_paper else []
    rows = [
        [
            *(getattr(g.key, k) for k in keys),
            str(len(g.runs)),
            *(fmt_stat(g.stats[m], len(g.runs)) for m in metrics),
            _wall_cell(g),
            *([_paper_cell(g)] if with_paper else []),
        ]
        for g in groups
    ]
    return header, rows


def markdown_table(groups: Sequence[Group]) -> str:
    """The caption, then the table as GitHub Markdown; numbers right-aligned so they line up."""
    header, rows = table_rows(groups)
    n_key = len(shown_keys(groups))
    n_text = 1 if common_paper_gap(groups) is None else 0
    align = ["---"] * n_key + ["--:"] * (len(header) - n_key - n_text) + ["---"] * n_text
    shared = caption(groups)
    lines = [shared, ""] if shared else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(groups: Sequence[Group], runs: Sequence[Run], directories: Sequence[Path]) -> str:
    """comparison.md: what was read, how to read the numbers, then the table."""
    sources = ", ".join(f"`{d}`" for d in directories)
    return "\n".join(
        [
            "# Results over seeds",
            "",
            f"{len(runs)} runs in {len(groups)} configurations, from {sources}.",
            "",
            f"Metrics in percent, mean ± {STD_NOTE}. `{EMPTY}`: not available (null in results.json); "
            "`(n=k)`: only k of the seeds reported that metric. min/run: mean wall time of one run, in minutes.",
            "",
            "Paper: the SAPT paper's T5-large AP / F.Ra for the row the run's method names (`method.paper_name`), "
            "on the same benchmark and order "
            "(per-order Appendix D for paper orders 1-4; ablations and custom orders use the "
            "order-averaged Table 2 / Table 1); where there is none, the reason.",
            "",
            markdown_table(groups),
            "",
            *per_task_sections(groups),
        ]
    )


def csv_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[Any]]]:
    """Header and values of comparison.csv: the key, seeds, then mean/std/n per metric and the paper."""
    header = [*KEY_FIELDS, "seeds", "seed_list"]
    metrics = shown_metrics(groups)
    for m in metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    header += ["wall_min_mean", "paper_ap", "paper_f_ra", "paper_fwt", "paper_bwt", "paper_source"]
    rows = []
    for g in groups:
        row: list[Any] = [*g.key, len(g.runs), ";".join(map(str, g.seeds))]
        for m in metrics:
            s = g.stats[m]
            row += [_csv_number(s.mean), _csv_number(s.std), s.n]
        scores = g.paper.scores if g.paper else (None,) * 4
        row += [_csv_number(g.wall.mean)]
        row += [_csv_number(v) for v in scores] + [g.paper.source if g.paper else f"none: {g.paper_gap}"]
        rows.append(row)
    return header, rows


def _csv_number(value: float | None) -> str:
    """Empty cell for None; enough digits to recompute, not float noise."""
    return "" if value is None else f"{value:.6g}"


def write_csv(groups: Sequence[Group], path: Path) -> Path:
    header, rows = csv_rows(groups)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- plot


def _short(field: str, value: str) -> str:
    if field == "order":
        return f"o{value}" if value.isdigit() else ("custom" if value.startswith("custom") else value)
    return value


def group_label(key: GroupKey, varying: Sequence[str] = KEY_FIELDS) -> str:
    """Tick label: method/pet[/ablation], then only the other fields that differ between groups."""
    head = f"{key.method}/{key.pet}" + ("" if key.ablation == "none" else f"/{key.ablation}")
    rest = [_short(f, getattr(key, f)) for f in varying if f not in ("method", "pet", "ablation") and getattr(key, f)]
    return "\n".join([head, *rest])


def shared_fields(groups: Sequence[Group]) -> tuple[list[str], str]:
    """(fields that vary between groups, 'field value, ...' of those every group shares)."""
    varying = [f for f in KEY_FIELDS if len({getattr(g.key, f) for g in groups}) > 1]
    same = [
        f"{f} {_short(f, getattr(groups[0].key, f))}"
        for f in KEY_FIELDS
        if f not in varying and f not in ("method", "pet", "ablation") and getattr(groups[0].key, f)
    ]
    return varying, ", ".join(same)


def write_plot(groups: Sequence[Group], path: Path) -> Path:
    """comparison.png: AP and F.Ra per group, error bars = std over seeds, paper numbers as markers.

    AP (higher is better) and F.Ra (lower is better) side by side show at a glance whether
    a method retains what it learned; the markers show how far a run is from the paper.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    import numpy as np

    nan = float("nan")
    x = np.arange(len(groups))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(groups) + 2.0), 5.2), layout="constrained")
    for offset, metric, color in ((-width / 2, "ap", "tab:blue"), (width / 2, "f_ra", "tab:orange")):
        stats = [g.stats[metric] for g in groups]
        means = [nan if s.mean is None else s.mean for s in stats]
        stds = [0.0 if s.std is None else s.std for s in stats]
        ax.bar(
            x + offset,
            means,
            width,
            yerr=stds,
            capsize=4,
            color=color,
            label=f"{METRIC_LABELS[metric]} (mean over seeds)",
        )
        paper = [
            nan if g.paper is None or getattr(g.paper.scores, metric) is None else getattr(g.paper.scores, metric)
            for g in groups
        ]
        ax.scatter(x + offset, paper, marker="D", s=28, color="black", edgecolors="white", zorder=3)
    if any(g.paper is not None for g in groups):
        ax.scatter([], [], marker="D", s=28, color="black", label="paper, T5-large (AP / F.Ra)")  # legend entry only
    ax.legend(fontsize=8, loc="best")
    varying, shared = shared_fields(groups)
    labels = [group_label(g.key, varying) for g in groups]
    longest = max(len(line) for label in labels for line in label.splitlines())
    slanted = longest > 16  # long labels (a search's values, custom orders) would run into each other
    ax.set_xticks(x, labels, fontsize=8, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_ylabel("score (%)")
    xlabel = (
        "configuration (method/pet[/ablation]"
        + (
            ", " + ", ".join(f for f in varying if f not in ("method", "pet", "ablation"))
            if set(varying) - {"method", "pet", "ablation"}
            else ""
        )
        + ")"
        + (f"; all runs: {shared}" if shared else "")
    )
    ax.set_xlabel(textwrap.fill(xlabel, width=100), fontsize=8)
    ax.set_title(
        "AP (higher is better) and F.Ra (lower is better) per configuration\n"
        "bars: mean over seeds; error bars: sample std over seeds",
        fontsize=10,
    )
    ax.axhline(0, color="grey", linewidth=0.6)
    lowest = min((g.stats[m].mean for g in groups for m in ("ap", "f_ra") if g.stats[m].mean is not None), default=0.0)
    ax.set_ylim(min(0.0, lowest - 5.0), 100.0)  # fixed, so that two reports compare by eye
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def build_report(directories: Sequence[Path], out: Path | None = None) -> tuple[str, dict[str, Path]]:
    """Collect, group and write all three files; returns the Markdown table and the paths.

    Raises ReportError when no results.json was usable, so a typo in a path fails loudly
    instead of writing an empty report.
    """
    runs = collect(directories)
    if not runs:
        raise ReportError(f"no usable {RESULTS_FILE} found under {', '.join(map(str, directories))}")
    groups = group_runs(runs)
    if out is None:
        out = directories[0].parent if directories[0].is_file() else directories[0]  # a results.json given first
    check_output_dir("--out", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(markdown_report(groups, runs, directories), encoding="utf-8")
    paths = {
        "md": out / "comparison.md",
        "csv": write_csv(groups, out / "comparison.csv"),
        "png": write_plot(groups, out / "comparison.png"),
    }
    return markdown_table(groups), paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sapt_lightning.report",
        description="Average finished runs (results.json) over seeds into comparison.md, comparison.csv and comparison.png.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories, searched recursively")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the report (default: the first directory)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: prints the table and returns 0, or prints one error line and returns 2."""
    args = parse_args(argv)
    try:
        table, paths = build_report(args.dirs, args.out)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table)
    print(f"\nstd: {STD_NOTE}.")
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['png'].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
