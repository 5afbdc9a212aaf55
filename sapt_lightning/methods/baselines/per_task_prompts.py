"""The shared part of the methods with one soft prompt per task (ProgPrompt, EPI): a new
prompt at each task, the earlier ones frozen, and each task's prompt saved and restored."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.task import Example, Task
from ...pet.prompt import PromptBank, load_prompt
from ..base import ContinualModule


class PerTaskPromptModule(ContinualModule):
    pet_types = ("prompt",)
    block_per_task = True  # every prompt is kept (ProgPrompt uses all of them, EPI picks one per input)

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.prompts = PromptBank(
            int(cfg.pet.length), self.model.get_input_embeddings(), torch.Generator().manual_seed(int(cfg.seed))
        )

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        self.prompts.add_block()  # freezes the earlier prompts
        return []

    def restore_prompt(self, index: int, task: Task, state: dict[str, torch.Tensor], source: Path) -> None:
        """Task `index`'s saved prompt back in place; the prompt is added first on a resume
        (a data-parallel reload after the task already has it)."""
        if self.prompts.n_blocks <= index:
            self.start_task(index, task)
        self.task_index = index
        load_prompt(self.prompts.prompts[index], state, source)
