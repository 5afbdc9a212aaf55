"""ZeRO-3 on a CPU DeepSpeed engine (Lightning's DeepSpeedStrategy itself refuses anything but CUDA).

SCRIPT drives the real SAPT module through two tasks the way a task's Trainer does - FitGuard.setup,
an engine built from Lightning's own stage-3 config, a few optimizer steps, FitGuard.on_train_end
and teardown - once under ZeRO-2 and once under ZeRO-3, and compares. STREAM_SCRIPT runs the whole
stream through `run` and Lightning's DeepSpeedStrategy, with the three CUDA-only steps of its setup
replaced for a CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sapt_lightning.evaluate import evaluate_run

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import itertools, os, sys, json
from types import SimpleNamespace
import torch, torch.distributed as dist
ORIGINAL_LINEAR = torch.nn.functional.linear
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo", rank=0, world_size=1)
import deepspeed
from omegaconf import OmegaConf
from tests.conftest import compose_cfg
from sapt_lightning.backbones import load_backbone
from sapt_lightning.cl.fit_guard import FitGuard
from sapt_lightning.methods.registry import build_method
from sapt_lightning.run import build_strategy

pet, precision, threshold, cache = sys.argv[1], sys.argv[2], sys.argv[3], __import__("pathlib").Path(sys.argv[4])
half = precision == "bf16-mixed"
ENGINE_ATTRIBUTES = {"_external_params", "pre_bwd_fn", "post_bwd_fn", "_original_parameters",
                     "applied_pre_backward_ref_cnt"}


class Wrapper(torch.nn.Module):  # what Lightning hands the engine: a module whose forward runs the step
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module.training_losses(batch)["loss"]


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding in the batch
    ids = ids * mask
    labels = torch.randint(5, 100, (4, 6), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pool_ids": ids, "pool_mask": mask}


def train(preset):
    cfg = compose_cfg(["debug=smoke", f"pet={pet}"], None, cache)
    backbone = load_backbone(cfg.backbone, cache)  # (the first call builds it, drawing random numbers)
    torch.manual_seed(0)  # the blocks' initial values
    module = build_method(cfg, backbone)
    for m in module.modules():  # no dropout: the two runs draw random numbers differently
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    strategy = build_strategy(OmegaConf.create({"strategy": preset}))  # what the Trainer gets
    trainer = SimpleNamespace(strategy=strategy, precision=precision)
    partitioned, persistent, moved, trainable = [], [], [], []
    for index in range(2):
        module.start_task(index, SimpleNamespace(name=f"t{index}"))
        if index == 1:  # ARM's KL on replayed inputs reads the keys outside the backbone
            module.targets = [torch.ones(1)]
            module._replay_iters = [itertools.repeat(batch(99))]
        guard = FitGuard()
        guard.setup(trainer, module, "fit")
        params = [p for p in module.parameters() if p.requires_grad]
        start = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        zero = dict(strategy.config["zero_optimization"])
        if threshold == "0":
            zero["stage3_param_persistence_threshold"] = 0  # partition even the tiny tensors
        config = {**strategy.config, "zero_optimization": zero, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                  "bf16": {"enabled": half}, "zero_allow_untested_optimizer": True}
        engine, *_ = deepspeed.initialize(model=Wrapper(module), model_parameters=params, config=config,
                                          optimizer=torch.optim.AdamW(params, lr=1e-2), dist_init_required=False)
        strategy.model = engine
        partitioned.append({n for n, p in module.named_parameters() if p.numel() == 0})
        persistent.append({n for n, p in module.named_parameters() if getattr(p, "ds_persist", False)})
        for step in range(3):
            loss = engine(batch(10 * index + step))
            engine.backward(loss)
            engine.step()
        guard.on_train_end(trainer, module)
        guard.teardown(trainer, module, "fit")
        now = dict(module.named_parameters())
        moved.append({n for n in start if not torch.equal(start[n], now[n])})
        trainable.append(set(start))
    after = {n: p.detach().clone() for n, p in module.named_parameters()}
    leftovers = [n for n, p in module.named_parameters() if any(k.startswith("ds_") for k in vars(p))]
    leftovers += [n for n, m in module.named_modules() if type(m._parameters) is not dict
                  or any(k.startswith("ds_") or k in ENGINE_ATTRIBUTES for k in vars(m))]
    leftovers += ["F.linear"] if torch.nn.functional.linear is not ORIGINAL_LINEAR else []
    hooks = [n for n, m in module.named_modules() if m._forward_pre_hooks or m._forward_hooks or m._backward_hooks]
    module.eval()
    with torch.no_grad():  # the steps between tasks: whole tensors, no engine
        alpha = module.selection_weights(batch(7))
        eval_loss = float(module.task_loss(batch(7)))
    return before, after, (partitioned, persistent), moved, trainable, leftovers, hooks, alpha, eval_loss


# ZeRO-3 first: whatever it left behind in the process would reach the ZeRO-2 run it is compared with.
b3, a3, part3, moved3, trainable3, left3, hooks3, alpha3, loss3 = train("deepspeed_stage_3_offload")
b2, a2, part2, moved2, trainable2, left2, hooks2, alpha2, loss2 = train("deepspeed_stage_2")
assert part2 == ([set(), set()], [set(), set()]), part2
(partitioned, persistent), names = part3, [set(trainable3[0]) | set(b3), set(a3)]
names[0] = {n for n in a3 if not n.endswith(".1")}  # the tensors of the first task
assert partitioned == names, [sorted(n - p)[:3] for n, p in zip(names, partitioned)]  # every tensor, at first
small = [{n for n in task if "lora_" in n or "prompts." in n or "keys." in n} for task in names]
if threshold == "0":
    assert persistent == [set(), set()], persistent
else:  # DeepSpeed's default: tensors under 1e5 numbers, once gathered, stay whole for the whole fit
    assert all(s <= p and "model.shared.weight" not in p for s, p in zip(small, persistent)), persistent
assert not left3 and not hooks3, (left3[:3], hooks3[:3])
for index in range(2):  # every tensor that trains moved, save those no gradient reaches yet
    unreachable = {n for n in trainable3[index] if index == 0 and (".query." in n or "keys." in n)}  # one block: α = 1
    assert trainable3[index] - unreachable <= moved3[index], (index, sorted(trainable3[index] - moved3[index]))
assert a3.keys() == a2.keys() and b3.keys() < a3.keys()  # the blocks and keys of two tasks were added
assert all(a3[n].dtype == torch.float32 for n in a3)
backbone_changed = [n for n in b3 if n.startswith("model.") and not torch.equal(a3[n], b3[n])]
assert not backbone_changed, backbone_changed[:3]  # frozen, and back to its fp32 values
worst = max((a3[n] - a2[n]).abs().max().item() for n in a3)
# fp32: the same numbers up to float noise, which Adam's per-entry normalisation lifts where a
# gradient entry is near zero (ZeRO-3's linear layers sum in another order): up to about 1e-4 here,
# against moves of 0.03-0.1, while attention and loss agree within 1e-6. bf16: rounding differs
# between the two stages' gradient paths, and Adam turns a near-zero gradient of another sign into a
# whole step of lr the other way, so there only the losses and the attention are compared.
assert half or worst < 5e-4, worst
assert torch.allclose(alpha3, alpha2, atol=0.05 if half else 1e-5), (alpha3, alpha2)
assert abs(loss3 - loss2) < (0.05 if half else 1e-5), (loss3, loss2)
print(json.dumps({"moved": [len(m) for m in moved3], "partitioned": [len(p) for p in part3[0]], "persistent": [len(p) for p in part3[1]], "worst": worst}))
print("ok")
"""


# The fast suite keeps SAPT-LoRA in fp32 (about 15 s each, plus a one-off 30 s build of DeepSpeed's
# CPU communication op); soft prompts and bf16 are slow. threshold: "0" partitions every tensor,
# "preset" keeps DeepSpeed's default, under which the small per-task tensors stay whole.
@pytest.mark.parametrize(
    "pet, precision, threshold",
    [
        ("lora", "32-true", "0"),
        ("lora", "32-true", "preset"),
        pytest.param("prompt", "32-true", "0", marks=pytest.mark.slow),
        pytest.param("lora", "bf16-mixed", "0", marks=pytest.mark.slow),
    ],
)
def test_zero3_trains_sapt_like_zero2_and_leaves_whole_parameters(pet, precision, threshold, cache_dir):
    """ZeRO-3 partitions every tensor (checked); SAPT's per-task blocks still train - the same as
    under ZeRO-2 - and after the fit the module holds whole fp32 tensors, with no ZeRO-3 state
    or hook left, ready for the steps between tasks and for the next task's engine."""
    pytest.importorskip("deepspeed")
    port = str(29583 + ["lora", "prompt"].index(pet) + 2 * (precision != "32-true") + 4 * (threshold != "0"))
    env = {**os.environ, "PORT": port, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, pet, precision, threshold, str(cache_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout[-2000:], proc.stderr[-4000:])


STREAM_SCRIPT = r"""
import sys
from pathlib import Path
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
import sapt_lightning.run as run_module
from tests.conftest import compose_cfg

preset, out, cache, overrides = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]


class CPUDeepSpeed(DeepSpeedStrategy):
    # Lightning's DeepSpeedStrategy checks for CUDA in these three places; the rest is its own.
    def setup_environment(self):
        DDPStrategy.setup_environment(self)

    def setup_distributed(self):
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self):
        return torch.device("cpu", 0)  # DeepSpeed reads a device index


preset_strategy = run_module.build_strategy


def build_strategy(s):
    strategy = preset_strategy(s)
    if isinstance(strategy, str):
        return strategy
    cpu = CPUDeepSpeed(config=strategy.config)  # the preset's config, offload and all
    cpu.config["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # partition even tiny tensors
    return cpu


run_module.build_strategy = build_strategy
run_module.check_strategy = lambda cfg: None  # (it refuses DeepSpeed without GPUs)
cfg = compose_cfg(["logger=csv", f"strategy={preset}", "strategy.accelerator=cpu", "strategy.devices=1", *overrides],
                  out, cache)
run_module.run(cfg)
print("ok")
"""


def _stream(preset: str, run_dir: Path, cache_dir: Path, port: str, devices: int, extra: list[str]) -> None:
    script = run_dir.parent / "stream.py"  # a file: Lightning launches the other ranks by re-running it
    script.write_text(STREAM_SCRIPT)
    env = {
        **os.environ,
        "MASTER_PORT": port,
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(ROOT),
        "WANDB_MODE": "disabled",
    }
    overrides = [
        "debug=smoke",
        "backbone.tiny.pretrain_steps=100",
        "trainer.max_steps=30",
        "benchmark.num_tasks=3",
        "strategy.precision=32-true",
        f"strategy.devices={devices}",
        *extra,
    ]
    proc = subprocess.run(
        [sys.executable, str(script), preset, str(run_dir), str(cache_dir), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout[-2000:], proc.stderr[-4000:])


@pytest.mark.parametrize(
    "devices, reference, extra, port",
    [
        (1, "cpu", [], 29593),
        (2, "ddp_cpu", [], 29595),
        pytest.param(1, "cpu", ["pet=prompt"], 29597, marks=pytest.mark.slow),
        pytest.param(1, "cpu", ["backbone=tiny_llama"], 29599, marks=pytest.mark.slow),
        pytest.param(1, "cpu", ["trainer.gradient_checkpointing=true"], 29601, marks=pytest.mark.slow),
    ],
)
def test_sapt_stream_under_lightnings_zero3_offload_strategy(tmp_path, cache_dir, devices, reference, extra, port):
    """Three tasks with ARM (generator, pseudo samples, KL) through `run` and Lightning's
    DeepSpeedStrategy with the deepspeed_zero3_offload preset, in one process or two (each then
    holds half of every tensor): the stream finishes; the first task's block equals that of the
    same stream without DeepSpeed up to rounding; every block is fp32 and finite; the artifacts
    reload to the recorded scores. (From the second task on, the tiny stream turns rounding into
    visible differences - a ZeRO-2 run differs from a plain one as much - so later blocks and the
    attention statistics are not compared; between tasks the module is whole again, and the
    data-parallel statistics are those tests/test_ddp.py checks.)"""
    pytest.importorskip("deepspeed")
    _stream("deepspeed_zero3_offload", tmp_path / "z3", cache_dir, str(port), devices, extra)
    _stream(reference, tmp_path / "ref", cache_dir, str(port + 1), devices, extra)
    blocks = sorted((tmp_path / "z3").glob("tasks/*/sapt_block.safetensors"))
    assert len(blocks) == 3
    for block in blocks:
        tensors = load_file(str(block))
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors.values()), block
    first_z3, first_ref = (
        load_file(str(next((tmp_path / run).glob("tasks/1-*/sapt_block.safetensors")))) for run in ("z3", "ref")
    )
    assert first_z3.keys() == first_ref.keys()
    # Rounding only: 1e-6 to 1e-4 by backbone and rank count (the sums run in another order, and
    # Adam magnifies it in LoRA A's first steps, where B is near zero and so is A's gradient);
    # a block that missed its gradients would be off by lr x steps, 3e-2.
    assert max((first_z3[k] - first_ref[k]).abs().max().item() for k in first_z3) < 1e-3
    recorded = json.loads((tmp_path / "z3" / "results.json").read_text())
    assert evaluate_run(tmp_path / "z3")["row"] == recorded["matrix"][-1]


def _rewind(run_dir: Path, copy: Path) -> None:
    """A copy of a finished run that has not yet done its last task (resuming it trains that task)."""
    shutil.copytree(run_dir, copy)
    state = json.loads((copy / "stream_state.json").read_text())
    last = len(state["tasks"])
    shutil.rmtree(next(copy.glob(f"tasks/{last}-*")))
    state["completed"], state["matrix"] = last - 1, state["matrix"][: last - 1]
    (copy / "stream_state.json").write_text(json.dumps(state))


def _largest_difference(run: Path, other: Path, task: int) -> float | None:
    """Largest elementwise difference of the tensors two runs saved for `task` (None: it saves none)."""
    files = sorted(run.glob(f"tasks/{task}-*/*.safetensors"))
    if not files:
        return None
    largest = 0.0
    for path in files:
        mine, theirs = load_file(str(path)), load_file(str(other / path.relative_to(run)))
        assert mine.keys() == theirs.keys(), path
        largest = max([largest, *((mine[k].float() - theirs[k].float()).abs().max().item() for k in mine)])
    return largest


BASELINES = ["olora", "l2p", "lfpt5", "seq_lora", "replay", "single", "mtl", "progprompt", "epi"]
FAST_BASELINES = {"olora", "l2p", "lfpt5"}  # the three ways a baseline reads its parameters (below)


@pytest.mark.parametrize(
    "method, devices",
    [
        *[(m, 1) if m in FAST_BASELINES else pytest.param(m, 1, marks=pytest.mark.slow) for m in BASELINES],
        pytest.param("lfpt5", 2, marks=pytest.mark.slow),
    ],
)
def test_baseline_under_zero3_trains_each_task_as_without_deepspeed(tmp_path, cache_dir, method, devices):
    """The baselines read parameters outside the module that owns them - O-LoRA's penalty reads
    every layer's old and new blocks, L2P's pool and keys belong to the LightningModule itself,
    LFPT5's prompt goes in front of the input embeddings, twice per step with distillation. DeepSpeed
    gathers a parameter read by attribute during the engine's forward (its own discovery of
    "external" parameters), so each trains under ZeRO-3 as without DeepSpeed. Checked over two tasks
    of 5 steps, each task against the same task trained without DeepSpeed from the same start:
    - task 1 against a plain run: within a tenth of what 5 steps move a tensor (lr each), for Adam
      turns rounding in gradients as small as its eps into visible differences (O-LoRA 1e-6, LFPT5's
      300 prompt vectors 8e-4 at lr 3e-2); a tensor that missed its gradients is off by several lr;
    - task 2 against a plain run resumed from ZeRO-3's first task (so the first task's rounding
      does not carry over): within a hundredth (measured 1e-6 to 1.2e-5)."""
    pytest.importorskip("deepspeed")
    reference = "cpu" if devices == 1 else "ddp_cpu"
    extra = [f"method={method}", "trainer.max_steps=5", "benchmark.num_tasks=2"]
    if method == "epi":
        extra.append("benchmark.tasks=[topic,sentiment]")  # EPI models classification streams only
    port = 29611 + 4 * BASELINES.index(method) + 40 * (devices - 1)
    z3, plain, resumed = tmp_path / "z3", tmp_path / "plain", tmp_path / "resumed"
    _stream("deepspeed_zero3_offload", z3, cache_dir, str(port), devices, extra)
    _stream(reference, plain, cache_dir, str(port + 1), devices, extra)
    _rewind(z3, resumed)
    _stream(reference, resumed, cache_dir, str(port + 2), devices, [*extra, "resume=force"])
    cfg = json.loads((z3 / "config.json").read_text())
    moved = float(cfg["pet"].get("lr") or cfg["method"]["lr"]) * 5
    first = _largest_difference(z3, plain, 1)
    assert first is None or first < moved / 10, (first, moved)  # None: MTL trains once, after the last task
    last = _largest_difference(z3, resumed, 2)
    assert last is not None and last < moved / 100, (last, moved)
