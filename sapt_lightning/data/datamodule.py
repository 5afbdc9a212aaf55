"""The continual DataModule: one object for the whole stream, pointed at one task at a time.

Training code only ever receives the current task's train split (plus whatever
replay examples the method hands in); evaluation loaders carry no task id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from .collate import Collator
from .task import Example, Task

R = TypeVar("R")


class ReplayStream(Iterator[dict[str, torch.Tensor]]):
    """Endless batches of a replay loader (every pass in a new order if the loader shuffles). It
    counts what it hands out, so a task resumed from a checkpoint skips the batches it drew."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.drawn = 0
        self._batches = self._cycle()

    def _cycle(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield from self.loader

    def __next__(self) -> dict[str, torch.Tensor]:
        self.drawn += 1
        return next(self._batches)

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)


class ResumableLoader(DataLoader):
    """A training loader that Lightning can stop and restart mid-epoch (it saves `state_dict()` in
    its checkpoints and hands it back to `load_state_dict()` before the first pass of a resumed fit).

    The state is the shuffle generator's state at the start of the current pass, which gives the
    pass's order, and the batches of that pass already trained on (`consumed`, set from outside:
    Lightning fetches a batch ahead, so what this loader has yielded is not what was trained on)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        assert self.generator is not None, "a resumable order needs a generator of its own"
        self.consumed = 0
        self._pass_start = self.generator.get_state()
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"pass_start": self._pass_start, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            self.generator.set_state(self._resume["pass_start"])
            skip = int(self._resume["consumed"])
            self._resume = None
            if skip >= len(self):  # saved after a pass's last batch: resume at the next pass
                self._draw_whole_pass()
                skip = 0
        self._pass_start = self.generator.get_state()
        self.consumed = skip
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        return batches

    def _draw_whole_pass(self) -> None:
        """Advance the generator as one whole pass does: the iterator's base seed, then the sampler
        run to exhaustion (Lightning's prefetch asks past the last batch before the next pass)."""
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        for _ in self.batch_sampler:
            pass


class RankSlicedBatches(Sampler[list[int]]):
    """Data parallelism that sees the data as one process would: each epoch draws the same
    permutation a single process's shuffle draws, cuts it into global batches of
    batch_size x world, and gives rank r the r-th slice of each. With the loss a mean over
    the global batch's tokens (methods/base.py), n processes of batch b then take the same
    optimizer steps as one process of batch n*b. A final global batch smaller than the
    world is dropped (a rank would get nothing to step on). With `lengths`, each epoch's order is
    grouped by length as one process of batch n*b groups it (data.group_by_length)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        world: int,
        rank: int,
        generator: torch.Generator,
        lengths: list[int] | None = None,
    ) -> None:
        self.n, self.batch_size, self.world, self.rank, self.generator = n, batch_size, world, rank, generator
        self.lengths = lengths

    def _order(self) -> list[int]:
        if self.lengths is not None:  # one permutation drawn, as below
            return get_length_grouped_indices(self.lengths, self.batch_size * self.world, generator=self.generator)
        return torch.randperm(self.n, generator=self.generator).tolist()  # as RandomSampler(generator=...) draws

    def _global_batches(self, order: list[int]) -> list[list[int]]:
        step = self.batch_size * self.world
        return [order[i : i + step] for i in range(0, self.n, step) if len(order[i : i + step]) >= self.world]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches(self._order())
        # RandomSampler draws (and drops) one more permutation when it runs out. A single process's
        # BatchSampler exhausts it before yielding a partial last batch, but only on a further
        # request after a full one (which Lightning, knowing the length, never makes): the same here.
        # (transformers' LengthGroupedSampler draws its one permutation up front and no more.)
        extra_draw = self.lengths is None
        partial = self.n % (self.batch_size * self.world) != 0
        for k, batch in enumerate(batches):
            if extra_draw and partial and k == len(batches) - 1:
                torch.randperm(self.n, generator=self.generator)
            yield [int(i) for i in torch.tensor_split(torch.tensor(batch), self.world)[self.rank]]
        if extra_draw and not partial:
            torch.randperm(self.n, generator=self.generator)

    def __len__(self) -> int:
        return len(self._global_batches(list(range(self.n))))


class ContinualDataModule(L.LightningDataModule):
    def __init__(
        self,
        tasks: list[Task],
        tokenizer,
        family: str,
        batch_size: int,
        eval_batch_size: int,
        max_source_length: int,
        max_target_length: int,
        seed: int,
        num_workers: int = 0,
        label_eos: str = "always",
        group_by_length: bool = False,
    ) -> None:
        super().__init__()
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.family = family
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.seed = seed
        self.num_workers = num_workers
        self.label_eos = label_eos  # fidelity.llama_label_eos
        self.group_by_length = group_by_length  # data.group_by_length: batches of similar lengths
        self.current: int | None = None
        self.extra_train: list[Example] = []

    @classmethod
    def from_config(cls, cfg, tasks: list[Task], backbone) -> ContinualDataModule:
        d = cfg.data
        return cls(
            tasks,
            backbone.tokenizer,
            backbone.family,
            int(d.batch_size),
            int(d.eval_batch_size),
            int(d.max_source_length),
            int(d.max_target_length),
            int(cfg.seed),
            int(d.num_workers),
            str(cfg.fidelity.llama_label_eos),
            bool(d.group_by_length),
        )

    def set_task(self, index: int, extra_train: list[Example] | None = None) -> None:
        """Point training at task `index`; `extra_train` (replay) is mixed into its data."""
        self.current = index
        self.extra_train = list(extra_train or [])

    def collator(self, task: Task, with_labels: bool = True) -> Collator:
        return Collator(
            self.tokenizer,
            self.family,
            task.template,
            self.max_source_length,
            self.max_target_length,
            with_labels,
            self.label_eos,
        )

    def train_examples(self) -> list[Example]:
        assert self.current is not None, "set_task() before training"
        return self.tasks[self.current].train + self.extra_train

    def train_dataloader(self) -> DataLoader:
        task = self.tasks[self.current]
        # A generator of its own keeps the shuffle reproducible per task, independent of global RNG use.
        generator = torch.Generator().manual_seed(self.seed + 7919 * self.current)
        examples = self.train_examples()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        lengths = self.collator(task).lengths(examples) if self.group_by_length else None
        if world == 1:
            return ResumableLoader(
                examples,
                batch_size=self.batch_size,
                sampler=self._shuffled(examples, lengths, self.batch_size, generator),
                generator=generator,
                collate_fn=self.collator(task),
                num_workers=self.num_workers,
                drop_last=False,
            )
        sampler = RankSlicedBatches(len(examples), self.batch_size, world, rank, generator, lengths)
        # generator= too: each DataLoader iterator first draws its workers' base seed from it, as above
        return ResumableLoader(
            examples,
            batch_sampler=sampler,
            collate_fn=self.collator(task),
            num_workers=self.num_workers,
            generator=generator,
        )

    def loader(
        self,
        task: Task,
        examples: list[Example],
        with_labels: bool = False,
        batch_size: int | None = None,
        shuffle_seed: int | None = None,
    ) -> DataLoader:
        """Batches of `examples` in order, or reshuffled every pass from `shuffle_seed` (replay;
        grouped by length with data.group_by_length). Evaluation sorts by length before it asks
        for batches (`length_order`), as it must give its predictions back in order."""
        size = batch_size or self.eval_batch_size
        collate = self.collator(task, with_labels)
        sampler, generator = None, None
        if shuffle_seed is not None:  # (the loader also draws each pass's worker seed from the generator)
            generator = torch.Generator().manual_seed(shuffle_seed)
            lengths = collate.lengths(examples) if self.group_by_length else None
            sampler = self._shuffled(examples, lengths, size, generator)
        return DataLoader(
            examples,
            batch_size=size,
            sampler=sampler,
            generator=generator,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    @staticmethod
    def _shuffled(
        examples: list[Example], lengths: list[int] | None, batch_size: int, generator: torch.Generator
    ) -> Sampler[int]:
        """A new order each pass, one permutation drawn from `generator` per pass either way; with
        `lengths`, the permutation is cut into mega-batches sorted by length (transformers' grouping:
        random batches of similar lengths, the longest batch first)."""
        if lengths is None:
            return RandomSampler(examples, generator=generator)
        return LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)

    def length_order(self, task: Task, examples: list[Example]) -> list[int]:
        """The order in which to batch `examples` for evaluation: longest first with
        data.group_by_length (each batch then pads little, and memory runs out on the first batch
        if at all), else as given."""
        if not self.group_by_length:
            return list(range(len(examples)))
        lengths = self.collator(task, with_labels=False).lengths(examples)
        return sorted(range(len(examples)), key=lambda i: -lengths[i])

    def in_length_order(
        self, task: Task, examples: list[Example], decode: Callable[[list[Example]], list[R]]
    ) -> list[R]:
        """`decode` run on the examples in `length_order`, its outputs given back in the examples' order."""
        order = self.length_order(task, examples)
        decoded = decode([examples[i] for i in order])
        return [decoded[k] for k in sorted(range(len(order)), key=order.__getitem__)]  # the inverse permutation
