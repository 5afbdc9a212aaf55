"""Load a frozen backbone and its tokenizer through `from_pretrained`."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    source: str = ""  # the folder or hub id it was loaded from

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
        raise ConfigError(
            f"backbone.name_or_path={name_or_path}: no such directory "
            "(give the directory a model was saved to with save_pretrained, or a hub id)"
        )
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(
            f"backbone.name_or_path={name_or_path} holds no config.json: not a saved model "
            "(give the directory that save_pretrained wrote)"
        )


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint (HF_ENDPOINT) accepts a connection. Behind a proxy the
    answer is taken to be yes: only the hub client knows how to go through it."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    try:
        url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        with socket.create_connection(
            (url.hostname or "", url.port or (443 if url.scheme == "https" else 80)), timeout
        ):
            return True
    except (OSError, ValueError):  # ValueError: a malformed HF_ENDPOINT (its port), which no client can reach either
        return False


def _offline_mode() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set to a true value (the hub client's spellings)."""
    return any(
        os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_load_options(name_or_path: str) -> dict[str, bool]:
    """`from_pretrained` options for a backbone: a hub id on a machine that cannot reach the hub
    is read from the local Hugging Face cache only. (Left to itself, the hub client retries each
    file for about 25 s before it looks in its cache.)"""
    if Path(name_or_path, "config.json").is_file():
        return {}
    offline = _offline_mode() or not hub_reachable()
    return {"local_files_only": True} if offline else {}


def resolve_backbone_path(cfg: DictConfig, cache_dir: Path) -> str:
    if cfg.name_or_path:
        check_local_path(str(cfg.name_or_path))
        return str(cfg.name_or_path)
    if cfg.tiny is None:
        raise ConfigError(f"backbone '{cfg.name}' has neither backbone.name_or_path nor backbone.tiny")
    spec = OmegaConf.to_container(cfg.tiny, resolve=True)
    return str(ensure_tiny_backbone(cfg.name, cfg.family, spec, cache_dir))


@contextmanager
def _hub_loading(cfg: DictConfig, path: str) -> Iterator[dict[str, bool]]:
    """Load from `path` with the hub options this machine needs; an OSError becomes one line."""
    hub_log = logging.getLogger("huggingface_hub")
    level, hub_log.level = hub_log.level, logging.ERROR  # offline, its retries would print screens of warnings
    options = hub_load_options(path)
    try:
        yield options
    except OSError as err:
        if options:
            raise ConfigError(
                f"cannot load backbone '{cfg.name}' from '{path}': the Hugging Face hub is out of reach from here "
                "(or HF_HUB_OFFLINE is set) and the local Hugging Face cache does not hold it; set "
                "backbone.name_or_path to a local copy (or HF_HOME to the cache that holds it)"
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load backbone '{cfg.name}' from '{path}': {first} "
            "(set backbone.name_or_path to a local copy when offline)"
        ) from None
    finally:
        hub_log.setLevel(level)


def _tokenizer(path: str, options: dict[str, bool]) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(path, **options)
    if tokenizer.pad_token is None:  # (LLaMA's has none)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(cfg: DictConfig, cache_dir: Path) -> Any:
    """The backbone's tokenizer alone, readied as load_backbone readies it; no weights are read
    (a locally built backbone is built first if it is not cached)."""
    path = resolve_backbone_path(cfg, cache_dir)
    with _hub_loading(cfg, path) as options:
        return _tokenizer(path, options)


def load_backbone(cfg: DictConfig, cache_dir: Path) -> Backbone:
    if cfg.family not in ("t5", "llama"):
        raise ConfigError(f"backbone.family must be t5 or llama, got '{cfg.family}'")
    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"backbone.dtype must be one of {', '.join(_DTYPES)}, got '{cfg.dtype}'")
    path = resolve_backbone_path(cfg, cache_dir)
    auto = AutoModelForSeq2SeqLM if cfg.family == "t5" else AutoModelForCausalLM
    with _hub_loading(cfg, path) as options:
        tokenizer = _tokenizer(path, options)
        # (transformers 5 looks for a peft adapter_config.json without passing local_files_only on:
        # it has to be told again, or it waits out the hub client's retries once more)
        model = auto.from_pretrained(
            path, dtype=_DTYPES[cfg.dtype], **options, **({"adapter_kwargs": dict(options)} if options else {})
        )
    model.requires_grad_(False)
    model.eval()
    modules = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in modules]
    if missing:
        raise ConfigError(
            f"backbone '{cfg.name}' has no module named {missing} (backbone.target_modules); "
            f"its linear layers include e.g. {sorted(modules)[:12]}"
        )
    return Backbone(
        model=model, tokenizer=tokenizer, family=cfg.family, target_modules=list(cfg.target_modules), source=path
    )
