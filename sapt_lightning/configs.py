"""Where configs come from: the package's own tree, plus the user's folders.

The config tree ships inside the package (`sapt_lightning/conf`). A user's folder joins it
through Hydra's search path (`hydra.searchpath=[file://my_configs]`): its `method/`,
`backbone/`, ... groups add options beside the package's, and a method's Python module may
sit beside them (`methods.registry.import_user_module`). A `conf/` folder in the working
directory joins by itself, so a checkout's `conf/local/default.yaml` keeps applying.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from .errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
#: A working directory's own config folder, joined when it exists.
WORKDIR_CONF = "conf"
SEARCHPATH_KEY = "hydra.searchpath"

_user_dirs: list[Path] = []


def searchpath_entries(args: list[str]) -> list[str]:
    """The entries of a command line's `hydra.searchpath=[...]`, as written."""
    entries: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == SEARCHPATH_KEY:
            entries += filter(None, (e.strip().strip("'\"") for e in value.strip().strip("[]").split(",")))
    return entries


def searchpath_folders(args: list[str]) -> list[Path]:
    """The folders a command line's `hydra.searchpath=[...]` names (file:// entries or plain paths),
    each checked to exist; pkg:// entries are Python packages, left to Hydra."""
    folders: list[Path] = []
    for entry in searchpath_entries(args):
        if entry.startswith("pkg://"):
            continue
        folder = Path(re.sub(r"^file://", "", entry)).expanduser().resolve()
        if not folder.is_dir():
            raise ConfigError(f"{SEARCHPATH_KEY}: config folder '{entry}' does not exist ({folder})")
        folders.append(folder)
    return folders


def with_user_folders(args: list[str]) -> list[str]:
    """The command line with one `hydra.searchpath` override: the user's folders (checked), then the
    working directory's `conf/` if present. It also records them for `user_config_dirs`."""
    folders = searchpath_folders(args)
    workdir = Path(WORKDIR_CONF).resolve()
    if workdir.is_dir() and workdir != CONF_DIR and workdir not in folders:
        folders.append(workdir)
    set_user_config_dirs(folders)
    packages = [e for e in searchpath_entries(args) if e.startswith("pkg://")]
    rest = [a for a in args if a.partition("=")[0].lstrip("+~") != SEARCHPATH_KEY]
    if not folders and not packages:
        return rest
    override = f"{SEARCHPATH_KEY}=[{','.join([*(f'file://{f}' for f in folders), *packages])}]"
    # Beside the other overrides: Hydra's parser takes them as one run of arguments, and an
    # override after a flag (`sapt method=a,b -m`) would be refused.
    at = next((i for i, a in enumerate(rest) if "=" in a and not a.startswith("-")), 0)
    return [*rest[:at], override, *rest[at:]]


def set_user_config_dirs(folders: list[Path]) -> None:
    _user_dirs[:] = folders


def user_config_dirs() -> list[Path]:
    """The user's config folders of this process: those a command line named, else those of the
    running Hydra job (a job launched elsewhere, e.g. by SLURM, starts without the first)."""
    if _user_dirs:
        return list(_user_dirs)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    entries = HydraConfig.get().searchpath or []
    return [Path(str(e).removeprefix("file://")) for e in entries if not str(e).startswith("pkg://")]


def config_dirs() -> list[Path]:
    """The package's config tree, then the user's folders."""
    return [CONF_DIR, *user_config_dirs()]


def group_options(group: str) -> list[str]:
    """The options of a config group (`method`, `backbone`, ...) across every config folder."""
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def is_group(key: str) -> bool:
    return any((d / key.lstrip("+~")).is_dir() for d in config_dirs())


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The composed `train` config, as the app composes it, for the tools that run outside it
    (plan, sweep checks, evaluate); `with_hydra`: Hydra's own section too (`hydra.run.dir`).
    `overrides` come through `with_user_folders` first."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose("train", overrides=overrides, return_hydra_config=with_hydra)
    finally:
        GlobalHydra.instance().clear()
