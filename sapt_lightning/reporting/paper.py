"""The SAPT paper's published numbers (T5-large), so reports can sit our runs next to them.

The numbers are data, in paper_numbers.yaml next to this module (shipped with the package):
paper Table 1, Table 2 and the per-order Appendix D table. Scores are percent; None is the
paper's "–" (EPI cannot run on SuperNI).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any, NamedTuple

import yaml

PAPER_FILE = "paper_numbers.yaml"


class PaperScores(NamedTuple):
    """One row of a paper table: AP, F.Ra, FWT, BWT (percent; None where the paper has "–")."""

    ap: float | None
    f_ra: float | None
    fwt: float | None
    bwt: float | None


class PaperMatch(NamedTuple):
    """Paper numbers for one of our configurations, with where in the paper they come from."""

    name: str  # the paper's row name, e.g. "SAPT-LoRA" or "– ARM"
    source: str  # e.g. "App. D, order 1" or "Table 1, avg of orders 1-2"
    scores: PaperScores


def _scores(row: Any, where: str) -> PaperScores:
    """One [AP, F.Ra, FWT, BWT] row; a malformed row names its place in the file."""
    if not isinstance(row, list) or len(row) != len(PaperScores._fields):
        raise ValueError(f"{PAPER_FILE}: {where} is not a list of {len(PaperScores._fields)} scores: {row!r}")
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in row):
        raise ValueError(f"{PAPER_FILE}: {where} holds a score that is neither a number nor null: {row!r}")
    return PaperScores(*(None if v is None else float(v) for v in row))


def _table(rows: dict[Any, dict[str, Any]], name: str) -> dict[Any, dict[str, PaperScores]]:
    return {
        key: {row: _scores(values, f"{name}.{key}.{row}") for row, values in table.items()}
        for key, table in rows.items()
    }


def load_paper_numbers() -> dict[str, Any]:
    """paper_numbers.yaml, its rows as PaperScores; the column order must be the one PaperScores has."""
    data = yaml.safe_load(resources.files(__package__).joinpath(PAPER_FILE).read_text(encoding="utf-8"))
    if data.get("columns") != list(PaperScores._fields):
        raise ValueError(f"{PAPER_FILE}: columns must be {list(PaperScores._fields)}, not {data.get('columns')}")
    return {**data, **{name: _table(data[name], name) for name in ("table1", "table2", "appendix_d")}}


_PAPER = load_paper_numbers()
#: Table 1: averaged over orders (SuperNI: orders 1-2; Long Sequence: orders 3-4) and 3 runs.
TABLE1: dict[str, dict[str, PaperScores]] = _PAPER["table1"]
#: Table 2: SAPT-LoRA ablations, averaged over the same orders as Table 1.
TABLE2: dict[str, dict[str, PaperScores]] = _PAPER["table2"]
#: Appendix D: Table 1's methods per order. EPI has no SuperNI rows (orders 1-2).
APPENDIX_D: dict[int, dict[str, PaperScores]] = _PAPER["appendix_d"]
#: The paper's orders belong to one benchmark each (docs/method.md §1.7).
ORDER_BENCHMARK: dict[int, str] = {o: bench for bench, orders in _PAPER["orders"].items() for o in orders}
BENCHMARK_ORDERS: dict[str, str] = {bench: f"{min(orders)}-{max(orders)}" for bench, orders in _PAPER["orders"].items()}
PAPER_BACKBONE: str = _PAPER["backbone"]

#: Our ablation name -> Table 2 row; Table 2 ablates ABLATED_ROW only.
ABLATION_NAMES: dict[str, str] = {
    "no_arm": "– ARM",
    "replay": "+ Replay",
    "no_alignment": "– Alignment",
    "no_sa": "– SA",
}
ABLATED_ROW = "SAPT-LoRA"


def paper_row_name(paper_names: Mapping[str, str], pet: str, ablations: list[str]) -> str | None:
    """The paper's row for a run, or None when the paper has no such row.

    `paper_names` is the method's own declaration (its yaml's `paper_name`: pet type -> row),
    so the report needs no list of methods. Table 2 ablates SAPT-LoRA one component at a time:
    only its row with a single known ablation has numbers; combined ablations were never published.
    """
    row = paper_names.get(pet)
    if row is None or not ablations:
        return row
    if row == ABLATED_ROW and len(ablations) == 1:
        return ABLATION_NAMES.get(ablations[0])
    return None


def find(
    paper_names: Mapping[str, str], pet: str, ablations: list[str], benchmark: str, order_id: int | None, backbone: str
) -> PaperMatch | str:
    """Published numbers for this configuration, or why the paper has none (a short phrase).

    Only T5-large on SuperNI / Long Sequence matches. A paper order (1-4) of that
    benchmark uses the per-order Appendix D row; ablations (no per-order table), custom
    orders and EPI on SuperNI (no Appendix D row; "–" in Table 1) fall back to the
    order-averaged Table 2 / Table 1, and the source says so.
    """
    if backbone != PAPER_BACKBONE:
        return f"the paper ran {PAPER_BACKBONE} only"
    if benchmark not in TABLE1:
        return f"{benchmark} is not a paper benchmark"
    if order_id is not None and ORDER_BENCHMARK.get(order_id, benchmark) != benchmark:
        return f"order {order_id} belongs to {ORDER_BENCHMARK[order_id]}"
    name = paper_row_name(paper_names, pet, ablations)
    if name is None:
        if paper_names.get(pet) is None:
            return f"the method names no paper row for {pet} (method.paper_name)"
        return "the paper ablates SAPT-LoRA one component at a time"
    if not ablations and name in APPENDIX_D.get(order_id, {}):
        return PaperMatch(name, f"App. D, order {order_id}", APPENDIX_D[order_id][name])
    table, label = (TABLE2, "Table 2") if ablations else (TABLE1, "Table 1")
    scores = table[benchmark].get(name)
    if scores is None:
        return f"the paper has no {name} on {benchmark}"
    return PaperMatch(name, f"{label}, avg of orders {BENCHMARK_ORDERS[benchmark]}", scores)


def lookup(
    paper_names: Mapping[str, str], pet: str, ablations: list[str], benchmark: str, order_id: int | None, backbone: str
) -> PaperMatch | None:
    """`find` without the reason: the match or None."""
    match = find(paper_names, pet, ablations, benchmark, order_id, backbone)
    return match if isinstance(match, PaperMatch) else None
