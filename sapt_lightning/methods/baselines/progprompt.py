"""Progressive Prompts (Razdaibiedina et al., 2023): a new soft prompt per task; earlier
prompts frozen and kept in front, so the input carries [P_t; …; P_0] at train and test
time. No selection: every prompt learned so far is always used. The prompts are trained as they
are, without the original's residual-MLP reparameterisation (docs/method.md §8)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from ...data.task import Task
from ...pet.prompt import with_prompt
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..registry import register_method
from .per_task_prompts import PerTaskPromptModule

PROMPT_FILE = "prompt.safetensors"


@register_method("progprompt")
class ProgPromptModule(PerTaskPromptModule):
    @classmethod
    def prompt_tokens(cls, cfg: DictConfig, n_tasks: int) -> int:
        return n_tasks * int(cfg.pet.length)  # every prompt learned so far, in front of the input

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        inputs = super().backbone_inputs(batch, generation)
        newest_first = torch.cat(list(self.prompts.prompts)[::-1])  # (n*length, d)
        prompt = newest_first.unsqueeze(0).expand(batch["input_ids"].shape[0], -1, -1)
        return with_prompt(self.model, inputs, prompt)

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors({"prompt": self.prompts.prompts[index].detach()}, task_dir / PROMPT_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.restore_prompt(index, task, read_safetensors(task_dir / PROMPT_FILE), task_dir / PROMPT_FILE)
