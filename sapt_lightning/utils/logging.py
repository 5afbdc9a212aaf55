"""Loggers for a stream (CSV always, W&B offline by default) and a quieter console."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import DictConfig

from ..errors import ConfigError


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to the user; real problems still show."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed warns on import that it found no GPU
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_name(cfg: DictConfig) -> str:
    parts = [cfg.method.name, cfg.benchmark.name, cfg.pet.type, cfg.backbone.name]
    parts += sorted(cfg.get("ablations") or {})
    return "-".join(parts) + f"-s{cfg.seed}"


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv"))  # version_N per attempt: a resume never overwrites
    wb = cfg.logger.wandb
    if wb.enabled:
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:
            raise ConfigError("W&B logging is on but wandb is not installed: pip install wandb, or use logger=csv") from None
        if not wb.offline and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            raise ConfigError("logger.wandb.offline=false but W&B is not logged in: run `wandb login`, "
                              "or keep logger.wandb.offline=true (sync later with `wandb sync`)")
        ablations = sorted(cfg.get("ablations") or {})
        tags = [cfg.method.name, cfg.benchmark.name, f"seed{cfg.seed}", *ablations, *list(cfg.get("tags") or [])]
        loggers.append(WandbLogger(
            save_dir=str(run_dir), offline=bool(wb.offline), project=wb.project, entity=wb.entity,
            group=wb.group or f"{cfg.benchmark.name}-{cfg.get('order', {}) and cfg.order.id or 'custom'}",
            job_type=cfg.method.name + ("-" + "-".join(ablations) if ablations else ""),
            name=run_name(cfg), tags=tags))
    return loggers


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def log_images(loggers: list, plots: dict[str, Path], results: dict) -> None:
    """W&B: the plots as images, the score matrix and examples as tables (CSV has no images)."""
    for lg in loggers:
        if type(lg).__name__ != "WandbLogger":
            continue
        for key, path in plots.items():
            lg.log_image(key=f"plots/{key}", images=[str(path)])
        names = results["order"]
        lg.log_table(key="tables/score_matrix", columns=["after_task", *names],
                     data=[[names[i], *row] for i, row in enumerate(results["matrix"])])
        rows = [[task, ex["input"], ex["reference"], ex["prediction"]]
                for task, exs in results.get("examples", {}).items() for ex in exs]
        if rows:
            lg.log_table(key="tables/predictions", columns=["task", "input", "reference", "prediction"], data=rows)
