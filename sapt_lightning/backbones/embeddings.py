"""Count-based word vectors as the starting embeddings of a mini backbone.

A few million tokens are what two CPU cores can pretrain a transformer on in half an hour. From
random embeddings that budget leaves the model near its unigram plateau, and the fine-tuned
tasks near their majority answer. The positive pointwise mutual information of the corpus's
co-occurrence counts, reduced by a truncated SVD (Levy & Goldberg, 2014; Levy, Goldberg & Dagan,
2015), gives embeddings that already separate topics and sentiment, in seconds; pretraining
starts from them and gets several times further in the same budget.
"""

from __future__ import annotations

import torch

WINDOW = 4  # tokens on each side; a pair at distance k counts 1/k
CONTEXT_SMOOTHING = 0.75  # context counts raised to 3/4 (word2vec's smoothing of the negative distribution)


def cooccurrence(stream: torch.Tensor, vocab_size: int, window: int = WINDOW) -> torch.Tensor:
    """Symmetric, distance-weighted co-occurrence counts of a token stream, as a sparse matrix."""
    pairs, weights = [], []
    for distance in range(1, window + 1):
        left, right = stream[:-distance], stream[distance:]
        pairs += [left * vocab_size + right, right * vocab_size + left]
        weights += [torch.full((2 * len(left),), 1.0 / distance)]
    keys, inverse = torch.unique(torch.cat(pairs), return_inverse=True)
    counts = torch.zeros(len(keys)).index_add_(0, inverse, torch.cat(weights))
    rows, cols = keys // vocab_size, keys % vocab_size
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), counts, (vocab_size, vocab_size), check_invariants=True
    ).coalesce()


def ppmi(counts: torch.Tensor) -> torch.Tensor:
    """Positive PMI of sparse counts, with smoothed context probabilities; zero pairs stay zero."""
    (rows, cols), values = counts.indices(), counts.values()
    row_sum = torch.zeros(counts.shape[0]).index_add_(0, rows, values)
    col_smoothed = torch.zeros(counts.shape[1]).index_add_(0, cols, values) ** CONTEXT_SMOOTHING
    pmi = torch.log(values * col_smoothed.sum() / (row_sum[rows] * col_smoothed[cols]))
    keep = pmi > 0
    return torch.sparse_coo_tensor(
        torch.stack([rows[keep], cols[keep]]), pmi[keep], counts.shape, check_invariants=True
    ).coalesce()


def ppmi_embeddings(stream: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """The embedding matrix `initial` (the model's own initialisation, vocab x dim) with the row of
    every token the stream holds replaced by its PPMI vector (U sqrt(S) of the rank-dim SVD), scaled
    to the spread of `initial`. A token the stream never holds (the generator's markers, unused
    bytes, sentinels) keeps its random row: as PPMI zero rows, tied to the output layer, they would
    all get the same logit whatever the hidden state, and stay equal through pretraining, so a
    fine-tuned model could never write one of them rather than another. svd_lowrank draws from
    torch's global generator, so the caller's seed makes it deterministic."""
    vocab_size, dim = initial.shape
    matrix = ppmi(cooccurrence(stream, vocab_size))
    left, singular, _ = torch.svd_lowrank(matrix, q=dim, niter=4)
    vectors = left * singular.sqrt()
    present = torch.bincount(stream, minlength=vocab_size) > 0
    scaled = vectors * (initial.std() / vectors[present].std().clamp_min(1e-12))
    return torch.where(present[:, None], scaled, initial)
