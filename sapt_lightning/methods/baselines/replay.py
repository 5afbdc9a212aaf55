"""Replay: SeqLoRA plus real samples - a fixed fraction (2%) of each earlier task's
training set is mixed into the current task's training data (docs/method.md §8)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule, ReplayStream
from ...data.io import read_split, write_task_json
from ...data.task import Example, Task
from ...rules import fraction
from ...settings import MethodSettings, setting
from ...utils.rng import replay_seed
from ..base import replay_volume
from ..registry import register_method
from .seq_lora import SeqLoRAModule

MEMORY_FILE = "replay_memory.json"


@dataclass(frozen=True)
class ReplaySettings(MethodSettings):
    replay_fraction: float = setting(fraction(True))  # of each finished task's training set


@register_method("replay")
class ReplayModule(SeqLoRAModule):
    settings_class = ReplaySettings

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.fraction = self.settings.replay_fraction
        self.memory: list[list[Example]] = []  # real training samples kept per finished task

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        return [ex for kept in self.memory for ex in kept]

    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        n = replay_volume(self.fraction, len(task.train))
        kept = random.Random(int(self.cfg.seed) * 7 + index).sample(task.train, min(n, len(task.train)))
        self.memory[index:] = [kept]
        write_task_json(task_dir / MEMORY_FILE, kept)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        self.memory[index:] = [read_split(task_dir / MEMORY_FILE, task.name)]


class MemoryBatchModule(ReplayModule):
    """Replay's memory drawn as a batch of its own at every step instead of mixed into the task's
    data (A-GEM's reference gradient, I-LoRA's consistency batch). Not a method by itself."""

    memory_stream: ReplayStream | None = None  # (attach_replay sets it for each task; None at the first)

    def memory_batch_size(self, data: ContinualDataModule) -> int:
        return data.batch_size

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        return []  # the memory is not trained on as data

    def attach_replay(self, data: ContinualDataModule) -> None:
        """Endless shuffled batches of every finished task's memory; None before the second task."""
        remembered = [ex for kept in self.memory[: self.task_index] for ex in kept]
        self.memory_stream = None
        if remembered:
            loader = data.loader(
                data.tasks[self.task_index],
                remembered,
                with_labels=True,
                batch_size=self.memory_batch_size(data),
                shuffle_seed=replay_seed(int(self.cfg.seed), self.task_index, 0),
            )
            self.memory_stream = ReplayStream(loader)

    def replay_streams(self) -> list[ReplayStream]:
        return [self.memory_stream] if self.memory_stream is not None else []
