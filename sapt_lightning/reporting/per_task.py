"""Per-task sections of a report: single-task scores beside what a task gives for free (its
trivial baselines), and how much attention each task's test inputs put on their own block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .stats import EMPTY, fmt_number, fmt_stat, mean_std


def _label(group: Any) -> str:
    k = group.key
    return "/".join(p for p in (k.method, k.pet, k.ablation if k.ablation != "none" else "", k.label) if p)


def _stream(group: Any) -> str:
    k = group.key
    return f"{k.benchmark} order {k.order} on {k.backbone}"


def single_vs_trivial(groups: Sequence[Any]) -> list[str]:
    """Per task of every method=single group: its score (mean ± sd over seeds), the majority and
    copy-input scores, and the margin over the better of the two."""
    lines: list[str] = []
    for g in (g for g in groups if g.key.method == "single" and g.runs[0].trivial):
        first = g.runs[0]
        lines += [
            f"### Single-task scores beside trivial baselines: {_stream(g)}",
            "",
            "| task | single | majority | copy input | margin |",
            "|---|--:|--:|--:|--:|",
        ]
        for i, task in enumerate(first.tasks):
            stat = mean_std([r.diagonal[i] if i < len(r.diagonal) else None for r in g.runs])
            trivial = first.trivial.get(task, {})
            best = max(trivial.values(), default=None)
            margin = None if stat.mean is None or best is None else stat.mean - best
            lines.append(
                f"| {task} | {fmt_stat(stat, len(g.runs))} | {fmt_number(trivial.get('majority'))} "
                f"| {fmt_number(trivial.get('copy_input'))} | {EMPTY if margin is None else f'{margin:+.2f}'} |"
            )
        lines.append("")
    return lines


def attention_diagonal(groups: Sequence[Any]) -> list[str]:
    """Per stream, one row per routed method: each task's test inputs' weight on their own block."""
    routed = [g for g in groups if any(r.attention for r in g.runs)]
    lines: list[str] = []
    for stream in dict.fromkeys(_stream(g) for g in routed):
        members = [g for g in routed if _stream(g) == stream]
        tasks = members[0].runs[0].tasks
        lines += [
            f"### Attention of test inputs on their own task's block: {stream}",
            "",
            "| method | " + " | ".join(tasks) + " | mean |",
            "|---|" + "--:|" * (len(tasks) + 1),
        ]
        for g in members:
            runs = [r for r in g.runs if r.attention]
            cells = [mean_std([r.attention[i] for r in runs]) for i in range(len(tasks))]
            overall = mean_std([sum(r.attention) / len(r.attention) for r in runs])
            lines.append(
                f"| {_label(g)} | "
                + " | ".join(_fraction(c, len(runs)) for c in cells)
                + f" | {_fraction(overall, len(runs))} |"
            )
        lines.append("")
    return lines


def _fraction(stat: Any, n: int) -> str:
    """A weight in [0, 1], three decimals: 'mean ± sd'."""
    if stat.mean is None:
        return EMPTY
    return f"{stat.mean:.3f}" if stat.std is None else f"{stat.mean:.3f} ± {stat.std:.3f}"


def per_task_sections(groups: Sequence[Any]) -> list[str]:
    sections = single_vs_trivial(groups) + attention_diagonal(groups)
    return ["## Per task", "", *sections] if sections else []
