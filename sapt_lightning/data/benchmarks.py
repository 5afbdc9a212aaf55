"""The task stream of a benchmark: synthetic, SuperNI or Long Sequence (CL_Benchmark layout).

Every task is read and checked while the stream is built, before any training: a
missing folder or file, bad JSON, an instance without input/output or an empty split
is reported with its path.
"""

from __future__ import annotations

import filecmp
import logging
import random
from pathlib import Path

from omegaconf import DictConfig

from ..errors import ConfigError, DataError
from .io import read_split
from .synthetic import build_synthetic_task
from .task import Example, Task

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def task_names(cfg: DictConfig) -> list[str]:
    bench, order = cfg.benchmark, cfg.get("order")
    if order is not None and order.benchmark != bench.name:
        raise ConfigError(f"order={order.id} is a {order.benchmark} order, but benchmark={bench.name}; "
                          f"use benchmark={order.benchmark} (orders: 1, 2 = superni; 3, 4 = long_sequence)")
    names = list(bench.tasks) if bench.get("tasks") else (list(order.tasks) if order is not None else None)
    if not names:
        raise ConfigError(f"benchmark={bench.name} needs a task order: order=1|2 (superni), order=3|4 "
                          "(long_sequence) or benchmark.tasks=[...]")
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark.tasks lists a task twice: {names}")
    if bench.get("num_tasks"):
        names = names[: int(bench.num_tasks)]
    return names


def build_tasks(cfg: DictConfig) -> list[Task]:
    names = task_names(cfg)
    bench = cfg.benchmark
    if bench.name == "synthetic":
        tasks = [build_synthetic_task(n, int(cfg.seed), int(bench.train_per_task), int(bench.dev_per_task),
                                      int(bench.test_per_task)) for n in names]
    else:
        root = Path(cfg.paths.data_dir) / bench.folder
        if not root.is_dir():
            raise DataError(f"benchmark folder not found: {root} (set paths.data_dir=/path/to/CL_Benchmark "
                            "or the SAPT_DATA_DIR environment variable)")
        tasks = [read_real_task(root, n, cfg) for n in names]
        _note_identical_dev_test(root, names)
    return [_resize(t, cfg, k) for k, t in enumerate(tasks)]


def read_real_task(root: Path, name: str, cfg: DictConfig) -> Task:
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"task '{name}' is not on disk: no folder {folder}")
    bench, data = cfg.benchmark, cfg.data
    carve_test = float(data.get("test_from_train", 0) or 0)
    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        if not path.is_file():
            if split == "dev" and (float(data.dev_from_train) > 0 or data.get("dev_from_test")):
                continue
            if split == "test" and (carve_test > 0 or data.get("test_from_dev")):
                continue
            hint = {"dev": "data.dev_from_train=0.1", "test": "data.test_from_dev=true or data.test_from_train=0.1"}
            raise DataError(f"missing data file {path} (task '{name}')" + (f"; to carve it from another split set {hint[split]}" if split in hint else ""))
        splits[split] = read_split(path, name)
        if not splits[split]:
            raise DataError(f"{path}: empty split (no instances)")
    rng = random.Random(int(cfg.seed) + len(name))
    if "test" not in splits:
        if data.get("test_from_dev") and "dev" in splits:
            splits["test"] = splits["dev"]
        else:
            splits["train"], splits["test"] = _carve(splits["train"], carve_test, rng)
    if float(data.dev_from_train) > 0:
        splits["train"], splits["dev"] = _carve(splits["train"], float(data.dev_from_train), rng)
    elif "dev" not in splits:
        splits["dev"] = splits["test"]
    em = bench.exact_match_tasks
    metric = "exact_match" if em == "all" or name in list(em) else "rougeL"
    return Task(name=name, metric=metric, template=bench.template, **splits)


def _carve(examples: list[Example], fraction: float, rng: random.Random) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    rng.shuffle(order)
    n = max(1, int(round(fraction * len(examples))))
    held = set(order[:n])
    return [e for k, e in enumerate(examples) if k not in held], [examples[k] for k in order[:n]]


def _resize(task: Task, cfg: DictConfig, k: int) -> Task:
    """Deterministic caps on instance counts (benchmark.max_*_per_task), seeded."""
    rng = random.Random(int(cfg.seed) * 31 + k)
    cap_train, cap_eval = cfg.benchmark.get("max_train_per_task"), cfg.benchmark.get("max_eval_per_task")
    if cap_train:
        task.train = _sample(task.train, int(cap_train), rng)
    if cap_eval:
        task.dev = _sample(task.dev, int(cap_eval), rng)
        task.test = _sample(task.test, int(cap_eval), rng)
    return task


def _sample(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    if len(examples) <= n:
        return examples
    keep = sorted(rng.sample(range(len(examples)), n))
    return [examples[k] for k in keep]


def _note_identical_dev_test(root: Path, names: list[str]) -> None:
    same = [n for n in names if (root / n / "dev.json").is_file() and (root / n / "test.json").is_file()
            and filecmp.cmp(root / n / "dev.json", root / n / "test.json", shallow=False)]
    if same:
        log.warning("dev.json is identical to test.json for %d of %d tasks (%s): ARM targets and any model "
                    "selection then see test data; set data.dev_from_train=0.1 to carve a dev split from train",
                    len(same), len(names), ", ".join(same[:3]) + ("…" if len(same) > 3 else ""))
