"""Per-example scores, in percent: exact match and Rouge-L (docs/method.md §1.6)."""

from __future__ import annotations

import random
import re
import string
from functools import lru_cache

from rouge_score import rouge_scorer

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, collapse whitespace (the release's EM normalisation)."""
    return " ".join(_PUNCT.sub("", text.lower()).split())


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 * (normalize_answer(prediction) == normalize_answer(reference))


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    return 100.0 * _scorer().score(reference, prediction)["rougeL"].fmeasure


_METRICS = {"exact_match": exact_match, "rougeL": rouge_l}


def score_example(
    prediction: str, references: tuple[str, ...], metric: str, multi_reference: str = "best", index: int = 0
) -> float:
    """Best match over references (clean) or one reference picked at random per instance (official)."""
    fn = _METRICS[metric]
    if not references:
        references = ("",)
    if multi_reference == "random" and len(references) > 1:
        return fn(prediction, random.Random(index).choice(references))
    return max(fn(prediction, ref) for ref in references)


def score_task(
    predictions: list[str], references: list[tuple[str, ...]], metric: str, multi_reference: str = "best"
) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return 0.0
    scores = [score_example(p, r, metric, multi_reference, k) for k, (p, r) in enumerate(zip(predictions, references))]
    return sum(scores) / len(scores)
