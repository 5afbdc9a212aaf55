"""Single-task reference scores (FWT's baseline), cached per stream.

A `method=single` run stores its diagonal under paths.cache_dir/single_scores,
keyed by everything that defines the stream and the per-task training budget, but
not by the method, its PET or its optimizer: every method of a stream, SAPT-Prompt
and the prompt baselines included, compares with the same single-task LoRA runs
(docs/method.md §6). Any later run of the stream finds it (`metrics.single_results=auto`),
or a user points `metrics.single_results` at a single run's results.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .io import atomic_write_json, read_json

log = logging.getLogger(__name__)


def stream_key(cfg: DictConfig) -> str:
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("backbone", "benchmark", "trainer", "data")}
    parts["order"] = OmegaConf.to_container(cfg.order, resolve=True) if cfg.get("order") is not None else None
    parts["seed"] = int(cfg.seed)
    for display_only in ("enable_progress_bar", "log_every_n_steps", "gradient_checkpointing"):
        parts["trainer"].pop(display_only, None)  # do not change the scores; a new key must not orphan old caches
    parts["trainer"].pop("optimizer", None)  # the consumer's choice, like its PET; the reference trains its own way
    # Keys added later: off (null) is what the code did before the key, the same stream.
    for section, added_later in (("data", "group_by_length"), ("trainer", "compile"), ("trainer", "compile_mode")):
        if not parts[section].get(added_later):
            parts[section].pop(added_later, None)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir) / "single_scores" / f"{stream_key(cfg)}.json"


def store_single_scores(cfg: DictConfig, scores: list[float]) -> None:
    atomic_write_json(_cache_path(cfg), {"scores": scores})


def check_single_results(cfg: DictConfig) -> None:
    """Before training: a metrics.single_results that names a file must name a usable one."""
    if cfg.metrics.single_results not in (None, "", "none", "auto"):
        load_single_scores(cfg)


def load_single_scores(cfg: DictConfig) -> list[float] | None:
    source = cfg.metrics.single_results
    if source in (None, "", "none"):
        return None
    if source == "auto":
        path = _cache_path(cfg)
        return read_json(path, dict).get("scores") if path.is_file() else None
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"metrics.single_results={source}: no such file (give the results.json of a method=single run)"
        )
    data = read_json(path, dict)
    if data.get("single") is None:
        raise ConfigError(f"{path} has no single-task scores (is it a method=single run?)")
    return data["single"]
