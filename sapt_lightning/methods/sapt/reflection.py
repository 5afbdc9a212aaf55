"""ARM, attentive reflection: keep old tasks' attention where it was.

After task i, its target ᾱ^i is the mean attention over task i's dev inputs. While
learning a later task t, pseudo inputs of task i are routed again and the KL
divergence KL(target_i || α) is added, weighted by λ (docs/method.md §3).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def attention_target(batches: list[torch.Tensor], mode: str, batch_weights: list[float] | None = None) -> torch.Tensor:
    """Mean attention of one task's dev inputs. `batches`: list of (B, N) weights.

    per_example (clean): every example counts once. batch_means (official): mean of
    the batch means, as released (a smaller last batch weighs more); `batch_weights` weigh
    the batch means (the release's LLaMA counts a batch once per forward of its prediction).
    """
    if not batches:
        raise ValueError("no attention weights to average")
    if batch_weights is not None and (mode != "batch_means" or len(batch_weights) != len(batches)):
        raise ValueError(f"batch weights need arm_target=batch_means and one weight per batch ({len(batches)})")
    if mode == "per_example":
        return torch.cat(batches).mean(dim=0)
    if mode == "batch_means":
        means = torch.stack([b.mean(dim=0) for b in batches])
        if batch_weights is None:
            return means.mean(dim=0)
        w = torch.tensor(batch_weights, dtype=means.dtype).unsqueeze(1)
        return (means * w).sum(dim=0) / w.sum()
    raise ValueError(f"fidelity.arm_target must be per_example or batch_means, got '{mode}'")


def pad_target(target: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Zero weight for the blocks added after the target's task (task order: appended last)."""
    if target.shape[0] > n_blocks:
        raise ValueError(f"an ARM target of length {target.shape[0]} cannot cover only {n_blocks} blocks")
    return torch.cat([target, target.new_zeros(n_blocks - target.shape[0])])


def reflection_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)), batchmean, on logits. logits (B, N), target (N,)."""
    if target.shape[-1] != logits.shape[-1]:
        raise ValueError(f"ARM target has {target.shape[-1]} entries, the attention has {logits.shape[-1]} blocks")
    log_p = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(log_p, target.float().expand_as(log_p), reduction="batchmean")
