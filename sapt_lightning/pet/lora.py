"""Per-task LoRA blocks mixed per sample: the PET half of SAPT's SALS.

    x ──► base_layer ───────────────────────────────┐
    │                                                 (+)──► y
    └──► [A_0; A_1; …; A_t] ─► h ─► h ⊙ (α ⊗ 1_r)·s ─► [B_0 B_1 … B_t] ─┘

For every sample b, y_b = W x_b + s · Σ_j α_bj B_j A_j x_b (docs/method.md §2.4):
the weighted sum of block outputs, which equals mixing the ΔW_j. The fused path
stacks the blocks' A and B and does it in two matrix products (`mix_blocks`), under
autograd as one node with its own backward (`BlockMix`); the loop path is the per-block
reference that tests and the benchmark compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

MIXING_MODES = ("fused", "loop")  # method.sapt.mixing


class MixingState:
    """Per-sample block weights shared by every adapted layer of one model.

    Set once per forward (from the encoder/prompt input), read by each layer. For
    T5 generation the same weights serve every decoding step.
    """

    def __init__(self) -> None:
        self._weights: torch.Tensor | None = None  # (B, n_blocks), task order 0..t
        self._derived: dict[tuple, torch.Tensor] = {}
        self._stacks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None  # inside fixed_blocks only

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
        key = (batch_size, scaling, dtype, torch.is_grad_enabled())  # (a no-grad pass must not feed a later one)
        if key not in self._derived:
            if w.shape[0] != batch_size:
                if batch_size % w.shape[0]:
                    raise RuntimeError(f"mixing weights for {w.shape[0]} samples, layer input has {batch_size}")
                w = w.repeat_interleave(batch_size // w.shape[0], dim=0)  # beams or sampled sequences
            if scaling != 1.0:
                w = w * scaling
            self._derived[key] = w if dtype is None else w.to(dtype)
        return self._derived[key]

    def columns(self, batch_size: int, r: int, scaling: float, dtype: torch.dtype) -> torch.Tensor:
        """The weights as the fused products use them: (batch, 1, n*r), block j's weight times
        `scaling` repeated over its r columns. Also derived once per forward for every layer, so
        that a layer spends one multiply on the weighting, not a view and a broadcast per block."""
        key = ("columns", batch_size, r, scaling, dtype, torch.is_grad_enabled())
        if key not in self._derived:
            w = self.for_batch(batch_size, scaling, dtype)
            self._derived[key] = block_columns(w, r)
        return self._derived[key]

    @contextmanager
    def fixed_blocks(self) -> Iterator[None]:
        """A scope in which no block changes (one generate call): each layer stacks its blocks
        once, not once per decoding step. Outside it they are stacked afresh at every forward,
        so a block changed in place is never served stale."""
        outer = self._stacks
        self._stacks = {} if outer is None else outer  # nested: the outer scope's stacks stay valid
        try:
            yield
        finally:
            self._stacks = outer

    def stacked(
        self, layer: nn.Module, dtype: torch.dtype, build: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`layer`'s stacked blocks in `dtype`: built now, or once per fixed_blocks scope."""
        if self._stacks is None:
            return build()
        key = (id(layer), dtype)
        if key not in self._stacks:
            self._stacks[key] = build()
        return self._stacks[key]


class MultiTaskLoRALinear(nn.Module):
    """Wraps a linear layer; holds one (A, B) pair per task; mixes them by MixingState."""

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float,
        state: MixingState,
        mixing: str = "fused",
        detach_finished: bool = False,
        dropout: float = 0.0,
        dropout_per_block: bool = False,
    ) -> None:
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
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        # fidelity.lora_dropout_masks=per_block: each block drops its own units, as the release's
        # one LoRA module per block does; shared (clean): one mask, so the blocks mix one input.
        self.dropout_per_block = dropout_per_block
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
        w = self.state.weights if self.n_blocks else None
        if w is None:
            return out
        if w.shape[1] != self.n_blocks:
            raise RuntimeError(f"{w.shape[1]} mixing weights for {self.n_blocks} LoRA blocks")
        if self.dropout is not None and self.training and self.dropout_per_block:
            delta = self._loop(x, self.state.for_batch(x.shape[0]), drop_each=True)
            return out + delta.to(out.dtype)
        if self.dropout is not None:
            x = self.dropout(x)
        delta = self._fused(x) if self.mixing == "fused" else self._loop(x, self.state.for_batch(x.shape[0]))
        return out + delta.to(out.dtype)

    def _blocks(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The A and B tensors as plain lists. (Indexing or slicing a ParameterList goes through
        Module machinery, a cost that a GPU step, waiting on Python for its many small kernels,
        pays at every layer.)"""
        return list(self.lora_A._parameters.values()), list(self.lora_B._parameters.values())

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_j w_j s B_j A_j x over the stacked blocks; with autograd, as one node (BlockMix).

        The products run in the autocast dtype when autocast is on, else in the blocks' dtype
        (a bf16 backbone's activations meet fp32 blocks). The blocks are stacked afresh each
        forward (a copy of N*r*(in+out) numbers, none for one block already in that dtype),
        except within MixingState.fixed_blocks.
        """
        As, Bs = self._blocks()
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else As[0].dtype
        columns = self.state.columns(x.shape[0], self.r, self.scaling, dtype)
        x = x.to(dtype)
        a, b = self.state.stacked(self, dtype, lambda: _stack_blocks(As, Bs, dtype))
        if not torch.is_grad_enabled():
            return _mix_columns(x, columns, a, b)
        training = tuple(j for j, (pa, pb) in enumerate(zip(As, Bs)) if pa.requires_grad or pb.requires_grad)
        return BlockMix.apply(
            x, columns, a, b, self.r, self.detach_finished, training, *[p for j in training for p in (As[j], Bs[j])]
        )

    def _loop(self, x: torch.Tensor, w: torch.Tensor, drop_each: bool = False) -> torch.Tensor:
        """Block by block; `drop_each`: every block's input through its own dropout mask."""
        if not torch.is_autocast_enabled(x.device.type):  # (under autocast the products cast for themselves)
            x = x.to(self.lora_A[0].dtype)  # e.g. a bf16 backbone's activations into fp32 blocks
        total = 0
        for j, (a, b) in enumerate(zip(*self._blocks())):
            finished = j < self.n_blocks - 1
            xj = x.detach() if (self.detach_finished and finished) else x
            if drop_each and self.dropout is not None:
                xj = self.dropout(xj)
            wj = w[:, j].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
            total = total + wj * self.scaling * F.linear(F.linear(xj, a), b)
        return total


def _stack_blocks(
    As: list[torch.Tensor], Bs: list[torch.Tensor], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (n*r, in) and B (out, n*r) of all blocks, outside autograd (BlockMix routes the
    gradients of the blocks that train itself)."""
    with torch.no_grad():
        return _stack(As, 0, dtype), _stack(Bs, 1, dtype)


def _stack(tensors: list[torch.Tensor], dim: int, dtype: torch.dtype) -> torch.Tensor:
    # One block: a detached view, no copy. Not the parameter itself, which BlockMix also receives
    # as a parameter: torch.compile cannot trace one tensor passed to two of its inputs.
    stacked = tensors[0].detach() if len(tensors) == 1 else torch.cat(tensors, dim=dim)
    return stacked.to(dtype)


def block_columns(w: torch.Tensor, r: int) -> torch.Tensor:
    """Per-sample block weights w (B, n) as column weights (B, 1, n*r): block j's weight on its
    r columns of h = x Aᵀ, broadcast over the tokens."""
    n_samples, n_blocks = w.shape
    return w.unsqueeze(-1).expand(n_samples, n_blocks, r).reshape(n_samples, 1, n_blocks * r)


def mix_blocks(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """Σ_j w_bj B_j A_j x_b for every sample b: ((x Aᵀ) ⊙ w per block's r columns) Bᵀ.

    x (B, …, in); w (B, n), already scaled; a (n*r, in); b (out, n*r)."""
    return _mix_columns(x, block_columns(w, r), a, b)


def _mix_columns(x: torch.Tensor, columns: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mix_blocks with the weights already as columns (B, 1, n*r): two products and one multiply."""
    return _as_input(F.linear(F.linear(_per_sample(x, columns.shape[0]), a) * columns, b), x)


def _per_sample(x: torch.Tensor, n_samples: int) -> torch.Tensor:
    """x (B, …, in) as (B, T, in): each sample's rows (its tokens, or one row). A layer's input
    already is (B, T, in), and is passed on as it is."""
    if x.dim() == 3 and x.shape[0] == n_samples:
        return x
    return x.reshape(n_samples, math.prod(x.shape[1:-1]), x.shape[-1])


def _as_input(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y (B, T, out) back in x's leading shape."""
    return y if y.dim() == x.dim() else y.view(*x.shape[:-1], y.shape[-1])


class BlockMix(torch.autograd.Function):
    """mix_blocks as one autograd node with a hand-written backward.

    Why by hand: a GPU step of a big backbone is bound by launching its many small kernels, each
    waiting on Python and the dispatcher, and every adapted layer (100+) pays for each one. Autograd
    over the same products records a node per view, cast and multiply, several times the calls of
    a single LoRA layer (step times: experiments/results/bench_h100_t5-large.md). This node
    does the forward in three kernels (two products, one multiply by the column weights that
    MixingState derives once per forward), and its backward computes only what is used: the gradients of the input, of the
    weights and of the blocks that train (usually only the newest) - never the weight gradient of
    the whole stack, N times the useful work.

    Inputs: x (B, …, in); the column weights (B, 1, n*r) (`block_columns`); all blocks stacked
    (a (n*r, in), b (out, n*r)), in the compute dtype; r; whether only the newest block passes a
    gradient to x (fidelity=official: finished blocks see a detached input); the indices of the
    blocks that train, then their A and B parameters, which receive the gradients (autograd casts
    them from the compute dtype to the parameters').
    """

    @staticmethod
    def forward(ctx, x, columns, a, b, r, newest_only_to_x, training, *params):
        # Few calls, each doing much: on a GPU every call from Python costs about as much as a
        # small kernel, so (B, T, ·) tensors go to F.linear and matmul whole, and the block
        # gradients contract (B*T, ·) row views (no copies) in one product each.
        x3 = _per_sample(x, columns.shape[0])
        h = F.linear(x3, a)  # (B, T, n*r)
        hw = h * columns
        # Save only what the gradients asked for need: x for A, a for x, h for the weights, the
        # weighted h for B.
        needs = ctx.needs_input_grad
        ctx.save_for_backward(
            x3 if any(needs[7::2]) else None,
            columns,
            a if needs[0] else None,
            b,
            h if needs[1] else None,
            hw if any(needs[8::2]) else None,
        )
        ctx.r, ctx.newest_only_to_x, ctx.training, ctx.x_shape = r, newest_only_to_x, training, x.shape
        return _as_input(F.linear(hw, b), x)

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: second order raises, never lies
    def backward(ctx, grad_out):
        x3, columns, a, b, h, hw = ctx.saved_tensors
        r, needs = ctx.r, ctx.needs_input_grad
        g = _per_sample(grad_out, columns.shape[0])
        grad_hw = torch.matmul(g, b)  # (B, T, n*r): the gradient of the weighted h
        grad_h = grad_hw * columns
        grad_x = grad_columns = None
        if needs[0]:
            grad_x = torch.matmul(grad_h[..., -r:], a[-r:]) if ctx.newest_only_to_x else torch.matmul(grad_h, a)
            grad_x = grad_x.view(ctx.x_shape)
        if needs[1]:
            grad_columns = (grad_hw * h).sum(dim=1, keepdim=True)
        grads: list[torch.Tensor | None] = []
        for i, j in enumerate(ctx.training):  # contracted over samples and tokens: (B*T, ·) row views
            cols = slice(j * r, (j + 1) * r)
            grads.append(torch.mm(grad_h[..., cols].flatten(0, 1).t(), x3.flatten(0, 1)) if needs[7 + 2 * i] else None)
            grads.append(torch.mm(g.flatten(0, 1).t(), hw[..., cols].flatten(0, 1)) if needs[8 + 2 * i] else None)
        return (grad_x, grad_columns, None, None, None, None, None, *grads)


def _base_weight(layer: nn.Module) -> torch.Tensor:
    """The weight of a plain linear or of a wrapped one (peft layers expose base_layer)."""
    while not hasattr(layer, "weight") and hasattr(layer, "base_layer"):
        layer = layer.base_layer
    if hasattr(layer, "get_base_layer"):
        layer = layer.get_base_layer()
    return layer.weight


def inject_lora(
    model: nn.Module,
    target_modules: list[str],
    r: int,
    alpha: float,
    state: MixingState,
    mixing: str,
    detach_finished: bool,
    dropout: float = 0.0,
    dropout_per_block: bool = False,
) -> list[MultiTaskLoRALinear]:
    """Replace every module whose name ends in one of `target_modules` with a MultiTaskLoRALinear."""
    targets = set(target_modules)
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if name.rsplit(".", 1)[-1] in targets and not isinstance(mod, MultiTaskLoRALinear) and not _inside_lora(name)
    ]
    if not found:
        raise ValueError(f"no module named {sorted(targets)} in the backbone")
    layers = []
    for name, module in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MultiTaskLoRALinear(module, r, alpha, state, mixing, detach_finished, dropout, dropout_per_block)
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
