"""What one task's `Trainer.fit` leaves in the module, put right before the steps between tasks.

Lightning hands the module back on the CPU (the loop moves it to the scoring device). A
strategy that casts the module goes further. DeepSpeed's bf16 engine casts every parameter
to bf16 in place at setup, keeps the fp32 master weights of the trainable ones in its
optimizer, and leaves its hooks (gradient reduction, forward casts) on the module after the
Trainer is gone: left alone, every later task would pay for every earlier engine, and the
steps between tasks would run on a module of another precision than the one that reloads
from disk.

`FitGuard`, a callback of every task's Trainer, undoes that. After fit, trainable parameters
hold their fp32 master values, frozen ones (and float buffers) their values from before the
fit, every tensor its dtype, and the engine is destroyed, unhooked and let go. ZeRO-3 partitions
the parameters themselves: the guard also registers the per-task block lists with it before the
fit and makes every parameter whole again after it (zero3.py).
"""

from __future__ import annotations

import logging
from itertools import chain

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from ..utils.io import HALF_DTYPES
from . import zero3

log = logging.getLogger(__name__)


def _zero3(trainer: L.Trainer) -> bool:
    return isinstance(trainer.strategy, DeepSpeedStrategy) and bool(trainer.strategy.zero_stage_3)


def casts_module(trainer: L.Trainer) -> bool:
    """Whether the strategy's setup casts the whole module to 16 bits in place: DeepSpeed's engine
    under any 16-bit precision, any strategy under a `*-true` 16-bit one."""
    precision = str(trainer.precision)
    if "16" not in precision:
        return False
    return isinstance(trainer.strategy, DeepSpeedStrategy) or "true" in precision


class FitGuard(L.Callback):
    def __init__(self) -> None:
        self.dtypes: dict[str, torch.dtype] = {}
        self.before: dict[str, torch.Tensor] = {}  # values from before the fit, where a cast would round them
        self.masters: dict[str, torch.Tensor] = {}
        self.trainable: list[str] = []
        self.zero3_before: zero3.Snapshot | None = None  # attributes from before a ZeRO-3 engine

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Runs before the strategy's setup, so before any cast.
        self.dtypes = {name: t.dtype for name, t in _tensors(pl_module)}
        self.masters = {}
        self.trainable = [name for name, p in pl_module.named_parameters() if p.requires_grad]
        # Only where a cast would round them: a copy of a frozen fp32 backbone is not free (hub
        # backbones load in bf16, and need none). Trainable ones are the fallback for a missing master.
        self.before = (
            {
                name: t.detach().to("cpu", copy=True)
                for name, t in _tensors(pl_module)
                if t.is_floating_point() and t.dtype not in HALF_DTYPES
            }
            if casts_module(trainer)
            else {}
        )
        if _zero3(trainer):
            self.zero3_before = zero3.snapshot(pl_module)
            zero3.register_block_lists(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The engine and its optimizer are alive and on the GPU only until the strategy's teardown.
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            from deepspeed.utils import safe_get_full_fp32_param

            params = dict(pl_module.named_parameters())
            for name in self.trainable:  # a collective under ZeRO: every rank calls it, in the same order
                full = safe_get_full_fp32_param(params[name])
                if full is not None:
                    self.masters[name] = full.detach().to("cpu", copy=True)
        # Trained without an fp32 master (a `*-true` precision, or none kept): the 16-bit value it
        # trained to beats its value from before the fit.
        missing = [name for name in self.trainable if name in self.before and name not in self.masters]
        for name in missing:
            del self.before[name]
        if missing and isinstance(trainer.strategy, DeepSpeedStrategy):
            log.warning(
                "DeepSpeed kept no fp32 master of %d trainable tensors (%s, ...): they keep their 16-bit values",
                len(missing),
                missing[0],
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        whole, engine = {}, getattr(trainer.strategy, "model", None)
        if self.zero3_before is not None and hasattr(engine, "empty_partition_cache"):  # (None if the fit failed early)
            whole = zero3.gather_whole(engine, pl_module)
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            release_engine(trainer.strategy)
        if self.zero3_before is not None:
            zero3.unpartition(pl_module, whole, self.zero3_before)
            self.zero3_before = None
        for name, t in _tensors(pl_module):
            if name in self.dtypes and t.dtype != self.dtypes[name]:
                t.data = t.data.to(self.dtypes[name])
        with torch.no_grad():
            for name, t in _tensors(pl_module):
                source = self.masters.get(name, self.before.get(name))
                if source is not None:
                    t.copy_(source)
        self.before, self.masters = {}, {}


def release_engine(strategy: DeepSpeedStrategy) -> None:
    """Destroy the strategy's DeepSpeed engine, remove the forward hooks that `destroy` leaves on
    the module, and drop the strategy's references, so its buffers can be freed before scoring."""
    engine = strategy.model
    if engine is None:
        return
    if hasattr(engine, "destroy"):
        engine.destroy()
    for name in ("module_forward_pre_hook", "module_forward_post_hook"):
        handle = getattr(engine, name, None)
        if handle is not None:
            handle.remove()
    strategy.model = None
    strategy.optimizers = []
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _tensors(module: torch.nn.Module):
    return chain(module.named_parameters(), module.named_buffers())
