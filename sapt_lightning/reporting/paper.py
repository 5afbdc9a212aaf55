"""The SAPT paper's published numbers (T5-large), so reports can sit our runs next to them.

Copied from /work/shared/SAPT_SPEC.md §12 (paper Table 1, Table 2 and the per-order
Appendix D table). Scores are percent; None is the paper's "–" (EPI cannot run on
SuperNI). Only T5-large numbers are here: the LLaMA-2 tables have lost captions, so
a match against them could not be trusted.
"""

from __future__ import annotations

from typing import NamedTuple


class PaperScores(NamedTuple):
    """One row of a paper table: AP, F.Ra, FWT, BWT (percent; None where the paper has "–")."""

    ap: float | None
    f_ra: float | None
    fwt: float | None
    bwt: float | None


class PaperMatch(NamedTuple):
    """Paper numbers for one of our configurations, with where in the paper they come from."""

    name: str      # the paper's row name, e.g. "SAPT-LoRA" or "– ARM"
    source: str    # e.g. "App. D, order 1" or "Table 1, avg of orders 1-2"
    scores: PaperScores


P = PaperScores

#: Table 1: averaged over orders (SuperNI: orders 1-2; Long Sequence: orders 3-4) and 3 runs.
TABLE1: dict[str, dict[str, PaperScores]] = {
    "superni": {
        "SeqLoRA": P(6.43, 33.39, -13.58, -30.94),
        "Replay": P(35.37, 16.92, -1.35, -15.79),
        "L2P": P(12.73, 11.87, -19.14, -7.95),
        "LFPT5": P(34.37, 15.80, -0.46, -14.47),
        "ProgPrompt": P(3.34, 35.57, -3.29, -33.18),
        "EPI": P(None, None, None, None),
        "O-LoRA": P(25.89, 26.37, -0.14, -24.59),
        "SAPT-Prompt": P(41.11, 1.32, 1.95, -0.65),
        "SAPT-LoRA": P(51.54, 0.91, 1.88, -0.57),
    },
    "long_sequence": {
        "SeqLoRA": P(9.72, 78.61, 0.81, -73.37),
        "Replay": P(71.28, 13.05, 1.28, -12.18),
        "L2P": P(57.98, 22.49, 1.36, -16.63),
        "LFPT5": P(67.01, 13.89, 2.48, -12.80),
        "ProgPrompt": P(7.98, 71.55, -2.63, -66.71),
        "EPI": P(75.15, 1.61, -0.77, -1.42),
        "O-LoRA": P(69.24, 7.00, -8.15, -4.05),
        "SAPT-Prompt": P(79.14, 1.68, 3.29, -1.48),
        "SAPT-LoRA": P(82.02, 1.50, 1.86, -1.25),
    },
}

#: Table 2: SAPT-LoRA ablations, averaged over the same orders as Table 1.
TABLE2: dict[str, dict[str, PaperScores]] = {
    "superni": {
        "SAPT-LoRA": P(51.54, 0.91, 1.88, -0.57),
        "– ARM": P(11.12, 42.83, 0.70, -40.44),
        "+ Replay": P(45.41, 7.70, 1.26, -6.79),
        "– Alignment": P(45.90, 2.98, -2.42, -2.55),
        "– SA": P(44.36, 4.16, -2.95, -3.56),
    },
    "long_sequence": {
        "SAPT-LoRA": P(82.02, 1.50, 1.86, -1.25),
        "– ARM": P(10.18, 78.45, 1.93, -73.22),
        "+ Replay": P(76.93, 6.86, 1.21, -6.41),
        "– Alignment": P(77.61, 2.83, -3.92, -2.48),
        "– SA": P(67.81, 8.24, -8.60, -7.59),
    },
}

#: Appendix D: Table 1's methods per order. EPI has no SuperNI rows (orders 1-2).
APPENDIX_D: dict[int, dict[str, PaperScores]] = {
    1: {
        "SeqLoRA": P(5.05, 30.94, -17.01, -28.88),
        "Replay": P(34.37, 18.09, -1.26, -16.89),
        "L2P": P(15.18, 6.23, -20.97, -3.65),
        "LFPT5": P(39.03, 10.87, -0.41, -9.85),
        "ProgPrompt": P(2.83, 35.65, -3.70, -33.27),
        "O-LoRA": P(20.95, 30.91, -0.43, -28.83),
        "SAPT-Prompt": P(41.88, 1.41, 2.83, -0.75),
        "SAPT-LoRA": P(52.25, 0.57, 2.26, -0.23),
    },
    2: {
        "SeqLoRA": P(7.80, 35.84, -10.15, -32.99),
        "Replay": P(36.37, 15.74, -1.44, -14.69),
        "L2P": P(10.27, 17.51, -17.30, -12.24),
        "LFPT5": P(29.70, 20.72, -0.51, -19.08),
        "ProgPrompt": P(3.85, 35.48, -2.87, -33.09),
        "O-LoRA": P(30.82, 21.83, 0.15, -20.35),
        "SAPT-Prompt": P(40.34, 1.23, 1.07, -0.54),
        "SAPT-LoRA": P(50.82, 1.24, 1.50, -0.90),
    },
    3: {
        "SeqLoRA": P(6.71, 82.07, 1.19, -76.60),
        "Replay": P(68.20, 16.21, 1.20, -15.13),
        "L2P": P(58.61, 21.55, 1.01, -15.43),
        "LFPT5": P(66.62, 14.57, 2.89, -13.60),
        "ProgPrompt": P(6.14, 74.64, -1.65, -69.53),
        "EPI": P(75.19, 0.77, -1.54, -0.60),
        "O-LoRA": P(69.22, 8.30, -7.79, -4.42),
        "SAPT-Prompt": P(80.20, 0.91, 3.63, -0.76),
        "SAPT-LoRA": P(83.44, 0.75, 1.99, -0.66),
    },
    4: {
        "SeqLoRA": P(12.73, 75.15, 0.43, -70.14),
        "Replay": P(74.25, 9.89, 1.36, -9.23),
        "L2P": P(57.34, 23.42, 1.70, -17.82),
        "LFPT5": P(67.40, 13.20, 2.06, -11.99),
        "ProgPrompt": P(9.83, 68.45, -3.61, -63.89),
        "EPI": P(75.10, 2.44, 0.00, -2.23),
        "O-LoRA": P(69.26, 5.70, -8.51, -5.09),
        "SAPT-Prompt": P(78.08, 2.45, 2.95, -2.20),
        "SAPT-LoRA": P(80.60, 2.25, 1.72, -1.94),
    },
}

#: The paper's orders belong to one benchmark each (spec §1.7).
ORDER_BENCHMARK: dict[int, str] = {1: "superni", 2: "superni", 3: "long_sequence", 4: "long_sequence"}
BENCHMARK_ORDERS: dict[str, str] = {"superni": "1-2", "long_sequence": "3-4"}
PAPER_BACKBONE = "t5_large"

#: Our method name -> (paper row name, PET type it must use or None for any). The LoRA
#: baselines only match LoRA runs; the prompt baselines bring their own prompts, so the
#: (default lora) pet setting says nothing about them.
METHOD_NAMES: dict[str, tuple[str, str | None]] = {
    "seq_lora": ("SeqLoRA", "lora"),
    "replay": ("Replay", "lora"),
    "olora": ("O-LoRA", "lora"),
    "l2p": ("L2P", None),
    "lfpt5": ("LFPT5", None),
    "progprompt": ("ProgPrompt", None),
    "epi": ("EPI", None),
}
SAPT_NAMES: dict[str, str] = {"lora": "SAPT-LoRA", "prompt": "SAPT-Prompt"}
#: Our ablation name -> Table 2 row (all are SAPT-LoRA variants).
ABLATION_NAMES: dict[str, str] = {"no_arm": "– ARM", "replay": "+ Replay", "no_alignment": "– Alignment", "no_sa": "– SA"}


def paper_row_name(method: str, pet: str, ablations: list[str]) -> str | None:
    """The paper's row for our (method, pet, ablations), or None when the paper has no such row.

    Table 2 ablates SAPT-LoRA one component at a time, so only sapt + lora with a single
    known ablation has a row; combined ablations were never published.
    """
    if method == "sapt":
        if not ablations:
            return SAPT_NAMES.get(pet)
        if pet == "lora" and len(ablations) == 1:
            return ABLATION_NAMES.get(ablations[0])
        return None
    if ablations or method not in METHOD_NAMES:
        return None
    name, needs_pet = METHOD_NAMES[method]
    return name if needs_pet in (None, pet) else None


def lookup(method: str, pet: str, ablations: list[str], benchmark: str, order_id: int | None,
           backbone: str) -> PaperMatch | None:
    """Published numbers for this configuration, or None when the paper has none.

    Only T5-large on SuperNI / Long Sequence matches. A paper order (1-4) of that
    benchmark uses the per-order Appendix D row; ablations (no per-order table), custom
    orders and EPI on SuperNI (no Appendix D row; "–" in Table 1) fall back to the
    order-averaged Table 2 / Table 1, and the source says so.
    """
    if backbone != PAPER_BACKBONE or benchmark not in TABLE1:
        return None
    if order_id is not None and ORDER_BENCHMARK.get(order_id, benchmark) != benchmark:
        return None  # e.g. a Long Sequence order on SuperNI: not a paper configuration
    name = paper_row_name(method, pet, ablations)
    if name is None:
        return None
    if not ablations and name in APPENDIX_D.get(order_id, {}):
        return PaperMatch(name, f"App. D, order {order_id}", APPENDIX_D[order_id][name])
    table, label = (TABLE2, "Table 2") if ablations else (TABLE1, "Table 1")
    scores = table[benchmark].get(name)
    if scores is None:
        return None
    return PaperMatch(name, f"{label}, avg of orders {BENCHMARK_ORDERS[benchmark]}", scores)
