"""A selector apart from the learner: the -Alignment and -SA ablations (docs/method.md §7).

SAPT's point is that one shared attention both mixes blocks while learning and
selects them at test time. The ablations break that alignment:

- `aligned` (-Alignment): the learner trains as SALS; after each task a separate
  network of the same shape (query network + keys) is fitted, on pseudo inputs of
  earlier tasks and real inputs of the current one, to reproduce each task's
  recorded mean attention ᾱ^i (KL). At test time its weights replace the learner's.
- `classifier` (-SA): each task's block learns alone; the separate network is a
  task classifier (KL to one-hot task targets = cross-entropy), and at test time
  only its arg-max block is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .attention import SharedAttention
from .reflection import pad_target

MODES = ("shared", "aligned", "classifier")  # method.sapt.selection: who weighs the blocks at test time
LEARNING_MODES = ("attention", "own_block")  # method.sapt.learning: how they are weighed while learning (-SA)


@dataclass
class SelectorSettings:
    steps: int
    lr: float
    batch_size: int


def selection_targets(task_of_row: torch.Tensor, targets: list[torch.Tensor], n_blocks: int, mode: str) -> torch.Tensor:
    """(rows, N) target weights: each task's recorded attention, or its one-hot block."""
    if mode == "classifier":
        return nn.functional.one_hot(task_of_row, n_blocks).float()
    table = torch.stack([pad_target(t.float(), n_blocks) for t in targets])  # (tasks, N)
    return table[task_of_row]


def fit_selector(
    selector: SharedAttention, features: torch.Tensor, targets: torch.Tensor, settings: SelectorSettings, seed: int
) -> float:
    """Fit every selector parameter to (pooled input -> target weights); returns the last loss."""
    selector.train()
    selector.requires_grad_(True)
    params = list(selector.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    rng = torch.Generator().manual_seed(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(settings.steps):
        rows = torch.randint(len(features), (min(settings.batch_size, len(features)),), generator=rng)
        log_p = F.log_softmax(selector(features[rows], normalize=False).float(), dim=-1)
        loss = F.kl_div(log_p, targets[rows], reduction="batchmean")  # KL(target || α), a target per row
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    selector.eval()
    selector.requires_grad_(False)
    return float(loss.detach())


def hard_top1(weights: torch.Tensor) -> torch.Tensor:
    """Only the arg-max block, weight 1 (the -SA ablation's routing)."""
    return nn.functional.one_hot(weights.argmax(dim=-1), weights.shape[-1]).to(weights.dtype)
