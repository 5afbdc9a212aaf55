"""`sapt-padding [overrides]` (or `python -m sapt_lightning.padding`): how much of each batch is
padding, with and without `data.group_by_length`.

Takes a run's overrides (`experiment=superni_order1 backbone=mini_t5`), reads the stream's tasks and
the backbone's tokenizer (a locally built backbone is built first if it is not cached), and batches
every task as a run does: one pass of its training batches (the first epoch's shuffle) and its
test split as evaluation decodes it. Padding = 1 - real tokens / token slots, over all batches; a
T5 batch counts its source and its labels, a decoder-only batch its prompt + answer rows. Trains
nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, open_dict

from .backbones.load import load_tokenizer
from .cli import config_tool
from .config_checks import check_values, resolved_path
from .data.benchmarks import build_tasks
from .data.collate import Collator
from .data.datamodule import ContinualDataModule
from .data.task import Task
from .errors import ConfigError


def padding(collate: Collator, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """Share of the token slots of `batches` that are padding."""
    real = slots = 0
    for batch in batches:
        r, s = collate.tokens(batch)
        real, slots = real + r, slots + s
    return 1 - real / slots if slots else 0.0


def task_padding(data: ContinualDataModule, index: int, task: Task) -> tuple[float, float]:
    """(training, evaluation) padding of one task under the datamodule's grouping setting."""
    data.set_task(index)
    train = padding(data.collator(task), data.train_dataloader())
    order = data.length_order(task, task.test)
    ordered = [task.test[i] for i in order]
    evaluation = padding(data.collator(task, with_labels=False), data.loader(task, ordered))
    return train, evaluation


def grouped(cfg: DictConfig, on: bool) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.data.group_by_length = True if on else None
    return cfg


def report(cfg: DictConfig) -> str:
    if not cfg.fidelity.mask_padding_in_pooling:
        raise ConfigError(
            "sapt-padding compares batches grouped by length with plain ones, and grouping needs "
            "fidelity.mask_padding_in_pooling=true (fidelity=clean); drop the fidelity override"
        )
    check_values(cfg)
    tokenizer = load_tokenizer(cfg.backbone, resolved_path(cfg, "paths.cache_dir"))
    tasks = build_tasks(cfg)
    backbone = SimpleNamespace(tokenizer=tokenizer, family=str(cfg.backbone.family))  # what the datamodule reads
    rows = {}
    for on in (False, True):
        data = ContinualDataModule.from_config(grouped(cfg, on), tasks, backbone)
        rows[on] = [task_padding(data, i, task) for i, task in enumerate(tasks)]
    d = cfg.data
    lines = [
        f"padding share of the batches: {cfg.benchmark.name}, {len(tasks)} tasks, {cfg.backbone.name}'s tokenizer, "
        f"batch {d.batch_size} (evaluation {d.eval_batch_size}), source/target cut at "
        f"{d.max_source_length}/{d.max_target_length} tokens",
        f"{'task':<44}{'train':>8}{'grouped':>9}{'eval':>8}{'sorted':>8}",
    ]
    for task, off, on in zip(tasks, rows[False], rows[True], strict=True):
        lines.append(f"{task.name[:43]:<44}{off[0]:>8.1%}{on[0]:>9.1%}{off[1]:>8.1%}{on[1]:>8.1%}")
    mean = [sum(r[k] for r in rows[on]) / len(tasks) for on in (False, True) for k in (0, 1)]
    lines.append(f"{'mean over tasks':<44}{mean[0]:>8.1%}{mean[2]:>9.1%}{mean[1]:>8.1%}{mean[3]:>8.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return config_tool(argv, report)


if __name__ == "__main__":
    raise SystemExit(main())
