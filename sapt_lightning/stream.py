"""A stream's working parts, assembled in one place for training (`run`) and re-scoring (`evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from .backbones import load_backbone
from .data.datamodule import ContinualDataModule
from .data.task import Task
from .methods.base import ContinualModule
from .methods.registry import build_method


@dataclass
class Stream:
    tasks: list[Task]
    module: ContinualModule
    data: ContinualDataModule


def assemble_stream(cfg: DictConfig, tasks: list[Task]) -> Stream:
    """The backbone, the method on it and the data module over `tasks` (already read and checked)."""
    backbone = load_backbone(cfg.backbone, Path(cfg.paths.cache_dir))
    # Seed again: building a backbone on first use draws random numbers that loading it from
    # the cache does not, and the method's fresh weights must not depend on which happened.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_method(cfg, backbone)
    return Stream(tasks, module, ContinualDataModule.from_config(cfg, tasks, backbone))
