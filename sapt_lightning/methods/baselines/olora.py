"""O-LoRA (Wang et al., 2023): a new LoRA per task in a subspace orthogonal to the old ones.

All blocks are summed with the same scaling (old ones frozen), and the loss adds
    λ1 · Σ_layers Σ_old |A_old A_newᵀ|  (orthogonality, on the down-projections A, as released)
  + λ2 · Σ_layers (‖A_new‖ + ‖B_new‖)   (un-squared Frobenius norms)
(docs/method.md §8; O-LoRA issue #39 on A vs B). `method.per_task` sets λ1, λ2 and the epochs for
single tasks, as O-LoRA's Long Sequence script does (λ1 0 for its first task, 0.5, then 5 from
dbpedia on; MNLI 2 epochs, the others 1)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.task import Example, Task
from ...errors import ConfigError, DataError
from ...pet.lora import MixingState, inject_lora, lora_block_state, lora_layers
from ...rules import at_least, non_negative
from ...settings import MethodSettings, setting
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..base import ContinualModule
from ..registry import register_method

BLOCK_FILE = "olora_block.safetensors"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OLoRASettings(MethodSettings):
    lambda_orth: float = setting(non_negative())  # λ1
    lambda_l2: float = setting(non_negative())  # λ2
    per_task: Any = setting()  # task -> {lambda_orth, lambda_l2, epochs}: check_per_task says what is wrong


@register_method("olora")
class OLoRAModule(ContinualModule):
    pet_types = ("lora",)
    settings_class = OLoRASettings
    block_per_task = True  # every task's block, summed in every forward

    @classmethod
    def check_order(cls, method: DictConfig, order: list[str]) -> None:
        check_per_task(method, order)

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.mixing = MixingState()
        inject_lora(
            self.model,
            self.target_modules,
            int(cfg.pet.r),
            float(cfg.pet.alpha),
            self.mixing,
            "fused",
            detach_finished=False,
            dropout=float(cfg.pet.dropout),
        )
        self.lambda_orth, self.lambda_l2 = self.settings.lambda_orth, self.settings.lambda_l2

    def task_max_epochs(self, task: Task, max_epochs: int) -> int:
        if int(self.cfg.trainer.max_steps) > 0:  # a step budget: every task trains the same number of steps
            if task_epochs(self.cfg.method, task.name, max_epochs) != max_epochs:
                log.warning(
                    "method.per_task.%s.epochs applies where epochs are the budget (trainer.max_steps=-1, as in "
                    "the paper presets); with trainer.max_steps=%s, %s trains that many steps like every task",
                    task.name,
                    self.cfg.trainer.max_steps,
                    task.name,
                )
            return max_epochs
        return task_epochs(self.cfg.method, task.name, max_epochs)

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        self.lambda_orth, self.lambda_l2 = task_lambdas(self.cfg.method, task.name)
        for _, layer in lora_layers(self.model):
            layer.add_block()  # freezes the earlier blocks
        return []

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        n = next(layer for _, layer in lora_layers(self.model)).n_blocks
        self.mixing.weights = torch.ones(batch["input_ids"].shape[0], n, device=batch["input_ids"].device)
        return super().backbone_inputs(batch, generation)

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_loss = self.task_loss(batch)
        orth = l2 = task_loss.new_zeros(())
        for _, layer in lora_layers(self.model):
            new_a = layer.lora_A[-1]
            for old_a in list(layer.lora_A)[:-1]:
                orth = orth + (old_a @ new_a.T).abs().sum()
            l2 = l2 + new_a.norm() + layer.lora_B[-1].norm()
        loss = task_loss + self.lambda_orth * orth + self.lambda_l2 * l2
        return {"loss": loss, "task_loss": task_loss.detach(), "orth": orth.detach()}

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors(lora_block_state(self.model, index), task_dir / BLOCK_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        if next(layer for _, layer in lora_layers(self.model)).n_blocks <= index:  # resume: the block is new
            self.start_task(index, task)
        self.task_index = index
        state = read_safetensors(task_dir / BLOCK_FILE)
        for name, tensor in lora_block_state(self.model, index).items():
            if name not in state or state[name].shape != tensor.shape:
                raise DataError(
                    f"{task_dir / BLOCK_FILE}: tensor {name} missing or of another shape (another backbone?)"
                )
            tensor.copy_(state[name])


PER_TASK_KEYS = ("lambda_orth", "lambda_l2", "epochs")


def task_lambdas(method: DictConfig, task: str) -> tuple[float, float]:
    """(λ1, λ2) for `task`: method.per_task[task] where it sets them, else method.lambda_orth/lambda_l2."""
    own = (method.get("per_task") or {}).get(task) or {}
    return float(own.get("lambda_orth", method.lambda_orth)), float(own.get("lambda_l2", method.lambda_l2))


def task_epochs(method: DictConfig, task: str, max_epochs: int) -> int:
    """`task`'s trainer.max_epochs: method.per_task[task].epochs where set (used under an epoch budget only)."""
    return int(((method.get("per_task") or {}).get(task) or {}).get("epochs", max_epochs))


def check_per_task(method: DictConfig, order: list[str]) -> None:
    """method.per_task names tasks of the order and sets only λ1/λ2 (numbers >= 0) and epochs (an integer > 0)."""
    per_task = method.get("per_task")
    if per_task is None:
        return
    if not isinstance(per_task, DictConfig):
        raise ConfigError(f"method.per_task={per_task}: expected a mapping task -> {{lambda_orth: .., lambda_l2: ..}}")
    for task, values in per_task.items():
        if task not in order:
            raise ConfigError(f"method.per_task.{task}: no task '{task}' in this stream's order ({', '.join(order)})")
        if not isinstance(values, DictConfig):
            raise ConfigError(
                f"method.per_task.{task}={values}: expected {{lambda_orth: .., lambda_l2: .., epochs: ..}}"
            )
        for key, value in values.items():
            if key not in PER_TASK_KEYS:
                raise ConfigError(f"method.per_task.{task}.{key}: unknown; a task can set {', '.join(PER_TASK_KEYS)}")
            requirement, ok = at_least(1) if key == "epochs" else non_negative()  # the rules of the global keys
            if not ok(value):
                raise ConfigError(f"method.per_task.{task}.{key}={value}: expected {requirement}")
