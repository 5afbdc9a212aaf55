"""EWC: SeqLoRA whose loss holds the LoRA weights that mattered to earlier tasks near their values.

Elastic Weight Consolidation (Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in
neural networks", PNAS 114(13)). After each task, the diagonal of the empirical Fisher information
of the trained parameters is estimated from per-example gradients of the task loss,
F_i = mean_x (∂ℓ(x)/∂θ_i)², on `fisher_samples` training examples. Later tasks train on

    ℓ_task + (ewc_lambda / 2) · Σ_i F_i (θ_i − θ*_i)²,

θ* being the weights when the last task ended. Fishers of successive tasks add up (scaled by
`fisher_decay` each task: 1 keeps every task's weight, the online EWC of Schwarz et al., 2018,
"Progress & Compress", ICML), so memory stays at one Fisher and one anchor whatever the stream's
length. Defaults (λ = 0.5, 100 samples) follow the EasyCL toolkit's EWC for LLMs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule
from ...data.task import Task
from ...rules import at_least, non_negative, unit_interval
from ...settings import MethodSettings, setting
from ..registry import register_method
from .seq_lora import SeqLoRAModule

if TYPE_CHECKING:
    from ...estimate import Counts

FISHER_FILE = "ewc_fisher.safetensors"


@dataclass(frozen=True)
class EWCSettings(MethodSettings):
    ewc_lambda: float = setting(non_negative())  # weight of the quadratic penalty
    fisher_samples: int = setting(at_least(1))  # training examples each task's Fisher is estimated on
    fisher_decay: float = setting(unit_interval())  # earlier tasks' Fisher is scaled by it at each new task


@register_method("ewc")
class EWCModule(SeqLoRAModule):
    settings_class = EWCSettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        block = cls.block_size(cfg, counts)  # the LoRA, its Fisher and its anchor
        return {"trainable": block, "per_task": 2 * block, "total": 2 * n_tasks * block, "resident": 3 * block}

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.fisher: dict[str, torch.Tensor] = {}  # parameter name -> summed diagonal Fisher
        self.anchor: dict[str, torch.Tensor] = {}  # parameter name -> its value when the last task ended

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super().training_losses(batch)
        if not self.fisher:
            return losses
        fisher, anchor = self.beside_parameters(self.fisher), self.beside_parameters(self.anchor)
        penalty = sum((fisher[name] * (p - anchor[name]) ** 2).sum() for name, p in self.trained().items())
        losses["loss"] = losses["loss"] + self.settings.ewc_lambda / 2 * penalty
        losses["ewc_penalty"] = penalty.detach()
        return losses

    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        new = self.estimate_fisher(index, task, data)
        decay = self.settings.fisher_decay
        old = self.beside_parameters(self.fisher)
        self.fisher = {name: decay * old[name] + f if old else f for name, f in new.items()}
        self.anchor = {name: p.detach().clone() for name, p in self.trained().items()}

    def estimate_fisher(self, index: int, task: Task, data: ContinualDataModule) -> dict[str, torch.Tensor]:
        """Mean squared per-example gradient of the task loss, in eval mode (no dropout noise)."""
        n = min(self.settings.fisher_samples, len(task.train))
        examples = random.Random(int(self.cfg.seed) * 7919 + index).sample(task.train, n)
        params = self.trained()
        fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
        with self.in_eval_mode(), torch.enable_grad():
            for batch in data.loader(task, examples, with_labels=True, batch_size=1):
                inputs = self.backbone_inputs({k: v.to(self.device) for k, v in batch.items()})
                grads = torch.autograd.grad(self.model(**inputs).loss, list(params.values()), allow_unused=True)
                for name, grad in zip(params, grads):
                    if grad is not None:
                        fisher[name] += grad.float() ** 2 / n
        return fisher

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().save_task(index, task, task_dir)
        self.save_copy(self.fisher, task_dir / FISHER_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        # Kept beside the parameters (the penalty reads them every step), the anchor as loaded.
        self.fisher = self.read_copy(task_dir / FISHER_FILE)
        self.anchor = {name: p.detach().clone() for name, p in self.trained().items()}
