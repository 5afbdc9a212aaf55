"""data.group_by_length: batches of similar lengths, the same examples, resumable, in order for scoring."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler

from sapt_lightning.backbones.load import load_backbone
from sapt_lightning.data.datamodule import ContinualDataModule, RankSlicedBatches
from sapt_lightning.data.task import Example, Task
from sapt_lightning.padding import padding


def _task(n: int = 40) -> Task:
    """Distinct inputs of 1 to 30 words in random order: a shuffle pads a lot, grouping little."""
    rng = random.Random(0)
    words = [f"item{i} " + " ".join(["word"] * rng.randint(1, 30)) for i in range(n)]
    train = [Example("Copy the words.", w, ("x",)) for w in words]
    return Task("copy", "exact_match", "long_sequence", train, [], train[:12])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from conftest import compose_cfg

    return load_backbone(compose_cfg(["debug=smoke"]).backbone, tmp_path_factory.mktemp("cache")).tokenizer


def _data(tokenizer, grouped: bool) -> ContinualDataModule:
    data = ContinualDataModule([_task()], tokenizer, "t5", 4, 5, 64, 8, seed=3, group_by_length=grouped)
    data.set_task(0)
    return data


def _batches(loader) -> list[list[list[int]]]:
    """One pass of a loader, as token ids."""
    return [b["input_ids"].tolist() for b in loader]


def test_grouped_training_batches_hold_every_example_once_a_pass_and_pad_less(tokenizer):
    plain, grouped = _data(tokenizer, False), _data(tokenizer, True)
    sampler = grouped.train_dataloader().sampler
    passes = [list(sampler) for _ in range(2)]
    assert all(sorted(p) == list(range(40)) for p in passes) and passes[0] != passes[1]
    collate = grouped.collator(grouped.tasks[0])
    before, after = padding(collate, plain.train_dataloader()), padding(collate, grouped.train_dataloader())
    assert after < 0.6 * before, (before, after)  # (40 examples: mega-batches of 8 sorted by length)


def test_a_grouped_loader_resumes_mid_pass_to_the_same_batches(tokenizer):
    data = _data(tokenizer, True)
    loader = data.train_dataloader()
    whole = [_batches(loader), _batches(loader)]
    first = data.train_dataloader()
    seen = [b["input_ids"].tolist() for _, b in zip(range(4), first)]
    first.consumed = 4  # as InTaskCheckpoint sets it after each trained batch
    resumed = data.train_dataloader()
    resumed.load_state_dict(first.state_dict())
    assert seen + _batches(resumed) == whole[0]
    assert _batches(resumed) == whole[1]


def test_ranks_together_batch_as_one_grouped_process_does_pass_after_pass():
    """Two ranks of batch 2: their slices of every global batch make up the batches of 4 that one
    process's grouped loader forms, over several passes (each loader draws from its generator)."""
    lengths = [random.Random(i).randint(1, 50) for i in range(82)]
    examples = list(range(82))

    def passes(loader: DataLoader) -> list[list[int]]:
        return [b.tolist() for _ in range(3) for b in loader]

    g = torch.Generator().manual_seed(1)
    one = passes(
        DataLoader(examples, batch_size=4, sampler=LengthGroupedSampler(4, lengths=lengths, generator=g), generator=g)
    )
    ranks = []
    for rank in (0, 1):
        g = torch.Generator().manual_seed(1)
        ranks.append(
            passes(DataLoader(examples, batch_sampler=RankSlicedBatches(82, 2, 2, rank, g, lengths), generator=g))
        )
    assert [a + b for a, b in zip(*ranks, strict=True)] == one

    def spread(of: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in of)

    g = torch.Generator().manual_seed(1)
    plain = passes(DataLoader(examples, batch_size=4, shuffle=True, generator=g))
    assert spread(one) < spread(plain) / 2


def test_evaluation_decodes_longest_first_and_gives_predictions_back_in_order(tokenizer):
    data, task = _data(tokenizer, True), _task()
    seen: list[str] = []

    def decode(examples: list[Example]) -> list[str]:
        seen.extend(ex.input for ex in examples)
        return [ex.input.upper() for ex in examples]

    out = data.in_length_order(task, task.test, decode)
    assert out == [ex.input.upper() for ex in task.test]
    assert [len(s.split()) for s in seen] == sorted((len(ex.input.split()) for ex in task.test), reverse=True)
    assert _data(tokenizer, False).length_order(task, task.test) == list(range(len(task.test)))


def test_sapt_padding_prints_each_tasks_padding_with_and_without_grouping(tmp_path, capsys):
    from sapt_lightning.padding import main

    assert main(["debug=smoke", f"paths.cache_dir={tmp_path}", "data.batch_size=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows[:-1]] == ["reverse", "first_word"] and lines[-1].startswith("mean over tasks")
    for row in rows:
        train, grouped, evaluation, decoded_sorted = (float(v.rstrip("%")) for v in row[-4:])
        assert grouped <= train and decoded_sorted <= evaluation
