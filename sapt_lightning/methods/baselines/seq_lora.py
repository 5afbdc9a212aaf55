"""Baselines on a standard peft LoRA: SeqLoRA and Single."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from ...backbones import Backbone
from ...data.task import Example, Task
from ...errors import DataError
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..base import ContinualModule
from ..registry import register_method

ADAPTER_FILE = "adapter.safetensors"


class PeftLoRAModule(ContinualModule):
    """One peft LoRA on the backbone's target modules."""

    pet_types = ("lora",)

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        config = LoraConfig(
            r=int(cfg.pet.r),
            lora_alpha=float(cfg.pet.alpha),
            lora_dropout=float(cfg.pet.dropout),
            target_modules=list(backbone.target_modules),
        )
        torch.manual_seed(int(cfg.seed))
        self.model = get_peft_model(backbone.model, config)
        self._initial = {k: v.clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def trained(self) -> dict[str, torch.nn.Parameter]:
        """The LoRA's parameters by name (the methods that keep copies of them key the copies so)."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def beside_parameters(self, copies: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`copies` (parameter name -> tensor) moved, in place, to their parameters' devices.
        Lightning moves only the module's own tensors, and a resumed run restores copies on the
        CPU before the fit moves the model."""
        for name, p in self.trained().items():
            if name in copies and copies[name].device != p.device:
                copies[name] = copies[name].to(p.device)
        return copies

    def save_copy(self, copies: dict[str, torch.Tensor], path: Path) -> None:
        """A per-parameter copy of the LoRA (a Fisher, a stable LoRA), keyed by parameter name."""
        atomic_save_safetensors({name: t.cpu() for name, t in copies.items()}, path)

    def read_copy(self, path: Path) -> dict[str, torch.Tensor]:
        """What save_copy wrote, checked against this model's LoRA and placed beside its parameters."""
        saved, params = read_safetensors(path), self.trained()
        if set(saved) != set(params):
            raise DataError(
                f"{path}: its tensors do not match this model's LoRA "
                f"({len(saved)} saved, {len(params)} trained): the run was made with another pet or backbone"
            )
        return {name: saved[name].to(p.device) for name, p in params.items()}

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors(get_peft_model_state_dict(self.model), task_dir / ADAPTER_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.task_index = index
        set_peft_model_state_dict(self.model, read_safetensors(task_dir / ADAPTER_FILE))


@register_method("seq_lora")
class SeqLoRAModule(PeftLoRAModule):
    """SeqLoRA: the same LoRA keeps training on each new task (no replay, no regulariser)."""


@register_method("single")
class SingleModule(PeftLoRAModule):
    """Single: every task starts again from the base model, with a fresh LoRA."""

    isolated_tasks = True

    def start_task(self, index: int, task: Task) -> list[Example]:
        set_peft_model_state_dict(self.model, self._initial)
        return super().start_task(index, task)
