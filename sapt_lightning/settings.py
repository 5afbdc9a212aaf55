"""Typed settings: each config section's keys with their types, choices and ranges, declared once.

A section's dataclass names its keys; the yaml holds their default values (what a user reads and
overrides); `from_config` builds the dataclass from the composed config once, and refuses a
missing key, a value of the wrong type, a choice that does not exist or a value out of range with
one line naming the key. Keys a dataclass does not declare are left alone: a preset may add its
own, and a debug config may set a key of another method.

A method declares its own section (`ContinualModule.settings_class`, a subclass of
`MethodSettings`) next to its code and reads `self.settings`; the framework's sections are below.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Literal, TypeVar

from omegaconf import DictConfig, OmegaConf

from .data.collate import LABEL_EOS
from .errors import ConfigError
from .rules import Rule, at_least, budget, fraction, non_negative, positive

S = TypeVar("S", bound="Settings")


def setting(rule: Rule | None = None) -> Any:
    """A key whose value must also satisfy `rule` (its type is the field's annotation)."""
    return dataclasses.field(metadata={"rule": rule} if rule else {})


@dataclasses.dataclass(frozen=True)
class Settings:
    """A config section, typed. Subclasses are frozen dataclasses whose fields have no defaults."""

    @classmethod
    def from_config(cls: type[S], node: Any, prefix: str) -> S:
        if not OmegaConf.is_dict(node) and not isinstance(node, dict):
            raise ConfigError(f"{prefix}={node!r} cannot work: it must be a section of keys")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            if f.name not in node:
                raise ConfigError(f"{key} is missing: the config must set it")
            values[f.name] = _checked(key, node[f.name], hints[f.name], f.metadata.get("rule"))
        return cls(**values)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _checked(key: str, value: Any, hint: Any, rule: Rule | None) -> Any:
    """`value` as the type `hint` declares, or ConfigError naming `key`."""
    if hint is Any:  # the section checks it itself, with messages of its own
        return _plain(value)
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key}=None cannot work: it must be {_describe(hint, rule)}")
    for kind in (a for a in allowed if a is not type(None)):
        converted = _as(kind, value, key)
        if converted is not _NO:
            if rule and not rule[1](converted):
                break
            return converted
    raise ConfigError(f"{key}={_plain(value)!r} cannot work: it must be {_describe(hint, rule)}")


_NO = object()


def _as(kind: Any, value: Any, key: str) -> Any:
    if isinstance(kind, type) and issubclass(kind, Settings):
        return kind.from_config(value, key)
    if typing.get_origin(kind) is Literal:
        return value if value in typing.get_args(kind) else _NO
    if kind is bool:
        return value if isinstance(value, bool) else _NO
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if kind is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO
    if kind is str:
        return value if isinstance(value, str) else _NO
    if kind is dict:
        return _plain(value) if OmegaConf.is_dict(value) or isinstance(value, dict) else _NO
    if kind in (list, tuple) or typing.get_origin(kind) in (list, tuple):
        return tuple(_plain(value)) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else _NO
    return _plain(value)  # Any, dict: kept as plain Python


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any, rule: Rule | None) -> str:
    """The requirement, as the error line says it."""
    allowed = typing.get_args(hint) if _is_union(hint) else (hint,)
    words = []
    for kind in allowed:
        if kind is type(None):
            continue
        if rule:
            words.append(rule[0])
        elif typing.get_origin(kind) is Literal:
            words.append(" or ".join(map(str, typing.get_args(kind))))
        else:
            names = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping"}
            words.append(names.get(kind, "a list"))
    return " or ".join(dict.fromkeys(words))


# ----- the framework's sections ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataSettings(Settings):
    batch_size: int = setting(at_least(1))
    eval_batch_size: int = setting(at_least(1))
    max_source_length: int = setting(at_least(1))
    max_target_length: int = setting(at_least(1))
    num_workers: int = setting(at_least(0))
    dev_from_train: float = setting(fraction(False))
    test_from_dev: bool = setting()
    test_from_train: float = setting(fraction(False))
    group_by_length: bool | None = setting()  # null is off (runs recorded before the key resume)


@dataclasses.dataclass(frozen=True)
class EvalSettings(Settings):
    max_new_tokens: int = setting(at_least(1))
    unseen_tasks: list = setting()


@dataclasses.dataclass(frozen=True)
class TrainerSettings(Settings):
    max_steps: int = setting(budget())
    max_epochs: int = setting(budget())
    accumulate_grad_batches: int = setting(at_least(1))
    gradient_clip_val: float | None = setting()
    log_every_n_steps: int = setting(at_least(1))
    enable_progress_bar: bool = setting()
    gradient_checkpointing: bool = setting()
    optimizer: Literal["adamw", "adafactor"] = setting()
    checkpoint_every_n_steps: int = setting(at_least(0))
    compile: bool | None = setting()  # null is off (runs recorded before the key resume)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = setting()

    def __post_init__(self) -> None:
        if self.max_steps == -1 and self.max_epochs == -1:
            raise ConfigError(
                "trainer.max_steps=-1 and trainer.max_epochs=-1: each task would train forever; "
                "set one of them (e.g. trainer.max_steps=1000)"
            )


@dataclasses.dataclass(frozen=True)
class StrategySettings(Settings):
    name: str = setting()
    accelerator: str = setting()
    devices: int = setting(at_least(1))
    num_nodes: int = setting(at_least(1))
    precision: str | int = setting()  # Lightning's names ("bf16-mixed") or a bit width (32)
    strategy: str = setting()
    check_memory: bool | None = setting()  # GPU strategies: refuse a run whose estimate exceeds the GPU


@dataclasses.dataclass(frozen=True)
class LoRASettings(Settings):
    type: Literal["lora"] = setting()
    r: int = setting(at_least(1))
    alpha: float = setting(positive())
    dropout: float = setting(fraction(False))
    lr: float | None = setting(positive())


@dataclasses.dataclass(frozen=True)
class PromptSettings(Settings):
    type: Literal["prompt"] = setting()
    length: int = setting(at_least(1))
    lr: float | None = setting(positive())


@dataclasses.dataclass(frozen=True)
class FidelitySettings(Settings):
    """The switches between the authors' release (official) and the corrected computation (clean);
    docs/method.md §11 says what each one changes."""

    name: str = setting()
    mask_padding_in_pooling: bool = setting()
    grad_through_finished_blocks: bool = setting()
    arm_target: Literal["per_example", "batch_means"] = setting()
    kl_scaled_by_accumulation: bool = setting()
    replay_from_step: int = setting(at_least(0))
    pseudo_instruction: Literal["own", "one"] = setting()
    llama_prediction: Literal["continuation", "after_last_output"] = setting()
    superni_metric: Literal["per_task", "rougeL"] = setting()
    multi_reference: Literal["best", "random"] = setting()
    llama_replay_pooling: Literal["prompt", "prompt_answer_eos"] = setting()
    llama_label_eos: Literal[LABEL_EOS] = setting()
    # Added later: null is off (what the code did before them), so a run recorded before them resumes.
    llama_query_init: Literal["backbone_normal"] | None = setting()
    llama_arm_target_weighting: Literal["decoding_steps"] | None = setting()
    arm_target_dtype: Literal["bfloat16"] | None = setting()
    lora_dropout_masks: Literal["per_block"] | None = setting()


@dataclasses.dataclass(frozen=True)
class MethodSettings(Settings):
    """The keys every method has (conf/train.yaml's `method:`); a method's own class adds the rest."""

    name: str = setting()
    module: str | None = setting()
    lr: float = setting(positive())
    lr_after_first: float | None = setting(positive())
    weight_decay: float = setting(non_negative())
    paper_name: dict = setting()  # pet type -> the method's row in the paper's tables (reports)


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings(Settings):
    """The keys every benchmark has; its own (folder, template, sizes of the synthetic tasks) are read by
    data/benchmarks.py, which checks them with the data."""

    name: str = setting()
    tasks: list | None = setting()
    num_tasks: int | None = setting(at_least(1))
    max_train_per_task: int | None = setting(at_least(1))
    max_eval_per_task: int | None = setting(at_least(1))


@dataclasses.dataclass(frozen=True)
class SyntheticSizes(Settings):
    """The synthetic benchmark's own keys: an empty train or test split cannot be trained or scored."""

    train_per_task: int = setting(at_least(1))
    dev_per_task: int = setting(at_least(0))
    test_per_task: int = setting(at_least(1))


@dataclasses.dataclass(frozen=True)
class RunSettings(Settings):
    """The framework's sections of a composed config (the method's and the benchmark's are their own)."""

    seed: int = setting()
    resume: Literal["auto", "force"] = setting()
    data: DataSettings = setting()
    eval: EvalSettings = setting()
    trainer: TrainerSettings = setting()
    strategy: StrategySettings = setting()
    fidelity: FidelitySettings = setting()
    benchmark: BenchmarkSettings = setting()


def pet_settings(cfg: DictConfig) -> LoRASettings | PromptSettings:
    kind = LoRASettings if cfg.pet.type == "lora" else PromptSettings
    return kind.from_config(cfg.pet, "pet")
