"""Continual-learning metrics over the score matrix, as pure functions.

R[i][j] is the score (percent) on task j after training tasks 0..i; None where j > i.
T is the number of tasks. Definitions follow the SAPT paper (§5.1.2; docs/method.md §6):

  AP   = 1/T       Σ_j R[T-1][j]
  F.Ra = 1/(T-1)   Σ_{j<T-1} ( max_{j<=i<=T-2} R[i][j] − R[T-1][j] )   (max-minus-last forgetting)
  FWT  = 1/T       Σ_i ( R[i][i] − single_i ),  single_i = task i trained alone (method=single)
  BWT  = 1/(T-1)   Σ_{j<T-1} ( R[T-1][j] − R[j][j] )

The release's score.py differs: BWT divides by T, FWT subtracts a constant 50.94;
`release_variants` reports those for comparison with published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _check(matrix: Matrix) -> int:
    t = len(matrix)
    if t == 0:
        raise ValueError("empty score matrix")
    for i, row in enumerate(matrix):
        if len(row) != t or any(row[j] is None for j in range(i + 1)):
            raise ValueError(f"row {i} of the score matrix must hold {i + 1} scores and {t} entries")
    return t


def average_performance(matrix: Matrix) -> float:
    t = _check(matrix)
    return sum(matrix[t - 1][j] for j in range(t)) / t


def forgetting_rate(matrix: Matrix) -> float | None:
    t = _check(matrix)
    if t < 2:
        return None
    drops = [max(matrix[i][j] for i in range(j, t - 1)) - matrix[t - 1][j] for j in range(t - 1)]
    return sum(drops) / (t - 1)


def backward_transfer(matrix: Matrix) -> float | None:
    t = _check(matrix)
    if t < 2:
        return None
    return sum(matrix[t - 1][j] - matrix[j][j] for j in range(t - 1)) / (t - 1)


def forward_transfer(matrix: Matrix, single: Sequence[float] | None) -> float | None:
    t = _check(matrix)
    if single is None:
        return None
    if len(single) != t:
        raise ValueError(f"{len(single)} single-task scores for {t} tasks")
    return sum(matrix[i][i] - single[i] for i in range(t)) / t


def summary(matrix: Matrix, single: Sequence[float] | None) -> dict[str, float | None]:
    return {
        "ap": average_performance(matrix),
        "f_ra": forgetting_rate(matrix),
        "fwt": forward_transfer(matrix, single),
        "bwt": backward_transfer(matrix),
    }


def joint_summary(matrix: Matrix) -> dict[str, float | None]:
    """Joint training (MTL) has no intermediate models: only the last row exists, and only AP is defined."""
    last = matrix[-1]
    if any(v is None for v in last):
        raise ValueError("the last row of a joint-training score matrix must hold every task's score")
    return {"ap": sum(last) / len(last), "f_ra": None, "fwt": None, "bwt": None}


RELEASE_FWT_CONSTANT = 50.94  # hard-coded in the release's score.py (SAPT issue #7)


def release_variants(matrix: Matrix) -> dict[str, float]:
    """The release's score.py formulas: BWT over T, FWT against the constant 50.94."""
    t = _check(matrix)
    return {
        "bwt_over_T": sum(matrix[t - 1][j] - matrix[j][j] for j in range(t)) / t,
        "fwt_vs_50.94": sum(matrix[i][i] for i in range(t)) / t - RELEASE_FWT_CONSTANT,
    }


CELL = 6  # characters per printed score column: " 100.0"
ROW_NAME_CHARS = 16  # longer task names go to a legend under the matrix instead of its rows


def format_matrix(names: Sequence[str], matrix: Matrix) -> str:
    """The score matrix as text, about 110 columns at most at 15 tasks.

    Columns are numbered T1..Tn; rows carry the number and the task's name, or, when a name
    is too long for that, only the number and a legend below, so no name is cut.
    """
    numbers = [f"T{k}" for k in range(1, len(names) + 1)]
    legend = any(len(n) > ROW_NAME_CHARS for n in names)
    rows = numbers if legend else [f"{k} {n}" for k, n in zip(numbers, names)]
    width = max(len(label) for label in rows)
    lines = [" " * width + "".join(f"{k:>{CELL}}" for k in numbers)]
    for label, row in zip(rows, matrix):
        lines.append(
            (f"{label:<{width}}" + "".join(" " * CELL if v is None else f"{v:{CELL}.1f}" for v in row)).rstrip()
        )
    if legend:
        lines += ["", *(f"{k:<{width}}  {name}" for k, name in zip(numbers, names))]
    return "\n".join(lines)
