"""Method name -> LightningModule class; the one place that knows every method."""

from __future__ import annotations

from omegaconf import DictConfig

from ..backbones import Backbone
from ..errors import ConfigError
from .base import ContinualModule
from .baselines.olora import OLoRAModule
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
}
#: PET types each method supports.
SUPPORTED_PET: dict[str, tuple[str, ...]] = {"sapt": ("lora", "prompt"), "seq_lora": ("lora",), "single": ("lora",),
                                              "replay": ("lora",), "olora": ("lora",), "progprompt": ("prompt",)}


def check_method(cfg: DictConfig) -> None:
    name, pet = cfg.method.name, cfg.pet.type
    if name not in METHODS:
        raise ConfigError(f"method '{name}' is not implemented; available: {', '.join(METHODS)}")
    if pet not in SUPPORTED_PET[name]:
        raise ConfigError(f"method={name} does not support pet={pet}; it supports pet={'|'.join(SUPPORTED_PET[name])}")


def build_method(cfg: DictConfig, backbone: Backbone) -> ContinualModule:
    check_method(cfg)
    return METHODS[cfg.method.name](backbone, cfg)
