"""A-GEM: SeqLoRA whose update never increases the loss on an episodic memory of earlier tasks.

Averaged Gradient Episodic Memory (Chaudhry et al., 2019, "Efficient Lifelong Learning with
A-GEM", ICLR), the single-constraint form of GEM (Lopez-Paz & Ranzato, 2017, NeurIPS). The memory
holds the same real samples as Replay (`replay_fraction` of each finished task's training set,
drawn the same way), but they are never trained on: at each optimizer step a batch of the memory
gives the reference gradient g_ref of the trained LoRA weights, and when the task's gradient g
points against it (g·g_ref < 0) the step takes

    g − (g·g_ref / g_ref·g_ref) · g_ref

instead: the closest direction that does not raise the memory's loss to first order. The memory
batch has the training batch's size unless `memory_batch_size` is set.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from ...data.datamodule import ContinualDataModule
from ...data.task import Task
from ...errors import ConfigError
from ...rules import at_least
from ...settings import setting
from ..registry import register_method
from .replay import MemoryBatchModule, ReplaySettings


@dataclass(frozen=True)
class AGEMSettings(ReplaySettings):
    memory_batch_size: int | None = setting(at_least(1))  # examples per reference gradient (null: data.batch_size)


@register_method("agem")
class AGEMModule(MemoryBatchModule):
    settings_class = AGEMSettings

    @classmethod
    def check_tasks(cls, cfg: DictConfig, tasks: list[Task]) -> None:
        super().check_tasks(cfg, tasks)
        if "deepspeed" in str(cfg.strategy.strategy):
            raise ConfigError(
                f"method=agem cannot run under strategy={cfg.strategy.name}: it projects the whole LoRA "
                "gradient, which DeepSpeed ZeRO keeps in partitions; use strategy=single_gpu or ddp"
            )

    def memory_batch_size(self, data: ContinualDataModule) -> int:
        return self.settings.memory_batch_size or data.batch_size

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.memory_stream is None:
            return
        params = [p for p in self.parameters() if p.requires_grad and p.grad is not None]
        reference = self.memory_gradient(params)
        grad = torch.cat([p.grad.reshape(-1) for p in params])
        dot = torch.dot(grad.float(), reference)
        self.log("train/memory_conflict", float(dot < 0), batch_size=1)
        if dot >= 0:
            return
        projected = grad.float() - dot / reference.dot(reference).clamp_min(1e-12) * reference
        offset = 0
        for p in params:
            p.grad.copy_(projected[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def memory_gradient(self, params: list[torch.nn.Parameter]) -> torch.Tensor:
        """The memory batch's loss gradient, flattened in `params` order (averaged over ranks)."""
        batch = {k: v.to(self.device) for k, v in next(self.memory_stream).items()}
        # In the precision the task's own forward ran in (bf16 autocast under bf16-mixed).
        precision = self._trainer.precision_plugin.forward_context() if self._trainer is not None else nullcontext()
        with torch.enable_grad(), precision:
            grads = torch.autograd.grad(self.step_model(**self.backbone_inputs(batch)).loss, params, allow_unused=True)
        reference = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params)]
        )
        if self.is_distributed():  # each rank drew its own memory batch; DDP has averaged g already
            torch.distributed.all_reduce(reference)
            reference /= self.trainer.world_size
        return reference
