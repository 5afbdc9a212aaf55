"""Load a frozen backbone and its tokenizer through `from_pretrained`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel

from ..errors import ConfigError
from .tiny import ensure_tiny_backbone

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: Any
    family: str  # "t5" (encoder-decoder) or "llama" (decoder-only)
    target_modules: list[str]

    @property
    def is_encoder_decoder(self) -> bool:
        return self.family == "t5"

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])


def check_local_path(name_or_path: str) -> None:
    """A backbone.name_or_path that is (or reads as) a local path must be a saved model's directory;
    anything else is taken for a hub id. Caught here, not as the hub client's complaint about repo ids."""
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith(("/", ".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise ConfigError(f"backbone.name_or_path={name_or_path}: no such directory "
                          "(give the directory a model was saved to with save_pretrained, or a hub id)")
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(f"backbone.name_or_path={name_or_path} holds no config.json: not a saved model "
                          "(give the directory that save_pretrained wrote)")


def resolve_backbone_path(cfg: DictConfig, cache_dir: Path) -> str:
    if cfg.name_or_path:
        check_local_path(str(cfg.name_or_path))
        return str(cfg.name_or_path)
    if cfg.tiny is None:
        raise ConfigError(f"backbone '{cfg.name}' has neither backbone.name_or_path nor backbone.tiny")
    spec = OmegaConf.to_container(cfg.tiny, resolve=True)
    return str(ensure_tiny_backbone(cfg.name, cfg.family, spec, cache_dir))


def load_backbone(cfg: DictConfig, cache_dir: Path) -> Backbone:
    if cfg.family not in ("t5", "llama"):
        raise ConfigError(f"backbone.family must be t5 or llama, got '{cfg.family}'")
    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"backbone.dtype must be one of {', '.join(_DTYPES)}, got '{cfg.dtype}'")
    path = resolve_backbone_path(cfg, cache_dir)
    auto = AutoModelForSeq2SeqLM if cfg.family == "t5" else AutoModelForCausalLM
    hub_log = logging.getLogger("huggingface_hub")
    level, hub_log.level = hub_log.level, logging.ERROR  # offline, its retries would print screens of warnings
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = auto.from_pretrained(path, dtype=_DTYPES[cfg.dtype])
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load backbone '{cfg.name}' from '{path}': {first} "
            "(set backbone.name_or_path to a local copy when offline)"
        ) from None
    finally:
        hub_log.setLevel(level)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    modules = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in modules]
    if missing:
        raise ConfigError(
            f"backbone '{cfg.name}' has no module named {missing} (backbone.target_modules); "
            f"its linear layers include e.g. {sorted(modules)[:12]}"
        )
    return Backbone(model=model, tokenizer=tokenizer, family=cfg.family, target_modules=list(cfg.target_modules))
