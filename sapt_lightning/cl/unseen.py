"""Unseen-task evaluation (paper Table 3): after the stream, score the final model on
tasks of the same benchmark that it never trained on (`eval.unseen_tasks`).

The tasks are read and validated with the stream, before any model loads; only their
test split is read. Scoring reuses the loop's own `evaluate`, so unseen tasks are
decoded and scored exactly like stream tasks (no task id, same metric rules).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from ..data.benchmarks import build_eval_tasks
from ..data.task import Task
from ..errors import ConfigError
from .loop import ContinualLoop

log = logging.getLogger(__name__)


def build_unseen_tasks(cfg: DictConfig, stream: list[Task]) -> list[Task]:
    names = [str(n) for n in cfg.eval.get("unseen_tasks") or []]
    if len(set(names)) != len(names):
        raise ConfigError(f"eval.unseen_tasks lists a task twice: {names}")
    trained = sorted(set(names) & {t.name for t in stream})
    if trained:
        raise ConfigError(
            f"eval.unseen_tasks={names} includes {', '.join(trained)}, which the stream trains on; "
            "an unseen task must be outside the order (see benchmark.num_tasks / benchmark.tasks)"
        )
    return build_eval_tasks(cfg, names) if names else []


def evaluate_unseen(loop: ContinualLoop, tasks: list[Task]) -> dict[str, Any]:
    """results.json entries: `unseen` {task: score} and `unseen_metric` {task: metric}."""
    if not tasks:
        return {}
    if loop.module.isolated_tasks:
        log.warning(
            "method=%s keeps one model per task: unseen tasks are scored with the last task's model",
            loop.cfg.method.name,
        )
    scores = {}
    for task in tasks:
        scores[task.name] = loop.evaluate(task)
        log.info("unseen task %s (%s): %.2f", task.name, task.metric, scores[task.name])
    return {"unseen": scores, "unseen_metric": {t.name: t.metric for t in tasks}}
