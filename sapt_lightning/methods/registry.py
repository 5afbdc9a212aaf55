"""Methods by name. Each method declares itself where it is defined, with `@register_method`;
nothing else in the framework lists methods.

The package's own methods register when their modules are imported (every module under
`sapt_lightning.methods` is). A method outside the package names its Python module in its yaml
(`method.module`); the module is imported on first use, from `sys.path` or from a config folder
that joined through `hydra.searchpath` (`configs.user_config_dirs`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable
from typing import TypeVar

from omegaconf import DictConfig

from ..backbones import Backbone
from ..configs import user_config_dirs
from ..data.task import Task
from ..errors import ConfigError
from ..settings import MethodSettings
from .base import PET_TYPES, ContinualModule

M = TypeVar("M", bound=type[ContinualModule])
log = logging.getLogger(__name__)
_METHODS: dict[str, type[ContinualModule]] = {}


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: `method=<name>` builds this class. It checks the declarations the
    framework needs, so a method that lacks one fails when its module is imported, by name."""

    def register(cls: M) -> M:
        missing = missing_declarations(cls)
        if missing:
            raise ConfigError(f"method '{name}' ({cls.__module__}.{cls.__qualname__}) is missing {'; '.join(missing)}")
        if name in _METHODS and _qualified(_METHODS[name]) != _qualified(cls):
            raise ConfigError(f"method '{name}' is registered twice: {_METHODS[name].__module__} and {cls.__module__}")
        cls.method_name = name
        _METHODS[name] = cls
        return cls

    return register


def _qualified(cls: type) -> str:
    """A class's module and name: the same method defined again (a reloaded module, a re-run
    notebook cell) replaces its earlier definition rather than clashing with it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def missing_declarations(cls: type[ContinualModule]) -> list[str]:
    """What a method must declare: the PET types it trains, and how its per-task state is saved
    and restored (resume and `evaluate` reload finished tasks from disk)."""
    missing = []
    if not issubclass(cls, ContinualModule):
        return ["a base class: it must subclass sapt_lightning.methods.base.ContinualModule"]
    pet = getattr(cls, "pet_types", ())
    if not pet or not set(pet) <= set(PET_TYPES):
        missing.append(f"pet_types (a tuple of {', '.join(PET_TYPES)}; got {pet!r})")
    settings = getattr(cls, "settings_class", None)
    if not (isinstance(settings, type) and issubclass(settings, MethodSettings)):
        missing.append(
            f"settings_class (a dataclass subclassing sapt_lightning.settings.MethodSettings; got {settings!r})"
        )
    for hook in ("save_task", "load_task"):
        if getattr(cls, hook) is getattr(ContinualModule, hook):
            missing.append(f"{hook}(self, index, task, task_dir)")
    return missing


@functools.cache
def _import_builtin_methods() -> None:
    """Import every module under sapt_lightning.methods once: their decorators register them."""
    package = sys.modules[__package__]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{__package__}."):
        importlib.import_module(info.name)


def available() -> list[str]:
    _import_builtin_methods()
    return sorted(_METHODS)


def method_class(method: DictConfig) -> type[ContinualModule]:
    """The class that `method.name` names, importing `method.module` (a user's method) first."""
    if not method.get("name"):
        raise ConfigError("method.name is missing: a method's yaml names it (name: <the name it registers>)")
    name = str(method.name)
    _import_builtin_methods()
    if name not in _METHODS and method.get("module"):
        import_user_module(str(method.module), name)
    if name not in _METHODS:
        hint = (
            f"; module '{method.module}' registers no method '{name}' (decorate its class with "
            f"@register_method('{name}'))"
            if method.get("module")
            else ""
        )
        raise ConfigError(f"method '{name}' is not implemented{hint}; available: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def import_user_module(module: str, method: str) -> None:
    """Import a user's method module from the user config folder that holds it, else from sys.path.
    An error inside the module is one line naming it; the traceback goes to the log."""
    for folder in user_config_dirs():
        if (folder / f"{module}.py").is_file() or (folder / module / "__init__.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            _import(module, method)
            return
    try:
        _import(module, method)
        return
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0]:
            raise ConfigError(
                f"method '{method}': module '{module}' needs '{err.name}', which is not installed"
            ) from None
    places = ", ".join(str(p) for p in user_config_dirs()) or "none joined (hydra.searchpath)"
    raise ConfigError(
        f"method '{method}': its module '{module}' (method.module) is not importable and is in no user "
        f"config folder ({places}); put {module}.py beside the folder's method/ directory"
    )


def _import(module: str, method: str) -> None:
    try:
        importlib.import_module(module)
    except (ModuleNotFoundError, ConfigError):
        raise
    except Exception as err:
        log.exception("importing method module %s", module)
        raise ConfigError(
            f"method '{method}': importing its module '{module}' failed: {type(err).__name__}: {err}"
        ) from None


def check_method_tasks(cfg: DictConfig, tasks: list[Task]) -> None:
    """Before any model loads: can this method run on these tasks?"""
    method_class(cfg.method).check_tasks(cfg, tasks)


def check_method(cfg: DictConfig) -> type[ContinualModule]:
    """The method's class, once it is known to train this PET type."""
    cls = method_class(cfg.method)
    cls.check_pet(str(cfg.pet.type))
    return cls


def build_method(cfg: DictConfig, backbone: Backbone) -> ContinualModule:
    return check_method(cfg)(backbone, cfg)
