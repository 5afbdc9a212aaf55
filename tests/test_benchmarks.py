"""The real benchmarks (SuperNI, Long Sequence) as shipped in ../shared/cl_benchmark, and
what the reader does with broken or incomplete data."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF, DATA_DIR, ROOT, compose_cfg
from omegaconf import DictConfig

from sapt_lightning.cl.unseen import build_unseen_tasks, evaluate_unseen
from sapt_lightning.data.benchmarks import build_tasks
from sapt_lightning.data.io import read_split
from sapt_lightning.data.task import render_prompt
from sapt_lightning.errors import ConfigError, DataError

real_data = pytest.mark.skipif(not (DATA_DIR / "SuperNI").is_dir(), reason=f"no CL_Benchmark at {DATA_DIR}")

# Instance counts of the CL_Benchmark files as shipped (train, dev, test; docs/method.md §1.3-1.4); None = absent.
SUPERNI_COUNTS = {
    "task002_quoref_answer_generation": (1000, 100, 100),
    "task073_commonsenseqa_answer_generation": (975, 100, 100),
    "task1290_xsum_summarization": (1000, 100, 100),
    "task1510_evalution_relation_extraction": (1000, 100, 100),
    "task1572_samsum_summary": (160, 20, 20),
    "task1590_diplomacy_text_generation": (126, 16, 16),
    "task1687_sentiment140_classification": (1000, 100, 100),
    "task1729_personachat_generate_next": (1000, 100, 100),
    "task181_outcome_extraction": (338, 43, 43),
    "task363_sst2_polarity_classification": (1000, 100, 100),
    "task511_reddit_tifu_long_text_summarization": (1000, 100, 100),
    "task591_sciq_answer_generation": (1000, 100, 100),
    "task639_multi_woz_user_utterance_generation": (142, 18, 18),
    "task748_glucose_reverse_cause_event_detection": (1000, 100, 100),
    "task875_emotion_classification": (1000, 100, 100),
}
LONG_COUNTS = {
    "agnews": (4000, 7600, 7600),
    "amazon": (5000, 7600, 7600),
    "boolq": (2000, 3270, 3270),
    "cb": (250, 56, 56),
    "copa": (400, 100, 100),
    "dbpedia": (None, 7600, 7600),
    "imdb": (2000, None, None),
    "mnli": (3000, 7600, 7600),
    "multirc": (2000, None, None),
    "qqp": (2000, 7600, 7600),
    "rte": (2000, 277, 277),
    "sst2": (2000, 872, 872),
    "wic": (2000, 638, 638),
    "yahoo": (None, None, None),
    "yelp": (5000, None, None),
}
LONG_COMPLETE = [name for name, counts in LONG_COUNTS.items() if None not in counts]
SUPERNI_EM = {
    "task363_sst2_polarity_classification",
    "task875_emotion_classification",
    "task1687_sentiment140_classification",
}


def counts(task) -> tuple[int, int, int]:
    return len(task.train), len(task.dev), len(task.test)


# --- the shipped data -----------------------------------------------------------------------------


@real_data
@pytest.mark.parametrize("order", ["1", "2"])
def test_superni_orders_read_every_task_with_the_shipped_counts(make_cfg, order):
    tasks = build_tasks(make_cfg("benchmark=superni", f"order={order}"))
    assert {t.name: counts(t) for t in tasks} == SUPERNI_COUNTS


@real_data
def test_long_sequence_complete_tasks_have_the_shipped_counts(make_cfg):
    tasks = build_tasks(make_cfg("benchmark=long_sequence", f"benchmark.tasks=[{','.join(LONG_COMPLETE)}]"))
    assert {t.name: counts(t) for t in tasks} == {n: LONG_COUNTS[n] for n in LONG_COMPLETE}


@real_data
def test_long_sequence_incomplete_tasks_have_the_shipped_files_and_counts():
    for name, expected in LONG_COUNTS.items():
        if None not in expected:
            continue
        for split, n in zip(("train", "dev", "test"), expected):
            path = DATA_DIR / "Long_Sequence" / name / f"{split}.json"
            assert path.is_file() == (n is not None), path
            if n is not None:
                assert len(read_split(path, name)) == n, path


@real_data
def test_metric_per_task(make_cfg):
    for task in build_tasks(make_cfg("benchmark=superni", "order=1")):
        assert task.metric == ("exact_match" if task.name in SUPERNI_EM else "rougeL"), task.name
    long = build_tasks(make_cfg("benchmark=long_sequence", f"benchmark.tasks=[{','.join(LONG_COMPLETE)}]"))
    assert {t.metric for t in long} == {"exact_match"}


@real_data
def test_superni_prompt_is_built_as_the_release_builds_it(make_cfg):
    task = next(
        t
        for t in build_tasks(make_cfg("benchmark=superni", "order=1"))
        if t.name == "task363_sst2_polarity_classification"
    )
    assert render_prompt(task.test[0], task.template) == (
        "Definition: In this task, you are given sentences from movie reviews. The task is to classify a sentence "
        'as "POS" if the sentiment of the sentence is positive or as "NEG" if the sentiment of the sentence is '
        "negative\n\n"
        "Now complete the following example -\n"
        "Input: Making such a tragedy the backdrop to a love story risks trivializing it , though Chouraqui no doubt "
        "intended the film to affirm love 's power to help people endure almost unimaginable horror .\n"
        "Output: "
    )
    assert task.test[0].outputs == ("POS",)


@real_data
def test_long_sequence_prompts_with_and_without_a_definition(make_cfg):
    cb, copa = build_tasks(make_cfg("benchmark=long_sequence", "benchmark.tasks=[cb,copa]"))
    assert render_prompt(cb.test[0], cb.template) == (
        "Given a pair of sentences 1 and 2, identify the relationship between them.\n"
        "sentence 1: Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his own "
        "portion of titanic anatomy to shaft? Did he think he was helping?\n"
        "sentence 2: Valence was helping\n"
        "Output: "
    )
    # copa's Definition list is empty: the instruction lives in the input, no definition line.
    assert render_prompt(copa.test[0], copa.template) == (
        'Which sentence is the effect of "The man turned on the faucet."? Choose one between A and B.\n'
        "A: The toilet filled with water.\n"
        "B: Water flowed from the spout.\n"
        "Output: "
    )
    assert (cb.test[0].outputs, copa.test[0].outputs) == (("contradiction",), ("B",))


@real_data
def test_multi_reference_instances_keep_every_reference(make_cfg):
    name = "task002_quoref_answer_generation"
    task = next(t for t in build_tasks(make_cfg("benchmark=superni", "order=1")) if t.name == name)
    raw = json.loads((DATA_DIR / "SuperNI" / name / "test.json").read_text())["Instances"]
    assert [list(ex.outputs) for ex in task.test] == [inst["output"] for inst in raw]
    assert max(len(ex.outputs) for ex in task.test) > 1
    assert all(ex.target == ex.outputs[0] for ex in task.test)


@real_data
@pytest.mark.parametrize(
    "name,labels",
    [
        ("task363_sst2_polarity_classification", {"POS", "NEG"}),
        ("task875_emotion_classification", {"joy", "love", "anger", "fear", "surprise", "sadness"}),
        ("task1687_sentiment140_classification", {"positive", "negative"}),
    ],
)
def test_plain_string_outputs_parse_as_one_reference(name, labels):
    path = DATA_DIR / "SuperNI" / name / "train.json"
    assert all(isinstance(inst["output"], str) for inst in json.loads(path.read_text())["Instances"])
    examples = read_split(path, name)
    assert all(len(ex.outputs) == 1 for ex in examples)
    assert {ex.target for ex in examples} <= labels


@real_data
def test_identical_dev_and_test_are_reported_once(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="sapt_lightning.data.benchmarks"):
        build_tasks(make_cfg("benchmark=superni", "order=1"))
    warnings = [r.getMessage() for r in caplog.records if "identical to test.json" in r.getMessage()]
    assert len(warnings) == 1 and "15 of 15 tasks" in warnings[0] and "data.dev_from_train" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sapt_lightning.data.benchmarks"):
        tasks = build_tasks(make_cfg("benchmark=superni", "order=1", "data.dev_from_train=0.1"))
    assert not [r for r in caplog.records if "identical to test.json" in r.getMessage()]
    samsum = tasks[0]
    assert counts(samsum) == (144, 16, 20)  # 10% of 160 train carved as dev; test as shipped
    assert not {ex.input for ex in samsum.dev} & {ex.input for ex in samsum.train}


@real_data
def test_caps_are_deterministic_and_independent_of_the_task_position(make_cfg):
    caps = ("benchmark.max_train_per_task=50", "benchmark.max_eval_per_task=10")
    first = {t.name: t for t in build_tasks(make_cfg("benchmark=superni", "order=1", *caps))}
    again = {t.name: t for t in build_tasks(make_cfg("benchmark=superni", "order=1", *caps))}
    order2 = {t.name: t for t in build_tasks(make_cfg("benchmark=superni", "order=2", *caps))}
    other_seed = {t.name: t for t in build_tasks(make_cfg("benchmark=superni", "order=1", "seed=7", *caps))}
    name = "task002_quoref_answer_generation"
    assert counts(first[name]) == (50, 10, 10)
    assert counts(first["task1590_diplomacy_text_generation"]) == (50, 10, 10)
    assert first[name].train == again[name].train == order2[name].train
    assert first[name].test == first[name].dev  # the shipped dev equals test: same subset of both
    assert first[name].train != other_seed[name].train


@real_data
def test_order_3_fails_fast_naming_the_missing_file(make_cfg):
    started = time.time()
    with pytest.raises(DataError) as err:
        build_tasks(make_cfg("benchmark=long_sequence", "order=3"))
    message = str(err.value)
    assert str(DATA_DIR / "Long_Sequence" / "imdb" / "dev.json") in message
    assert "data.dev_from_train" in message and "more missing" in message and "\n" not in message
    assert time.time() - started < 2  # existence checks only: nothing was parsed


def test_order_of_another_benchmark_is_a_config_error(make_cfg):
    with pytest.raises(ConfigError, match="order=3 is a long_sequence order, but benchmark=superni") as err:
        build_tasks(make_cfg("benchmark=superni", "order=3"))
    assert "\n" not in str(err.value)


def _cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "WANDB_MODE": "disabled", "SAPT_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "sapt_lightning", *args, "logger=csv", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.time() - started


@real_data
@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["benchmark=long_sequence", "order=3"],
            f"missing data file {DATA_DIR / 'Long_Sequence' / 'imdb' / 'dev.json'}",
        ),
        (["benchmark=superni", "order=3"], "order=3 is a long_sequence order, but benchmark=superni"),
    ],
    ids=["missing_file", "order_mismatch"],
)
def test_cli_gives_one_error_line_within_seconds(tmp_path, args, message):
    proc, seconds = _cli(tmp_path, *args)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert seconds < 60  # python start-up and imports; no model is built


# --- broken data, built in tmp_path ---------------------------------------------------------------


def write_split(folder: Path, split: str, instances: list, definition: list | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.json"
    path.write_text(
        json.dumps(
            {
                "Definition": ["Do it."] if definition is None else definition,
                "Positive Examples": [],
                "Negative Examples": [],
                "Instances": instances,
            }
        )
    )
    return path


def instances(n: int, prefix: str = "x") -> list[dict]:
    return [{"input": f"{prefix} {k}", "output": f"y{k}"} for k in range(n)]


def write_task(root: Path, name: str, splits=("train", "dev", "test"), n: int = 20) -> Path:
    folder = root / "SuperNI" / name
    for split in splits:
        write_split(folder, split, instances(n, split))
    return folder


def local_cfg(make_cfg, root: Path, *overrides: str, tasks: str = "[alpha,beta]") -> DictConfig:
    cfg = make_cfg("benchmark=superni", f"benchmark.tasks={tasks}", "logger=csv", *overrides)
    cfg.paths.data_dir = str(root)
    return cfg


def _no_json(root: Path) -> Path:
    write_task(root, "alpha")
    (root / "SuperNI" / "beta").mkdir()
    return root / "SuperNI" / "beta" / "train.json"


def _bad_json(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    (folder / "dev.json").write_text('{"Definition": ["x"], "Instances": [')
    return folder / "dev.json"


def _no_input(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "train", [{"input": "a", "output": "b"}, {"output": "b"}])


def _no_output(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "test", [{"input": "a", "output": "b"}, {"input": "a"}])


def _null_output(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "test", [{"input": "a", "output": None}])


def _null_input(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "train", [{"input": "a", "output": "b"}, {"input": None, "output": "b"}])


def _numeric_output(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "test", [{"input": "a", "output": ["b", 5]}])


def _empty_split(root: Path) -> Path:
    write_task(root, "alpha")
    folder = write_task(root, "beta")
    return write_split(folder, "dev", [])


def _task_not_on_disk(root: Path) -> Path:
    write_task(root, "alpha")
    return root / "SuperNI" / "beta"


def _no_benchmark_folder(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    return root / "SuperNI"


BROKEN = {
    "folder_without_json": (_no_json, "missing data file"),
    "json_does_not_parse": (_bad_json, "not valid JSON"),
    "instance_without_input": (_no_input, "instance 1 lacks 'input' or 'output'"),
    "instance_without_output": (_no_output, "instance 1 lacks 'input' or 'output'"),
    "instance_with_null_output": (
        _null_output,
        "instance 0's 'output' must be text or a non-empty list of text, not null",
    ),
    "instance_with_null_input": (_null_input, "instance 1's 'input' must be text, not null"),
    "instance_with_numeric_output": (
        _numeric_output,
        "instance 0's 'output' must be text or a non-empty list of text, not a number (write it as \"5\")",
    ),
    "empty_split": (_empty_split, "empty split"),
    "task_not_on_disk": (_task_not_on_disk, "is not on disk"),
    "no_benchmark_folder": (_no_benchmark_folder, "benchmark folder not found"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_data_fails_naming_the_path_before_any_model(make_cfg, tmp_path, monkeypatch, case):
    from sapt_lightning import run as run_module
    from sapt_lightning import stream

    make, message = BROKEN[case]
    root = tmp_path / "CL_Benchmark"
    root.mkdir()
    path = make(root)
    monkeypatch.setattr(stream, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(DataError) as err:
        run_module.run(local_cfg(make_cfg, root))
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_task_name_typo_suggests_the_folder(make_cfg, tmp_path):
    write_task(tmp_path, "task002_quoref_answer_generation")
    with pytest.raises(DataError, match="did you mean 'task002_quoref_answer_generation'"):
        build_tasks(local_cfg(make_cfg, tmp_path, tasks="[task002_quoref_answer_generaton]"))


# --- dev/test from other splits -------------------------------------------------------------------


def test_train_only_task_needs_both_carving_options(make_cfg, tmp_path):
    write_task(tmp_path, "alpha", splits=("train",))
    expected = r"alpha/dev.json .*data.dev_from_train=0.1.*1 more missing \(alpha/test.json\)"
    with pytest.raises(DataError, match=expected):
        build_tasks(local_cfg(make_cfg, tmp_path, tasks="[alpha]"))
    with pytest.raises(DataError, match=r"alpha/test.json .*data.test_from_train=0.1"):
        build_tasks(local_cfg(make_cfg, tmp_path, "data.dev_from_train=0.2", tasks="[alpha]"))
    cfg = local_cfg(make_cfg, tmp_path, "data.dev_from_train=0.2", "data.test_from_train=0.25", tasks="[alpha]")
    (task,) = build_tasks(cfg)
    assert counts(task) == (12, 3, 5)  # test is carved first (5 of 20), then dev (3 of the 15 left)
    inputs = [{ex.input for ex in split} for split in (task.train, task.dev, task.test)]
    assert not (inputs[0] & inputs[1] or inputs[0] & inputs[2] or inputs[1] & inputs[2])
    assert set().union(*inputs) == {f"train {k}" for k in range(20)}
    assert build_tasks(cfg)[0].test == task.test  # deterministic


def test_test_from_dev_is_a_fallback_for_a_missing_test_file(make_cfg, tmp_path):
    write_task(tmp_path, "alpha", splits=("train", "dev"))
    write_task(tmp_path, "beta")
    alpha, beta = build_tasks(local_cfg(make_cfg, tmp_path, "data.test_from_dev=true"))
    assert alpha.test == alpha.dev and alpha.test[0].input == "dev 0"
    assert beta.test[0].input == "test 0"  # its own test.json wins
    alpha, _ = build_tasks(local_cfg(make_cfg, tmp_path, "data.test_from_dev=true", "data.dev_from_train=0.1"))
    assert alpha.test[0].input == "dev 0" and alpha.dev[0].input.startswith("train")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.test_from_dev=true", "data.test_from_train=0.1"], "both set"),
        (["data.dev_from_train=1.5"], "data.dev_from_train=1.5: must be a fraction"),
        (["data.dev_from_train=0.5", "data.test_from_train=0.5"], "leaves no training data"),
    ],
)
def test_bad_carving_options_are_config_errors(make_cfg, tmp_path, overrides, message):
    write_task(tmp_path, "alpha")
    write_task(tmp_path, "beta")
    with pytest.raises(ConfigError, match=message):
        build_tasks(local_cfg(make_cfg, tmp_path, *overrides))


def test_carving_from_too_few_instances_names_the_file(make_cfg, tmp_path):
    folder = write_task(tmp_path, "alpha", splits=("test",))
    write_split(folder, "train", instances(1))
    with pytest.raises(DataError, match=re.escape(f"{folder / 'train.json'}: 1 instance(s) are too few")):
        build_tasks(local_cfg(make_cfg, tmp_path, "data.dev_from_train=0.1", tasks="[alpha]"))


# --- unseen tasks ---------------------------------------------------------------------------------


def test_unseen_tasks_read_only_their_test_split(make_cfg, tmp_path):
    write_task(tmp_path, "alpha")
    write_task(tmp_path, "beta", splits=("test",), n=7)
    cfg = local_cfg(make_cfg, tmp_path, "eval.unseen_tasks=[beta]", tasks="[alpha]")
    (unseen,) = build_unseen_tasks(cfg, build_tasks(cfg))
    assert (unseen.name, counts(unseen), unseen.metric) == ("beta", (0, 0, 7), "rougeL")


@pytest.mark.parametrize(
    "unseen,error,message",
    [
        ("[alpha]", ConfigError, "which the stream trains on"),
        ("[beta,beta]", ConfigError, "lists a task twice"),
        ("[gamma]", DataError, "gamma"),
    ],
)
def test_bad_unseen_tasks_fail_before_training(make_cfg, tmp_path, unseen, error, message):
    write_task(tmp_path, "alpha")
    write_task(tmp_path, "beta")
    cfg = local_cfg(make_cfg, tmp_path, f"eval.unseen_tasks={unseen}", tasks="[alpha]")
    with pytest.raises(error, match=message):
        build_unseen_tasks(cfg, build_tasks(cfg))


def test_evaluate_unseen_scores_each_task_with_the_loop():
    class Loop:  # the part of ContinualLoop that evaluate_unseen uses
        module = type("M", (), {"isolated_tasks": False})()

        def evaluate(self, task):
            return {"a": 10.0, "b": 20.0}[task.name]

    tasks = [type("T", (), {"name": n, "metric": m})() for n, m in (("a", "rougeL"), ("b", "exact_match"))]
    assert evaluate_unseen(Loop(), tasks) == {
        "unseen": {"a": 10.0, "b": 20.0},
        "unseen_metric": {"a": "rougeL", "b": "exact_match"},
    }
    assert evaluate_unseen(Loop(), []) == {}


# --- a real-data run on CPU -----------------------------------------------------------------------


@real_data
def test_smoke_run_on_superni(make_cfg, tmp_path):
    from sapt_lightning.run import run

    started = time.time()
    run(
        make_cfg(
            "benchmark=superni",
            "order=1",
            "benchmark.num_tasks=3",
            "benchmark.max_train_per_task=24",
            "benchmark.max_eval_per_task=8",
            "trainer.max_steps=3",
            "backbone.tiny.pretrain_steps=0",
            "method=seq_lora",
            "logger=csv",
            "data.max_source_length=64",
            "eval.max_new_tokens=8",
            "eval.unseen_tasks=[task181_outcome_extraction]",
        )
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["order"] == [
        "task1572_samsum_summary",
        "task363_sst2_polarity_classification",
        "task1290_xsum_summarization",
    ]
    assert results["metric"] == {
        "task1572_samsum_summary": "rougeL",
        "task363_sst2_polarity_classification": "exact_match",
        "task1290_xsum_summarization": "rougeL",
    }
    assert [sum(v is not None for v in row) for row in results["matrix"]] == [1, 2, 3]
    assert list(results["unseen"]) == ["task181_outcome_extraction"]
    assert 0 <= results["unseen"]["task181_outcome_extraction"] <= 100
    assert results["unseen_metric"] == {"task181_outcome_extraction": "rougeL"}
    assert time.time() - started < 60


# --- experiment presets ---------------------------------------------------------------------------

# docs/method.md §5.2, T5 columns: (benchmark, order, LoRA r, lambda, batch, accumulation, epochs).
PRESETS = {
    "superni_order1": ("superni", 1, 4, 0.5, 8, 4, 100),
    "superni_order2": ("superni", 2, 4, 0.5, 8, 4, 100),
    "long_sequence_order3": ("long_sequence", 3, 8, 0.1, 16, 2, 10),
    "long_sequence_order4": ("long_sequence", 4, 8, 0.1, 16, 2, 10),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_experiment_presets_carry_the_paper_hyper_parameters(make_cfg, name):
    bench, order, r, kl, batch, accumulate, epochs = PRESETS[name]
    cfg = make_cfg(f"experiment={name}")
    assert (cfg.backbone.name, cfg.benchmark.name, cfg.order.id, cfg.method.name, cfg.pet.type) == (
        "t5_large",
        bench,
        order,
        "sapt",
        "lora",
    )
    assert (cfg.method.lr, cfg.method.sapt.attn_lr, cfg.method.sapt.key_lr) == (3e-4, None, None)
    assert (cfg.pet.r, cfg.pet.alpha, cfg.pet.dropout, cfg.method.arm.kl_weight) == (r, 32, 0.0, kl)
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (batch, accumulate)
    assert batch * accumulate == 32
    assert (cfg.data.max_source_length, cfg.data.max_target_length, cfg.eval.max_new_tokens) == (512, 50, 50)
    assert (cfg.trainer.max_epochs, cfg.trainer.max_steps) == (epochs, -1)
    assert f"order{order}" in list(cfg.tags)
    first_lines = (CONF / "experiment" / f"{name}.yaml").read_text().splitlines()
    assert first_lines[0] == "# @package _global_"
    assert any(f"python -m sapt_lightning experiment={name}" in line for line in first_lines if line.startswith("#"))


def test_command_line_wins_over_an_experiment(make_cfg):
    cfg = make_cfg("experiment=superni_order1", "order=2", "trainer.max_epochs=3")
    assert (cfg.order.id, cfg.trainer.max_epochs, list(cfg.tags)[-1]) == (2, 3, "order2")


def test_official_fidelity_scores_every_superni_task_by_rouge_as_the_release():
    from sapt_lightning.data.benchmarks import label_set_task, task_metric

    sst2 = "task363_sst2_polarity_classification"
    clean = compose_cfg(["benchmark=superni", "order=1"])
    official = compose_cfg(["benchmark=superni", "order=1", "fidelity=official"])
    assert task_metric(clean, sst2) == "exact_match" and task_metric(official, sst2) == "rougeL"
    assert label_set_task(official, sst2)  # still a classification task (EPI's kind)
    assert (
        task_metric(compose_cfg(["benchmark=long_sequence", "order=3", "fidelity=official"]), "yelp") == "exact_match"
    )


def test_official_fidelity_trains_on_one_random_reference_per_instance():
    """docs/method.md §11.5: the release keeps one random reference of a multi-reference instance for
    training; clean trains on the first and scores the best match."""
    import random

    from sapt_lightning.data.benchmarks import one_random_reference
    from sapt_lightning.data.task import Example

    many = [Example("D", f"in {k}", ("a", "b", "c", "d")) for k in range(40)] + [Example("D", "x", ("only",))]
    kept = one_random_reference(many, random.Random("42:task:references"))
    assert all(len(ex.outputs) == 1 and ex.outputs[0] in orig.outputs for ex, orig in zip(kept, many))
    assert len({ex.target for ex in kept[:40]}) > 1 and kept[-1] == many[-1]
    assert kept == one_random_reference(many, random.Random("42:task:references"))
