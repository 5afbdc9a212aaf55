"""Pseudo-sample generation for ARM (docs/method.md §4).

One generator per task: a standard peft LoRA adapter ("generator") on the frozen
backbone learns to write the task's input part - `<instruction> __inp__ <input>` -
from the marker `__gen__` (with `generate_outputs`, also ` __ans__ <output>`, for the
+Replay ablation). It then samples pseudo inputs (top-k 20, repetition penalty 2.5).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from ..cl.checkpoints import TaskCheckpoints, load_state, save_state
from ..data.collate import Collator
from ..data.task import Example, Task
from ..utils import preemption, rng
from ..utils.faults import maybe_fault
from ..utils.phases import timed_as
from ..utils.progress import progress
from ..utils.rng import seeded
from .base import predicted_labels

log = logging.getLogger(__name__)

GEN, INP, ANS = "__gen__", "__inp__", "__ans__"
ADAPTER = "generator"
SOURCE_LENGTH = 8  # the generator reads the marker (and writes the input part, up to max_target_length)


@dataclass
class GeneratorSettings:
    r: int
    alpha: float
    lr: float
    steps: int
    batch_size: int
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
    generate_outputs: bool
    micro_batch_size: int | None = None  # rows per forward/backward of a step; None: the whole batch
    dropout: float = 0.0
    max_target_length: int = 256  # tokens of the written input part it trains on


def generator_config(target_modules: list[str], settings: GeneratorSettings) -> LoraConfig:
    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(target_modules)
    )


def generator_layers(model: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer) and ADAPTER in getattr(m, "lora_A", {})]


def set_generator_active(model: torch.nn.Module, active: bool) -> None:
    for layer in generator_layers(model):
        layer.enable_adapters(active)
        for name in ("lora_A", "lora_B"):
            getattr(layer, name)[ADAPTER].requires_grad_(active)


def generator_target(example: Example, with_output: bool) -> str:
    text = f"{example.definition.strip()} {INP} {example.input}"
    return f"{text} {ANS} {example.target}" if with_output else text


def parse_generation(text: str, with_output: bool) -> Example | None:
    """`instruction __inp__ input [__ans__ output]` -> Example; None when unusable."""
    if INP not in text:
        return None
    definition, _, rest = text.partition(INP)
    output = ""
    if ANS in rest:
        rest, _, output = rest.partition(ANS)
    elif with_output:
        return None
    if ANS in definition or not rest.strip():
        return None
    return Example(definition=definition.strip(), input=rest.strip(), outputs=(output.strip(),))


@timed_as("generator_training")
def train_generator(
    module, task: Task, settings: GeneratorSettings, seed: int, checkpoints: TaskCheckpoints | None = None
) -> None:
    """Fit the generator adapter on task's train set (mixing off, only the adapter trains).
    With `checkpoints`, its state is saved as the task's fit is (cl/checkpoints.py) and a saved
    one is resumed: the same steps, the same draws."""
    model = module.model
    layers = generator_layers(model)
    torch.manual_seed(seed)
    for layer in layers:
        layer.reset_lora_parameters(ADAPTER, True)
    set_generator_active(model, True)
    params = [p for layer in layers for n in ("lora_A", "lora_B") for p in getattr(layer, n)[ADAPTER].parameters()]
    opt = torch.optim.AdamW(params, lr=settings.lr)
    collate = Collator(
        module.tokenizer, module.family, "long_sequence", SOURCE_LENGTH, settings.max_target_length, with_labels=True
    )
    rows = [Example("", GEN, (generator_target(ex, settings.generate_outputs),)) for ex in task.train]
    draws = random.Random(seed)
    start = _resume_generator(checkpoints, params, opt, draws) if checkpoints else 0
    model.train()
    with progress(f"training the generator for {task.name}", settings.steps - start, "steps") as shown:
        for step in range(start, settings.steps):
            batch = collate(draws.sample(rows, min(settings.batch_size, len(rows))))
            batch = {k: v.to(module.device) for k, v in batch.items()}
            loss = accumulate_step(module.step_model, batch, settings.micro_batch_size)  # compiled with trainer.compile
            opt.step()
            opt.zero_grad(set_to_none=True)
            shown.update()
            shown.show(loss=loss.item())
            if step == settings.steps // 2:
                maybe_fault("mid_generator", module.task_index)
            if checkpoints:
                _checkpoint_generator(checkpoints, step + 1, params, opt, draws)
    model.eval()


def _checkpoint_generator(
    checkpoints: TaskCheckpoints, done: int, params: list, opt: torch.optim.Optimizer, draws: random.Random
) -> None:
    """After step `done`: save when due or when a stop is requested, then stop if one is."""
    stop = preemption.requested() is not None
    if stop or checkpoints.due(done):
        state = {
            "step": done,
            "params": [p.detach().cpu() for p in params],
            "optimizer": opt.state_dict(),
            "draws": draws.getstate(),
            "rng": rng.capture(),
        }
        save_state(checkpoints.generator_file, state)
    if stop:
        preemption.stop_if_requested(f"{checkpoints.label}: its generator's training saved at step {done}")


def _resume_generator(
    checkpoints: TaskCheckpoints, params: list, opt: torch.optim.Optimizer, draws: random.Random
) -> int:
    """Load a saved generator state into the fresh one; the step to go on from (0 without one)."""
    state = load_state(checkpoints.generator_file)
    if state is None:
        return 0
    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(state["optimizer"])
    draws.setstate(state["draws"])
    rng.restore(state["rng"])
    log.info("%s: resuming its generator's training at step %d", checkpoints.label, state["step"])
    return int(state["step"])


def slice_rows(rows: int, micro_batch_size: int | None) -> int:
    """Rows per forward/backward of a generator step of `rows` rows (no slicing when unset)."""
    return min(micro_batch_size, rows) if micro_batch_size else rows


def accumulate_step(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], micro_batch_size: int | None
) -> torch.Tensor:
    """Backward of the batch's mean token loss, `micro_batch_size` rows at a time; returns the loss.

    Each slice's mean is weighted by its share of the batch's target tokens, so the gradient is
    the whole batch's; the slices keep the whole batch's padding (left-padded rows' positions
    depend on it). Peak memory is then that of one slice."""
    rows = batch["input_ids"].shape[0]
    size = slice_rows(rows, micro_batch_size)
    counted = predicted_labels(batch["labels"], model.config.is_encoder_decoder)
    total = (counted != -100).sum().clamp_min(1)
    loss = torch.zeros((), device=batch["input_ids"].device)
    for start in range(0, rows, size):
        part = {k: v[start : start + size] for k, v in batch.items()}
        weight = (counted[start : start + size] != -100).sum() / total
        out = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], labels=part["labels"])
        (out.loss * weight).backward()
        loss = loss + out.loss.detach() * weight
    return loss


@timed_as("pseudo_sampling")
@torch.no_grad()
def sample_pseudo(module, task: Task, n: int, settings: GeneratorSettings, seed: int) -> list[Example]:
    """Sample n pseudo examples from the trained generator.

    Samples without the `__inp__` marker are dropped, as the release does: raw text
    without its instruction would teach the router to send generic inputs to this
    task's block. Up to 4x n draws are made; if too few parse, the rest are kept as
    plain inputs (with a warning) so that a weak generator never stops the stream.
    """
    collate = Collator(module.tokenizer, module.family, "long_sequence", 8, 8, with_labels=False)
    batch = {k: v.to(module.device) for k, v in collate([Example("", GEN, ("",))] * n).items()}
    parsed: list[Example] = []
    unparsed: list[str] = []
    with progress(f"sampling pseudo samples of {task.name}", n, "samples") as shown:
        for attempt in range(4):
            with seeded(seed * 4 + attempt, module.device):
                texts = module.generate_from(
                    {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
                    do_sample=True,
                    top_k=settings.top_k,
                    repetition_penalty=settings.repetition_penalty,
                    max_new_tokens=settings.max_new_tokens,
                )
            for text in texts:
                ex = parse_generation(text, settings.generate_outputs)
                if ex is None:
                    unparsed.append(text.replace(GEN, "").strip())
                else:
                    parsed.append(ex)
            shown.update(min(len(parsed), n) - shown.n)
            shown.show(draws=(attempt + 1) * n)
            if len(parsed) >= n:
                break
    if len(parsed) >= n:
        return parsed[:n]
    missing = n - len(parsed)
    log.warning(
        "task %s: only %d of %d pseudo samples carried the %s marker; %d kept as plain inputs",
        task.name,
        len(parsed),
        n,
        INP,
        missing,
    )
    return parsed + [Example("", text, ("",)) for text in unparsed[:missing]]


def with_one_instruction(pseudo: list[Example], seed: int) -> list[Example]:
    """The release's post-processing (docs/method.md §4.3): every pseudo sample of a task gets one of
    the generated instructions, drawn at random (fidelity.pseudo_instruction=one)."""
    instructions = [ex.definition for ex in pseudo if ex.definition]
    if not instructions:
        return pseudo
    chosen = random.Random(seed).choice(instructions)
    return [replace(ex, definition=chosen) for ex in pseudo]
