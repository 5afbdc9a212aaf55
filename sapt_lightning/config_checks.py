"""A composed config's values, checked before anything is loaded or recorded.

The command line checks each override's type (`cli.py`); this checks every value against its
section's typed settings (settings.py, and the method's own), wherever it comes from (a preset, an
override, a saved run), so that `data.batch_size=-4` is one line here instead of a traceback from
a data loader after the run directory exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from .errors import ConfigError
from .methods.registry import check_method
from .settings import RunSettings, SyntheticSizes, pet_settings

# Resolved by Hydra inside the job only (paths.output_dir is the job's directory): not checked here.
_RESOLVED_BY_THE_JOB = ("paths", "hydra")


def check_resolvable(cfg: DictConfig) -> None:
    """Every interpolation resolves: a paper preset asks the backbone for its settings on the
    benchmark (`${backbone.paper.<benchmark>.batch_size}`), which no backbone has for the
    synthetic benchmark. Say which key and what it points at, not OmegaConf's traceback."""
    for section in cfg:
        if section in _RESOLVED_BY_THE_JOB:
            continue
        try:
            value = cfg[section]  # a scalar resolves here, a section below
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True)
        except InterpolationResolutionError as err:
            key = getattr(err, "full_key", None) or section
            raise ConfigError(
                f"{key} cannot be resolved: {_unresolved_reason(cfg, str(err).splitlines()[0])}"
            ) from None


def resolved_path(cfg: DictConfig, key: str) -> Path:
    """The path at `key` (`paths.cache_dir`, `hydra.run.dir`), or one line saying why it cannot be
    resolved (an unset environment variable in `${oc.env:...}`, a missing key)."""
    try:
        return Path(str(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))).expanduser()
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key} cannot be resolved: {_unresolved_reason(cfg, str(err).splitlines()[0])}") from None


def _unresolved_reason(cfg: DictConfig, message: str) -> str:
    missing = re.search(r"Interpolation key '([^']+)' not found", message)
    paper = f"backbone.paper.{OmegaConf.select(cfg, 'benchmark.name', default='?', throw_on_resolution_failure=False)}"
    if missing and missing.group(1).startswith(paper):
        name = OmegaConf.select(cfg, "backbone.name", default="?", throw_on_resolution_failure=False)
        return (
            f"the paper presets (experiment=...) read the backbone's settings for the benchmark ({paper}), which "
            f"backbone={name} does not have; a preset runs a paper backbone on its own benchmark (superni, "
            "long_sequence): drop the benchmark= or backbone= override, or the experiment="
        )
    unset = re.search(r"Environment variable '([^']+)' not found", message)
    if unset:
        return f"the environment variable {unset.group(1)} is not set; set it, or give the key a value"
    return f"{message}; set the key it points at on the command line"


def check_values(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work: the framework's sections
    (settings.py), the PET type's, then the method's own (`settings_class`), once the method is
    known to train this PET type."""
    tasks = OmegaConf.select(cfg, "benchmark.tasks")
    if tasks is not None and not OmegaConf.is_list(tasks):
        raise ConfigError(f"benchmark.tasks={tasks!r} must be a list of task names, e.g. benchmark.tasks=[{tasks}]")
    RunSettings.from_config(cfg, "")
    check_llama_target_weighting(cfg)
    check_length_grouping(cfg)
    if cfg.benchmark.name == "synthetic":
        SyntheticSizes.from_config(cfg.benchmark, "benchmark")
    pet_settings(cfg)
    check_method(cfg).settings_class.from_config(cfg.method, "method")


def check_length_grouping(cfg: DictConfig) -> None:
    """Batches grouped by length change which rows share a batch's padding: harmless where pooling
    masks padding, a change of results where padding joins the routing (the release's pooling)."""
    if cfg.data.group_by_length and not cfg.fidelity.mask_padding_in_pooling:
        raise ConfigError(
            "data.group_by_length=true needs fidelity.mask_padding_in_pooling=true: with the release's "
            "pooling, padding joins the routing and grouping would change results; set data.group_by_length=null"
        )


def check_llama_target_weighting(cfg: DictConfig) -> None:
    """The release's decoding-step weights apply to its batch means, on a decoder-only backbone (on
    T5 the switch has no effect, so `fidelity=official fidelity.arm_target=per_example` stays valid)."""
    f = cfg.fidelity
    weighs = f.get("llama_arm_target_weighting") == "decoding_steps" and cfg.backbone.get("family") == "llama"
    if weighs and f.arm_target != "batch_means":
        raise ConfigError(
            "fidelity.llama_arm_target_weighting=decoding_steps weighs the release's batch means: it needs "
            f"fidelity.arm_target=batch_means (got {f.arm_target}); or set it to null"
        )
