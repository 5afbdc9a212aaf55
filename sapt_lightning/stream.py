"""A stream's working parts, assembled in one place for training (`run`) and re-scoring (`evaluate`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from .backbones import Backbone, load_backbone
from .backbones.corpus import read_manifest, unseen_tasks
from .data.datamodule import ContinualDataModule
from .data.task import Task
from .methods.base import ContinualModule
from .methods.registry import build_method

log = logging.getLogger(__name__)


@dataclass
class Stream:
    tasks: list[Task]
    module: ContinualModule
    data: ContinualDataModule


def assemble_stream(cfg: DictConfig, tasks: list[Task]) -> Stream:
    """The backbone, the method on it and the data module over `tasks` (already read and checked)."""
    backbone = load_backbone(cfg.backbone, Path(cfg.paths.cache_dir))
    warn_unread_tasks(cfg, tasks, backbone)
    # Seed again: building a backbone on first use draws random numbers that loading it from
    # the cache does not, and the method's fresh weights must not depend on which happened.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_method(cfg, backbone)
    return Stream(tasks, module, ContinualDataModule.from_config(cfg, tasks, backbone))


def warn_unread_tasks(cfg: DictConfig, tasks: list[Task], backbone: Backbone) -> None:
    """A mini backbone whose corpus lacks some of the stream's tasks (a pinned old build, or a
    task folder added after it) still runs, but the user should know it never read their text."""
    seen = read_manifest(Path(backbone.source)) if backbone.source else None
    folder = cfg.benchmark.get("folder")
    if seen is None or not folder:
        return
    missing = unseen_tasks(seen, str(folder), [t.name for t in tasks])
    if missing:
        log.warning(
            "backbone %s at %s was pretrained without the train text of %s (added after its build, or left out "
            "of backbone.tiny.corpus_files): its tokenizer still encodes them, byte by byte where it must; leave "
            "backbone.name_or_path unset to build one whose corpus holds them",
            cfg.backbone.name,
            backbone.source,
            ", ".join(missing),
        )
