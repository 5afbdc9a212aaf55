"""Progressive Prompts (Razdaibiedina et al., 2023): a new soft prompt per task; earlier
prompts frozen and kept in front, so the input carries [P_t; …; P_0] at train and test
time. No selection: every prompt learned so far is always used."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.task import Example, Task
from ...errors import DataError
from ...pet.prompt import PromptBank, with_prompt
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..base import ContinualModule

PROMPT_FILE = "prompt.safetensors"


class ProgPromptModule(ContinualModule):
    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.prompts = PromptBank(int(cfg.pet.length), self.model.get_input_embeddings(),
                                  torch.Generator().manual_seed(int(cfg.seed)))

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        self.prompts.add_block()  # freezes the earlier prompts
        return []

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        inputs = super().backbone_inputs(batch, generation)
        newest_first = torch.cat(list(self.prompts.prompts)[::-1])  # (n*length, d)
        prompt = newest_first.unsqueeze(0).expand(batch["input_ids"].shape[0], -1, -1)
        return with_prompt(self.model, inputs, prompt)

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors({"prompt": self.prompts.prompts[index].detach()}, task_dir / PROMPT_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        if self.prompts.n_blocks <= index:  # resume: the prompt is new (a data-parallel reload has it)
            self.start_task(index, task)
        self.task_index = index
        prompt = read_safetensors(task_dir / PROMPT_FILE).get("prompt")
        if prompt is None or prompt.shape != self.prompts.prompts[index].shape:
            raise DataError(f"{task_dir / PROMPT_FILE}: no prompt of shape {tuple(self.prompts.prompts[index].shape)}")
        with torch.no_grad():
            self.prompts.prompts[index].copy_(prompt)
