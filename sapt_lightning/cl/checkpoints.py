"""Checkpoints inside a task: a job killed or preempted mid-task loses a few steps, not the task.

    <run_dir>/checkpoints/<k>-<task>/fit.ckpt        the task's fit (a Lightning checkpoint)
    <run_dir>/checkpoints/<k>-<task>/generator.pt    the ARM generator's training

Each is written every `trainer.checkpoint_every_n_steps` optimizer steps, at the end of the
fit, and when a stop is requested (utils/preemption.py); each write replaces the last one
atomically. A fit checkpoint holds the trainable parameters only (the rest is rebuilt by the
task's seeded start), the optimizer and loop state, the training loader's position
(ResumableLoader), the replay streams' positions and the global random streams: a resumed task
takes the very steps the uninterrupted one would have. The folder goes once the task is complete.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..data.datamodule import ResumableLoader
from ..data.task import Task
from ..errors import DataError
from ..utils import preemption, rng
from ..utils.distributed import is_global_zero
from ..utils.io import atomic_write

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TaskCheckpoints:
    folder: Path
    every: int  # optimizer steps between checkpoints; 0: only at a requested stop and the fit's end
    label: str  # "task 2/5 (sst2)", for messages

    @property
    def fit_file(self) -> Path:
        return self.folder / "fit.ckpt"

    @property
    def generator_file(self) -> Path:
        return self.folder / "generator.pt"

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def fit_to_resume(self) -> Path | None:
        """The fit's checkpoint, if one was saved (checked readable: a damaged one is named)."""
        return self.fit_file if load_state(self.fit_file) is not None else None

    def clear(self) -> None:
        if is_global_zero():
            shutil.rmtree(self.folder, ignore_errors=True)
            with suppress(OSError):  # the checkpoints folder itself, once no task has one
                self.folder.parent.rmdir()


def task_checkpoints(run_dir: Path, index: int, task: Task, n_tasks: int, every: int) -> TaskCheckpoints:
    return TaskCheckpoints(
        run_dir / CHECKPOINT_DIR / f"{index + 1}-{task.name}", every, f"task {index + 1}/{n_tasks} ({task.name})"
    )


def drop_all(run_dir: Path) -> None:
    """Forget every in-task checkpoint: they were made by another config."""
    folder = run_dir / CHECKPOINT_DIR
    if folder.is_dir() and is_global_zero():
        log.info("dropping the in-task checkpoints in %s: they were made by another config", folder)
        shutil.rmtree(folder, ignore_errors=True)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(
            f"{path}: not a readable checkpoint ({type(err).__name__}); delete it to restart this task's "
            "training from its start (finished tasks are kept)"
        ) from None


class InTaskCheckpoint(L.Callback):
    """Writes the fit's checkpoint at step boundaries (mid-accumulation there is no consistent
    state) and turns a requested stop into Preempted once that checkpoint is on disk."""

    def __init__(self, checkpoints: TaskCheckpoints) -> None:
        self.checkpoints = checkpoints
        self.enabled = True
        self._last_step = -1
        self._saved_step = -1
        self._pending_rng: dict[str, Any] | None = None
        self._resumed_at: int | None = None

    # What Lightning stores for this callback: taken while the checkpoint is written.
    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng.capture(), "step": self._last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_rng, self._resumed_at = state["rng"], int(state["step"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        # DeepSpeed keeps the optimizer state in its own sharded files, which this resume does not
        # read: under it a stopped task restarts from its start (its generator still resumes).
        self.enabled = not isinstance(trainer.strategy, DeepSpeedStrategy)
        if not self.enabled and self.checkpoints.every:
            log.info("%s: no checkpoints inside the task under DeepSpeed", self.checkpoints.label)
        if self._resumed_at is not None:
            log.info("%s: resuming its training at step %d", self.checkpoints.label, self._resumed_at)
        self._restore_rng()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_rng()  # a fit resumed from its final checkpoint never starts training

    def _restore_rng(self) -> None:
        if self._pending_rng is not None:
            rng.restore(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self._last_step:
            return  # gradients are still accumulating
        self._last_step = trainer.global_step
        loader = trainer.train_dataloader
        if isinstance(loader, ResumableLoader):
            loader.consumed = batch_idx + 1
        stop = preemption.requested() is not None
        if trainer.world_size > 1:  # every rank stops at the same step, whichever got the signal
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop or self.checkpoints.due(trainer.global_step):
            self._save(trainer)
        if stop:
            preemption.stop_if_requested(f"{self.checkpoints.label}: training saved at step {trainer.global_step}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.checkpoints.every:  # a stop in the steps after the fit (the generator) keeps the fit
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning's own SIGTERM check, between two batches: the state is consistent there.
        if isinstance(exception, SIGTERMException):
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if self._saved_step == trainer.global_step or not self.enabled:
            return
        self.checkpoints.folder.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.checkpoints.fit_file, weights_only=False)  # (atomic) optimizer and loops too
        self._saved_step = trainer.global_step
        log.debug("%s: checkpoint at step %d", self.checkpoints.label, trainer.global_step)
