"""LAMOL: one LoRA learns each task and learns to write examples of the tasks, which it replays.

LAMOL (Sun, Ho & Lee, 2020, "LAMOL: LAnguage MOdeling for Lifelong Language Learning", ICLR), on a
LoRA. While a task trains, `gen_fraction` of its examples also appear as generation rows: from the
generation marker (the task's instruction kept: LAMOL's task-specific generation token) the model
writes `<output> __ans__ <input>`, output first so that a truncated input still keeps the marker
(the rows of method=lfpt5). When a task ends, the model samples examples of every task seen so far
(top-k), `pseudo_fraction` (LAMOL's γ) of the next task's training set in all, shared equally
between them; they join the next task's training data, and a `gen_fraction` of them as generation
rows too (LAMOL's language-modelling loss covers replayed samples as well). Defaults are LAMOL's: γ = 0.2, top-k 20;
LAMOL weighs its language-modelling loss by 0.25, here a quarter of the examples train as
generation rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule
from ...data.io import per_task_path, read_per_task, write_task_json
from ...data.task import Example, Task
from ...rules import at_least, fraction
from ...settings import MethodSettings, setting
from ..registry import register_method
from .lfpt5 import generation_row, sample_examples
from .seq_lora import SeqLoRAModule

PSEUDO_DIR = "lamol_pseudo"  # in a task's folder: the samples written after it, one file per task seen


@dataclass(frozen=True)
class LAMOLSettings(MethodSettings):
    pseudo_fraction: float = setting(fraction(True))  # γ: pseudo samples, as a fraction of the next task's set
    gen_fraction: float = setting(fraction(True))  # generation rows, as a fraction of the task's training set
    top_k: int = setting(at_least(1))  # sampling of pseudo samples


@register_method("lamol")
class LAMOLModule(SeqLoRAModule):
    settings_class = LAMOLSettings

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.pseudo: list[Example] = []  # written after the last finished task, for the next one

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        rng = random.Random(int(self.cfg.seed) * 13 + index)
        pseudo = self.pseudo if index > 0 else []
        # Generation rows of the task's examples and of the replayed ones: LAMOL's language-modelling
        # loss covers both, so the model keeps being able to write the earlier tasks.
        return (
            generation_rows(task.train, self.settings.gen_fraction, rng)
            + pseudo
            + generation_rows(pseudo, self.settings.gen_fraction, rng)
        )

    @torch.no_grad()
    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        if index + 1 == len(data.tasks):
            self.pseudo = []  # no task follows: nothing to replay
            return
        total = max(1, int(self.settings.pseudo_fraction * len(data.tasks[index + 1].train)))
        seen = data.tasks[: index + 1]
        shares = [total // len(seen) + (j < total % len(seen)) for j in range(len(seen))]
        self.pseudo = []
        for j, (old, n) in enumerate(zip(seen, shares)):
            seed = int(self.cfg.seed) * 4 + 1000 * index + 10 * j
            samples = sample_examples(self, data, old, n, seed, self.settings.top_k) if n else []
            write_task_json(per_task_path(task_dir / PSEUDO_DIR, j, old.name), samples)
            self.pseudo += samples

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        self.pseudo = [ex for written in read_per_task(task_dir / PSEUDO_DIR) for ex in written]


def generation_rows(examples: list[Example], share: float, rng: random.Random) -> list[Example]:
    """Generation rows of a random `share` of `examples` (at least one, if there are any)."""
    if not examples:
        return []
    n = max(1, round(share * len(examples)))
    return [generation_row(ex) for ex in rng.sample(examples, min(n, len(examples)))]
