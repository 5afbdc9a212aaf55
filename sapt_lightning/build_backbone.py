"""`sapt-build-backbone [overrides]` (or `python -m sapt_lightning.build_backbone`): build and cache
a locally pretrained backbone (tiny_* or mini_*) ahead of a run, so that a sweep's jobs do not each
wait for it. Takes a run's overrides (`backbone=mini_t5 backbone.tiny.d_model=512 paths.cache_dir=...`);
prints the folder a run will load.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from .backbones.load import resolve_backbone_path
from .cli import config_tool
from .config_checks import resolved_path
from .errors import UserError
from .utils.paths import check_output_dir


def build(cfg: DictConfig) -> str:
    if cfg.backbone.name_or_path or cfg.backbone.get("tiny") is None:
        raise UserError(
            f"backbone={cfg.backbone.name} is loaded from {cfg.backbone.name_or_path or 'nowhere'}, not built here: "
            "sapt-build-backbone builds the tiny_* and mini_* backbones"
        )
    cache_dir = resolved_path(cfg, "paths.cache_dir")
    check_output_dir("paths.cache_dir", cache_dir)
    return resolve_backbone_path(cfg.backbone, cache_dir)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return config_tool(argv, build)


if __name__ == "__main__":
    raise SystemExit(main())
