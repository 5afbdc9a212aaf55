"""Scale on a CPU: every backbone x strategy composes and builds; impossible ones are
refused in one line before any model loads; plan's counts equal the built module's."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose_cfg

from sapt_lightning.errors import ConfigError
from sapt_lightning.estimate import count, estimate, method_sizes
from sapt_lightning.plan import describe
from sapt_lightning.run import make_trainer, run

BACKBONES = ["tiny_t5", "tiny_llama", "t5_large", "t5_xl", "t5_xxl", "llama2_7b", "llama2_13b"]
STRATEGIES = ["cpu", "ddp_cpu", "single_gpu", "ddp", "deepspeed_zero2", "deepspeed_zero3_offload"]
# Published sizes (parameters): T5-Large 738M, T5 v1.1 XL 2.85B / XXL 11.1B, LLaMA-2 6.74B / 13.0B.
# (transformers 5 always ties T5's output embedding, so v1.1 counts come out up to 2.5% lower.)
PUBLISHED = {"t5_large": 737.67e6, "t5_xl": 2.85e9, "t5_xxl": 11.14e9, "llama2_7b": 6.74e9, "llama2_13b": 13.02e9}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_and_strategy_composes_and_builds(backbone, strategy, tmp_path):
    cfg = compose_cfg([f"backbone={backbone}", f"strategy={strategy}"], tmp_path)
    if cfg.strategy.accelerator == "gpu":  # build the same Trainer on the CPU: constructed, never launched
        cfg.strategy.accelerator, cfg.strategy.devices = "cpu", 1
    trainer = make_trainer(cfg, tmp_path, [])
    expected = {
        "cpu": "SingleDeviceStrategy",
        "single_gpu": "SingleDeviceStrategy",
        "ddp_cpu": "DDPStrategy",
        "ddp": "DDPStrategy",
        "deepspeed_zero2": "DeepSpeedStrategy",
        "deepspeed_zero3_offload": "DeepSpeedStrategy",
    }
    assert type(trainer.strategy).__name__ == expected[strategy]
    if strategy.startswith("deepspeed"):
        assert trainer.strategy.config["zero_optimization"]["stage"] == (2 if strategy.endswith("2") else 3)
    if backbone in PUBLISHED:  # the meta-device count is the real model's
        assert count(cfg).frozen == pytest.approx(PUBLISHED[backbone], rel=0.03)


def test_deepspeed_configs_match_the_release():
    """stage2.config: ZeRO-2, overlap_comm, 2e8 buckets, contiguous gradients, no offload;
    stage3.config: ZeRO-3 with optimizer and parameters offloaded to CPU (docs/method.md §10)."""
    from lightning.pytorch.strategies import StrategyRegistry

    z2 = StrategyRegistry.get(compose_cfg(["strategy=deepspeed_zero2"]).strategy.strategy).config["zero_optimization"]
    assert (z2["stage"], z2["overlap_comm"], z2["contiguous_gradients"]) == (2, True, True)
    assert z2["reduce_bucket_size"] == z2["allgather_bucket_size"] == 2e8 and "offload_optimizer" not in z2
    z3 = StrategyRegistry.get(compose_cfg(["strategy=deepspeed_zero3_offload"]).strategy.strategy).config[
        "zero_optimization"
    ]
    assert z3["stage"] == 3 and z3["offload_optimizer"]["device"] == z3["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy=deepspeed_zero3_offload"], "strategy=deepspeed_zero3_offload needs CUDA GPUs, none is visible"),
        (["strategy=deepspeed_zero2"], "strategy=deepspeed_zero2 needs CUDA GPUs, none is visible; use strategy=cpu"),
        (["strategy=deepspeed_zero2", "strategy.accelerator=cpu"], "(DeepSpeed) needs CUDA GPUs"),
        (["strategy=single_gpu"], "strategy=single_gpu needs CUDA GPUs"),
        # (SAPT-Prompt's presets use Adafactor: ZeRO's flat partitions would change its updates)
        (
            ["strategy=deepspeed_zero2", "pet=prompt", "trainer.optimizer=adafactor"],
            "trainer.optimizer=adafactor cannot run under strategy=deepspeed_zero2: DeepSpeed ZeRO gives the optimizer flat partitions",
        ),
    ],
)
def test_gpu_strategies_on_cpu_are_refused_before_any_model(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(make_cfg("debug=smoke", "logger=csv", *overrides))
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend there are CUDA GPUs of a given size (the checks run before anything touches them)."""

    def install(n: int, gib: float) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=int(gib * 2**30))
        )

    return install


def test_more_devices_than_exist(make_cfg, fake_gpus):
    fake_gpus(2, 80)
    with pytest.raises(ConfigError, match=r"strategy.devices=4 but only 2 GPU\(s\) are visible"):
        run(make_cfg("debug=smoke", "logger=csv", "strategy=deepspeed_zero2"))


def test_backbone_that_does_not_fit_the_strategy(make_cfg, fake_gpus):
    fake_gpus(1, 24)
    with pytest.raises(
        ConfigError, match=r"backbone=llama2_13b does not fit strategy=single_gpu: about \d+ GiB.*24 GiB"
    ):
        run(make_cfg("debug=smoke", "logger=csv", "backbone=llama2_13b", "strategy=single_gpu"))
    # ZeRO-3 shards the fit, but between tasks each device holds the whole model again
    from sapt_lightning.run import check_strategy

    fake_gpus(4, 24)
    cfg = make_cfg("debug=smoke", "backbone=llama2_13b", "strategy=deepspeed_zero3_offload")
    with pytest.raises(
        ConfigError, match=r"about \d+ GiB per device needed between tasks, where each device holds the whole"
    ):
        check_strategy(cfg)
    # the generator's step (32 rows) is the peak on 80 GiB; in slices of 4 rows it fits
    fake_gpus(4, 80)
    with pytest.raises(ConfigError, match=r"try a smaller method.generator.micro_batch_size"):
        check_strategy(cfg)
    check_strategy(
        make_cfg(
            "debug=smoke",
            "backbone=llama2_13b",
            "strategy=deepspeed_zero3_offload",
            "method.generator.micro_batch_size=4",
        )
    )  # passes (and would then load)


@pytest.mark.parametrize(
    "backbone, pet, extra",
    [
        ("tiny_t5", "lora", []),
        ("tiny_t5", "prompt", []),
        ("tiny_llama", "lora", []),
        ("tiny_t5", "lora", ["ablation=no_sa"]),
    ],
)
def test_plan_counts_equal_the_built_module(make_cfg, backbone, pet, extra):
    from pathlib import Path

    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", f"backbone={backbone}", f"pet={pet}", *extra)
    module = build_method(cfg, load_backbone(cfg.backbone, Path(cfg.paths.cache_dir)))
    module.start_task(0, build_synthetic_task("reverse", 0, 4, 1, 1))
    # (backbone totals are checked against published sizes above; a tiny one's vocabulary is what its BPE learned)
    assert module.trainable_parameters() == method_sizes(cfg, count(cfg), 2)["trainable"]


def test_plan_prints_counts_and_memory_for_a_paper_setting():
    text = describe(compose_cfg(["experiment=superni_order1"]))
    assert "backbone (frozen)                    737.67 M" in text and "15 tasks" in text
    assert "trainable while learning a task        1.39 M" in text and "fits 80 GiB" in text
    off = describe(compose_cfg(["experiment=superni_order1", "trainer.gradient_checkpointing=true"]))
    acts = [float(t.split()[-2]) for t in (text, off) for t in t.splitlines() if t.strip().startswith("activations")]
    assert acts[1] < acts[0] / 4, "gradient checkpointing cuts activation memory"


def test_original_t5_3b_shapes_are_supported(make_cfg, tmp_path):
    """The release assumes n_heads*d_kv == d_model (docs/method.md §11.16); blocks here take any shape."""
    assert count(compose_cfg(["backbone=t5_xl", "backbone.name_or_path=google-t5/t5-3b"])).frozen == pytest.approx(
        2.85e9, rel=0.01
    )
    run(make_cfg("debug=smoke", "logger=csv", "backbone.tiny.d_kv=8"))  # 4 heads x 8 = 32 != d_model 128
    assert (tmp_path / "run" / "results.json").is_file()


def test_gradient_checkpointing_gives_the_same_gradients(make_cfg):
    from pathlib import Path

    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.collate import Collator
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.methods.registry import build_method

    task = build_synthetic_task("reverse", 0, 8, 1, 1)
    grads = []
    for flag in ("false", "true"):
        cfg = make_cfg("debug=smoke", f"trainer.gradient_checkpointing={flag}", "method.sapt.mixing=fused")
        backbone = load_backbone(cfg.backbone, Path(cfg.paths.cache_dir))
        torch.manual_seed(0)  # after loading: building the tiny backbone on first use draws random numbers
        module = build_method(cfg, backbone)
        module.start_task(0, task)
        module.train()
        batch = Collator(module.tokenizer, "t5", "synthetic", 64, 16)(task.train)
        module.task_loss(batch).backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in module.parameters() if p.requires_grad and p.grad is not None])
        )
    assert any(getattr(m, "gradient_checkpointing", False) for m in module.model.modules())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_slurm_launcher_without_sbatch_is_one_line(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no sbatch here
    proc = subprocess.run(
        [sys.executable, "-m", "sapt_lightning", "-m", "hydra/launcher=slurm", "seed=1,2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra/launcher=slurm submits jobs to SLURM, but sbatch is not on PATH here; run the sweep from the "
        "cluster's login node, or leave out hydra/launcher to run the jobs one after another on this machine"
    ]


def test_slurm_launcher_asks_for_the_strategys_gpus():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sapt_lightning.configs import CONF_DIR  # (importing the package registers its resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        gpu = compose(
            "train",
            ["hydra/launcher=slurm", "strategy=deepspeed_zero2", "strategy.num_nodes=2"],
            return_hydra_config=True,
        ).hydra.launcher
        cpu = compose("train", ["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    GlobalHydra.instance().clear()
    assert (gpu.gpus_per_node, gpu.tasks_per_node, gpu.nodes) == (4, 4, 2)
    assert cpu.gpus_per_node == 0


def test_a_strategy_casting_the_module_to_bf16_changes_no_artifact(make_cfg, tmp_path, monkeypatch):
    """`bf16-true` casts the whole module to bf16 in place at the strategy's setup, as DeepSpeed's
    bf16 engine does. FitGuard gives each tensor its dtype, and each frozen one its value, back
    after fit, keeping what training changed; artifacts are fp32; the stream reloads from disk
    to the recorded scores and predictions."""
    import json

    from lightning.pytorch.strategies import SingleDeviceStrategy
    from safetensors.torch import load_file

    from sapt_lightning.evaluate import evaluate_run

    setup, at_setup = SingleDeviceStrategy.setup, []

    def recording_setup(self, trainer):
        at_setup.append({n: p.detach().clone() for n, p in self.lightning_module.named_parameters()})
        setup(self, trainer)
        assert {p.dtype for p in self.lightning_module.parameters()} == {torch.bfloat16}  # the cast happened

    monkeypatch.setattr(SingleDeviceStrategy, "setup", recording_setup)
    run(
        make_cfg(
            "debug=smoke",
            "logger=csv",
            "strategy.precision=bf16-true",
            "backbone.tiny.pretrain_steps=100",
            "trainer.max_steps=30",
        )
    )
    # The second task starts with the backbone, the first task's block, keys and query network
    # as they were (fp32, not rounded to bf16), apart from what task 1 trained.
    first, second = at_setup
    trained = {n for n in first if not torch.equal(first[n], second[n])}
    assert all(second[n].dtype == first[n].dtype for n in first)
    assert trained and all("lora_" in n or "attention" in n for n in trained), sorted(trained)[:5]
    frozen = [n for n in first if n not in trained and "lora_" not in n and "attention" not in n]
    assert any((first[n] != first[n].bfloat16().float()).any() for n in frozen)  # rounding would have shown
    run_dir = tmp_path / "run"
    for path in run_dir.glob("tasks/*/*.safetensors"):
        assert {t.dtype for t in load_file(str(path)).values()} == {torch.float32}, path
    recorded = json.loads((run_dir / "results.json").read_text())
    results = evaluate_run(run_dir)
    assert results["row"] == recorded["matrix"][-1]
    assert all(results["examples"][n] == recorded["examples"][n] for n in recorded["order"])


ENGINE_SCRIPT = r"""
import os, torch, torch.distributed as dist
from types import SimpleNamespace
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo", rank=0, world_size=1)
import deepspeed
from deepspeed.utils import safe_get_full_fp32_param
from sapt_lightning.cl.fit_guard import release_engine

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
model[0].requires_grad_(False)
params = [p for p in model.parameters() if p.requires_grad]
config = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}, "zero_optimization": {"stage": 2},
          "zero_allow_untested_optimizer": True}
engine, *_ = deepspeed.initialize(model=model, model_parameters=params, optimizer=torch.optim.AdamW(params, lr=1e-3),
                                  config=config, dist_init_required=False)
for _ in range(3):
    loss = engine(torch.randn(4, 8, dtype=torch.bfloat16)).float().pow(2).mean()
    engine.backward(loss)
    engine.step()
master = safe_get_full_fp32_param(model[1].weight)
assert master.dtype == torch.float32 and model[1].weight.dtype == torch.bfloat16
assert (master != model[1].weight.float()).any(), "the master holds more than the bf16 copy"
assert model._forward_pre_hooks or model._forward_hooks  # the engine's hooks are on the module
strategy = SimpleNamespace(model=engine, optimizers=[engine.optimizer])
release_engine(strategy)
assert not model._forward_pre_hooks and not model._forward_hooks and strategy.model is None and not strategy.optimizers
print("ok")
"""


@pytest.mark.slow
def test_deepspeed_masters_and_engine_release_on_a_cpu_engine(tmp_path):
    """What FitGuard relies on in DeepSpeed itself, on a CPU engine (Lightning's strategy needs GPUs):
    ZeRO-2 bf16 keeps fp32 masters that safe_get_full_fp32_param returns, and release_engine
    removes the hooks the engine put on the module."""
    pytest.importorskip("deepspeed")
    env = {**os.environ, "PORT": "29581", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_counter():
    """Bytes in use on the C heap (glibc's mallinfo2), where PyTorch's CPU allocator puts every tensor."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to count the heap")
    mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd  # small blocks in the arenas + large ones mapped on their own

    return in_use


def _peak_of_step(module: torch.nn.Module, loss_of_step) -> int:
    """The most memory a bf16-autocast forward and backward holds above what was in use before it.

    Sampled at every module call (the forward, and each layer's recomputation under gradient
    checkpointing) and at every use of a saved tensor in the backward."""
    in_use, samples = _heap_counter(), []
    hooks = [
        hook
        for m in module.modules()
        for hook in (
            m.register_forward_pre_hook(lambda *_: samples.append(in_use())),
            m.register_forward_hook(lambda *_: samples.append(in_use())),
        )
    ]

    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        samples.append(in_use())
        return tensor

    peak = 0
    for _ in range(2):  # the first step also allocates what stays (autocast's casts of the weights)
        gc.collect()
        before = in_use()
        with (
            torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, unpack),
            torch.autocast("cpu", dtype=torch.bfloat16),
        ):
            loss = loss_of_step()
        samples.append(in_use())
        loss.backward()
        peak = max(samples) - before
        samples.clear()
        module.zero_grad(set_to_none=True)
        del loss
    for hook in hooks:
        hook.remove()
    return peak


# The two slowest cases (over a minute each on a CPU without AVX-512, where bf16 products crawl) run
# with the slow tests; checkpointing stays covered in the fast suite by T5's SAPT and LLaMA's generator.
@pytest.mark.parametrize(
    "backbone, part, checkpointing",
    [
        ("t5", "sapt", False),
        ("t5", "sapt", True),
        ("t5", "generator", False),
        ("t5", "lfpt5", False),
        pytest.param("t5", "lfpt5", True, marks=pytest.mark.slow),
        ("llama", "sapt", False),
        pytest.param("llama", "sapt", True, marks=pytest.mark.slow),
        ("llama", "generator", False),
        ("llama", "generator", True),
    ],
)
def test_plan_activation_estimate_is_what_a_step_holds(make_cfg, backbone, part, checkpointing):
    """plan's activations (its +-30%) against the peak memory of a bf16-autocast training step of
    the paper's preset on a 16-bit backbone of T5-Large's / LLaMA-2's proportions and 2 layers:
    SAPT's step, a step of its generator, and LFPT5's step with its replayed batch; with and
    without gradient checkpointing."""
    import itertools
    from pathlib import Path

    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.synthetic import build_synthetic_task
    from sapt_lightning.estimate import generator_activation_bytes
    from sapt_lightning.methods import generator
    from sapt_lightning.methods.registry import build_method

    shape = {
        "t5": [
            "backbone=tiny_t5",
            "backbone.tiny.d_model=512",
            "backbone.tiny.d_ff=2048",
            "backbone.tiny.num_heads=8",
            "backbone.tiny.d_kv=64",
        ],
        "llama": [
            "backbone=tiny_llama",
            "backbone.tiny.hidden_size=512",
            "backbone.tiny.intermediate_size=1376",
            "backbone.tiny.num_attention_heads=8",
        ],
    }[backbone]
    method = ["method=lfpt5", "pet=prompt"] if part == "lfpt5" else []
    cfg = make_cfg(
        "experiment=superni_order1",
        *method,
        *shape,
        "backbone.tiny.pretrain_steps=0",
        "backbone.dtype=bfloat16",
        "strategy=cpu",
        "strategy.precision=bf16-mixed",
        f"trainer.gradient_checkpointing={checkpointing}",
        # One sample a step: activations grow linearly with the batch, and a CPU without AVX-512 runs
        # bf16 products far slower than fp32 (experiments/results/cpu_bf16_avx2.md).
        "data.batch_size=1",
    )
    module = build_method(cfg, load_backbone(cfg.backbone, Path(cfg.paths.cache_dir)))
    task = build_synthetic_task("reverse", 0, 4, 1, 1)
    module.start_task(0, task)
    c = count(cfg)
    if part == "generator":
        generator.set_generator_active(module.model, True)
        rows, src, tgt = (
            int(cfg.method.generator.micro_batch_size),
            generator.SOURCE_LENGTH,
            int(cfg.method.generator.max_target_length),
        )
        estimated = generator_activation_bytes(cfg, c, checkpointing)
    else:
        rows, src, tgt = int(cfg.data.batch_size), int(cfg.data.max_source_length), int(cfg.data.max_target_length)
        estimated = estimate(cfg, c, method_sizes(cfg, c, 15))["activations"]
    vocab = module.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(
        5, vocab, (rows, src if backbone == "t5" else src + tgt), generator=torch.Generator().manual_seed(0)
    )
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(5, vocab, (rows, tgt)) if backbone == "t5" else ids.clone(),
    }
    if part == "lfpt5":  # from the second task on, each step also back-propagates a replayed batch
        module.start_task(1, task)
        module._replay = itertools.repeat(dict(batch))
    batch["pool_ids"], batch["pool_mask"] = batch["input_ids"][:, :src], batch["attention_mask"][:, :src]
    module.train()
    for dropout in module.modules():  # T5-Large's dropout (a tiny T5 has none); attention's own runs in the kernel
        if isinstance(dropout, torch.nn.Dropout):
            dropout.p = 0.1
    if part == "generator":
        held = _peak_of_step(
            module, lambda: module.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        )
    else:
        held = _peak_of_step(module, lambda: module.training_losses(batch)["loss"])
    assert 0.7 < estimated / held < 1.3, (estimated / 2**20, held / 2**20)


def test_plan_names_a_local_backbone_path_that_holds_no_model(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no config.json: not a saved model"):
        count(compose_cfg(["backbone=t5_large", f"backbone.name_or_path={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"/no/such/model: no such directory"):
        count(compose_cfg(["backbone=t5_large", "backbone.name_or_path=/no/such/model"]))
