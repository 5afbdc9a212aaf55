"""`sapt-import-release release_dir=<dir> run_dir=<new dir> [pseudo_dir=<dir>] [key=value ...]`:
turn a stream the authors' release trained into a run directory of this project.

`release_dir` holds the release's per-task folders `<k>-<task>/saved_weights/` (k = 1, 2, …), as
its scripts write them. The key=value overrides compose the config as for a run (`backbone=`,
`benchmark=`, `order=`, `data.*`…); what the release's files fix is inferred and recorded:
`method=sapt`, `pet=lora` with the release's rank, the query network's hidden size, and
`fidelity=official` unless given. The stream is the config's (`order=`, `benchmark.tasks=`, or an
experiment preset's order) when it begins with the imported tasks, and the run can then go on with
the rest; an order typed on the command line that does not is refused; otherwise the stream is the
imported tasks.

The command scores every imported prefix (the model after task 1, 2, …, as the release saved it)
on the test splits, so the run directory holds the same score matrix a native run would, then
writes `config.json`, `stream_state.json` and the per-task artifacts. `sapt-evaluate run_dir=<dir>`
re-scores it; the printed `sapt …` command continues the stream with its next tasks (ARM then
needs the release's pseudo samples: `pseudo_dir=` its generated_data/<benchmark> folder). The last
task's attention pickle is optional: without it, its ARM target is measured here on its dev split.
Everything is written in a staging folder first: a refused or failed import writes nothing.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, DataError, UserError

log = logging.getLogger(__name__)
_USAGE = (
    "usage: sapt-import-release release_dir=<release output dir> run_dir=<new run dir> "
    "[pseudo_dir=<generated_data/<benchmark> dir>] [key=value ...]"
)
# The release fixes these; an override that contradicts its files is refused.
_METHOD, _PET = "sapt", "lora"


def release_task_folders(release_dir: Path) -> list[Path]:
    """The `<k>-<task>` folders that hold saved_weights, in task order; k must run 1..n."""
    from .interop.release import SAVED_WEIGHTS

    if not release_dir.is_dir():
        raise DataError(f"release_dir={release_dir}: no such folder")
    numbered: dict[int, Path] = {}
    for child in release_dir.iterdir():
        number, sep, name = child.name.partition("-")
        if child.is_dir() and sep and number.isdigit() and name and (child / SAVED_WEIGHTS).is_dir():
            numbered[int(number)] = child
    if not numbered:
        raise DataError(f"{release_dir}: no <k>-<task>/{SAVED_WEIGHTS} folder (not a release output directory?)")
    missing = [k for k in range(1, max(numbered) + 1) if k not in numbered]
    if missing:
        raise DataError(
            f"{release_dir}: no folder {missing[0]}-<task>/{SAVED_WEIGHTS} between the tasks "
            f"1..{max(numbered)} (a task's weights are missing)"
        )
    return [numbered[k] for k in sorted(numbered)]


def release_shapes(folder: Path) -> tuple[int, int]:
    """(LoRA rank, query hidden size) of a release task folder."""
    from .interop.release import LORA_A_FILE, QUERY_FILE, SAVED_WEIGHTS, load_tensors

    lora_a = load_tensors(folder / SAVED_WEIGHTS / LORA_A_FILE)
    current = [v for k, v in lora_a.items() if "previous_lora_weights" not in k and v.dim() == 2]
    if not current:
        raise DataError(f"{folder / SAVED_WEIGHTS / LORA_A_FILE}: no current-block LoRA A tensor")
    query = load_tensors(folder / SAVED_WEIGHTS / QUERY_FILE)
    if "0.weight" not in query:
        raise DataError(f"{folder / SAVED_WEIGHTS / QUERY_FILE}: no '0.weight' (not the release's trans_input)")
    return int(current[0].shape[0]), int(query["0.weight"].shape[0])


def import_config(overrides: Sequence[str], names: list[str], r: int, hidden: int) -> tuple[DictConfig, list[str]]:
    """The run's config, checked, and the overrides that compose it (printed for continuing the stream)."""
    from .config_checks import check_values

    given = {o.partition("=")[0].lstrip("+~") for o in overrides}
    for key, value in (("method", _METHOD), ("pet", _PET)):
        if key in given and f"{key}={value}" not in overrides:
            raise ConfigError(f"{key}: the release trains {key}={value}; drop the {key}= override")
    shapes = (("pet.r", r), ("method.sapt.query_hidden", hidden))
    inferred = [f"method={_METHOD}", f"pet={_PET}", *(f"{key}={value}" for key, value in shapes if key not in given)]
    if "method.sapt.pooling" not in given:
        inferred.append("method.sapt.pooling=max")  # the release's query network was trained on max-pooled inputs
    if "fidelity" not in given:
        inferred.append("fidelity=official")
    chosen = [o for o in overrides if o.partition("=")[0] not in ("method", "pet")] + inferred
    cfg = _compose(chosen)
    if not given & {"order", "benchmark.tasks"} and not _stream_begins_with(cfg, names):
        # No stream typed, and the config's own (a benchmark's default list) is not the release's.
        chosen.append(f"benchmark.tasks=[{','.join(names)}]")
        cfg = _compose(chosen)
    check_values(cfg)
    for key, value in shapes:
        if int(OmegaConf.select(cfg, key)) != value:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)}, but the release's files hold {value}")
    return cfg, chosen


def _stream_begins_with(cfg: DictConfig, names: list[str]) -> bool:
    """Whether the config's stream (an experiment preset's order, say) starts with these tasks."""
    from .data.benchmarks import task_names

    try:
        return task_names(cfg)[: len(names)] == names
    except ConfigError:  # (no order at all)
        return False


def _compose(overrides: list[str]) -> DictConfig:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .configs import compose

    try:
        return compose(overrides)
    except (HydraException, OmegaConfBaseException) as err:  # (an unknown key…): one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot compose the config from {overrides}: {first}") from None


def import_release(
    release_dir: Path, run_dir: Path, overrides: Sequence[str] = (), pseudo_dir: Path | None = None
) -> dict[str, Any]:
    """Write `run_dir` from the release's output; return its manifest."""
    from .cl.loop import ContinualLoop, StreamState, scoring_device, task_dir
    from .data.benchmarks import build_tasks
    from .data.io import PSEUDO_FILE, read_pseudo_task, write_task_json
    from .interop.release import MANIFEST_FILE, adapted_layers, import_release_run, saved_weights_dir, task_name_of
    from .methods.sapt.module import BLOCK_FILE, TARGET_FILE
    from .reporting.results import CONFIG_FILE
    from .run import _recorded
    from .stream import assemble_stream
    from .utils.io import atomic_write_json, read_safetensors

    run_dir = Path(run_dir).resolve()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ConfigError(f"run_dir={run_dir} exists and is not empty; give a new directory")
    folders = release_task_folders(Path(release_dir))
    names = [task_name_of(saved_weights_dir(f), i) for i, f in enumerate(folders)]
    r, hidden = release_shapes(folders[0])
    cfg, chosen = import_config(overrides, names, r, hidden)
    tasks = build_tasks(cfg)
    stream_names = [t.name for t in tasks]
    if stream_names[: len(names)] != names:
        raise ConfigError(
            f"the release's tasks {names} are not the first tasks of this config's stream {stream_names}; "
            "give the order they were trained in (order=... or benchmark.tasks=[...])"
        )
    pseudo = [read_pseudo_task(Path(pseudo_dir), t) for t in tasks[: len(names)]] if pseudo_dir else None

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.importing-"))
    try:
        stream = assemble_stream(cfg, tasks)
        module, data = stream.module, stream.data
        layers = adapted_layers(module.model, module.target_modules)
        native = import_release_run(
            folders, staging, layers, names, hidden_size=module.attention.d, last_target_optional=True
        )
        if pseudo is not None:
            for folder, samples in zip(native, pseudo):
                write_task_json(folder / PSEUDO_FILE, samples)
        module.needs_pseudo = False  # scoring never reads them
        device = scoring_device(cfg)
        loop = ContinualLoop(cfg, module, data, staging, make_trainer=None)
        state = StreamState(tasks=stream_names)
        for i, folder in enumerate(native):
            if not (folder / TARGET_FILE).is_file():  # the last task's pickle is optional: measure it
                module.add_task_block()
                module.load_block_state(i, read_safetensors(folder / BLOCK_FILE), folder / BLOCK_FILE)
                module.to(device)
                target = module.measure_target(tasks[i], data)
                atomic_write_json(
                    folder / TARGET_FILE,
                    {"task": names[i], "target": target.tolist(), "block_order": "task order, oldest first"},
                )
            module.load_task(i, tasks[i], task_dir(staging, i, tasks[i]))
            module.to(device)
            state.matrix.append(loop.score_row(i, state))  # the row the loop records after task i
            state.completed = i + 1
        atomic_write_json(staging / CONFIG_FILE, _recorded(cfg))
        state.save(staging)
        continue_command = continue_with(chosen, run_dir) if len(names) < len(tasks) else None
        manifest = {
            **_read_json(staging / MANIFEST_FILE),
            "release_dir": str(Path(release_dir).resolve()),
            "pseudo_dir": str(Path(pseudo_dir).resolve()) if pseudo_dir else None,
            "overrides": chosen,
            "continue_command": continue_command,
        }
        atomic_write_json(staging / MANIFEST_FILE, manifest)
        publish(staging, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**manifest, "run_dir": str(run_dir), "matrix": state.matrix, "stream": stream_names}


def publish(staging: Path, run_dir: Path) -> None:
    """The finished import takes the run directory's name in one rename."""
    try:
        if run_dir.exists():
            run_dir.rmdir()  # (empty when the import began; not empty now: another import got there first)
        staging.rename(run_dir)
    except OSError as err:
        raise ConfigError(f"run_dir={run_dir}: cannot be written ({err.strerror}); give a new directory") from None


def _read_json(path: Path) -> dict[str, Any]:
    from .utils.io import read_json

    return read_json(path, dict)


def continue_with(overrides: Sequence[str], run_dir: Path) -> str:
    """The command that trains the stream's next tasks into the imported run directory."""
    return shlex.join(["sapt", *overrides, f"hydra.run.dir={run_dir}"])


def print_summary(result: dict[str, Any]) -> None:
    names = result["tasks"]
    print(f"imported {len(names)} release tasks into {result['run_dir']}")
    width = max(len(n) for n in names)
    last = result["matrix"][-1]
    for j, name in enumerate(names):
        print(f"  {name:<{width}}  {last[j]:.2f}")
    print(f"re-score: sapt-evaluate run_dir={result['run_dir']}")
    if result["continue_command"]:
        if not result["pseudo_dir"]:
            print("note: no pseudo_dir given: continuing with ARM needs the release's pseudo samples")
        print(f"continue the stream ({len(result['stream']) - len(names)} tasks left): {result['continue_command']}")


def parse_args(argv: Sequence[str]) -> tuple[Path, Path, Path | None, list[str]]:
    from .cli import command_line, precheck_overrides

    release_dir = run_dir = pseudo_dir = None
    overrides: list[str] = []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\n" + _USAGE)
            raise SystemExit(0)
        key, sep, value = arg.partition("=")
        if key == "release_dir" and sep:
            release_dir = Path(value)
        elif key == "run_dir" and sep:
            run_dir = Path(value)
        elif key == "pseudo_dir" and sep:
            pseudo_dir = Path(value)
        else:
            overrides.append(arg)
    if release_dir is None or run_dir is None:
        raise ConfigError(f"release_dir= and run_dir= are required ({_USAGE})")
    overrides = command_line(overrides)
    precheck_overrides(overrides)  # an unknown group option or a malformed override: one line, exit 2
    return release_dir, run_dir, pseudo_dir, overrides


def main(argv: Sequence[str] | None = None) -> None:
    from .utils.logging import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()
    try:
        release_dir, run_dir, pseudo_dir, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        print_summary(import_release(release_dir, run_dir, overrides, pseudo_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
