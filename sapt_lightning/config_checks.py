"""Ranges of a composed config's values, checked before anything is loaded or recorded.

The command line checks each override's type (`cli.py`); this checks what the values mean,
wherever they come from (a preset, an override, a saved run), so that `data.batch_size=-4`
is one line here instead of a traceback from a data loader after the run directory exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from .errors import ConfigError
from .methods.sapt.attention import QUERY_NETS
from .methods.sapt.reflection import ARM_TARGETS
from .methods.sapt.selector import LEARNING_MODES
from .methods.sapt.selector import MODES as SELECTION_MODES
from .data.collate import LABEL_EOS
from .pet.lora import MIXING_MODES


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def at_least(n: int) -> tuple[str, Callable[[Any], bool]]:
    return f"an integer >= {n}", lambda v: _whole(v) and v >= n


def positive() -> tuple[str, Callable[[Any], bool]]:
    return "a number > 0", lambda v: _number(v) and v > 0


def fraction(upper_included: bool) -> tuple[str, Callable[[Any], bool]]:
    if upper_included:
        return "a fraction in (0, 1]", lambda v: _number(v) and 0 < v <= 1
    return "a fraction in [0, 1)", lambda v: _number(v) and 0 <= v < 1


def one_of(*choices: str) -> tuple[str, Callable[[Any], bool]]:
    return " or ".join(choices), lambda v: v in choices


def non_negative() -> tuple[str, Callable[[Any], bool]]:
    return "a number >= 0", lambda v: _number(v) and math.isfinite(v) and v >= 0


def budget() -> tuple[str, Callable[[Any], bool]]:
    return "-1 (no limit) or an integer >= 1", lambda v: _whole(v) and (v == -1 or v >= 1)


# key -> (requirement, test, null allowed)
RULES: dict[str, tuple[str, Callable[[Any], bool], bool]] = {
    "data.batch_size": (*at_least(1), False),
    "data.eval_batch_size": (*at_least(1), False),
    "data.max_source_length": (*at_least(1), False),
    "data.max_target_length": (*at_least(1), False),
    "data.num_workers": (*at_least(0), False),
    "data.dev_from_train": (*fraction(False), False),
    "data.test_from_train": (*fraction(False), False),
    "eval.max_new_tokens": (*at_least(1), False),
    "trainer.max_steps": (*budget(), False),
    "trainer.max_epochs": (*budget(), False),
    "trainer.accumulate_grad_batches": (*at_least(1), False),
    "strategy.devices": (*at_least(1), False),
    "strategy.num_nodes": (*at_least(1), False),
    "benchmark.num_tasks": (*at_least(1), True),
    "pet.r": (*at_least(1), False),
    "pet.length": (*at_least(1), False),
    "pet.lr": (*positive(), True),
    "method.lr": (*positive(), False),
    "method.lr_after_first": (*positive(), True),
    "method.sapt.attn_lr": (*positive(), True),
    "method.sapt.key_lr": (*positive(), True),
    "method.arm.kl_weight": (*non_negative(), False),
    "method.lambda_orth": (*non_negative(), False),
    "method.lambda_l2": (*non_negative(), False),
    "method.arm.pseudo_fraction": (*fraction(True), False),
    "method.replay_fraction": (*fraction(True), False),
    "method.generator.steps": (*at_least(0), False),
    "method.generator.batch_size": (*at_least(1), False),
    "method.generator.micro_batch_size": (*at_least(1), True),
    "method.generator.max_target_length": (*at_least(1), False),
    "method.generator.max_new_tokens": (*at_least(1), False),
    "method.sapt.mixing": (*one_of(*MIXING_MODES), False),
    "method.sapt.query_net": (*one_of(*QUERY_NETS), False),
    "method.sapt.learning": (*one_of(*LEARNING_MODES), False),
    "method.sapt.selection": (*one_of(*SELECTION_MODES), False),
    "fidelity.arm_target": (*one_of(*ARM_TARGETS), False),
    "fidelity.multi_reference": (*one_of("best", "random"), False),
    "fidelity.pseudo_instruction": (*one_of("own", "one"), False),
    "fidelity.superni_metric": (*one_of("per_task", "rougeL"), False),
    "fidelity.llama_prediction": (*one_of("continuation", "after_last_output"), False),
    "fidelity.llama_label_eos": (*one_of(*LABEL_EOS), False),
    "fidelity.llama_replay_pooling": (*one_of("prompt", "prompt_answer_eos"), False),
    "resume": (*one_of("auto", "force"), False),
    "trainer.optimizer": (*one_of("adamw", "adafactor"), False),
}


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
            raise ConfigError(f"{key} cannot be resolved: {_unresolved_reason(cfg, str(err).splitlines()[0])}") from None


def _unresolved_reason(cfg: DictConfig, message: str) -> str:
    missing = re.search(r"Interpolation key '([^']+)' not found", message)
    paper = f"backbone.paper.{OmegaConf.select(cfg, 'benchmark.name', default='?', throw_on_resolution_failure=False)}"
    if missing and missing.group(1).startswith(paper):
        name = OmegaConf.select(cfg, "backbone.name", default="?", throw_on_resolution_failure=False)
        return (f"the paper presets (experiment=...) read the backbone's settings for the benchmark ({paper}), which "
                f"backbone={name} does not have; a preset runs a paper backbone on its own benchmark (superni, "
                "long_sequence): drop the benchmark= or backbone= override, or the experiment=")
    return f"{message}; set the key it points at on the command line"


def check_values(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    for key, (requirement, ok, nullable) in RULES.items():
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue  # a key of another method or PET type
        value = OmegaConf.select(cfg, key)
        if value is None and nullable:
            continue
        if not ok(value):
            raise ConfigError(f"{key}={value!r} cannot work: it must be {requirement}")
    tasks = OmegaConf.select(cfg, "benchmark.tasks")
    if tasks is not None and not OmegaConf.is_list(tasks):
        raise ConfigError(f"benchmark.tasks={tasks!r} must be a list of task names, e.g. benchmark.tasks=[{tasks}]")


_ABSENT = object()
