"""The shared attention of SAPT: one router for learning *and* selection (SALS).

    x̄  = max (or mean: sapt.pooling) over input tokens of embed_tokens(ids)   (pooling)
    q  = LN(SiLU(W_up W_down x̄))       release order (default)
       = LN(W_up SiLU(W_down x̄))       paper Eq. 1 (sapt.query_net=paper)
    s_j = <k_j, q> / τ,  τ = sqrt(d)                                (Eq. 2)
    α  = softmax_j(s)                                               (block weights)

Keys are kept in task order [k_0 … k_t] (the release stores them newest first;
`interop.release` converts). Only the newest key trains; the query network carries
over from task to task and keeps training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

QUERY_NETS = ("release", "paper")  # method.sapt.query_net
POOLINGS = ("max", "mean")  # method.sapt.pooling


def max_pool_embeddings(embeddings: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, d) -> (B, d). With a mask, padding never wins the max (fidelity=clean)."""
    if mask is not None:
        fill = torch.finfo(embeddings.dtype).min
        embeddings = embeddings.masked_fill(~mask.bool()[..., None], fill)
    return embeddings.max(dim=1).values


def mean_pool_embeddings(embeddings: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, d) -> (B, d): the mean over the tokens (the real ones, given a mask). The max of a
    long prompt is set by the words every prompt of a benchmark shares, so max-pooled inputs of
    different tasks lie close together; the mean keeps more of what differs per task."""
    if mask is None:
        return embeddings.mean(dim=1)
    weights = mask.to(embeddings.dtype)[..., None]
    return (embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def pool_embeddings(embeddings: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """The query network's input (method.sapt.pooling). Without a mask, padding joins the pooling
    (fidelity.mask_padding_in_pooling=false, the release's)."""
    if pooling == "mean":
        return mean_pool_embeddings(embeddings, mask)
    return max_pool_embeddings(embeddings, mask)


class QueryNetwork(nn.Module):
    def __init__(self, d: int, hidden: int, order: str = "release") -> None:
        super().__init__()
        if order not in QUERY_NETS:
            raise ValueError(f"method.sapt.query_net must be 'release' or 'paper', got '{order}'")
        self.order = order
        self.down = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(hidden, d, bias=False)
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(d)

    def redraw_linear(self, std: float, generator: torch.Generator | None = None) -> None:
        """Linear weights ~ N(0, std), as a Hugging Face model's own weight initialisation does to
        every nn.Linear it holds (the release builds the query network inside its LLaMA model)."""
        with torch.no_grad():
            for linear in (self.down, self.up):
                linear.weight.normal_(0.0, std, generator=generator)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if self.order == "release":
            return self.norm(self.act(self.up(self.down(pooled))))
        return self.norm(self.up(self.act(self.down(pooled))))


class SharedAttention(nn.Module):
    def __init__(self, d: int, hidden: int, query_net: str = "release", temperature: float | None = None) -> None:
        super().__init__()
        self.d = d
        self.query = QueryNetwork(d, hidden, query_net)
        self.temperature = float(temperature) if temperature else math.sqrt(d)
        self.keys = nn.ParameterList()  # each (d,), task order

    @property
    def n_blocks(self) -> int:
        return len(self.keys)

    def add_key(self, generator: torch.Generator | None = None) -> None:
        """New key ~ U[-1, 1] (as released); earlier keys freeze."""
        for k in self.keys:
            k.requires_grad_(False)
        key = torch.rand(self.d, generator=generator) * 2 - 1
        self.keys.append(nn.Parameter(key))

    def forward(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, d) pooled input -> (B, N) block weights α (softmax over the blocks), or with
        normalize=False the scores s_j = <k_j, q> / τ they come from.

        The keys are read only here, inside forward: ZeRO-3 gathers them when this module is
        called (sapt_lightning/cl/zero3.py)."""
        q = self.query(pooled.to(self.query.down.weight.dtype))
        keys = torch.stack(list(self.keys))  # (N, d)
        scores = q @ keys.T / self.temperature
        return scores.softmax(dim=-1) if normalize else scores
