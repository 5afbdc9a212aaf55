"""The method interface: a LightningModule with stream hooks.

The continual loop (cl/loop.py) calls, per task: `start_task` -> `Trainer.fit` ->
`end_task` -> `save_task`, then `generate_texts` on every seen task's test inputs.
Methods differ only behind these hooks; data, loop, metrics and logging are shared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig

from ..backbones import Backbone
from ..data.datamodule import ContinualDataModule, ReplayStream
from ..data.task import Example, Task
from ..errors import ConfigError, DataError, TrainingDiverged
from ..pet.lora import MixingState
from ..settings import MethodSettings
from ..utils import compiling
from ..utils.faults import maybe_fault

if TYPE_CHECKING:
    from ..cl.checkpoints import TaskCheckpoints
    from ..estimate import Counts

log = logging.getLogger(__name__)
#: The PET types a method can declare (`pet=`).
PET_TYPES = ("lora", "prompt")


def predicted_labels(labels: torch.Tensor, encoder_decoder: bool) -> torch.Tensor:
    """The labels a token loss scores: all of them for an encoder-decoder, all but the first of
    each row for a decoder-only model (position t predicts token t+1)."""
    return labels if encoder_decoder else labels[:, 1:]


def global_token_mean(logits: torch.Tensor, labels: torch.Tensor, encoder_decoder: bool) -> torch.Tensor:
    """Sum of this rank's token losses over the token count of all ranks, times the world size.

    DDP averages gradients over ranks, so this gives exactly the gradient of the mean over
    every token of the global batch - what one process with the whole batch computes - even
    when ranks hold different numbers of target tokens.
    """
    import torch.distributed as dist
    from torch.nn import functional as F

    if not encoder_decoder:
        logits = logits[:, :-1]  # the last position predicts no label
    labels = predicted_labels(labels, encoder_decoder)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )
    count = (labels != -100).sum().float()
    world = dist.get_world_size()
    dist.all_reduce(count)
    return total * world / count.clamp_min(1)


def after_last_output(decoded: str) -> str:
    """A decoder-only prediction as the release reads it (docs/method.md §5.2): whatever follows the
    last "Output:" of prompt + answer; "" when truncation cut "Output:" off the prompt (§11.19)."""
    _, marker, answer = decoded.rpartition("Output:")
    return answer.strip() if marker else ""


def replay_volume(fraction: float, n_train: int) -> int:
    """Examples kept from a task of n_train training examples for replay: int(fraction * n), at
    least one, as the release cuts its 2% sets (docs/method.md §4.3). SAPT, Replay and LFPT5 share it."""
    return max(1, int(fraction * n_train))


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant: it works with a frozen backbone
    whose inputs need no gradient. transformers 5 renamed the method; 4.x has the old name."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class ContinualModule(L.LightningModule):
    """A continual-learning method. A subclass declares, next to its code, everything the framework
    needs to know about it: its name (`@register_method`), the PET types it trains, the types and
    ranges of its own config keys (a settings dataclass), the checks it needs of a stream, and what `plan` counts
    for it."""

    #: `method=<name>`; set by `@register_method`.
    method_name: ClassVar[str] = ""
    #: The PET types it trains (`pet=`); required.
    pet_types: ClassVar[tuple[str, ...]] = ()
    #: True when each task trains a block of its own and all of them stay in memory (used together).
    block_per_task: ClassVar[bool] = False
    #: True when every task of the stream must be a classification task.
    classification_only: ClassVar[bool] = False
    #: Its typed settings (`method.*`): the keys every method has plus its own, with their types and
    #: ranges; checked before anything loads, and built once into `self.settings`.
    settings_class: ClassVar[type[MethodSettings]] = MethodSettings
    #: True when each task has a model of its own (method=single): earlier scores never change.
    isolated_tasks: bool = False
    #: True when the method trains once, on every task together, after the last (method=mtl).
    joint_training: bool = False

    # ----- declarations read before anything loads (config checks, plan) ----------------
    @classmethod
    def check_pet(cls, pet: str) -> None:
        if pet not in cls.pet_types:
            raise ConfigError(
                f"method={cls.method_name} does not support pet={pet}; it supports pet={'|'.join(cls.pet_types)}"
            )

    @classmethod
    def check_order(cls, method: DictConfig, order: list[str]) -> None:
        """Before any data loads: do the method's settings fit the stream's whole task order?"""

    @classmethod
    def check_tasks(cls, cfg: DictConfig, tasks: list[Task]) -> None:
        """Before any model loads: can the method run on these tasks?"""
        other = [t.name for t in tasks if not t.classification] if cls.classification_only else []
        if other:
            raise ConfigError(
                f"method={cls.method_name} needs classification tasks only; not classification here: "
                f"{', '.join(other[:4])}{' …' if len(other) > 4 else ''}. It runs on benchmark=long_sequence, "
                "or benchmark=synthetic benchmark.tasks=[topic,sentiment]"
            )

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        """Parameters for `plan`: trainable while learning a task, stored per task, stored after the
        stream, and resident in memory while training. Default: one PET block shared by the stream, or
        one per task with `block_per_task`."""
        block = cls.block_size(cfg, counts)
        resident = n_tasks * block if cls.block_per_task else block
        return {"trainable": block, "per_task": block, "total": n_tasks * block, "resident": resident}

    @staticmethod
    def block_size(cfg: DictConfig, counts: Counts) -> int:
        """Parameters of one PET block: a LoRA over every target linear, or a soft prompt."""
        if cfg.pet.type == "lora":
            return int(cfg.pet.r) * counts.target_width
        return int(cfg.pet.length) * counts.hidden

    @classmethod
    def prompt_tokens(cls, cfg: DictConfig, n_tasks: int) -> int:
        """Soft-prompt positions the method prepends to every input (they lengthen the sequence)."""
        return int(cfg.pet.length) if cfg.pet.type == "prompt" else 0

    @classmethod
    def graphs_per_step(cls, cfg: DictConfig) -> int:
        """Micro-batches whose activations a training step holds at once."""
        return 1

    @classmethod
    def between_tasks_batch(cls, cfg: DictConfig) -> dict[str, int] | None:
        """The data shape (batch_size, max_source_length, max_target_length) of a training step the
        method runs between tasks (SAPT's generator), for `plan`; None when it runs none."""
        return None

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__()
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        self.family = backbone.family
        self.target_modules = backbone.target_modules
        self.cfg = cfg
        self.settings = self.settings_class.from_config(cfg.method, "method")
        self.lr = self.settings.lr
        self.weight_decay = self.settings.weight_decay
        self.max_new_tokens = int(cfg.eval.max_new_tokens)
        self.task_index = -1
        self.mixing: MixingState | None = None  # methods that mix LoRA blocks per sample set it
        # Where the task being trained keeps its checkpoints (the loop sets it; steps between tasks use it).
        self.task_checkpoints: TaskCheckpoints | None = None
        # The release reads a LLaMA prediction from prompt + answer, after the last "Output:".
        self.release_predictions = cfg.fidelity.llama_prediction == "after_last_output"
        if cfg.trainer.gradient_checkpointing:
            enable_checkpointing(self.model)
        self.compile_mode: str | None = cfg.trainer.get("compile_mode")
        self.compiles = bool(cfg.trainer.get("compile"))

    # ----- stream hooks -------------------------------------------------------------
    def start_task(self, index: int, task: Task) -> list[Example]:
        """Prepare for task `index`; return extra training examples (replay) to mix in."""
        self.task_index = index
        if self.compiles:  # the task's new parameters make every graph compiled so far stale
            compiling.fresh_cache()
        # A joint fit (mtl) or a fresh model per task (single) has no "later task" to slow down for.
        self.lr = task_lr(self.settings, 0 if self.joint_training or self.isolated_tasks else index)
        self.train()  # the backbone's own dropout is active while learning, as released
        return []

    def attach_replay(self, data: ContinualDataModule) -> None:
        """Before fitting: hook up whatever replay data the method reads during training."""

    def replay_streams(self) -> list[ReplayStream]:
        """The replay batches the current fit draws from (attach_replay's), for its checkpoints."""
        return []

    # ----- checkpoints inside a task (cl/checkpoints.py) -------------------------------
    # A checkpoint holds the trainable parameters only: the rest is what the task's seeded start
    # built. Lightning loads it non-strictly; on_load_checkpoint checks that nothing is missing.
    strict_loading = False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["replay_drawn"] = [stream.drawn for stream in self.replay_streams()]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = [name for name, p in self.named_parameters() if p.requires_grad]
        missing = [name for name in trainable if name not in checkpoint["state_dict"]]
        streams, drawn = self.replay_streams(), checkpoint.get("replay_drawn", [])
        if missing or len(streams) != len(drawn):
            raise DataError(
                f"the checkpoint of task {self.task_index + 1} does not fit this task's model "
                f"({len(missing)} trainable tensors missing, e.g. {missing[:1]}; {len(drawn)} replay streams "
                f"saved, {len(streams)} now): delete it to restart the task's training"
            )
        for stream, n in zip(streams, drawn):
            stream.skip(n)

    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        """After fitting task `index`: compute what later tasks need."""

    def task_max_steps(self, index: int, n_tasks: int, max_steps: int) -> int:
        """Optimizer-step budget of task `index` (trainer.max_steps unless the method needs more)."""
        return max_steps

    def task_max_epochs(self, task: Task, max_epochs: int) -> int:
        """Epoch budget of `task` (trainer.max_epochs unless the method gives this task its own)."""
        return max_epochs

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        raise NotImplementedError

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        """Restore the state `save_task` wrote, as if task `index` had just been trained."""
        raise NotImplementedError

    # ----- training -----------------------------------------------------------------
    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        """What the backbone receives for this batch (methods may mix blocks or prepend prompts)."""
        keys = ("input_ids", "attention_mask") if generation else ("input_ids", "attention_mask", "labels")
        return {k: batch[k] for k in keys if k in batch}

    def task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token-level cross-entropy, averaged over the tokens of the whole (global) batch."""
        inputs = self.backbone_inputs(batch)
        outputs = self.step_model(**inputs)
        if not self.is_distributed():
            return outputs.loss  # the backbone's own mean: single-process runs are exactly as before
        return global_token_mean(outputs.logits, inputs["labels"], self.model.config.is_encoder_decoder)

    @property
    def step_model(self) -> torch.nn.Module:
        """The backbone as training forwards call it: compiled under trainer.compile=true (decoding
        and evaluation call `self.model`, eager)."""
        if not self.compiles:
            return self.model
        held = self.__dict__.get("_compiled_model")
        if held is None:
            held = compiling.compiled(self.model, self.compile_mode)
            # Outside the module tree: as a submodule its copy of the weights would join state_dict.
            object.__setattr__(self, "_compiled_model", held)
        return held

    def is_distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = self.task_loss(batch)
        return {"loss": loss, "task_loss": loss.detach()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch)
        finite = bool(torch.isfinite(losses["loss"]))
        if self.is_distributed():  # every rank stops together, none is left in the next all-reduce
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise TrainingDiverged(
                f"loss became {losses['loss'].item()} at step {self.global_step} of task {self.task_index + 1}; "
                "finished tasks are saved: lower method.lr (or check the data), then re-run with the same run directory"
            )
        if self.global_step == self.trainer.max_steps // 2:
            maybe_fault("mid_task", self.task_index)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=batch["input_ids"].shape[0])
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return self.make_optimizer([{"name": "trainable", "params": params, "lr": self.pet_lr()}])

    def pet_lr(self) -> float:
        """The PET parameters' learning rate: pet.lr when set, else method.lr."""
        return float(self.cfg.pet.lr or self.lr)

    def make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        """trainer.optimizer: AdamW (the release's), or Adafactor at a constant learning rate (the
        paper's for SAPT-Prompt, docs/method.md §2.8): no relative step, no scaling. The learning rate
        of each named group goes to the log, since several config keys can set one."""
        name = str(self.cfg.trainer.optimizer)
        log.info("%s: %s", name, ", ".join(f"{g['name']} lr {g['lr']:g}" for g in groups if g["params"]))
        if name == "adafactor":
            from transformers.optimization import Adafactor

            return Adafactor(
                groups,
                lr=groups[0]["lr"],
                scale_parameter=False,
                relative_step=False,
                warmup_init=False,
                weight_decay=self.weight_decay,
            )
        return torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=self.weight_decay)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----- inference (no task id) ---------------------------------------------------
    @contextmanager
    def in_eval_mode(self) -> Iterator[None]:
        """Eval mode (no dropout) inside the block, the mode it was in after it."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def generate_texts(self, batch: dict[str, torch.Tensor], **sampling: Any) -> list[str]:
        with self.in_eval_mode():  # before routing too: selection must never see training-mode behaviour
            return self.generate_from(self.backbone_inputs(batch, generation=True), **sampling)

    @torch.no_grad()
    def generate_ids(self, inputs: dict[str, torch.Tensor], **sampling: Any) -> torch.Tensor:
        """Token ids (a decoder-only model's prompt included). Greedy decoding by default (as
        released); `sampling` overrides generate() options."""
        options = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        options.update(sampling)
        with self.in_eval_mode(), self.mixing.fixed_blocks() if self.mixing is not None else nullcontext():
            return self.model.generate(
                **inputs, **options, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id
            )

    @torch.no_grad()
    def decoding_steps(self, batch: dict[str, torch.Tensor]) -> int:
        """Forwards greedy decoding makes on this batch: it stops when every row has ended."""
        with self.in_eval_mode():
            inputs = self.backbone_inputs({k: v.to(self.device) for k, v in batch.items()}, generation=True)
            out = self.generate_ids(inputs)
        if self.model.config.is_encoder_decoder:  # (a T5 output starts with the decoder's start token)
            return int(out.shape[1] - 1)
        # A decoder-only model returns the prompt ahead of its tokens, unless given embeddings alone.
        return int(out.shape[1] - (inputs["input_ids"].shape[1] if "input_ids" in inputs else 0))

    def generate_from(self, inputs: dict[str, torch.Tensor], **sampling: Any) -> list[str]:
        """Greedy decoding by default (as released); `sampling` overrides generate() options."""
        out = self.generate_ids(inputs, **sampling)
        if not self.model.config.is_encoder_decoder and "input_ids" in inputs:
            if self.release_predictions and not sampling:  # scoring, fidelity.llama_prediction=after_last_output
                return [after_last_output(t) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
            out = out[:, inputs["input_ids"].shape[1] :]  # decoder-only: drop the prompt
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def task_lr(method: MethodSettings, index: int) -> float:
    """Task `index`'s learning rate: method.lr, or from the second task on method.lr_after_first
    where set (O-LoRA's LLaMA script trains its first task at 1e-3 and the others at 1e-4)."""
    later = method.lr_after_first
    return later if index > 0 and later is not None else method.lr
