"""Mini backbones: a corpus of train splits only, span corruption, a cache key that follows the
corpus, and the per-task report that puts single-task scores beside their trivial baselines."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch

from sapt_lightning.backbones import corpus
from sapt_lightning.backbones.embeddings import cooccurrence, ppmi_embeddings
from sapt_lightning.backbones.mini import prefix_lm, span_corrupt
from sapt_lightning.backbones.tiny import ensure_tiny_backbone
from sapt_lightning.build_backbone import main as build_main
from sapt_lightning.data.task import Example, Task
from sapt_lightning.errors import ConfigError
from sapt_lightning.metrics.trivial import trivial_baselines
from sapt_lightning.reporting.compare import main as report_main

# A mini T5 small enough to build in a second: the tokenizer and the objective are the real ones.
SPEC = {
    "corpus": "cl_benchmark",
    "corpus_benchmarks": ["Bench"],
    "corpus_files": None,
    "d_model": 16,
    "d_ff": 32,
    "num_layers": 1,
    "num_decoder_layers": 1,
    "num_heads": 2,
    "d_kv": 8,
    "vocab_size": 300,
    "pretrain_length": 16,
    "pretrain_steps": 2,
    "pretrain_lr": 1.0e-3,
    "pretrain_schedule": "linear",
    "pretrain_batch_size": 2,
    "embedding_init": "ppmi",
    "pretrain_optimizer": "adafactor",
}


def add_task(root: Path, name: str, words: list[str]) -> None:
    folder = root / "Bench" / name
    folder.mkdir(parents=True)
    rng = random.Random(name)
    instances = [{"input": " ".join(rng.choices(words, k=12)), "output": rng.choice(words)} for _ in range(40)]
    for split in ("train", "dev", "test"):
        (folder / f"{split}.json").write_text(json.dumps({"Definition": ["d"], "Instances": instances}))


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    add_task(root, "alpha", ["red", "green", "blue", "lamp", "river"])
    add_task(root, "beta", ["stone", "cloud", "bread", "quiet", "fast"])
    return root


def test_the_corpus_reads_train_splits_only(data_root):
    files = corpus.corpus_files({**SPEC, "corpus_dir": str(data_root)})
    assert [f.relative for f in files] == ["Bench/alpha/train.json", "Bench/beta/train.json"]
    texts = list(corpus.corpus_texts(files))
    assert len(texts) == 2 * 40 * 2  # each instance's input and output, unpaired
    for split in ("dev", "test"):
        with pytest.raises(ConfigError, match=f"Bench/alpha/{split}.json is not a train split"):
            corpus.corpus_files({**SPEC, "corpus_dir": str(data_root), "corpus_files": [f"Bench/alpha/{split}.json"]})


def test_a_dev_file_in_the_corpus_is_one_line_exit_2(data_root, tmp_path, capsys):
    rc = build_main(
        [
            "backbone=mini_t5",
            f"paths.data_dir={data_root}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "backbone.tiny.corpus_files=[Bench/beta/dev.json]",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"{data_root}/Bench/beta/dev.json is not a train split" in err


def test_an_unknown_recipe_choice_is_one_line_exit_2_before_any_work(tmp_path, capsys):
    rc = build_main(["backbone=mini_t5", f"paths.cache_dir={tmp_path}", "backbone.tiny.embedding_init=glove"])
    err = capsys.readouterr().err
    assert rc == 2 and err == "error: backbone.tiny.embedding_init=glove: must be one of random, ppmi\n"
    assert not (tmp_path / "backbones").exists()


def test_span_corruption_drops_spans_the_target_restores():
    ids = list(range(100, 164))
    sentinels = list(range(10, 20))
    source, target = span_corrupt(ids, sentinels, eos=1, rng=random.Random(3))
    assert source[-1] == target[-1] == 1
    kept = [t for t in source[:-1] if t not in sentinels]
    dropped = [t for t in target[:-1] if t not in sentinels]
    assert sorted(kept + dropped) == ids and len(dropped) == round(0.15 * len(ids))
    # the sentinels appear in the same order on both sides, one per dropped span
    assert [t for t in source if t in sentinels] == [t for t in target if t in sentinels]
    # rebuilt by putting each span back at its sentinel
    spans, current = {}, None
    for t in target[:-1]:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    assert [x for t in source[:-1] for x in (spans[t] if t in sentinels else [t])] == ids


def test_prefix_lm_cuts_a_window_in_its_middle_half():
    ids = list(range(100, 164))
    for seed in range(20):
        source, target = prefix_lm(ids, eos=1, rng=random.Random(seed))
        assert source[:-1] + target[:-1] == ids and source[-1] == target[-1] == 1
        assert 16 <= len(source) - 1 <= 48


def test_ppmi_embeddings_put_tokens_of_shared_contexts_together():
    # Tokens 0-1 occur among 4-5, tokens 2-3 among 6-7: the vectors should say so.
    rng = random.Random(0)
    ids = []
    for _ in range(400):
        word, context = rng.choice([(rng.choice([0, 1]), [4, 5]), (rng.choice([2, 3]), [6, 7])])
        ids += [rng.choice(context), word, rng.choice(context), 8]
    stream = torch.tensor(ids)
    counts = cooccurrence(stream, 9, window=2)
    dense = counts.to_dense()
    assert torch.equal(dense, dense.T) and dense[0, 2] == 0 and dense[0, 4] > 0
    initial = torch.randn(11, 4, generator=torch.Generator().manual_seed(1)) * 0.5  # 9, 10: never in the stream
    torch.manual_seed(0)
    vectors = ppmi_embeddings(stream, initial)
    assert vectors.shape == (11, 4) and abs(float(vectors[:9].std()) - float(initial.std())) < 1e-5
    cos = torch.nn.functional.cosine_similarity
    assert cos(vectors[0], vectors[1], dim=0) > 0.9 > cos(vectors[0], vectors[2], dim=0) + 0.5
    # Absent tokens keep their own random rows: distinct, so that a model can still write one of them.
    assert torch.equal(vectors[9:], initial[9:])
    torch.manual_seed(0)
    assert torch.equal(ppmi_embeddings(stream, initial), vectors)  # seeded: the same vectors


def test_the_cache_key_follows_the_corpus_and_says_why_it_rebuilds(data_root, tmp_path, caplog):
    spec = {**SPEC, "corpus_dir": str(data_root)}
    first = ensure_tiny_backbone("mini_t5", "t5", spec, tmp_path)
    assert corpus.read_manifest(first).keys() == {"Bench/alpha/train.json", "Bench/beta/train.json"}
    assert ensure_tiny_backbone("mini_t5", "t5", spec, tmp_path) == first  # cached
    # where the data lies is not what it holds: a copy elsewhere hits the same build
    moved = tmp_path / "moved"
    (data_root).rename(moved)
    assert ensure_tiny_backbone("mini_t5", "t5", {**spec, "corpus_dir": str(moved)}, tmp_path) == first
    add_task(moved, "gamma", ["salt", "wind"])
    with caplog.at_level(logging.WARNING, logger="sapt_lightning.backbones.tiny"):
        second = ensure_tiny_backbone("mini_t5", "t5", {**spec, "corpus_dir": str(moved)}, tmp_path)
    assert second != first
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "corpus changed" in message and "added: Bench/gamma/train.json" in message and "cache key" in message
    assert corpus.unseen_tasks(corpus.read_manifest(first), "Bench", ["alpha", "gamma"]) == ["gamma"]
    assert corpus.unseen_tasks(corpus.read_manifest(second), "Bench", ["alpha", "gamma"]) == []
    # the tokenizer knows T5's sentinels, and a build records its recipe and cost
    tokenizer = json.loads((second / "tokenizer_config.json").read_text())
    assert "<extra_id_0>" in json.dumps(tokenizer)
    assert json.loads((second / "build.json").read_text())["parameters"] > 0


def test_trivial_baselines_are_the_majority_answer_and_the_copied_input():
    train = [Example("d", f"x{i}", ("yes",)) for i in range(3)] + [Example("d", "x", ("no",))]
    test = [Example("d", "yes please", ("yes",)), Example("d", "no", ("no",))]
    task = Task("t", "exact_match", "long_sequence", train, [], test)
    assert trivial_baselines(task) == {"majority": 50.0, "copy_input": 50.0}
    rouge = Task("t", "rougeL", "long_sequence", train, [], test)
    assert trivial_baselines(rouge)["copy_input"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_the_report_puts_single_scores_beside_trivial_ones_and_the_attention_diagonal(tmp_path, capsys):
    def results(method: str, seed: int, diag: tuple[float, float], attention: list | None) -> dict:
        return {
            "method": method,
            "benchmark": "long_sequence",
            "order": ["sst2", "agnews"],
            "matrix": [[diag[0], None], [diag[0] - 5, diag[1]]],
            "single": None,
            "summary": {"ap": 1.0, "f_ra": 1.0, "fwt": None, "bwt": None},
            "trivial": {"sst2": {"majority": 50.0, "copy_input": 0.0}, "agnews": {"majority": 25.0, "copy_input": 0}},
            "seed": seed,
            "config": {"backbone": {"name": "mini_t5"}, "pet": {"type": "lora"}, "method": {"name": method}},
            **({"attention": {"test": attention}} if attention else {}),
        }

    runs = tmp_path / "runs"
    for seed, diag in ((1, (80.0, 70.0)), (2, (84.0, 74.0))):
        for method, attention in (("single", None), ("sapt", [[0.9, 0.1], [0.3, 0.7]])):
            path = runs / f"{method}{seed}" / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(results(method, seed, diag, attention)))
    assert report_main([str(runs)]) == 0
    md = (runs / "comparison.md").read_text()
    assert "| sst2 | 82.00 ± 2.83 | 50.00 | 0.00 | +32.00 |" in md
    assert "| agnews | 72.00 ± 2.83 | 25.00 | 0.00 | +47.00 |" in md
    assert "| sapt/lora | 0.900 ± 0.000 | 0.700 ± 0.000 | 0.800 ± 0.000 |" in md
    capsys.readouterr()


# The five Long Sequence tasks of the CPU tier (experiment=cpu_tier_long).
TIER_TASKS = ["agnews", "sst2", "amazon", "mnli", "qqp"]
TINY_MINI = [
    "backbone.tiny.d_model=32",
    "backbone.tiny.d_ff=64",
    "backbone.tiny.d_kv=8",
    "backbone.tiny.num_layers=1",
    "backbone.tiny.num_decoder_layers=1",
    "backbone.tiny.vocab_size=600",
    "backbone.tiny.pretrain_steps=0",
    "backbone.tiny.corpus_files=[" + ",".join(f"Long_Sequence/{t}/train.json" for t in TIER_TASKS) + "]",
]


@pytest.mark.slow
def test_the_cpu_tier_long_stream_runs_end_to_end_on_a_mini_backbone(make_cfg, capsys):
    """The recipe's smallest real stream, all five tasks, SAPT-LoRA on a mini T5 built from a tiny
    config (its tokenizer learns the five train splits; the model is not pretrained)."""
    from sapt_lightning.run import run

    results = run(
        make_cfg(
            "experiment=cpu_tier_long",
            *TINY_MINI,
            "benchmark.max_train_per_task=24",
            "benchmark.max_eval_per_task=8",
            "trainer.max_steps=3",
            "method.generator.steps=3",
            "logger=csv",
        )
    )
    assert results["order"] == TIER_TASKS and len(results["matrix"]) == 5
    assert set(results["trivial"]) == set(TIER_TASKS)
    assert all(0 <= v <= 100 for t in results["trivial"].values() for v in t.values())
    assert len(results["attention"]["test"]) == 5 and all(len(row) == 5 for row in results["attention"]["test"])
    assert results["config"]["backbone"]["name"] == "mini_t5"
    capsys.readouterr()
