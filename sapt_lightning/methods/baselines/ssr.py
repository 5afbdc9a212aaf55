"""SSR: rehearsal on examples the model writes itself, relabelled by the latest model, kept diverse.

Self-Synthesized Rehearsal (Huang et al., 2024, "Mitigating Catastrophic Forgetting in Large
Language Models with Self-Synthesized Rehearsal", ACL). When a task ends:

1. the base model (no LoRA) is shown the task's instruction and `demonstrations` of its training
   examples and writes new inputs by in-context learning (top-k sampling), `candidates` inputs per
   example it will keep;
2. k-means on the candidates' mean token embeddings (k = the memory budget, Replay's:
   `replay_fraction` of the task's training set) keeps the candidate nearest each centroid, so the
   kept inputs spread over what was written;
3. the model as it is now (the latest LoRA) answers every kept input, those of earlier tasks too:
   SSR's refinement, which keeps the rehearsal consistent with what the model knows.

The kept examples join the training data of every later task, as Replay's real samples do. No
real example of an earlier task is stored beyond the demonstrations read at the task's own end.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule
from ...data.io import per_task_path, read_per_task, write_task_json
from ...data.task import Example, Task
from ...rules import at_least
from ...settings import setting
from ...utils.rng import seeded
from ..base import replay_volume
from ..registry import register_method
from .replay import ReplaySettings
from .seq_lora import SeqLoRAModule

log = logging.getLogger(__name__)
MEMORY_DIR = "ssr_memory"  # in a task's folder: every task's kept examples, relabelled after it
PER_PROMPT = 4  # inputs sampled from one in-context prompt (each prompt draws its own demonstrations)


@dataclass(frozen=True)
class SSRSettings(ReplaySettings):
    demonstrations: int = setting(at_least(1))  # training examples shown in each in-context prompt
    candidates: int = setting(at_least(1))  # inputs written per example kept
    top_k: int = setting(at_least(1))  # sampling of the written inputs


@register_method("ssr")
class SSRModule(SeqLoRAModule):
    settings_class = SSRSettings

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.memory: list[list[Example]] = []  # per finished task, its synthetic examples

    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        return [ex for kept in self.memory[:index] for ex in kept]

    @torch.no_grad()
    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        if index + 1 == len(data.tasks):
            return  # no task follows: nothing to rehearse
        budget = replay_volume(self.settings.replay_fraction, len(task.train))
        seed = int(self.cfg.seed) * 7919 + index
        written = self.write_inputs(task, budget * self.settings.candidates, seed)
        kept = [written[i] for i in diverse_subset(self.input_embeddings(written), budget, seed)]
        if len(kept) < budget:
            log.warning(
                "ssr: %d of %d synthetic inputs of %s (the base model wrote too few)", len(kept), budget, task.name
            )
        self.memory[index:] = [[Example(task.train[0].definition, x, ("",)) for x in kept]]
        for j, old in enumerate(data.tasks[: index + 1]):  # the latest model answers every task's inputs
            self.memory[j] = self.answer(old, self.memory[j], data)
            write_task_json(per_task_path(task_dir / MEMORY_DIR, j, old.name), self.memory[j])

    def write_inputs(self, task: Task, n: int, seed: int) -> list[str]:
        """n distinct inputs the base model writes after the instruction and a few demonstrations."""
        rng = random.Random(seed)
        written: list[str] = []
        for attempt in range(-(-n // PER_PROMPT) * 2):  # twice the prompts needed, for empty or repeated ones
            demos = rng.sample(task.train, min(self.settings.demonstrations, len(task.train)))
            ids = self.prompt_ids(task.train[0].definition, demos)
            inputs = {"input_ids": ids.to(self.device), "attention_mask": torch.ones_like(ids, device=self.device)}
            with self.model.disable_adapter(), seeded(seed * 31 + attempt, self.device):
                ids = self.generate_ids(
                    inputs,
                    do_sample=True,
                    top_k=self.settings.top_k,
                    num_return_sequences=PER_PROMPT,
                    max_new_tokens=int(self.cfg.data.max_source_length),
                )
            if not self.model.config.is_encoder_decoder:
                ids = ids[:, inputs["input_ids"].shape[1] :]
            for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True):
                candidate = text.split("Output:")[0].strip()
                if candidate and candidate not in written:
                    written.append(candidate)
            if len(written) >= n:
                break
        return written[:n]

    def prompt_ids(self, definition: str, demonstrations: list[Example]) -> torch.Tensor:
        """The in-context prompt's token ids (1, n), within data.max_source_length: demonstrations
        are dropped from the end until it fits, then its start is cut, never the closing cue."""
        limit = int(self.cfg.data.max_source_length)
        shown = list(demonstrations)
        while True:
            ids = self.tokenizer(in_context_prompt(definition, shown)).input_ids
            if len(ids) <= limit or len(shown) == 1:
                return torch.tensor([ids[-limit:]])
            shown.pop()

    def input_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Each text's mean token embedding (the backbone's frozen input embeddings)."""
        table = self.model.get_input_embeddings()
        rows = [self.tokenizer(t, add_special_tokens=False).input_ids or [self.tokenizer.pad_token_id] for t in texts]
        return torch.stack([table(torch.tensor(r, device=self.device)).float().mean(0).cpu() for r in rows])

    def answer(self, task: Task, examples: list[Example], data: ContinualDataModule) -> list[Example]:
        """The examples with the current model's greedy answers as their outputs."""
        answers: list[str] = []
        for batch in data.loader(task, examples):
            answers += self.generate_texts({k: v.to(self.device) for k, v in batch.items()})
        # An empty answer would teach the model to answer nothing: such inputs are dropped.
        return [Example(ex.definition, ex.input, (a,)) for ex, a in zip(examples, answers) if a.strip()]

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        self.memory = read_per_task(task_dir / MEMORY_DIR)


def in_context_prompt(definition: str, demonstrations: list[Example]) -> str:
    shown = "".join(f"Input: {ex.input}\nOutput: {ex.target}\n\n" for ex in demonstrations)
    return f"{definition.strip()}\n\n{shown}Input:"


def diverse_subset(points: torch.Tensor, k: int, seed: int, iterations: int = 20) -> list[int]:
    """Indices of k points spread over the set: k-means, then the point nearest each centroid."""
    n = points.shape[0]
    if n <= k:
        return list(range(n))
    centroids = points[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(1)
        for c in range(k):
            members = points[assignment == c]
            if len(members):
                centroids[c] = members.mean(0)
    picked: list[int] = []
    for distances in torch.cdist(centroids, points):
        picked.append(next(int(i) for i in distances.argsort() if int(i) not in picked))
    return sorted(picked)
