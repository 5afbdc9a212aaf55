"""Pretraining objectives of the mini backbones on real text: for the encoder-decoder, T5's span
corruption mixed with prefix language modelling (UL2's R- and S-denoisers); next-token prediction
for the decoder-only one.

The corpus (`corpus.py`) is tokenized once into one stream of ids, documents separated by
EOS; each step samples windows of it. Sentinels `<extra_id_k>` mark the dropped spans, as in T5.
Span corruption alone trains on 15% of a window's tokens: on two CPU cores a small T5 stays on
its unigram plateau (it fills every span with "the") for the whole budget. A prefix-LM window
(continue the text after a random cut) trains on half the window, and gets it off that plateau.
"""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedTokenizerFast

NOISE_DENSITY = 0.15  # T5's: 15% of the tokens dropped, in spans of 3 on average
MEAN_SPAN = 3.0
NUM_SENTINELS = 32


def sentinel(k: int) -> str:
    return f"<extra_id_{k}>"


def token_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str], batch: int = 2048) -> torch.Tensor:
    """All texts as one id stream, each followed by EOS."""
    ids: list[int] = []
    for start in range(0, len(texts), batch):
        for row in tokenizer(texts[start : start + batch], add_special_tokens=False).input_ids:
            ids += row + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def _segments(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` split into `parts` positive lengths, uniformly at random."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def span_corrupt(ids: list[int], sentinel_ids: list[int], eos: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """One window as (input with a sentinel per dropped span, target of sentinels and spans)."""
    n = len(ids)
    noise = max(1, round(n * NOISE_DENSITY))
    spans = max(1, min(round(noise / MEAN_SPAN), len(sentinel_ids), n - noise))
    keep_lengths, noise_lengths = _segments(n - noise, spans, rng), _segments(noise, spans, rng)
    source, target, pos = [], [], 0
    for k, (keep, drop) in enumerate(zip(keep_lengths, noise_lengths)):
        source += ids[pos : pos + keep] + [sentinel_ids[k]]
        pos += keep
        target += [sentinel_ids[k]] + ids[pos : pos + drop]
        pos += drop
    return source + [eos], target + [eos]


def prefix_lm(ids: list[int], eos: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """One window as (its beginning, the rest), cut at a random point in its middle half."""
    cut = rng.randrange(len(ids) // 4, 3 * len(ids) // 4 + 1)
    return ids[:cut] + [eos], ids[cut:] + [eos]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def text_batch(
    family: str,
    stream: torch.Tensor,
    tokenizer: PreTrainedTokenizerFast,
    rng: random.Random,
    size: int,
    length: int,
    prefix_fraction: float = 0.0,
) -> dict[str, torch.Tensor]:
    """`size` random windows of `length` tokens, shaped for the family's objective; for T5, a
    `prefix_fraction` of them are prefix-LM windows, the rest span corruption."""
    starts = [rng.randrange(0, len(stream) - length) for _ in range(size)]
    windows = [stream[s : s + length].tolist() for s in starts]
    pad = tokenizer.pad_token_id
    if family == "llama":
        ids = torch.tensor(windows)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    sentinel_ids = tokenizer.convert_tokens_to_ids([sentinel(k) for k in range(NUM_SENTINELS)])
    eos = tokenizer.eos_token_id
    pairs = [
        prefix_lm(w, eos, rng) if rng.random() < prefix_fraction else span_corrupt(w, sentinel_ids, eos, rng)
        for w in windows
    ]
    source = _pad([p[0] for p in pairs], pad)
    labels = _pad([p[1] for p in pairs], -100)
    return {"input_ids": source, "attention_mask": (source != pad).long(), "labels": labels}
