"""Check command-line overrides before Hydra runs: one clear line per mistake.

Hydra's own messages for an unknown group option or key span several lines and
hint at environment variables; this catches the common cases first.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from .configs import compose, group_options, is_group, with_user_folders
from .errors import ConfigError, UserError


def command_line(args: list[str]) -> list[str]:
    """A tool's overrides, ready for Hydra: the user's config folders joined (each checked to exist)
    and numeric group choices quoted. One line and exit 2 for a folder that does not exist."""
    try:
        return quote_numeric_choices(with_user_folders(args))
    except ConfigError as err:
        _fail(str(err))
        raise  # unreachable: _fail exits


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


_NUMERIC_CHOICE = re.compile(r"^[0-9]+(,[0-9]+)*$")


def quote_numeric_choices(args: list[str]) -> list[str]:
    """`order=1` -> `order='1'`: Hydra parses a bare 1 as an int, which it rejects for a group."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and is_group(key) and _NUMERIC_CHOICE.match(value):
            arg = f"{key}=" + ",".join(f"'{v}'" for v in value.split(","))
        out.append(arg)
    return out


def searches(args: list[str]) -> bool:
    """`hparams_search=<name>` makes the command an Optuna sweep (its config sets hydra.mode)."""
    return any(a.partition("=")[0] == "hparams_search" and a.partition("=")[2] not in ("", "null") for a in args)


def check_launcher(args: list[str]) -> None:
    """A SLURM launcher needs its Hydra plugin and `sbatch`, a search the Optuna sweeper; say so
    before anything starts."""
    if searches(args):
        try:
            import hydra_plugins.hydra_optuna_sweeper
        except ImportError:
            _fail(
                "hparams_search needs the Hydra Optuna sweeper: pip install hydra-optuna-sweeper "
                "(or pip install -e .[search])"
            )
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") != "hydra/launcher" or not ("slurm" in value or "submitit" in value):
            continue
        try:
            import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        except ImportError:
            _fail(
                f"{arg} needs the Hydra submitit plugin: pip install hydra-submitit-launcher (or pip install -e .[slurm])"
            )
        if "local" not in value and shutil.which("sbatch") is None:
            _fail(
                f"{arg} submits jobs to SLURM, but sbatch is not on PATH here; run the sweep from the cluster's "
                "login node, or leave out hydra/launcher to run the jobs one after another on this machine"
            )


def is_multirun(args: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in args) or searches(args)


def searchpath_args(args: list[str]) -> list[str]:
    """The command line's `hydra.searchpath=` arguments, passed on to every compose."""
    return [a for a in args if a.startswith("hydra.searchpath=")]


def user_overrides(args: list[str]) -> list[str]:
    """The config overrides of a command line: no flags, none of Hydra's own settings."""
    return [a for a in args if "=" in a and not a.startswith(("hydra.", "hydra/", "-"))]


def check_run_dirs(args: list[str]) -> None:
    """Hydra creates the run (or sweep) directory before the job starts: an existing file there
    would end in its traceback."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and Path(value.strip("'\"")).is_file():
            _fail(f"{key}={value} is a file, not a directory; point it at a directory")


def precheck_overrides(args: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    check_launcher(args)
    check_run_dirs(args)
    user = user_overrides(args)
    try:
        overrides = OverridesParser.create().parse_overrides(user)
    except HydraException as err:
        _fail(f"cannot parse overrides: {str(err).splitlines()[0]}")
    group_choices: list[str] = searchpath_args(args)
    for ov in overrides:
        key = ov.key_or_group
        if ov.is_delete() or ov.is_add() or ov.is_force_add():
            continue
        if is_group(key):
            valid = group_options(key)
            values = (
                [str(v) for v in ov.sweep_string_iterator()]
                if ov.is_sweep_override()
                else [ov.get_value_element_as_str()]
            )
            for value in values:
                for item in value.strip("[]").split(","):
                    item = item.strip().strip("'\"")
                    if item and item not in valid and item != "null" and not item.startswith("glob("):
                        _fail(f"unknown option '{item}' for {key}=; valid: {', '.join(valid)}")
            if not ov.is_sweep_override():
                group_choices.append(f"{key}={values[0]}")
    keys = [
        ov
        for ov in overrides
        if not is_group(ov.key_or_group) and not (ov.is_delete() or ov.is_add() or ov.is_force_add())
    ]
    if keys:
        _check_keys(keys, group_choices)


def _check_keys(overrides: list, group_choices: list[str]) -> None:
    from omegaconf import OmegaConf

    try:
        cfg = compose(group_choices)
    except Exception:
        return
    for ov in overrides:
        key = ov.key_or_group
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or not OmegaConf.is_dict(node) or leaf not in node:
            options = sorted(node.keys()) if node is not None and OmegaConf.is_dict(node) else []
            hint = f"; keys under {parent or 'the root'}: {', '.join(map(str, options))}" if options else ""
            _fail(f"unknown config key '{key}' (add it with +{key}=... if intended){hint}")
        _check_type(key, _default_value(node, leaf), ov)


def _default_value(node, leaf: str) -> object:
    """The config's value at `leaf`: resolved where it can be (`method.lr: ${.lr_by_pet.${pet.type}}` is a
    number), else as written (${hydra:...} cannot resolve outside a Hydra run)."""
    raw = node._get_node(leaf)._value()
    if isinstance(raw, str) and "${" in raw:
        try:
            return node[leaf]
        except Exception:
            return raw
    return raw


def _check_type(key: str, default: object, override) -> None:
    """A number where the config holds a number, a boolean where it holds one: `trainer.max_steps=abc`
    is caught here, not deep in a library, and `trainer.gradient_checkpointing=maybe` is not read as true."""
    if ov_is_sweep(override):
        return
    value = override.value()
    if isinstance(default, bool):
        if not isinstance(value, bool):
            _fail(
                f"{key} must be true or false (default {str(default).lower()}), "
                f"got '{override.get_value_element_as_str()}'"
            )
        return
    if not isinstance(default, (int, float)):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if value is None:
            return
        kind = "an integer" if isinstance(default, int) else "a number"
        _fail(f"{key} must be {kind} (default {default}), got '{override.get_value_element_as_str()}'")


def precheck_sweep(args: list[str]) -> None:
    """Before a multirun starts its first job: compose every point of the sweep and check it
    (run.check_config), so a combination that cannot work fails now, not after the jobs before it
    have trained."""
    if not is_multirun(args):
        return
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # Hydra's own expansion of a sweep
    from hydra.core.override_parser.overrides_parser import OverridesParser

    user = user_overrides(args)
    searchpath = searchpath_args(args)
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(user), None)
    jobs = [job for batch in batches for job in batch]
    if len(jobs) < 2:
        return
    from .errors import UserError
    from .run import check_config

    for number, job in enumerate(jobs):
        try:
            check_config(compose([*job, *searchpath]))
        except UserError as err:
            _fail(f"sweep job {number} ({' '.join(job)}): {err}; nothing was started")


def precheck_run_dir(args: list[str]) -> None:
    """Before Hydra creates the run directory and records the command in it (`.hydra/`): refuse a
    directory that cannot be resolved or written, that a live run holds, or that holds a run of
    another config, so that a refused command changes nothing there. Sweeps: the sweep directory
    is checked here, each job's own folder by the job (their folders are numbered)."""
    from .config_checks import resolved_path
    from .reporting.results import CONFIG_FILE
    from .utils import run_lock
    from .utils.paths import check_output_dir

    key = "hydra.sweep.dir" if is_multirun(args) else "hydra.run.dir"
    try:
        # Only what places the directory: a sweep's other arguments are lists that compose refuses.
        placing = [
            a for a in args if a.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "paths.", "hydra.searchpath="))
        ]
        run_dir = resolved_path(compose(placing, with_hydra=True), key)
        check_output_dir(key, run_dir)
    except UserError as err:
        _fail(str(err))
    if is_multirun(args) or not run_dir.is_dir():
        return
    pid = run_lock.holder(run_dir)
    if pid is not None:
        _fail(str(run_lock.in_use(run_dir, pid)))
    if (run_dir / CONFIG_FILE).is_file():  # a re-run: only then is the config composed here
        from .run import refuse_other_config

        try:
            refuse_other_config(compose([*user_overrides(args), *searchpath_args(args)]), run_dir)
        except UserError as err:
            _fail(str(err))


def ov_is_sweep(override) -> bool:
    return override.is_sweep_override()


def config_tool(argv: list[str] | None, action: Callable[[DictConfig], str]) -> int:
    """A tool that takes a run's overrides: compose them, print what `action` makes of the config,
    exit 0; a user's mistake is one line on stderr and exit 2."""
    args = command_line(sys.argv[1:] if argv is None else argv)
    precheck_overrides(args)
    from .config_checks import check_resolvable

    try:
        cfg = compose(args)
        check_resolvable(cfg)
        print(action(cfg))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
