"""Method name -> LightningModule class; the one place that knows every method."""

from __future__ import annotations

from omegaconf import DictConfig

from ..backbones import Backbone
from ..data.task import Task
from ..errors import ConfigError
from .base import ContinualModule
from .baselines.epi import EPIModule
from .baselines.l2p import L2PModule
from .baselines.lfpt5 import LFPT5Module
from .baselines.mtl import MTLModule
from .baselines.olora import OLoRAModule, check_per_task
from .baselines.progprompt import ProgPromptModule
from .baselines.replay import ReplayModule
from .peft_lora import SeqLoRAModule, SingleModule
from .sapt.module import SAPTModule

METHODS: dict[str, type[ContinualModule]] = {
    "sapt": SAPTModule,
    "seq_lora": SeqLoRAModule,
    "single": SingleModule,
    "replay": ReplayModule,
    "olora": OLoRAModule,
    "progprompt": ProgPromptModule,
    "l2p": L2PModule,
    "lfpt5": LFPT5Module,
    "epi": EPIModule,
    "mtl": MTLModule,
}
#: PET types each method supports.
SUPPORTED_PET: dict[str, tuple[str, ...]] = {
    "sapt": ("lora", "prompt"), "seq_lora": ("lora",), "single": ("lora",), "replay": ("lora",), "olora": ("lora",),
    "progprompt": ("prompt",), "l2p": ("prompt",), "lfpt5": ("prompt",), "epi": ("prompt",), "mtl": ("lora",)}
#: Methods that need every task of the stream to be a classification task.
CLASSIFICATION_ONLY = ("epi",)


def check_method(cfg: DictConfig) -> None:
    name, pet = cfg.method.name, cfg.pet.type
    if name not in METHODS:
        raise ConfigError(f"method '{name}' is not implemented; available: {', '.join(METHODS)}")
    if pet not in SUPPORTED_PET[name]:
        raise ConfigError(f"method={name} does not support pet={pet}; it supports pet={'|'.join(SUPPORTED_PET[name])}")


def check_method_order(cfg: DictConfig, order: list[str]) -> None:
    """Before any data or model: do the method's per-task settings name tasks of the order?"""
    if cfg.method.name == "olora":
        check_per_task(cfg.method, order)


def check_method_tasks(cfg: DictConfig, tasks: list[Task]) -> None:
    """Before any model loads: can this method run on these tasks?"""
    name = cfg.method.name
    if name in CLASSIFICATION_ONLY:
        other = [t.name for t in tasks if not t.classification]
        if other:
            raise ConfigError(
                f"method={name} selects prompts by per-class input statistics and needs classification tasks only; "
                f"not classification here: {', '.join(other[:4])}{' …' if len(other) > 4 else ''}. It runs on "
                "benchmark=long_sequence, or benchmark=synthetic benchmark.tasks=[topic,sentiment]")


def build_method(cfg: DictConfig, backbone: Backbone) -> ContinualModule:
    check_method(cfg)
    return METHODS[cfg.method.name](backbone, cfg)
