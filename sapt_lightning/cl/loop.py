"""The continual loop: an explicit `for task in stream` around a fresh Trainer per task.

    for task k:  method.start_task -> Trainer.fit (task k's train split only; checkpoints.py)
                 -> method.end_task (freeze, ARM targets, pseudo samples) -> save artifacts
                 -> evaluate every seen task (no task id) -> one row of the score matrix
                 -> record the stream state (task k complete)

Re-running with the same run directory resumes after the last complete task, and inside the
next one from its last checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from ..data.datamodule import ContinualDataModule
from ..data.task import Task
from ..errors import ConfigError, DataError, Preempted
from ..methods.base import ContinualModule
from ..metrics.scoring import score_task
from ..utils import phases, preemption
from ..utils.distributed import map_sharded, run_everywhere, sync_from_rank_zero
from ..utils.faults import maybe_fault
from ..utils.io import atomic_write_json, read_json
from ..utils.phases import phase
from ..utils.progress import progress
from .checkpoints import InTaskCheckpoint, TaskCheckpoints, task_checkpoints

log = logging.getLogger(__name__)
STATE_FILE = "stream_state.json"


@dataclass
class StreamState:
    """What is complete. Written only after a task's artifacts and scores are on disk."""

    tasks: list[str]
    completed: int = 0
    matrix: list[list[float | None]] = field(default_factory=list)
    wall_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)  # wall time by phase (utils/phases.py)

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / STATE_FILE, self.__dict__)

    @classmethod
    def load_or_new(cls, run_dir: Path, tasks: list[str]) -> StreamState:
        path = run_dir / STATE_FILE
        if not path.exists():
            return cls(tasks=tasks)
        data = read_json(path, dict)
        try:
            state = cls(**data)
        except TypeError:
            raise DataError(
                f"{path}: expected the keys {sorted(cls.__dataclass_fields__)}, found {sorted(data)}; "
                "it may have been edited or replaced"
            ) from None
        if state.tasks != tasks:
            raise ConfigError(f"{path} records tasks {state.tasks}, this run has {tasks}; use another run directory")
        return state


MARGIN_BYTES = 64 * 2**20  # logs, pseudo samples, plots and the JSON files of one task


def check_disk_space(run_dir: Path, module: ContinualModule, index: int, task: Task) -> None:
    """Refuse to start a task whose artifacts may not fit: a full disk mid-task wastes the task."""
    need = 2 * 4 * module.trainable_parameters() + MARGIN_BYTES  # fp32 tensors, written via a temp copy
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise DataError(
            f"not enough disk space in {run_dir}: {free / 2**20:.0f} MiB free, task {index + 1} "
            f"({task.name}) needs about {need / 2**20:.0f} MiB; free some space and re-run the same "
            "command (finished tasks are kept)"
        )


def task_dir(run_dir: Path, index: int, task: Task) -> Path:
    return run_dir / "tasks" / f"{index + 1}-{task.name}"


def scoring_device(cfg: DictConfig) -> torch.device:
    """Where ARM statistics, pseudo samples and scoring run: where training ran. (Lightning hands
    the module back on the CPU after fit; under DDP each rank has made its own GPU current.)"""
    if cfg.strategy.accelerator == "gpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ContinualLoop:
    def __init__(
        self,
        cfg: DictConfig,
        module: ContinualModule,
        data: ContinualDataModule,
        run_dir: Path,
        make_trainer,
        on_row=None,
    ) -> None:
        self.cfg = cfg
        self.module = module
        self.data = data
        self.run_dir = run_dir
        self.make_trainer = make_trainer  # (index, task, callbacks) -> L.Trainer
        self.on_row = on_row or (lambda index, row: None)
        self.tasks = data.tasks

    def run(self) -> StreamState:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = StreamState.load_or_new(self.run_dir, [t.name for t in self.tasks])
        for index in range(state.completed):
            self.checkpoints(index).clear()  # (left behind if a stop came just after the task was recorded)
            if self.deferred(index):
                continue
            log.info(
                "resume: task %d/%d (%s) already complete, loading its artifacts",
                index + 1,
                len(self.tasks),
                self.tasks[index].name,
            )
            self.module.load_task(index, self.tasks[index], task_dir(self.run_dir, index, self.tasks[index]))
        for index in range(state.completed, len(self.tasks)):
            started = time.time()
            phases.take()
            row = self.train_and_evaluate(index, state)
            state.matrix.append(row)
            state.completed = index + 1
            state.wall_s += time.time() - started
            for name, seconds in phases.take().items():
                state.phases_s[name] = state.phases_s.get(name, 0.0) + seconds
            state.save(self.run_dir)
            self.checkpoints(index).clear()
            self.on_row(index, row)
            preemption.stop_if_requested(f"stopped after task {index + 1}, which is complete")
        return state

    def checkpoints(self, index: int) -> TaskCheckpoints:
        every = int(self.cfg.trainer.checkpoint_every_n_steps)
        return task_checkpoints(self.run_dir, index, self.tasks[index], len(self.tasks), every)

    def deferred(self, index: int) -> bool:
        """Joint training (method=mtl) trains once, at the last task; earlier tasks only join its data."""
        return self.module.joint_training and index < len(self.tasks) - 1

    def train_and_evaluate(self, index: int, state: StreamState) -> list[float | None]:
        task = self.tasks[index]
        folder = task_dir(self.run_dir, index, task)
        if self.deferred(index):
            log.info(
                "task %d/%d: %s joins the joint training set (trained with all tasks after the last)",
                index + 1,
                len(self.tasks),
                task.name,
            )
            return [None] * len(self.tasks)
        log.info("task %d/%d: %s (%d train examples)", index + 1, len(self.tasks), task.name, len(task.train))
        # Each task draws from its own seed, so a task retrained after a resume repeats the
        # uninterrupted run exactly, whatever the process consumed before.
        L.seed_everything(int(self.cfg.seed) + 1000 * (index + 1), workers=True, verbose=False)
        extra = self.module.start_task(index, task)
        check_disk_space(self.run_dir, self.module, index, task)
        self.data.set_task(index, extra)
        self.module.attach_replay(self.data)
        checkpoints = self.checkpoints(index)
        self.module.task_checkpoints = checkpoints
        trainer: L.Trainer = self.make_trainer(index, task, [InTaskCheckpoint(checkpoints)])
        try:  # (the trainer's FitGuard undoes what the strategy did to the module)
            with phase("training"):
                trainer.fit(self.module, datamodule=self.data, ckpt_path=checkpoints.fit_to_resume(), weights_only=True)
        except SIGTERMException:  # Lightning's own SIGTERM check; InTaskCheckpoint has saved the fit
            raise Preempted(f"{checkpoints.label}: training saved; re-run the same command to resume") from None
        self.module.to(scoring_device(self.cfg))  # after fit: Lightning has made this rank's GPU current

        def finish_task() -> None:
            with phase("statistics"):  # (what end_task does beside the generator's phases)
                self.module.end_task(index, task, self.data, folder)
            with phase("writing"):
                self.module.save_task(index, task, folder)  # (rank 0 writes)

        run_everywhere(finish_task, f"task {index + 1} ({task.name}): end of task")
        sync_from_rank_zero(lambda: self.module.load_task(index, task, folder))
        maybe_fault("after_artifacts", index)
        with phase("evaluation"):
            return self.score_row(index, state)

    def score_row(self, index: int, state: StreamState) -> list[float | None]:
        row: list[float | None] = [None] * len(self.tasks)
        for j in range(index + 1):
            if self.module.isolated_tasks and j < index:
                row[j] = state.matrix[j][j]  # an isolated model per task: earlier scores cannot change
            else:
                row[j] = self.evaluate(self.tasks[j])
                maybe_fault("during_eval", index)
            log.info(
                "after task %d, score on %s (%s): %.2f", index + 1, self.tasks[j].name, self.tasks[j].metric, row[j]
            )
        return row

    @torch.no_grad()
    def evaluate(self, task: Task, split: str = "test") -> float:
        """Score of the current model on a task (no task id); ranks split the examples and share
        predictions. Decoding runs longest first with data.group_by_length (`in_length_order`)."""
        examples = getattr(task, split)

        with progress(f"evaluating {task.name} ({split})", len(examples), "examples") as step:

            def predict(part: list) -> list[str]:
                predictions: list[str] = []
                for batch in self.data.loader(task, part):
                    batch = {k: v.to(self.module.device) for k, v in batch.items()}
                    predictions.extend(self.module.generate_texts(batch))
                    step.update(len(batch["input_ids"]))
                return predictions

            predictions = self.data.in_length_order(
                task, examples, lambda ordered: map_sharded(ordered, predict, chunk=self.data.eval_batch_size)
            )
        return score_task(
            predictions, [ex.outputs for ex in examples], task.metric, str(self.cfg.fidelity.multi_reference)
        )

    @torch.no_grad()
    def predictions(self, task: Task, limit: int = 5) -> list[dict[str, Any]]:
        batch = next(iter(self.data.loader(task, task.test[:limit])))
        batch = {k: v.to(self.module.device) for k, v in batch.items()}
        preds = self.module.generate_texts(batch)
        return [{"input": ex.input, "reference": ex.target, "prediction": p} for ex, p in zip(task.test[:limit], preds)]
