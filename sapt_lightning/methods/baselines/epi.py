"""EPI (Wang et al., 2023): a private prompt per task, chosen at test time by distance.

While task t trains, only its own prompt is prepended. After the task, the frozen
backbone's features of its training inputs give one mean per class label, and
every task's within-class scatter is pooled into one shared covariance. A test
input goes to the task holding the nearest class mean (Mahalanobis distance), and
that task's prompt is used. Class labels make this a method for classification
streams only (docs/method.md §8: "-" on SuperNI).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule
from ...data.task import Task
from ...errors import DataError
from ...pet.prompt import with_prompt
from ...rules import unit_interval
from ...settings import MethodSettings, setting
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..registry import register_method
from .features import frozen_features
from .per_task_prompts import PerTaskPromptModule

if TYPE_CHECKING:
    from ...estimate import Counts

PROMPT_FILE = "epi_prompt.safetensors"


@dataclass(frozen=True)
class EPISettings(MethodSettings):
    shrinkage: float = setting(unit_interval())  # pooled covariance shrunk towards its mean variance


@register_method("epi")
class EPIModule(PerTaskPromptModule):
    #: It selects a task's prompt by per-class statistics of the inputs.
    classification_only = True
    settings_class = EPISettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        """A prompt plus the task's class means and within-class scatter (d x d) per task."""
        d = counts.hidden
        block, stats = cls.block_size(cfg, counts), d * d + 8 * d
        return {
            "trainable": block,
            "per_task": block + stats,
            "total": n_tasks * (block + stats),
            "resident": n_tasks * (block + stats),
        }

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.shrinkage = self.settings.shrinkage
        self.class_means: list[torch.Tensor] = []  # per task: (classes, d)
        self.scatter: list[torch.Tensor] = []  # per task: within-class scatter (d, d)
        self.counts: list[int] = []
        self._precision: torch.Tensor | None = None

    def task_of(self, batch: dict[str, torch.Tensor], selecting: bool) -> torch.Tensor:
        """(B,) the task each input is routed to: its own while training, the nearest class mean at test."""
        n = batch["input_ids"].shape[0]
        if not selecting or not self.class_means:
            return torch.full((n,), self.prompts.n_blocks - 1, dtype=torch.long, device=batch["input_ids"].device)
        features = frozen_features(self.model, batch)
        means = torch.cat(self.class_means).to(features.device)  # (all classes, d)
        owner = torch.cat([torch.full((len(m),), t) for t, m in enumerate(self.class_means)]).to(features.device)
        diff = features[:, None, :] - means[None, :, :]  # (B, C, d)
        distance = torch.einsum("bcd,de,bce->bc", diff, self.precision().to(features.device), diff)
        return owner[distance.argmin(dim=-1)]

    def precision(self) -> torch.Tensor:
        """Inverse of the pooled within-class covariance, shrunk towards its mean variance."""
        if self._precision is None:
            cov = sum(self.scatter) / max(sum(self.counts) - sum(len(m) for m in self.class_means), 1)
            target = torch.eye(cov.shape[0]) * cov.diagonal().mean().clamp_min(1e-6)
            self._precision = torch.linalg.inv((1 - self.shrinkage) * cov + self.shrinkage * target)
        return self._precision

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        prompts = torch.stack(list(self.prompts.prompts))  # (T, length, d)
        chosen = self.task_of(batch, selecting=generation)
        return with_prompt(self.model, super().backbone_inputs(batch, generation), prompts[chosen])

    @torch.no_grad()
    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        features = [
            frozen_features(self.model, {k: v.to(self.device) for k, v in batch.items()}).cpu()
            for batch in data.loader(task, task.train)
        ]  # in order: row i is task.train[i]
        self.add_statistics(torch.cat(features), [ex.target for ex in task.train])

    def add_statistics(self, features: torch.Tensor, labels: list[str]) -> None:
        classes = sorted(set(labels))
        means, scatter = [], torch.zeros(features.shape[1], features.shape[1])
        for label in classes:
            rows = features[[i for i, y in enumerate(labels) if y == label]]
            mean = rows.mean(dim=0)
            means.append(mean)
            scatter += (rows - mean).T @ (rows - mean)
        self.class_means.append(torch.stack(means))
        self.scatter.append(scatter)
        self.counts.append(len(labels))
        self._precision = None

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors(
            {
                "prompt": self.prompts.prompts[index].detach(),
                "class_means": self.class_means[index],
                "scatter": self.scatter[index],
                "count": torch.tensor(self.counts[index]),
            },
            task_dir / PROMPT_FILE,
        )

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        state = read_safetensors(task_dir / PROMPT_FILE)
        if not {"class_means", "scatter", "count"} <= set(state):
            raise DataError(
                f"{task_dir / PROMPT_FILE}: no class statistics (class_means, scatter, count) beside the prompt"
            )
        self.restore_prompt(index, task, state, task_dir / PROMPT_FILE)
        self.class_means[index:] = [state["class_means"]]
        self.scatter[index:] = [state["scatter"]]
        self.counts[index:] = [int(state["count"])]
        self._precision = None
