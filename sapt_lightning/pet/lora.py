"""Per-task LoRA blocks mixed per sample: the PET half of SAPT's SALS.

    x ──► base_layer ───────────────────────────────┐
    │                                                 (+)──► y
    └──► [A_0; A_1; …; A_t] ─► h ─► h ⊙ (α ⊗ 1_r)·s ─► [B_0 B_1 … B_t] ─┘

For every sample b, y_b = W x_b + s · Σ_j α_bj B_j A_j x_b (DESIGN.md "block mixing"):
the weighted sum of block outputs, which equals mixing the ΔW_j. The fused path
stacks the blocks' A and B and does it in two matrix products; the loop path is the
per-block reference that tests and the benchmark compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F


class MixingState:
    """Per-sample block weights shared by every adapted layer of one model.

    Set once per forward (from the encoder/prompt input), read by each layer. For
    T5 generation the same weights serve every decoding step.
    """

    def __init__(self) -> None:
        self._weights: torch.Tensor | None = None  # (B, n_blocks), task order 0..t
        self._derived: dict[tuple, torch.Tensor] = {}

    @property
    def weights(self) -> torch.Tensor | None:
        return self._weights

    @weights.setter
    def weights(self, weights: torch.Tensor | None) -> None:
        self._weights = weights
        self._derived = {}

    def for_batch(self, batch_size: int, scaling: float = 1.0, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        """The weights for a layer input of `batch_size` rows, times `scaling`, in `dtype`.

        Derived once per forward and shared by every layer: a GPU step waits on Python for each
        of its many small kernels, and a model has a hundred or more adapted layers."""
        w = self._weights
        if w is None:
            return None
        key = (batch_size, scaling, dtype, torch.is_grad_enabled())  # (a reentrant checkpoint's first pass has none)
        if key not in self._derived:
            if w.shape[0] != batch_size:
                if batch_size % w.shape[0]:
                    raise RuntimeError(f"mixing weights for {w.shape[0]} samples, layer input has {batch_size}")
                w = w.repeat_interleave(batch_size // w.shape[0], dim=0)  # beams or sampled sequences
            if scaling != 1.0:
                w = w * scaling
            self._derived[key] = w if dtype is None else w.to(dtype)
        return self._derived[key]


class MultiTaskLoRALinear(nn.Module):
    """Wraps a linear layer; holds one (A, B) pair per task; mixes them by MixingState."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, state: MixingState,
                 mixing: str = "fused", detach_finished: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"pet.r must be positive, got {r}")
        self.base_layer = base_layer
        weight = _base_weight(base_layer)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.r, self.scaling = r, alpha / r
        self.state = state
        self.mixing = mixing
        self.detach_finished = detach_finished  # fidelity=official: no activation grads through old blocks
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterList()  # each (r, in)
        self.lora_B = nn.ParameterList()  # each (out, r)

    @property
    def n_blocks(self) -> int:
        return len(self.lora_A)

    def add_block(self) -> None:
        """New trainable block (A Kaiming-uniform, B zero: the output starts unchanged); older ones freeze."""
        for p in self.parameters():
            p.requires_grad_(False)
        a = torch.empty(self.r, self.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_A.append(nn.Parameter(a))
        self.lora_B.append(nn.Parameter(torch.zeros(self.out_features, self.r)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        w = self.state.for_batch(x.shape[0]) if self.n_blocks else None
        if w is None:
            return out
        if w.shape[1] != self.n_blocks:
            raise RuntimeError(f"{w.shape[1]} mixing weights for {self.n_blocks} LoRA blocks")
        x = self.dropout(x)
        if not torch.is_autocast_enabled(x.device.type):  # (under autocast the products cast for themselves)
            x = x.to(self.lora_A[0].dtype)  # e.g. a bf16 backbone's activations into fp32 blocks
        delta = self._fused(x) if self.mixing == "fused" else self._loop(x, w)
        return out + delta.to(out.dtype)

    def _blocks(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The A and B tensors as plain lists. (Slicing a ParameterList builds a new Module, a cost
        that a GPU step, waiting on Python for its many small kernels, pays at every layer.)"""
        return list(self.lora_A._parameters.values()), list(self.lora_B._parameters.values())

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_j w_j s B_j A_j x in batched products: one stacked product for the frozen
        blocks, one for the trainable ones.

        The split matters for speed: stacking a trainable block with frozen ones into one
        tensor would make autograd compute the weight gradient of the whole stack (N
        times the useful work) and then throw N-1 parts away. Frozen blocks are stacked
        afresh each forward (a copy of N*r*(in+out) numbers, negligible next to the
        products), never cached, so a block changed in place can never be served stale.
        """
        As, Bs = self._blocks()
        k = self._frozen_prefix(As, Bs)
        delta = None
        if k:
            with torch.no_grad():  # no parameter gradient; activation and α gradients still flow
                a = As[0] if k == 1 else torch.cat(As[:k], dim=0)  # (k*r, in)
                b = Bs[0] if k == 1 else torch.cat(Bs[:k], dim=1)  # (out, k*r)
            xf = x.detach() if self.detach_finished and k < self.n_blocks else x
            delta = F.linear(self._weighted(F.linear(xf, a), 0, k), b)
        if k < self.n_blocks:  # usually just the newest block
            a = As[k] if k == self.n_blocks - 1 else torch.cat(As[k:], dim=0)
            b = Bs[k] if k == self.n_blocks - 1 else torch.cat(Bs[k:], dim=1)
            if self.detach_finished and k < self.n_blocks - 1:  # finished blocks that still require grad
                h = torch.cat([F.linear(x.detach(), a[: -self.r]), F.linear(x, a[-self.r:])], dim=-1)
            else:
                h = F.linear(x, a)
            out = F.linear(self._weighted(h, k, self.n_blocks), b)
            delta = out if delta is None else delta + out
        return delta

    def _frozen_prefix(self, As: list[nn.Parameter], Bs: list[nn.Parameter]) -> int:
        """How many leading blocks need no parameter gradient (all of them without autograd)."""
        if not torch.is_grad_enabled():
            return len(As)
        k = 0
        for a, b in zip(As, Bs):
            if a.requires_grad or b.requires_grad:
                break
            k += 1
        if self.detach_finished:  # the newest block keeps its activation gradient even when frozen
            k = min(k, self.n_blocks - 1)
        return k

    def _weighted(self, h: torch.Tensor, first: int, end: int) -> torch.Tensor:
        """h (B, …, n*r) for blocks first..end-1 times each sample's scaled block weight, broadcast
        over the r columns of its block through a view (no repeat_interleave copy of the weights)."""
        ws = self.state.for_batch(h.shape[0], self.scaling, h.dtype)[:, first:end]
        n = end - first
        shape = h.shape
        h = h.view(*shape[:-1], n, self.r)
        return (h * ws.view(ws.shape[0], *([1] * (h.dim() - 3)), n, 1)).view(shape)

    def _loop(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        total = 0
        for j, (a, b) in enumerate(zip(*self._blocks())):
            finished = j < self.n_blocks - 1
            xj = x.detach() if (self.detach_finished and finished) else x
            wj = w[:, j].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            total = total + wj * self.scaling * F.linear(F.linear(xj, a), b)
        return total


def _base_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of a plain linear or of a wrapped one (peft layers expose base_layer)."""
    while not hasattr(layer, "weight") and hasattr(layer, "base_layer"):
        layer = layer.base_layer
    if hasattr(layer, "get_base_layer"):
        layer = layer.get_base_layer()
    return layer.weight


def inject_lora(model: nn.Module, target_modules: list[str], r: int, alpha: float, state: MixingState,
                mixing: str, detach_finished: bool, dropout: float = 0.0) -> list[MultiTaskLoRALinear]:
    """Replace every module whose name ends in one of `target_modules` with a MultiTaskLoRALinear."""
    targets = set(target_modules)
    found = [(name, mod) for name, mod in model.named_modules()
             if name.rsplit(".", 1)[-1] in targets and not isinstance(mod, MultiTaskLoRALinear)
             and not _inside_lora(name)]
    if not found:
        raise ValueError(f"no module named {sorted(targets)} in the backbone")
    layers = []
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiTaskLoRALinear(module, r, alpha, state, mixing, detach_finished, dropout)
        setattr(parent, child, layer)
        layers.append(layer)
    return layers


def _inside_lora(name: str) -> bool:
    # peft nests ModuleDicts named lora_A/lora_B whose children are named after adapters
    return any(part in ("lora_A", "lora_B", "lora_dropout", "base_layer") for part in name.split("."))


def lora_layers(model: nn.Module) -> Iterator[tuple[str, MultiTaskLoRALinear]]:
    for name, module in model.named_modules():
        if isinstance(module, MultiTaskLoRALinear):
            yield name, module


def lora_block_state(model: nn.Module, index: int) -> dict[str, torch.Tensor]:
    """Task `index`'s A and B in every adapted layer (views of the live parameters)."""
    state = {}
    for name, layer in lora_layers(model):
        state[f"{name}.lora_A"] = layer.lora_A[index].detach()
        state[f"{name}.lora_B"] = layer.lora_B[index].detach()
    return state
