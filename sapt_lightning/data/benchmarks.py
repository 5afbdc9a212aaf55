"""The task stream of a benchmark: synthetic, SuperNI or Long Sequence (CL_Benchmark layout).

Every task is read and checked while the stream is built, before any training: a
missing folder or file, bad JSON, an instance without input/output or an empty split
is reported with its path. Files are checked for existence for the whole stream
before any is parsed, so a missing file late in the order fails in milliseconds.
"""

from __future__ import annotations

import difflib
import filecmp
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig

from ..errors import ConfigError, DataError
from ..settings import SyntheticSizes
from .io import read_split
from .synthetic import build_synthetic_task
from .task import Example, Metric, Task

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def task_names(cfg: DictConfig, whole_order: bool = False) -> list[str]:
    """The stream's task names, in order; cut to benchmark.num_tasks unless `whole_order`."""
    bench, order = cfg.benchmark, cfg.get("order")
    if order is not None and order.benchmark != bench.name:
        raise ConfigError(
            f"order={order.id} is a {order.benchmark} order, but benchmark={bench.name}; "
            f"use benchmark={order.benchmark} (orders: 1, 2 = superni; 3, 4 = long_sequence)"
        )
    if bench.get("tasks") is not None and len(bench.tasks) == 0:
        raise ConfigError("benchmark.tasks=[] names no task: list at least one, or leave it out for the order's tasks")
    names = list(bench.tasks) if bench.get("tasks") else (list(order.tasks) if order is not None else None)
    if not names:
        raise ConfigError(
            f"benchmark={bench.name} needs a task order: order=1|2 (superni), order=3|4 "
            "(long_sequence) or benchmark.tasks=[...]"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark.tasks lists a task twice: {names}")
    if bench.get("num_tasks") and not whole_order:
        if int(bench.num_tasks) > len(names):
            raise ConfigError(f"benchmark.num_tasks={bench.num_tasks}, but the stream has {len(names)} tasks: {names}")
        names = names[: int(bench.num_tasks)]
    return names


@dataclass(frozen=True)
class SplitPolicy:
    """Where dev and test come from (the `data.*` options).

    The shipped dev.json equals test.json, so `dev_from_train` carves dev out of train
    for every task. The two test options are fallbacks for a task whose test.json is
    absent (several Long Sequence files are): a complete task keeps its real test set,
    so its scores stay comparable with the paper's.
    """

    dev_from_train: float = 0.0
    test_from_train: float = 0.0
    test_from_dev: bool = False

    @classmethod
    def from_cfg(cls, data: DictConfig) -> SplitPolicy:
        policy = cls(
            float(data.get("dev_from_train") or 0.0),
            float(data.get("test_from_train") or 0.0),
            bool(data.get("test_from_dev") or False),
        )
        for key in ("dev_from_train", "test_from_train"):
            if not 0.0 <= getattr(policy, key) < 1.0:
                raise ConfigError(f"data.{key}={getattr(policy, key)}: must be a fraction in [0, 1)")
        total = policy.dev_from_train + policy.test_from_train
        if total >= 1.0:
            raise ConfigError(
                f"data.dev_from_train + data.test_from_train = {total:g} leaves no training data; keep the sum below 1"
            )
        if policy.test_from_dev and policy.test_from_train:
            raise ConfigError(
                "data.test_from_dev and data.test_from_train are both set; choose one source for a missing test.json"
            )
        return policy

    def sources(self, folder: Path, wanted: tuple[str, ...]) -> dict[str, str]:
        """The file stem each wanted split is read from ("train" for a split carved out of train)."""
        sources = {split: split for split in wanted}
        if "dev" in sources and self.dev_from_train:
            sources["dev"] = "train"
        if "test" in sources and not (folder / "test.json").is_file():
            if self.test_from_dev:
                sources["test"] = "dev"
            elif self.test_from_train:
                sources["test"] = "train"
        return sources

    def hint(self, stem: str) -> str:
        """How to run without the missing file `<stem>.json`, as a message suffix."""
        if stem == "dev" and self.test_from_dev:
            return "; data.test_from_dev reads it as the test split, use data.test_from_train=0.1 instead"
        if stem == "dev":
            return "; to carve dev from train set data.dev_from_train=0.1"
        if stem == "test":
            return "; to do without it set data.test_from_dev=true (uses dev.json) or data.test_from_train=0.1"
        return ""


def benchmark_root(cfg: DictConfig) -> Path:
    root = Path(cfg.paths.data_dir) / cfg.benchmark.folder
    if not root.is_dir():
        raise DataError(
            f"benchmark folder not found: {root} (set paths.data_dir=/path/to/CL_Benchmark "
            "or the SAPT_DATA_DIR environment variable)"
        )
    return root


def task_folder(root: Path, name: str) -> Path:
    folder = root / name
    if not folder.is_dir():
        near = difflib.get_close_matches(name, sorted(p.name for p in root.iterdir() if p.is_dir()), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise DataError(f"task '{name}' is not on disk: no folder {folder}{hint}")
    return folder


def missing_files(root: Path, names: list[str], policy: SplitPolicy, wanted: tuple[str, ...] = SPLITS) -> list[Path]:
    """Every file the tasks `names` need that is not on disk, in stream order."""
    missing = []
    for name in names:
        folder = task_folder(root, name)
        stems = set(policy.sources(folder, wanted).values())
        missing += [folder / f"{s}.json" for s in SPLITS if s in stems and not (folder / f"{s}.json").is_file()]
    return missing


def check_files(root: Path, names: list[str], policy: SplitPolicy, wanted: tuple[str, ...] = SPLITS) -> None:
    """Fail on the first missing file, and say how many more the stream lacks (one line)."""
    missing = missing_files(root, names, policy, wanted)
    if not missing:
        return
    first, rest = missing[0], missing[1:]
    more = ""
    if rest:
        shown = ", ".join(f"{p.parent.name}/{p.name}" for p in rest[:4]) + (", ..." if len(rest) > 4 else "")
        more = f"; {len(rest)} more missing ({shown})"
    raise DataError(f"missing data file {first} (task '{first.parent.name}'){policy.hint(first.stem)}{more}")


def build_tasks(cfg: DictConfig) -> list[Task]:
    """The stream, every split read and validated (no model is touched)."""
    names = task_names(cfg)
    if cfg.benchmark.name == "synthetic":
        sizes = SyntheticSizes.from_config(cfg.benchmark, "benchmark")
        tasks = [
            build_synthetic_task(n, int(cfg.seed), sizes.train_per_task, sizes.dev_per_task, sizes.test_per_task)
            for n in names
        ]
    else:
        root, policy = benchmark_root(cfg), SplitPolicy.from_cfg(cfg.data)
        check_files(root, names, policy)
        tasks = [read_real_task(root, n, cfg) for n in names]
        if not policy.dev_from_train:
            _note_identical_dev_test(root, names)
    return [resize(t, cfg) for t in tasks]


def build_eval_tasks(cfg: DictConfig, names: list[str]) -> list[Task]:
    """Test-only tasks of the configured benchmark (no train/dev), e.g. unseen tasks."""
    if cfg.benchmark.name == "synthetic":
        test_size = SyntheticSizes.from_config(cfg.benchmark, "benchmark").test_per_task
        tasks = [build_synthetic_task(n, int(cfg.seed), 0, 0, test_size) for n in names]
    else:
        root, policy = benchmark_root(cfg), SplitPolicy.from_cfg(cfg.data)
        check_files(root, names, policy, ("test",))
        tasks = [read_real_task(root, n, cfg, ("test",)) for n in names]
    return [resize(t, cfg) for t in tasks]


def label_set_task(cfg: DictConfig, name: str) -> bool:
    """A classification task: scored by exact match in the paper (Table 4), and EPI's kind of task."""
    em = cfg.benchmark.exact_match_tasks
    return em == "all" or name in list(em)


def task_metric(cfg: DictConfig, name: str) -> Metric:
    """The paper's metric; under fidelity.superni_metric=rougeL every SuperNI task is scored by
    Rouge-L, as the release's score.py reads it (docs/method.md §1.6, §11.6)."""
    if cfg.benchmark.name == "superni" and cfg.fidelity.superni_metric == "rougeL":
        return "rougeL"
    return "exact_match" if label_set_task(cfg, name) else "rougeL"


def read_real_task(root: Path, name: str, cfg: DictConfig, wanted: tuple[str, ...] = SPLITS) -> Task:
    """Read the `wanted` splits of task `name` (others stay empty), carving as `data.*` asks."""
    folder = task_folder(root, name)
    policy = SplitPolicy.from_cfg(cfg.data)
    check_files(root, [name], policy, wanted)
    sources = policy.sources(folder, wanted)
    files = {stem: _read_nonempty(folder / f"{stem}.json", name) for stem in SPLITS if stem in sources.values()}
    splits = _assemble(files, sources, policy, folder, f"{cfg.seed}:{name}")
    metric = task_metric(cfg, name)
    train = splits.get("train", [])
    if cfg.fidelity.multi_reference == "random":
        train = one_random_reference(train, random.Random(f"{cfg.seed}:{name}:references"))
    return Task(
        name=name,
        metric=metric,
        template=cfg.benchmark.template,
        train=train,
        dev=splits.get("dev", []),
        test=splits.get("test", []),
        classification=label_set_task(cfg, name),
    )


def one_random_reference(examples: list[Example], rng: random.Random) -> list[Example]:
    """Train on one reference drawn per multi-reference instance, as the release does (docs/method.md
    §11.5; its scoring draws one too, metrics/scoring.py). Otherwise the first is the target."""
    return [replace(ex, outputs=(rng.choice(ex.outputs),)) if len(ex.outputs) > 1 else ex for ex in examples]


def _read_nonempty(path: Path, name: str) -> list[Example]:
    examples = read_split(path, name)
    if not examples:
        raise DataError(f"{path}: empty split (no instances)")
    return examples


def _assemble(
    files: dict[str, list[Example]], sources: dict[str, str], policy: SplitPolicy, folder: Path, seed: str
) -> dict[str, list[Example]]:
    """Map file contents to splits. Test is carved before dev, so the two never overlap."""
    pool = files.get("train", [])
    carved: dict[str, list[Example]] = {}
    for split, fraction in (("test", policy.test_from_train), ("dev", policy.dev_from_train)):
        if sources.get(split) == "train":
            pool, carved[split] = _carve(pool, fraction, random.Random(f"{seed}:{split}"), folder / "train.json", split)
    out = {}
    for split, stem in sources.items():
        out[split] = carved[split] if split in carved else pool if split == "train" else files[stem]
    return out


def _carve(
    examples: list[Example], fraction: float, rng: random.Random, path: Path, split: str
) -> tuple[list[Example], list[Example]]:
    """Split off round(fraction * n) random examples (at least one); both parts keep file order."""
    n = max(1, round(fraction * len(examples)))
    if n >= len(examples):
        raise DataError(
            f"{path}: {len(examples)} instance(s) are too few to carve a {split} split "
            f"of fraction {fraction:g} and keep training data"
        )
    held = set(rng.sample(range(len(examples)), n))
    return ([e for k, e in enumerate(examples) if k not in held], [e for k, e in enumerate(examples) if k in held])


def resize(task: Task, cfg: DictConfig) -> Task:
    """Deterministic caps on instance counts (benchmark.max_*_per_task).

    Seeded by (seed, task name), not by position, so a task gets the same subset in
    every order and as an unseen task; dev and test share a seed, so the shipped
    identical dev/test files give identical subsets.
    """
    cap_train, cap_eval = cfg.benchmark.get("max_train_per_task"), cfg.benchmark.get("max_eval_per_task")
    if cap_train:
        task.train = _sample(task.train, int(cap_train), random.Random(f"{cfg.seed}:{task.name}:train"))
    if cap_eval:
        task.dev = _sample(task.dev, int(cap_eval), random.Random(f"{cfg.seed}:{task.name}:eval"))
        task.test = _sample(task.test, int(cap_eval), random.Random(f"{cfg.seed}:{task.name}:eval"))
    return task


def _sample(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    if len(examples) <= n:
        return examples
    keep = sorted(rng.sample(range(len(examples)), n))
    return [examples[k] for k in keep]


def _note_identical_dev_test(root: Path, names: list[str]) -> None:
    """One warning for the whole stream (the release's dev.json is a copy of test.json)."""
    same = [
        n
        for n in names
        if (root / n / "dev.json").is_file()
        and (root / n / "test.json").is_file()
        and filecmp.cmp(root / n / "dev.json", root / n / "test.json", shallow=False)
    ]
    if same:
        log.warning(
            "dev.json is identical to test.json for %d of %d tasks (%s): ARM targets and any model "
            "selection then see test data; set data.dev_from_train=0.1 to carve a dev split from train",
            len(same),
            len(names),
            ", ".join(same[:3]) + ("…" if len(same) > 3 else ""),
        )
