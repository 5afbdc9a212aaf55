"""Ranges of a composed config's values, checked before anything is loaded or recorded.

The command line checks each override's type (`cli.py`); this checks what the values mean,
wherever they come from (a preset, an override, a saved run), so that `data.batch_size=-4`
is one line here instead of a traceback from a data loader after the run directory exists.
"""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from .data.collate import LABEL_EOS
from .errors import ConfigError
from .methods.registry import check_method
from .methods.sapt.reflection import ARM_TARGETS
from .rules import Rules, at_least, budget, check_rules, fraction, one_of, positive


#: The framework's keys; a method declares its own (`ContinualModule.rules`).
RULES: Rules = {
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
    """Raise ConfigError naming the first key whose value cannot work: the framework's keys, then
    the method's own (which also says whether it supports the PET type)."""
    check_rules(cfg, RULES)
    check_rules(cfg, check_method(cfg).rules)
    tasks = OmegaConf.select(cfg, "benchmark.tasks")
    if tasks is not None and not OmegaConf.is_list(tasks):
        raise ConfigError(f"benchmark.tasks={tasks!r} must be a list of task names, e.g. benchmark.tasks=[{tasks}]")
