"""What one task's `Trainer.fit` leaves in the module, put right before the steps between tasks.

Lightning hands the module back on the CPU (the loop moves it to the scoring device). A
strategy that casts the module goes further. DeepSpeed's bf16 engine casts every parameter
to bf16 in place at setup, keeps the fp32 master weights of the trainable ones in its
optimizer, and leaves its hooks (gradient reduction, forward casts) on the module after the
Trainer is gone: left alone, every later task would pay for every earlier engine, and the
steps between tasks would run on a module of another precision than the one that reloads
from disk.

`FitGuard`, a callback of every task's Trainer, undoes that. After fit, trainable parameters
hold their fp32 master values, frozen ones their values from before the fit, every tensor
its dtype, and the engine is destroyed and unhooked.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

HALF = (torch.float16, torch.bfloat16)


def casts_module(trainer: L.Trainer) -> bool:
    """DeepSpeed with 16-bit precision casts the whole module in place (its engine's setup)."""
    return isinstance(trainer.strategy, DeepSpeedStrategy) and "16" in str(trainer.precision)


class FitGuard(L.Callback):
    def __init__(self) -> None:
        self.dtypes: dict[str, torch.dtype] = {}
        self.frozen: dict[str, torch.Tensor] = {}
        self.masters: dict[str, torch.Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Runs before the strategy's setup, so before any cast.
        self.dtypes = {name: t.dtype for name, t in _tensors(pl_module)}
        self.masters = {}
        # Only where a cast would round them: a copy of a frozen fp32 backbone is not free.
        self.frozen = {name: p.detach().to("cpu", copy=True) for name, p in pl_module.named_parameters()
                       if casts_module(trainer) and not p.requires_grad and p.dtype not in HALF}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The engine and its optimizer are alive and on the GPU only until the strategy's teardown.
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            from deepspeed.utils import safe_get_full_fp32_param

            for name, p in pl_module.named_parameters():
                if p.requires_grad:  # a collective under ZeRO: every rank calls it, in the same order
                    full = safe_get_full_fp32_param(p)
                    if full is not None:
                        self.masters[name] = full.detach().to("cpu", copy=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            release_engine(trainer.strategy.model)
        for name, t in _tensors(pl_module):
            if name in self.dtypes and t.dtype != self.dtypes[name]:
                t.data = t.data.to(self.dtypes[name])
        with torch.no_grad():
            for name, p in pl_module.named_parameters():
                source = self.masters.get(name, self.frozen.get(name))
                if source is not None:
                    p.copy_(source)
        self.frozen, self.masters = {}, {}


def release_engine(engine: Any) -> None:
    """Destroy a DeepSpeed engine and remove the forward hooks that `destroy` leaves on the module."""
    if engine is None or not hasattr(engine, "destroy"):
        return
    engine.destroy()
    for name in ("module_forward_pre_hook", "module_forward_post_hook"):
        handle = getattr(engine, name, None)
        if handle is not None:
            handle.remove()


def _tensors(module: torch.nn.Module):
    return chain(module.named_parameters(), module.named_buffers())
