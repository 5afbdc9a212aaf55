"""The continual DataModule: one object for the whole stream, pointed at one task at a time.

Training code only ever receives the current task's train split (plus whatever
replay examples the method hands in); evaluation loaders carry no task id.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from .collate import Collator
from .task import Example, Task


class ContinualDataModule(L.LightningDataModule):
    def __init__(self, tasks: list[Task], tokenizer, family: str, batch_size: int, eval_batch_size: int,
                 max_source_length: int, max_target_length: int, seed: int, num_workers: int = 0) -> None:
        super().__init__()
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.family = family
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.seed = seed
        self.num_workers = num_workers
        self.current: int | None = None
        self.extra_train: list[Example] = []

    @classmethod
    def from_config(cls, cfg, tasks: list[Task], backbone) -> "ContinualDataModule":
        d = cfg.data
        return cls(tasks, backbone.tokenizer, backbone.family, int(d.batch_size), int(d.eval_batch_size),
                   int(d.max_source_length), int(d.max_target_length), int(cfg.seed), int(d.num_workers))

    def set_task(self, index: int, extra_train: list[Example] | None = None) -> None:
        """Point training at task `index`; `extra_train` (replay) is mixed into its data."""
        self.current = index
        self.extra_train = list(extra_train or [])

    def collator(self, task: Task, with_labels: bool = True) -> Collator:
        return Collator(self.tokenizer, self.family, task.template, self.max_source_length, self.max_target_length, with_labels)

    def train_examples(self) -> list[Example]:
        assert self.current is not None, "set_task() before training"
        return self.tasks[self.current].train + self.extra_train

    def train_dataloader(self) -> DataLoader:
        task = self.tasks[self.current]
        # A generator of its own keeps the shuffle reproducible per task, independent of global RNG use.
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.current)
        return DataLoader(self.train_examples(), batch_size=self.batch_size, shuffle=True, generator=generator,
                          collate_fn=self.collator(task), num_workers=self.num_workers, drop_last=False)

    def loader(self, task: Task, examples: list[Example], with_labels: bool = False, batch_size: int | None = None) -> DataLoader:
        return DataLoader(examples, batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=self.collator(task, with_labels), num_workers=self.num_workers)
