"""Mean ± sample std over seeds, and how the reports print it (one place for both)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

EMPTY = "–"
STD_NOTE = "sample standard deviation over seeds (n−1 denominator); a single seed shows the mean only"


@dataclass
class Stat:
    """Mean and sample std of one metric over the seeds that reported it (n may be < seeds)."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: Sequence[float | None]) -> Stat:
    """Mean and sample std (n−1) over the non-null values; the seeds of a run are a sample.

    Nulls are left out rather than counted as zero: a null is a metric the run could not
    compute (e.g. FWT without single-task scores), not a score of 0.
    """
    present = [v for v in values if v is not None]
    if not present:
        return Stat(None, None, 0)
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present))


def fmt_number(value: float | None) -> str:
    """Two decimals like the paper; None is the paper's dash."""
    return EMPTY if value is None else f"{value:.2f}"


def fmt_stat(stat: Stat, seeds: int) -> str:
    """'mean ± std'; the mean alone for one value; '(n=k)' when only k of the seeds had it."""
    if stat.mean is None:
        return EMPTY
    text = fmt_number(stat.mean) if stat.std is None else f"{stat.mean:.2f} ± {stat.std:.2f}"
    return text if stat.n == seeds else f"{text} (n={stat.n})"
