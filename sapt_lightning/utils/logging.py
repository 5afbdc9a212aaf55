"""Loggers for a stream (CSV always, W&B offline by default) and a quieter console."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig

from ..errors import ConfigError


class _StreamSteps:
    """Each task gets a fresh Trainer whose step counts from 0; adding the steps of the
    earlier tasks gives the whole stream one step axis (one W&B run, one CSV)."""

    step_offset = 0

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics(metrics, None if step is None else step + self.step_offset)  # type: ignore[misc]


class StreamCSVLogger(_StreamSteps, CSVLogger):
    pass


class StreamWandbLogger(_StreamSteps, WandbLogger):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # Lightning always passes `anonymous`, which wandb >= 0.19 ignores with a warning on every run
        self._wandb_init.pop("anonymous", None)


class StreamSteps:
    """Tracks the Trainer of the task in progress and shifts every logger's step by the finished tasks' steps."""

    def __init__(self, loggers: list) -> None:
        self.loggers, self.offset, self.trainer = loggers, 0, None

    def start_task(self, trainer) -> None:
        if self.trainer is not None:
            self.offset += int(self.trainer.global_step)
        self.trainer = trainer
        for lg in self.loggers:
            lg.step_offset = self.offset

    def in_task(self) -> int:
        """The step to log at now, relative to the current task (loggers add the offset)."""
        return int(self.trainer.global_step) if self.trainer is not None else 0


def quiet_libraries() -> None:
    """Silence library chatter that says nothing to the user; real problems still show."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.pytorch.trainer.connectors.signal_connector",  # (our own line says what a signal did)
        "transformers",
        "httpx",
    ):
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
    parts += [str(cfg.label)] if cfg.get("label") else []
    return "-".join(parts) + f"-s{cfg.seed}"


def make_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers: list = []
    if cfg.logger.csv:
        loggers.append(
            StreamCSVLogger(save_dir=str(run_dir), name="csv")
        )  # version_N per attempt: a resume never overwrites
    wb = cfg.logger.wandb
    if wb.enabled:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "W&B logging is on but wandb is not installed: pip install wandb, or use logger=csv"
            ) from None
        if not wb.offline and not (os.environ.get("WANDB_API_KEY") or _netrc_has_wandb()):
            raise ConfigError(
                "logger.wandb.offline=false but W&B is not logged in: run `wandb login`, "
                "or keep logger.wandb.offline=true (sync later with `wandb sync`)"
            )
        ablations = sorted(cfg.get("ablations") or {})
        tags = [cfg.method.name, cfg.benchmark.name, f"seed{cfg.seed}", *ablations, *list(cfg.get("tags") or [])]
        loggers.append(
            StreamWandbLogger(
                save_dir=str(run_dir),
                offline=bool(wb.offline),
                project=wb.project,
                entity=wb.entity,
                group=wb.group or f"{cfg.benchmark.name}-{(cfg.get('order', {}) and cfg.order.id) or 'custom'}",
                job_type=cfg.method.name + ("-" + "-".join(ablations) if ablations else ""),
                name=run_name(cfg),
                tags=tags,
                settings=wandb.Settings(silent=True),
            )
        )
        loggers[-1].log_artifacts = bool(
            wb.get("log_artifacts", True)
        )  # its banners repeat our summary; we print the sync hint
    return loggers


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def log_stream_outputs(loggers: list, plots: dict[str, Path], results: dict, run_dir: Path, step: int) -> None:
    """W&B (CSV has no media): the plots, the score matrix, attention, predictions and pseudo samples
    as one history row at the stream's last step, then results.json and the task artifacts as a
    W&B artifact (`logger.wandb.log_artifacts`)."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        payload: dict = {f"plots/{key}": wandb.Image(str(path)) for key, path in plots.items()}
        payload.update(
            {f"tables/{key}": wandb.Table(columns=cols, data=rows) for key, (cols, rows) in _tables(results)}
        )
        lg.log_metrics(payload, step=step)
        if getattr(lg, "log_artifacts", False):
            artifact = wandb.Artifact(
                name=f"{lg.experiment.id}-outputs",
                type="stream-outputs",
                description="results.json and each task's saved blocks, targets and pseudo samples",
                metadata={"method": results["method"], "tasks": results["order"], "summary": results["summary"]},
            )
            artifact.add_file(str(run_dir / "results.json"))
            if (run_dir / "tasks").is_dir():
                artifact.add_dir(str(run_dir / "tasks"), name="tasks")
            lg.experiment.log_artifact(artifact)


def _tables(results: dict) -> list[tuple[str, tuple[list[str], list[list]]]]:
    """(key, (columns, rows)) of every non-empty table of a finished stream."""
    names = results["order"]
    tables = [("score_matrix", (["after_task", *names], [[names[i], *row] for i, row in enumerate(results["matrix"])]))]
    for split, rows in (results.get("attention") or {}).items():
        blocks = [f"block {k + 1} ({name})" for k, name in enumerate(names)]
        tables.append((f"attention_{split}", (["inputs_of", *blocks], [[names[i], *r] for i, r in enumerate(rows)])))
    examples = [
        [t, ex["input"], ex["reference"], ex["prediction"]]
        for t, exs in results.get("examples", {}).items()
        for ex in exs
    ]
    tables.append(("predictions", (["task", "input", "reference", "prediction"], examples)))
    pseudo = [[t, ex["input"], ex["output"]] for t, exs in results.get("pseudo_examples", {}).items() for ex in exs]
    tables.append(("pseudo_samples", (["task", "input", "output"], pseudo)))
    return [(key, table) for key, table in tables if table[1]]


def wandb_sync_hint(loggers: list) -> str | None:
    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._offline and lg._experiment is not None:
            return f"W&B offline run: {lg._experiment.dir.removesuffix('/files')} (upload: wandb sync <that dir>)"
    return None


def uses_wandb(loggers: list) -> bool:
    return any(isinstance(lg, WandbLogger) for lg in loggers)
