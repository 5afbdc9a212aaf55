"""L2P, Learning to Prompt (Wang et al., 2022): one pool of prompts shared by all tasks.

Each prompt has a key. An input's query is the frozen backbone's feature of it; the
top-N prompts by cosine similarity of key and query are prepended (concatenated).
A surrogate loss pulls the chosen keys towards their queries. No task id, at
training or test time (docs/method.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn import functional as F

from ...backbones import Backbone
from ...data.task import Task
from ...errors import ConfigError, DataError
from ...pet.prompt import with_prompt
from ...rules import at_least, non_negative
from ...settings import MethodSettings, setting
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..base import ContinualModule
from ..registry import register_method
from .features import frozen_features

if TYPE_CHECKING:
    from ...estimate import Counts

POOL_FILE = "l2p_pool.safetensors"


@dataclass(frozen=True)
class L2PSettings(MethodSettings):
    pool_size: int = setting(at_least(1))  # prompts in the pool
    top_n: int = setting(at_least(1))  # prompts chosen per input (at most pool_size)
    pull_weight: float = setting(non_negative())  # weight of the key-query surrogate loss


@register_method("l2p")
class L2PModule(ContinualModule):
    pet_types = ("prompt",)
    settings_class = L2PSettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        """One pool of prompts and keys, shared by the stream."""
        pool = int(cfg.method.pool_size) * (int(cfg.pet.length) * counts.hidden + counts.hidden)
        return {"trainable": pool, "per_task": pool, "total": pool, "resident": pool}

    @classmethod
    def prompt_tokens(cls, cfg: DictConfig, n_tasks: int) -> int:
        return int(cfg.method.top_n) * int(cfg.pet.length)  # the top_n chosen prompts

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        s = self.settings
        self.pool_size, self.top_n, self.pull_weight = s.pool_size, s.top_n, s.pull_weight
        if not 1 <= self.top_n <= self.pool_size:
            raise ConfigError(f"method.top_n={self.top_n} must be between 1 and method.pool_size={self.pool_size}")
        rng = torch.Generator().manual_seed(int(cfg.seed))
        vocab = self.model.get_input_embeddings().weight
        ids = torch.randint(0, vocab.shape[0], (self.pool_size, int(cfg.pet.length)), generator=rng)
        self.pool = nn.Parameter(vocab[ids].detach().clone().float())  # (M, length, d)
        self.keys = nn.Parameter(torch.rand(self.pool_size, vocab.shape[1], generator=rng) * 2 - 1)  # (M, d)
        self._pull: torch.Tensor | None = None

    def select(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (B, N) of the chosen prompts and their cosine similarities (B, N)."""
        query = F.normalize(frozen_features(self.model, batch), dim=-1)
        similarity = query @ F.normalize(self.keys.float(), dim=-1).T  # (B, M); keys are bf16 under DeepSpeed
        chosen = similarity.topk(self.top_n, dim=-1)
        return chosen.indices, chosen.values

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        indices, similarity = self.select(batch)
        self._pull = (1 - similarity).sum(dim=-1).mean()  # surrogate: chosen keys move towards the query
        prompt = self.pool[indices].flatten(1, 2)  # (B, N*length, d)
        return with_prompt(self.model, super().backbone_inputs(batch, generation), prompt)

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_loss = self.task_loss(batch)
        pull = self._pull
        return {"loss": task_loss + self.pull_weight * pull, "task_loss": task_loss.detach(), "pull": pull.detach()}

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors({"pool": self.pool.detach(), "keys": self.keys.detach()}, task_dir / POOL_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.task_index = index
        state = read_safetensors(task_dir / POOL_FILE)
        for name, param in (("pool", self.pool), ("keys", self.keys)):
            if name not in state or state[name].shape != param.shape:
                raise DataError(
                    f"{task_dir / POOL_FILE}: no '{name}' of shape {tuple(param.shape)} "
                    "(saved with another backbone, pool size or prompt length?)"
                )
            with torch.no_grad():
                param.copy_(state[name])
