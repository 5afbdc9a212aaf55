"""LAMOL: one LoRA learns each task and learns to write examples of the tasks, which it replays.

LAMOL (Sun, Ho & Lee, 2020, "LAMOL: LAnguage MOdeling for Lifelong Language Learning", ICLR), on a
LoRA. While a task trains, `gen_fraction` of its examples also appear as generation rows: from the
generation marker (the task's instruction kept: LAMOL's task-specific generation token) the model
writes `<output> __ans__ <input>`, output first so that a truncated input still keeps the marker
(the rows of method=lfpt5). When a task ends, the model samples examples of every task seen so far
(top-k), `pseudo_fraction` (LAMOL's γ) of the next task's training set in all, shared equally
between them; they join the next task's training data. Defaults are LAMOL's: γ = 0.2, top-k 20;
LAMOL weighs its language-modelling loss by 0.25, here a quarter of the examples train as
generation rows.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule
from ...data.io import read_split, write_task_json
from ...data.task import Example, Task
from ...rules import at_least, fraction
from ...settings import MethodSettings, setting
from ...utils.rng import seeded
from ..generator import ANS, GEN
from ..registry import register_method
from .lfpt5 import generation_row, parse_pseudo
from .seq_lora import SeqLoRAModule

log = logging.getLogger(__name__)
PSEUDO_DIR = "lamol_pseudo"  # in a task's folder: the samples written after it, one file per task seen
ATTEMPTS = 4  # sampling rounds per task before settling for fewer well-formed samples


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
        n_rows = max(1, round(self.settings.gen_fraction * len(task.train)))
        rows = [generation_row(ex) for ex in rng.sample(task.train, min(n_rows, len(task.train)))]
        return rows + (self.pseudo if index > 0 else [])

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
            samples = self.sample_examples(old, n, data, seed=int(self.cfg.seed) * 4 + 1000 * index + 10 * j)
            write_task_json(pseudo_path(task_dir, j, old), samples)
            self.pseudo += samples

    def sample_examples(self, task: Task, n: int, data: ContinualDataModule, seed: int) -> list[Example]:
        """Up to n well-formed examples of `task`, sampled from its generation marker."""
        if n == 0:
            return []
        definition = task.train[0].definition
        rows = [Example(definition, GEN, ("",))] * n
        samples: list[Example] = []
        for attempt in range(ATTEMPTS):
            for batch in data.loader(task, rows):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with seeded(seed + attempt, self.device):
                    texts = self.generate_texts(
                        batch,
                        do_sample=True,
                        top_k=self.settings.top_k,
                        max_new_tokens=int(self.cfg.data.max_target_length),
                    )
                samples += [ex for ex in (parse_pseudo(definition, t) for t in texts) if ex is not None]
            if len(samples) >= n:
                break
        if len(samples) < n:
            log.warning(
                "lamol: %d of %d samples of %s had the form '<output> %s <input>'", len(samples), n, task.name, ANS
            )
        return samples[:n]

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        folder = task_dir / PSEUDO_DIR
        files = sorted(folder.glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0])) if folder.is_dir() else []
        self.pseudo = [ex for path in files for ex in read_split(path, path.stem.split("-", 1)[1])]


def pseudo_path(task_dir: Path, source: int, task: Task) -> Path:
    return task_dir / PSEUDO_DIR / f"{source + 1}-{task.name}.json"
