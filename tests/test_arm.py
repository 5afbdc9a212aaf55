"""ARM: targets, padding, KL, pseudo samples on disk."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sapt_lightning.data.collate import Collator
from sapt_lightning.data.io import read_pseudo_task, write_task_json
from sapt_lightning.data.task import Example, Task
from sapt_lightning.errors import DataError
from sapt_lightning.methods.generator import parse_generation
from sapt_lightning.methods.sapt.reflection import attention_target, pad_target, reflection_kl
from sapt_lightning.run import run


def test_kl_matches_a_hand_computation():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    target = torch.tensor([0.7, 0.3, 0.0])
    p = logits.softmax(-1)
    # KL(t || p) = sum_j t_j (log t_j - log p_j), zero-target terms drop out; batchmean over 2 rows
    by_hand = (
        sum(
            sum(t * (math.log(t) - math.log(p[b, j])) for j, t in enumerate(target.tolist()) if t > 0) for b in range(2)
        )
        / 2
    )
    assert reflection_kl(logits, target).item() == pytest.approx(by_hand, rel=1e-6)
    assert reflection_kl(torch.log(torch.tensor([[0.7, 0.3, 1e-12]])), target).item() == pytest.approx(0, abs=1e-6)


def test_padded_targets_follow_block_order():
    # blocks are in task order 0..t: the target of task 1 (two blocks) gets zeros for blocks 2 and 3
    padded = pad_target(torch.tensor([0.2, 0.8]), 4)
    assert padded.tolist() == pytest.approx([0.2, 0.8, 0.0, 0.0])
    with pytest.raises(ValueError):
        pad_target(torch.tensor([0.2, 0.3, 0.5]), 2)
    with pytest.raises(ValueError, match="3 entries"):
        reflection_kl(torch.zeros(1, 2), torch.tensor([0.2, 0.3, 0.5]))


def test_target_averaging_modes():
    batches = [torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    assert attention_target(batches, "per_example").tolist() == pytest.approx([0.75, 0.25])
    assert attention_target(batches, "batch_means").tolist() == pytest.approx([0.5, 0.5])  # release's bias
    # The release's LLaMA: a batch counts once per forward of its prediction (decoding steps + 1).
    assert attention_target(batches, "batch_means", [3.0, 1.0]).tolist() == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="one weight per batch"):
        attention_target(batches, "batch_means", [1.0])


def test_generator_output_parsing():
    assert parse_generation("Reverse it. __inp__ a b c", False) == Example("Reverse it.", "a b c", ("",))
    assert parse_generation("Reverse it. __inp__ a b __ans__ b a", True) == Example("Reverse it.", "a b", ("b a",))
    assert parse_generation("no marker here", False) is None
    assert parse_generation("x __inp__ y", True) is None  # replay needs an output


def test_official_pseudo_samples_share_one_generated_instruction():
    from sapt_lightning.methods.generator import with_one_instruction

    pseudo = [Example(f"Instruction {k}.", f"in {k}", ("",)) for k in range(5)] + [Example("", "plain input", ("",))]
    shared = with_one_instruction(pseudo, seed=3)
    assert len({ex.definition for ex in shared}) == 1 and shared[0].definition in {ex.definition for ex in pseudo[:5]}
    assert [ex.input for ex in shared] == [ex.input for ex in pseudo] and shared == with_one_instruction(pseudo, seed=3)


def _task(name: str) -> Task:
    ex = [Example("Do it.", f"in {k}", (f"out {k}",)) for k in range(3)]
    return Task(name, "exact_match", "synthetic", ex, ex, ex)


def test_pseudo_files_round_trip(tmp_path):
    examples = [Example("Make a list.", "a b", ("",)), Example("Another instruction.", "c", ("d",))]
    write_task_json(tmp_path / "topic" / "train.json", examples)
    data = json.loads((tmp_path / "topic" / "train.json").read_text())
    assert data["Definition"] == ["Make a list."] and len(data["Instances"]) == 2
    assert read_pseudo_task(tmp_path, _task("topic")) == examples


def test_pseudo_dir_accepts_the_release_layout(tmp_path):
    write_task_json(tmp_path / "SuperNI" / "task1" / "train.json", [Example("D", "x", ("",))])
    assert read_pseudo_task(tmp_path, _task("task1"))[0].input == "x"


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no pseudo samples for task 'topic'"),
        ("{not json", "not valid JSON"),
        ('{"Definition": [], "Instances": []}', "empty"),
        ('{"Instances": [{"input": "a"}]}', "lacks 'input' or 'output'"),
        ('{"Definition": [{"a": 1}], "Instances": [{"input": "a", "output": "b"}]}', "'Definition' must be text"),
        ('{"Instances": [{"input": "a", "output": "b", "definition": 7}]}', "instance 0's 'definition' must be text"),
    ],
)
def test_bad_pseudo_data_names_task_and_file(tmp_path, content, message):
    if content is not None:
        (tmp_path / "topic").mkdir()
        (tmp_path / "topic" / "train.json").write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_pseudo_task(tmp_path, _task("topic"))
    assert "topic" in str(err.value)


def test_pseudo_data_dir_replaces_generation(make_cfg, tmp_path):
    pseudo = tmp_path / "pseudo"
    for name in ("reverse", "first_word"):
        write_task_json(pseudo / name / "train.json", [Example("Given instruction.", f"given {name} input", ("",))])
    run(make_cfg("debug=smoke", "logger=csv", f"method.arm.pseudo_data_dir={pseudo}"))
    written = json.loads((tmp_path / "run" / "tasks" / "1-reverse" / "pseudo" / "train.json").read_text())
    assert written["Instances"][0]["input"] == "given reverse input"
    assert not (tmp_path / "run" / "tasks" / "1-reverse" / "generator.safetensors").exists()


def test_missing_task_in_pseudo_data_dir_is_reported(make_cfg, tmp_path):
    pseudo = tmp_path / "pseudo"
    write_task_json(pseudo / "first_word" / "train.json", [Example("I", "x", ("",))])
    with pytest.raises(DataError, match="reverse"):
        run(make_cfg("debug=smoke", "logger=csv", f"method.arm.pseudo_data_dir={pseudo}"))


def test_no_arm_skips_generation_and_kl(make_cfg, tmp_path):
    results = run(make_cfg("debug=smoke", "logger=csv", "ablation=no_arm"))
    assert not (tmp_path / "run" / "tasks" / "1-reverse" / "pseudo").exists()
    assert results["ablations"] == ["no_arm"]


def test_replay_mixes_pseudo_pairs_into_training(make_cfg, tmp_path):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "logger=csv", "ablation=replay")
    module = build_method(cfg, load_backbone(cfg.backbone, tmp_path.parent / "cache"))
    module.pseudo = [[Example("D", "pseudo in", ("pseudo out",)), Example("", "a plain fallback input", ("",))]]
    module.targets = [torch.ones(1)]
    extra = module.start_task(1, _task("next"))
    assert extra == module.pseudo[0][:1]  # a fallback without an output would teach an empty answer
    assert module.gen_settings.generate_outputs is True


@pytest.mark.parametrize("backbone", ["tiny_t5", "tiny_llama"])
def test_generator_micro_batches_give_the_whole_batch_gradient(make_cfg, cache_dir, backbone):
    """method.generator.micro_batch_size only trades memory for time: slices of a step's batch,
    each weighted by its share of the target tokens, give the whole batch's loss and gradient
    (rows of different lengths, so the slices hold different token counts)."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.collate import Collator
    from sapt_lightning.methods import generator as gen
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", f"backbone={backbone}")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    module.model.eval()  # no dropout: the two passes must see the same network
    gen.set_generator_active(module.model, True)
    collate = Collator(
        module.tokenizer,
        module.family,
        "long_sequence",
        gen.SOURCE_LENGTH,
        module.gen_settings.max_target_length,
        with_labels=True,
    )
    texts = ["a b c", "a longer input part with many more words in it", "x", "one two three four", "five six"]
    batch = collate([Example("", gen.GEN, (text,)) for text in texts])
    params = [p for p in module.model.parameters() if p.requires_grad]
    assert params

    def step(micro_batch_size):
        module.model.zero_grad(set_to_none=True)
        loss = gen.accumulate_step(module.model, batch, micro_batch_size)
        return loss, [p.grad.clone() for p in params]

    whole_loss, whole = step(None)
    for micro in (1, 2):
        loss, grads = step(micro)
        torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-6)
        for g, w in zip(grads, whole):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_decoder_only_router_pools_the_prompt_alone_padded_with_bos():
    """A LLaMA training row holds prompt + answer; its router input is the prompt alone, left-padded
    with BOS as the release pads it, so even unmasked pooling (fidelity=official) sees at training
    what it sees at test time."""
    tokenizer = _word_tokenizer()
    examples = [Example("a", "b c d", ("yes",)), Example("a", "b", ("no no no",))]
    train = Collator(tokenizer, "llama", "synthetic", 64, 16, with_labels=True)(examples)
    test = Collator(tokenizer, "llama", "synthetic", 64, 16, with_labels=False)(examples)
    assert torch.equal(train["pool_ids"], test["pool_ids"]) and torch.equal(train["pool_mask"], test["pool_mask"])
    assert train["input_ids"].shape[1] > train["pool_ids"].shape[1]  # the answers are not in it
    padding = train["pool_mask"] == 0
    assert padding.any() and (train["pool_ids"][padding] == tokenizer.bos_token_id).all()
    assert train["pool_mask"][:, -1].all()  # left-padded: every prompt ends at the right edge


def _word_tokenizer():
    """A word-level tokenizer: one token per word, so label lengths are plain to count."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "a",
        "b",
        "c",
        "d",
        "yes",
        "no",
        "Output:",
        "Definition:",
        "Now",
        "complete",
        "the",
        "following",
        "example",
        "-",
        "Input:",
    ]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize(
    "label_eos, long_label", [("always", ["a", "b", "c", "</s>"]), ("truncated", ["a", "b", "c", "d"])]
)
def test_a_long_llama_label_keeps_its_eos_unless_official(label_eos, long_label):
    """max_target_length 4: clean cuts the label to 3 tokens and keeps EOS (the model learns to stop);
    fidelity=official cuts label + EOS to 4, as the release does, so the long label ends without EOS.
    A label that fits keeps its EOS either way."""
    tokenizer = _word_tokenizer()
    examples = [Example("a", "b", ("a b c d yes",)), Example("a", "b", ("no",))]
    batch = Collator(tokenizer, "llama", "synthetic", 64, 4, label_eos=label_eos)(examples)
    labels = [tokenizer.convert_ids_to_tokens(row[row != -100].tolist()) for row in batch["labels"]]
    assert labels == [long_label, ["no", "</s>"]]


def test_official_fidelity_reaches_the_collator():
    from conftest import compose_cfg

    from sapt_lightning.data.datamodule import ContinualDataModule

    backbone = type("Backbone", (), {"tokenizer": None, "family": "llama"})()
    for fidelity, expected in (("clean", "always"), ("official", "truncated")):
        data = ContinualDataModule.from_config(compose_cfg([f"fidelity={fidelity}"]), [_task("numbers")], backbone)
        assert data.collator(data.tasks[0]).label_eos == expected


def test_replay_batches_are_reshuffled_each_pass_from_their_own_seed():
    """Replay loaders draw like the release's seeded random sampler: each pass over a task's pseudo
    samples in a new order, the same orders again for the same (seed, task, source)."""
    from sapt_lightning.data.datamodule import ContinualDataModule, ReplayStream
    from sapt_lightning.utils.rng import replay_seed

    task = _task("numbers")
    pseudo = [Example("", str(i), ("",)) for i in range(12)]
    data = ContinualDataModule([task], None, "t5", 4, 4, 8, 8, seed=0)
    data.collator = lambda task, with_labels: lambda rows: [int(ex.input) for ex in rows]  # no tokenizer needed

    def two_passes(seed: int | None) -> list[list[int]]:
        batches = ReplayStream(data.loader(task, pseudo, batch_size=4, shuffle_seed=seed))
        return [[row for _ in range(3) for row in next(batches)] for _ in range(2)]

    assert two_passes(None) == [list(range(12))] * 2  # evaluation loaders keep their order
    first, second = two_passes(replay_seed(1, 2, 0))
    assert sorted(first) == sorted(second) == list(range(12)) and first != second and first != list(range(12))
    assert two_passes(replay_seed(1, 2, 0)) == [first, second]
    assert two_passes(replay_seed(1, 2, 1)) != [first, second] != two_passes(replay_seed(1, 3, 0))


@pytest.mark.parametrize(
    "backbone, fidelity, extra, factor, first_step",
    [
        ("tiny_t5", "clean", [], 1, 0),
        ("tiny_t5", "official", [], 4, 1),  # the release's T5 trainer: λ·GAS, no reflection in step 0
        ("tiny_llama", "official", [], 1, 1),  # its LLaMA runs under DeepSpeed, which divides the KL too
        ("tiny_t5", "official", ["method.arm.start_step=0"], 4, 0),
    ],
)
def test_official_reflection_follows_the_release_per_backbone(
    make_cfg, cache_dir, backbone, fidelity, extra, factor, first_step
):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg(
        "debug=smoke", f"backbone={backbone}", f"fidelity={fidelity}", "trainer.accumulate_grad_batches=4", *extra
    )
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    assert (module.kl_accumulation_factor, module.replay_from_step) == (factor, first_step)


def _sapt(make_cfg, cache_dir, backbone: str, fidelity: str, *extra: str):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", f"backbone={backbone}", f"fidelity={fidelity}", *extra)
    loaded = load_backbone(cfg.backbone, cache_dir)
    return cfg, build_method(cfg, loaded), loaded


def test_official_llama_redraws_the_query_network_as_the_release_does(make_cfg, cache_dir):
    """The release's LLaMA model holds the query network, so its post_init draws the Linear weights
    N(0, initializer_range); T5's initialisation, and fidelity=clean, keep nn.Linear's own."""
    for backbone in ("tiny_llama", "tiny_t5"):
        for fidelity in ("official", "clean"):
            _, module, _ = _sapt(make_cfg, cache_dir, backbone, fidelity)
            query = module.attention.query
            if (backbone, fidelity) == ("tiny_llama", "official"):
                expected = [float(module.model.config.initializer_range)] * 2
            else:  # kaiming_uniform(a=sqrt(5)): U(±1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
                expected = [1 / (3 * w.shape[1]) ** 0.5 for w in (query.down.weight, query.up.weight)]
            stds = [float(w.detach().std()) for w in (query.down.weight, query.up.weight)]
            assert stds == pytest.approx(expected, rel=0.15), (backbone, fidelity)
            torch.testing.assert_close(query.norm.weight, torch.ones_like(query.norm.weight))


@pytest.mark.parametrize("fidelity, dtype", [("official", torch.bfloat16), ("clean", torch.float32)])
def test_official_arm_targets_enter_the_kl_in_bf16(make_cfg, cache_dir, monkeypatch, fidelity, dtype):
    import sapt_lightning.methods.sapt.module as sapt_module

    _, module, _ = _sapt(make_cfg, cache_dir, "tiny_t5", fidelity)
    module.add_task_block()
    module.add_task_block()
    target = torch.tensor([1 / 3, 2 / 3])  # neither is a bf16 number
    module.targets = [target]
    seen = []
    monkeypatch.setattr(sapt_module, "reflection_kl", lambda logits, t: seen.append(t) or reflection_kl(logits, t))
    ids = torch.tensor([[5, 6, 7, 1]])
    kl = module.reflection_loss(0, {"pool_ids": ids, "pool_mask": torch.ones_like(ids)})
    assert seen[0].dtype == dtype and torch.isfinite(kl)
    torch.testing.assert_close(seen[0], pad_target(target, 2).to(dtype))


def test_official_llama_targets_weigh_a_batch_by_its_prediction_forwards(make_cfg, cache_dir, monkeypatch):
    """The release's LLaMA appends a dev batch's mean attention on each forward of its prediction:
    every greedy decoding step and the loss forward. Under official the target weighs each batch
    mean by that count."""
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.datamodule import ContinualDataModule

    cfg, module, backbone = _sapt(
        make_cfg, cache_dir, "tiny_llama", "official", "data.eval_batch_size=3", "eval.max_new_tokens=6"
    )
    tasks = build_tasks(cfg)
    data = ContinualDataModule.from_config(cfg, tasks, backbone)
    module.add_task_block()
    module.add_task_block()
    task = tasks[0]
    loader = list(data.loader(task, task.dev))
    # A random model never writes EOS: every batch decodes to the limit.
    assert [module.decoding_steps(b) for b in loader] == [6] * len(loader) and len(loader) > 2
    steps = iter([1, 4, 2, 5, 3, 6][: len(loader)])  # batches that end at different steps
    monkeypatch.setattr(module, "decoding_steps", lambda batch: next(steps))
    weights = torch.tensor([2.0, 5.0, 3.0, 6.0, 4.0, 7.0][: len(loader)]).unsqueeze(1)
    means = torch.stack([b.mean(0) for b in module.routed_batches(task, task.dev, data)])
    torch.testing.assert_close(module.measure_target(task, data), (means * weights).sum(0) / weights.sum())
