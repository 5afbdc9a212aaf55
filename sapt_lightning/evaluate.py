"""`python -m sapt_lightning.evaluate run_dir=<dir> [device=auto|cpu|cuda] [key=value ...]`: score a
stream from its saved artifacts, without training.

Rebuilds tasks, backbone and method from the run's recorded `config.json`, loads every
completed task's artifacts (`stream_state.json` "completed"), then scores each completed
task's test split with the loop's own evaluation (greedy decoding, no task id): the same
numbers as the last row of the run's score matrix. Prints the scores and writes
`eval_results.json` into the run directory. `device=auto` (the default) scores where the run
scored: on the GPU when its strategy trained on GPUs and one is visible, else on the CPU.

`key=value` overrides change the recorded config for this evaluation only, e.g.
`paths.data_dir=/data/CL_Benchmark` or `data.eval_batch_size=16` when the run was made
on another machine.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from .config_checks import check_values
from .configs import compose, with_user_folders
from .errors import ConfigError, DataError, UserError
from .reporting.results import CONFIG_FILE
from .utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)
EVAL_FILE = "eval_results.json"
STATE_FILE = "stream_state.json"  # as cl.loop records it
_USAGE = "usage: python -m sapt_lightning.evaluate run_dir=<run directory> [device=auto|cpu|cuda] [key=value ...]"


def load_recorded_config(run_dir: Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's config as recorded (interpolations kept), pointed at `run_dir`."""
    for name in (CONFIG_FILE, STATE_FILE):
        if not (run_dir / name).is_file():
            raise UserError(
                f"{run_dir / name} not found: {run_dir} is not a sapt_lightning run directory "
                "(or no task has finished yet)"
            )
    cfg = with_todays_defaults(OmegaConf.create(read_json(run_dir / CONFIG_FILE, dict)))
    with open_dict(cfg):
        # Recorded as ${hydra:runtime.output_dir}, which only resolves inside a Hydra app.
        cfg.paths.output_dir = str(run_dir)
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"cannot parse '{item}': overrides are key=value ({_USAGE})")
        if OmegaConf.select(cfg, key, default=_Missing) is _Missing:
            raise ConfigError(f"unknown config key '{key}' in the recorded config of {run_dir}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
    return cfg


def with_todays_defaults(recorded: DictConfig) -> DictConfig:
    """A run recorded before a key existed lacks it: fill it from the package's config of the same
    method and PET type. A key is added at its off value, what the code did before it: for the
    fidelity switches that is `clean`'s value (under `official` too: a switch added later was off in
    the runs before it), so the filled config is the one the run was made with."""
    choices = [f"method={recorded.method.name}", f"pet={recorded.pet.type}", "fidelity=clean"]
    try:
        today = compose(choices)
    except Exception:
        return recorded
    sections = {key: today[key] for key in ("method", "pet", "fidelity", "trainer", "data", "eval")}
    return OmegaConf.merge(sections, recorded)


class _Missing:
    """Sentinel: OmegaConf.select found nothing."""


def evaluate_run(run_dir: Path, overrides: Sequence[str] = (), device: str = "auto") -> dict[str, Any]:
    """Score every completed task of the run in `run_dir`; write and return eval_results.json.

    `device="auto"` scores where the run's loop scored (cl.loop.scoring_device), so the
    predictions match the recorded ones.
    """
    from .cl.loop import ContinualLoop, scoring_device, task_dir
    from .cl.unseen import build_unseen_tasks, evaluate_unseen
    from .data.benchmarks import build_tasks
    from .methods.registry import check_method
    from .stream import assemble_stream
    from .utils.logging import quiet_libraries

    started = time.time()
    run_dir = Path(run_dir).resolve()
    cfg = load_recorded_config(run_dir, overrides)
    check_values(cfg)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device={device}: use auto, cpu, cuda or cuda:<index>")
    if device == "auto":
        device = str(scoring_device(cfg))
        if cfg.strategy.accelerator == "gpu" and device == "cpu":
            log.warning(
                "this run trained and scored on a GPU, none is visible here: scoring on the CPU, "
                "where predictions may differ slightly from the recorded ones"
            )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is visible; use device=cpu")
    quiet_libraries()
    check_method(cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tasks = build_tasks(cfg)
    state = read_json(run_dir / STATE_FILE, dict)
    names = [t.name for t in tasks]
    if state.get("tasks") != names:
        raise DataError(
            f"{run_dir / STATE_FILE} records tasks {state.get('tasks')}, the recorded config "
            f"builds {names} (data or config changed since the run?)"
        )
    completed = int(state.get("completed", 0))
    if completed == 0:
        raise UserError(f"{run_dir / STATE_FILE}: no task has finished yet, nothing to evaluate")
    if not 0 < completed <= len(tasks):
        raise DataError(
            f"{run_dir / STATE_FILE} records {completed} finished tasks of a {len(tasks)}-task stream "
            "(edited or damaged?)"
        )
    complete = completed == len(tasks)
    unseen = build_unseen_tasks(cfg, tasks) if complete else []

    stream = assemble_stream(cfg, tasks)
    module, data = stream.module, stream.data
    # Pseudo samples only feed ARM while later tasks train; scoring never reads them, and an
    # imported release run has none. (Read by SAPT's load_task when this is set.)
    if getattr(module, "needs_pseudo", False):
        module.needs_pseudo = False
    loop = ContinualLoop(cfg, module, data, run_dir, make_trainer=_no_training)

    row: list[float | None] = [None] * len(tasks)
    examples: dict[str, list[dict[str, Any]]] = {}

    def score(j: int) -> None:
        row[j] = loop.evaluate(tasks[j])
        examples[names[j]] = loop.predictions(tasks[j], 3)  # as results.json "examples"
        log.info("%s (%s): %.2f", names[j], tasks[j].metric, row[j])

    if module.isolated_tasks:  # one model per task (method=single): each task with its own
        module.to(device)
        for j in range(completed):
            module.load_task(j, tasks[j], task_dir(run_dir, j, tasks[j]))  # copies into the live adapter
            score(j)
    else:
        for j in range(completed):
            module.load_task(j, tasks[j], task_dir(run_dir, j, tasks[j]))
        module.to(device)  # after loading: SAPT creates each task's block on the CPU
        for j in range(completed):
            score(j)
    if hasattr(module, "mean_attention"):  # SAPT: mean block weights per task (results.json "attention")
        results_attention = {"test": [module.mean_attention(t, t.test, data) for t in tasks[:completed]]}
    else:
        results_attention = None
    recorded = state["matrix"][completed - 1] if len(state.get("matrix") or []) >= completed else None
    results = {
        "run_dir": str(run_dir),
        "method": cfg.method.name,
        "benchmark": cfg.benchmark.name,
        "order": names,
        "completed": completed,
        "metric": {t.name: t.metric for t in tasks},
        "scores": {names[j]: row[j] for j in range(completed)},
        "row": row,
        "recorded_row": recorded,
        "matches_recorded": None if recorded is None else _same_row(row, recorded),
        "examples": examples,
        "attention": results_attention,
        "device": device,
        "wall_s": round(time.time() - started, 1),
    }
    results.update(evaluate_unseen(loop, unseen))
    atomic_write_json(run_dir / EVAL_FILE, results)
    return results


def _no_training(index: int, task: Any, callbacks: Any) -> None:
    raise RuntimeError("evaluate never trains")


def _same_row(a: list[float | None], b: list[float | None], tol: float = 1e-9) -> bool:
    return len(a) == len(b) and all(
        (x is None) == (y is None) and (x is None or abs(x - y) <= tol) for x, y in zip(a, b)
    )


def print_results(results: dict[str, Any]) -> None:
    recorded = results["recorded_row"] or [None] * len(results["order"])
    print(
        f"\n{results['method']} on {results['benchmark']}: {results['completed']}/{len(results['order'])} tasks "
        f"complete; scores of the final model, percent"
    )
    width = max(len(n) for n in results["order"])
    print(f"{'task':<{width}}  {'metric':<12}{'score':>8}{'recorded':>10}")
    for j, name in enumerate(results["order"][: results["completed"]]):
        rec = "" if recorded[j] is None else f"{recorded[j]:.2f}"
        print(f"{name:<{width}}  {results['metric'][name]:<12}{results['row'][j]:>8.2f}{rec:>10}")
    for name, score in (results.get("unseen") or {}).items():
        print(f"{name:<{width}}  {results['unseen_metric'][name]:<12}{score:>8.2f}  (unseen)")
    if results["matches_recorded"] is False:
        print("note: differs from the scores recorded during the run (another device, library version or data?)")
    print(f"written: {Path(results['run_dir']) / EVAL_FILE}")


def parse_args(argv: Sequence[str]) -> tuple[Path, str, list[str]]:
    run_dir, device, overrides = None, "auto", []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\n" + _USAGE)
            raise SystemExit(0)
        key, sep, value = arg.partition("=")
        if key == "hydra.searchpath" and sep:  # the config folder of a method outside the package
            with_user_folders([arg])
        elif key == "run_dir" and sep:
            run_dir = Path(value)
        elif key == "device" and sep:
            device = value
        else:
            overrides.append(arg)
    if run_dir is None:
        raise ConfigError(f"run_dir=<run directory> is required ({_USAGE})")
    return run_dir, device, overrides


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_dir, device, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        print_results(evaluate_run(run_dir, overrides, device))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
