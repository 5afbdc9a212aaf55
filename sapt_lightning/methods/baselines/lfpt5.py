"""LFPT5 (Qin & Joty, 2022): one long soft prompt learns the tasks in turn, and also
learns to write examples of each task, which are replayed later (docs/method.md §8).

- Training data of task t: its own examples, plus "generation" rows that ask the
  prompted model (input `__gen__`, the task's definition kept) to write
  `<output> __ans__ <input>`, plus the pseudo samples of earlier tasks. The output
  comes first so that the marker survives the target-length truncation of long
  inputs (a cut input is still a usable pseudo sample; a lost marker is not).
- After task t: pseudo samples of t (a fraction of its training set) are sampled
  from the prompted model itself and kept for replay.
- Distillation: on replayed pseudo samples, the current prompt's token
  distributions are pulled (KL) to those of the prompt as it was before task t.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch.nn import functional as F

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule, ReplayStream
from ...data.io import PSEUDO_FILE, read_split, write_task_json
from ...data.task import Example, Task
from ...pet.prompt import PromptBank, load_prompt, with_prompt
from ...rules import at_least, fraction, non_negative
from ...settings import MethodSettings, setting
from ...utils.io import atomic_save_safetensors, read_safetensors
from ...utils.rng import replay_seed, seeded
from ..base import ContinualModule, replay_volume
from ..generator import ANS, GEN
from ..registry import register_method

log = logging.getLogger(__name__)
PROMPT_FILE = "lfpt5_prompt.safetensors"


def generation_row(example: Example) -> Example:
    """The row that teaches the prompt to write an example of its task: output first (see above)."""
    return Example(example.definition, GEN, (f"{example.target} {ANS} {example.input}",))


def parse_pseudo(definition: str, text: str) -> Example | None:
    target, marker, source = text.partition(ANS)
    if not marker or not source.strip() or not target.strip():
        return None
    return Example(definition, source.strip(), (target.strip(),))


SAMPLING_ROUNDS = 4  # rounds of n draws before settling for fewer well-formed samples


@torch.no_grad()
def sample_examples(
    module: ContinualModule, data: ContinualDataModule, task: Task, n: int, seed: int, top_k: int
) -> list[Example]:
    """Up to n examples of `task` that the module writes from its generation marker (top-k
    sampling), keeping those of the form `<output> __ans__ <input>`: n draws in one batch per
    round, each round from its own seed."""
    definition = task.train[0].definition
    rows = [Example(definition, GEN, ("",))] * n
    samples: list[Example] = []
    for attempt in range(SAMPLING_ROUNDS):
        batch = {k: v.to(module.device) for k, v in next(iter(data.loader(task, rows, batch_size=n))).items()}
        with seeded(seed + attempt, module.device):
            texts = module.generate_texts(
                batch, do_sample=True, top_k=top_k, max_new_tokens=int(module.cfg.data.max_target_length)
            )
        samples += [ex for ex in (parse_pseudo(definition, t) for t in texts) if ex is not None]
        if len(samples) >= n:
            break
    if len(samples) < n:
        log.warning(
            "%s: only %d of %d samples of %s had the form '<output> %s <input>'",
            module.method_name,
            len(samples),
            n,
            task.name,
            ANS,
        )
    return samples[:n]


if TYPE_CHECKING:
    from ...estimate import Counts


@dataclass(frozen=True)
class LFPT5Settings(MethodSettings):
    prompt_length: int = setting(at_least(1))  # its own prompt's tokens (the other prompt methods: pet.length)
    gen_fraction: float = setting(fraction(True))  # generation rows, as a fraction of the task's training set
    pseudo_fraction: float = setting(fraction(True))  # pseudo samples kept per task
    distill_weight: float = setting(non_negative())  # KL distillation on replayed pseudo samples
    top_k: int = setting(at_least(1))  # sampling of pseudo samples


@register_method("lfpt5")
class LFPT5Module(ContinualModule):
    pet_types = ("prompt",)
    settings_class = LFPT5Settings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        """One prompt for the stream, plus the previous task's copy that distillation reads."""
        p = int(cfg.method.prompt_length) * counts.hidden
        return {"trainable": p, "per_task": p, "total": n_tasks * p, "resident": 2 * p}

    @classmethod
    def prompt_tokens(cls, cfg: DictConfig, n_tasks: int) -> int:
        return int(cfg.method.prompt_length)

    @classmethod
    def graphs_per_step(cls, cfg: DictConfig) -> int:
        """Distillation adds a replayed batch, back-propagated with the task's own."""
        return 2 if float(cfg.method.distill_weight) > 0 else 1

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        m = self.settings
        self.prompt = PromptBank(
            m.prompt_length, self.model.get_input_embeddings(), torch.Generator().manual_seed(int(cfg.seed))
        )
        self.prompt.add_block()  # one prompt for the whole stream
        self.pseudo_fraction, self.gen_fraction = m.pseudo_fraction, m.gen_fraction
        self.distill_weight, self.top_k = m.distill_weight, m.top_k
        self.register_buffer("previous_prompt", torch.zeros(0), persistent=False)
        self.pseudo: list[list[Example]] = []
        self._replay: ReplayStream | None = None

    def prompted(self, inputs: dict[str, torch.Tensor], prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        batch_prompt = prompt.unsqueeze(0).expand(inputs["input_ids"].shape[0], -1, -1)
        return with_prompt(self.model, inputs, batch_prompt)

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        return self.prompted(super().backbone_inputs(batch, generation), self.prompt.prompts[0])

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        if index > 0:
            self.previous_prompt = self.prompt.prompts[0].detach().clone()
        rng = random.Random(int(self.cfg.seed) * 13 + index)
        n_gen = max(1, round(self.gen_fraction * len(task.train)))
        gen_rows = [generation_row(ex) for ex in rng.sample(task.train, min(n_gen, len(task.train)))]
        return gen_rows + [ex for pseudo in self.pseudo for ex in pseudo]

    def attach_replay(self, data: ContinualDataModule) -> None:
        replayed = [(data.tasks[i], ex) for i, pseudo in enumerate(self.pseudo) for ex in pseudo]
        self._replay = None
        if replayed and self.distill_weight > 0:
            loader = data.loader(
                replayed[0][0],
                [ex for _, ex in replayed],
                with_labels=True,
                batch_size=data.batch_size,
                shuffle_seed=replay_seed(int(self.cfg.seed), self.task_index, 0),
            )
            self._replay = ReplayStream(loader)

    def replay_streams(self) -> list[ReplayStream]:
        return [self._replay] if self._replay is not None else []

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_loss = self.task_loss(batch)
        losses = {"loss": task_loss, "task_loss": task_loss.detach()}
        if self._replay is not None:
            distill = self.distillation(next(self._replay))
            losses["distill"] = distill.detach()
            losses["loss"] = task_loss + self.distill_weight * distill
        return losses

    def distillation(self, replay: dict[str, torch.Tensor]) -> torch.Tensor:
        """KL(previous prompt's token distribution || current one's) on the pseudo samples' output tokens."""
        inputs = {k: v.to(self.device) for k, v in replay.items() if k in ("input_ids", "attention_mask", "labels")}
        with torch.no_grad():
            teacher = self.step_model(**self.prompted(inputs, self.previous_prompt)).logits
        student_inputs = self.prompted(inputs, self.prompt.prompts[0])
        student = self.step_model(**student_inputs).logits
        labels = student_inputs["labels"]
        if not self.model.config.is_encoder_decoder:  # logits at t predict token t+1
            teacher, student, labels = teacher[:, :-1], student[:, :-1], labels[:, 1:]
        keep = labels != -100
        return F.kl_div(
            F.log_softmax(student[keep].float(), -1),
            F.log_softmax(teacher[keep].float(), -1),
            log_target=True,
            reduction="batchmean",
        )

    @torch.no_grad()
    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        n = replay_volume(self.pseudo_fraction, len(task.train))
        self.pseudo[index:] = [sample_examples(self, data, task, n, int(self.cfg.seed) * 4 + 1000 * index, self.top_k)]
        write_task_json(task_dir / PSEUDO_FILE, self.pseudo[index])

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors({"prompt": self.prompt.prompts[0].detach()}, task_dir / PROMPT_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.task_index = index
        load_prompt(self.prompt.prompts[0], read_safetensors(task_dir / PROMPT_FILE), task_dir / PROMPT_FILE)
        path = task_dir / PSEUDO_FILE
        self.pseudo[index:] = [read_split(path, task.name) if path.exists() else []]
