"""`python -m sapt_lightning.bench`: what SAPT-LoRA's per-sample block mixing costs.

Compares, on one random T5 (mid-size by default; `--shape t5-large` for the paper's
smallest backbone, meant for a GPU; `--shape overhead` for T5-Large's 144 adapted layers at a
tiny width, where a CPU step is bound by per-operation cost as a big GPU step is) and one
fixed batch:
- a single plain LoRA (peft, r=8 on q and v): the cost SAPT should stay close to;
- SAPT-LoRA with 1, 5 and 15 blocks, fused mixing (two batched products, the default);
- the same with `mixing=loop` (one pair of products per block, the reference).

SAPT is built like SAPTModule builds it (MixingState + inject_lora + SharedAttention):
every step routes the batch (max-pooled embeddings -> query network -> keys ->
softmax), so the router's cost is included. Only the newest block, its key and the
query network train; older blocks are frozen with non-zero B, as after real tasks.

Measured per configuration: on the CPU each in a fresh subprocess (`--one <config>`); on CUDA
all in this process, sharing one frozen backbone, taking turns in `--rounds` rounds so that the
host's drift in speed (a big GPU step waits on it) falls on every configuration alike:
- step ms: median wall time of forward + backward + AdamW step, after warm-up (on CUDA, over
  all rounds; each round starts with an untimed step);
- gen ms: median time of greedy generation of a fixed number of new tokens;
- peak MB: on CPU the process's peak resident set size (getrusage ru_maxrss): Python,
  torch, model and training together (a fresh process per configuration is what makes
  this comparable, since ru_maxrss never goes down); on CUDA the peak of
  torch.cuda.max_memory_allocated during the configuration's warm-up, less what the
  configurations built before it hold (as if it were alone with the backbone);
- train MB: that peak minus the memory in use just before the first step (model,
  optimizer and batch built): the memory that training itself adds (activations,
  gradients, optimizer state, mixing buffers).

`--device cuda --precision bf16-mixed` runs the step under bf16 autocast with fp32
weights, as Lightning's `bf16-mixed` does; CUDA timings synchronize before reading the clock.

The last line printed is one JSON object (machine-readable summary).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .utils import compiling
from .utils.paths import check_output_dir

LORA = "lora"


@dataclass(frozen=True)
class Shape:
    d_model: int
    d_ff: int
    layers: int  # encoder and decoder each
    heads: int
    d_kv: int
    vocab: int
    batch: int
    source_len: int
    target_len: int
    r: int
    new_tokens: int
    warmup: int
    steps: int
    gen_reps: int
    block_counts: tuple[int, ...]


# `make bench`'s CPU shape: a mid-size T5, d512 with 4+4 layers (vocab cut to 8000 to save memory).
FULL = Shape(
    d_model=512,
    d_ff=2048,
    layers=4,
    heads=8,
    d_kv=64,
    vocab=8000,
    batch=8,
    source_len=128,
    target_len=32,
    r=8,
    new_tokens=16,
    warmup=3,
    steps=15,
    gen_reps=3,
    block_counts=(1, 5, 15),
)
# Seconds in all: a wiring check for tests, its numbers mean nothing.
QUICK = Shape(
    d_model=64,
    d_ff=128,
    layers=2,
    heads=4,
    d_kv=16,
    vocab=500,
    batch=4,
    source_len=32,
    target_len=8,
    r=8,
    new_tokens=4,
    warmup=1,
    steps=2,
    gen_reps=1,
    block_counts=(1, 2),
)
# T5-Large's shape (737 M parameters) with SuperNI's batch and source length: for a GPU.
T5_LARGE = Shape(
    d_model=1024,
    d_ff=4096,
    layers=24,
    heads=16,
    d_kv=64,
    vocab=32128,
    batch=8,
    source_len=512,
    target_len=64,
    r=8,
    new_tokens=16,
    warmup=3,
    steps=20,
    gen_reps=3,
    block_counts=(1, 5, 15),
)
# T5-Large's depth (144 adapted layers) at a tiny width: the step is bound by the cost of each
# operation, not by arithmetic - on a CPU, the regime a big GPU step is in, where the GPU waits on
# Python and kernel launches. What SAPT-LoRA adds per adapted layer shows here.
OVERHEAD = Shape(
    d_model=64,
    d_ff=128,
    layers=24,
    heads=4,
    d_kv=16,
    vocab=500,
    batch=2,
    source_len=16,
    target_len=4,
    r=8,
    new_tokens=8,
    warmup=5,
    steps=30,
    gen_reps=5,
    block_counts=(1, 15),
)
SHAPES = {"mid": FULL, "quick": QUICK, "t5-large": T5_LARGE, "overhead": OVERHEAD}


@dataclass(frozen=True)
class Where:
    """Device and precision of a measurement."""

    device: str = "cpu"
    precision: str = "32"  # or "bf16-mixed": bf16 autocast over fp32 weights

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def autocast(self):
        enabled = self.precision == "bf16-mixed"
        return torch.autocast(device_type="cuda" if self.cuda else "cpu", dtype=torch.bfloat16, enabled=enabled)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def memory_mb(self) -> float:
        return torch.cuda.memory_allocated() / 2**20 if self.cuda else current_rss_mb()

    def peak_mb(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if self.cuda else peak_rss_mb()

    def reset_peak(self) -> None:
        """On CUDA the allocator's peak starts again from what is allocated now; a process's peak
        RSS cannot be reset (hence a fresh process per configuration on the CPU)."""
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


COMPILED = "+compiled"  # a configuration's name with this suffix runs its step through torch.compile


def config_names(shape: Shape, compile_steps: bool = False) -> list[str]:
    """The configurations measured: LoRA and SAPT fused and loop at each block count; with
    `compile_steps`, LoRA and SAPT fused at the most blocks, each eager and compiled."""
    if compile_steps:
        pairs = [LORA, f"sapt-fused-{max(shape.block_counts)}"]
        return [name + suffix for name in pairs for suffix in ("", COMPILED)]
    names = [LORA]
    for n in shape.block_counts:
        names += [f"sapt-fused-{n}", f"sapt-loop-{n}"]
    return names


def parse_config(name: str) -> tuple[str, int, bool]:
    """'lora' -> ('lora', 1, False); 'sapt-fused-15+compiled' -> ('fused', 15, True)."""
    base = name.removesuffix(COMPILED)
    compiled = base != name
    if base == LORA:
        return LORA, 1, compiled
    parts = base.split("-")
    if len(parts) != 3 or parts[0] != "sapt" or parts[1] not in ("fused", "loop") or not parts[2].isdigit():
        print(
            f"error: unknown bench config '{name}' (lora, sapt-fused-<N>, sapt-loop-<N>, each may end in {COMPILED})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return parts[1], int(parts[2]), compiled


# ----- one configuration (runs in its own process) ---------------------------------------
def build_backbone(shape: Shape, device: str = "cpu") -> torch.nn.Module:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)  # the same random backbone for every configuration
    config = T5Config(
        vocab_size=shape.vocab,
        d_model=shape.d_model,
        d_ff=shape.d_ff,
        num_layers=shape.layers,
        num_decoder_layers=shape.layers,
        num_heads=shape.heads,
        d_kv=shape.d_kv,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.device(device):  # built in place: initialising T5-Large on the CPU first takes longer than the bench
        model = T5ForConditionalGeneration(config)
    model.requires_grad_(False)
    return model


def make_batch(shape: Shape, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, shape.vocab, (shape.batch, shape.source_len), generator=g)
    labels = torch.randint(3, shape.vocab, (shape.batch, shape.target_len), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


class Variant:
    """A model plus what its step must do before the backbone forward (routing for SAPT)."""

    def __init__(self, model: torch.nn.Module, route=None, decoding=None) -> None:
        self.model = model
        self.route = route or (lambda batch: None)
        self.decoding = decoding or nullcontext  # the scope generate() runs in, as in the module

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


def own_copy(backbone: torch.nn.Module | None, shape: Shape, device: str) -> torch.nn.Module:
    """A backbone for one configuration: built afresh, or a copy of `backbone`'s module tree that
    shares its (frozen) weights, so that every configuration can stay on the GPU at once."""
    if backbone is None:
        return build_backbone(shape, device)
    return copy.deepcopy(backbone, memo={id(p): p for p in backbone.parameters()})


def build_lora(shape: Shape, device: str = "cpu", backbone: torch.nn.Module | None = None) -> Variant:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        own_copy(backbone, shape, device),
        LoraConfig(r=shape.r, lora_alpha=2 * shape.r, lora_dropout=0.0, target_modules=["q", "v"]),
    )
    return Variant(model)


def build_sapt(
    shape: Shape, mixing: str, n_blocks: int, device: str = "cpu", backbone: torch.nn.Module | None = None
) -> Variant:
    from .methods.sapt.attention import SharedAttention, max_pool_embeddings
    from .pet.lora import MixingState, inject_lora, lora_layers

    model = own_copy(backbone, shape, device)
    state = MixingState()
    inject_lora(model, ["q", "v"], shape.r, 2 * shape.r, state, mixing, detach_finished=False)
    attention = SharedAttention(shape.d_model, 100)
    model.add_module("sapt_attention", attention)  # so its parameters train with the model's
    g = torch.Generator().manual_seed(2)
    for j in range(n_blocks):
        attention.add_key(g)
        for _, layer in lora_layers(model):
            layer.add_block()
            if j < n_blocks - 1:  # a finished task's block: B is no longer zero
                with torch.no_grad():
                    layer.lora_B[-1].normal_(0.0, 0.02, generator=g)
    model.to(device)  # the blocks and the attention are created on the CPU, as SAPTModule creates them
    # As SAPTModule.set_trainable: the newest block, its key and the query network.
    model.requires_grad_(False)
    attention.query.requires_grad_(True)
    attention.keys[-1].requires_grad_(True)
    for _, layer in lora_layers(model):
        layer.lora_A[-1].requires_grad_(True)
        layer.lora_B[-1].requires_grad_(True)

    def route(batch: dict[str, torch.Tensor]) -> None:
        emb = model.get_input_embeddings()(batch["input_ids"])
        state.weights = attention(max_pool_embeddings(emb, batch["attention_mask"]))

    return Variant(model, route, state.fixed_blocks)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Trial:
    """One configuration, built and ready to step: its model, optimizer and batch, and the times
    measured so far (step times by round)."""

    def __init__(self, name: str, shape: Shape, where: Where, backbone: torch.nn.Module | None = None) -> None:
        self.name, self.shape, self.where = name, shape, where
        self.mixing, self.n_blocks, self.compiled = parse_config(name)
        if self.mixing == LORA:
            self.variant = build_lora(shape, where.device, backbone)
        else:
            self.variant = build_sapt(shape, self.mixing, self.n_blocks, where.device, backbone)
        self.batch = make_batch(shape, where.device)
        self.opt = torch.optim.AdamW(self.variant.parameters(), lr=1e-4)
        self.variant.model.train()  # dropout is 0: train mode only mirrors a real training step
        # As trainer.compile=true: the forward (and so its backward) compiled, routing and optimizer eager.
        self.forward = self.variant.model
        if self.compiled:
            from torch._inductor import config as inductor_config

            inductor_config.force_disable_caches = True  # compile_s: a compile, not a cache read
            self.forward = compiling.compiled(self.variant.model, None)
        self.compile_s: float | None = None  # the first step's time, where compiling happens
        self.step_rounds: list[list[float]] = []
        self.gen_times: list[float] = []

    def step(self) -> None:
        with self.where.autocast():
            self.variant.route(self.batch)
            loss = self.forward(**self.batch).loss
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def generate(self) -> None:
        model, batch = self.variant.model, self.batch
        model.eval()
        with torch.no_grad(), self.where.autocast(), self.variant.decoding():
            self.variant.route(batch)  # SAPT routes once per input; the weights serve every decoding step
            model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=self.shape.new_tokens,
                min_new_tokens=self.shape.new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=0,
                eos_token_id=1,
            )
        model.train()

    def warm_up(self) -> None:
        """The untimed first steps; the first one's time is what compiling costs, when compiled."""
        first = self.timed(self.step)
        if self.compiled:
            self.compile_s = first
        for _ in range(self.shape.warmup - 1):
            self.step()

    def time_steps(self, n: int) -> None:
        """One round: `n` timed steps."""
        self.step_rounds.append([self.timed(self.step) for _ in range(n)])

    def time_generate(self) -> None:
        self.gen_times.append(self.timed(self.generate))

    def timed(self, fn) -> float:
        self.where.sync()
        start = time.perf_counter()
        fn()
        self.where.sync()
        return time.perf_counter() - start

    def row(self, peak_mb: float, train_mb: float) -> dict[str, Any]:
        steps = [t for r in self.step_rounds for t in r]
        return {
            "config": self.name,
            "mixing": self.mixing,
            "blocks": self.n_blocks,
            "step_ms": 1000 * statistics.median(steps),
            "gen_ms": 1000 * statistics.median(self.gen_times),
            "step_ms_by_round": [1000 * statistics.median(r) for r in self.step_rounds],
            "peak_mb": peak_mb,
            "train_mb": max(train_mb, 0.0),
            "trainable": sum(p.numel() for p in self.variant.parameters()),
            "compiled": self.compiled,
            "compile_s": None if self.compile_s is None else round(self.compile_s, 1),
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if self.where.cuda else "cpu",
            "precision": self.where.precision,
        }


def measure_one(name: str, shape: Shape, where: Where = Where(), profile_dir: Path | None = None) -> dict[str, Any]:
    """One configuration alone: warm-up, `shape.steps` timed steps, then generation."""
    trial = Trial(name, shape, where)
    where.sync()
    before = where.memory_mb()
    trial.warm_up()
    trial.time_steps(shape.steps)
    peak = where.peak_mb()
    if profile_dir is not None:
        write_profile(trial.step, where, profile_dir / f"{name}.txt")
    trial.generate()  # the first call warms up
    for _ in range(shape.gen_reps):
        trial.time_generate()
    return trial.row(peak, peak - before)


def write_profile(step, where: Where, path: Path, steps: int = 3) -> None:
    """A few more steps under torch.profiler, summarised for the question the step times leave
    open: is the step bound by the host (Python, dispatch, launches) or by the device's kernels?
    Per step: wall time, the host time and count of top-level aten calls, and on CUDA the kernels'
    time; then the operators by device time (CUDA) and by host time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if where.cuda else [])
    where.sync()
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        where.sync()
    wall_ms = 1000 * (time.perf_counter() - started) / steps
    top = [
        e
        for e in prof.events()
        if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    averages = prof.key_averages()
    lines = [
        f"steps profiled: {steps}; wall per step (profiler on): {wall_ms:.1f} ms",
        f"top-level aten calls per step: {len(top) / steps:.0f}, their host time: "
        f"{sum(e.cpu_time_total for e in top) / 1000 / steps:.1f} ms",
    ]
    if where.cuda:
        # Kernels only: an operator's device time is its kernels' time again (as torch's own total does).
        device_us = sum(
            e.self_device_time_total
            for e in averages
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        )
        lines.append(f"device kernel time per step: {device_us / 1000 / steps:.1f} ms")
        lines += ["", "by device time:", averages.table(sort_by="self_device_time_total", row_limit=30)]
    lines += ["", "by host time:", averages.table(sort_by="self_cpu_time_total", row_limit=30)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ----- the whole comparison -------------------------------------------------------------
def steps_per_round(shape: Shape, rounds: int) -> int:
    """Timed steps each configuration takes per round: at least shape.steps in all."""
    return math.ceil(shape.steps / rounds)


def run_interleaved(names: list[str], shape: Shape, where: Where, rounds: int) -> dict[str, dict[str, Any]]:
    """Every configuration in this process, on one shared frozen backbone, timed in `rounds`
    round-robin rounds (how CUDA is measured): the host that launches a GPU step's kernels drifts
    in speed by tens of percent over a minute (experiments/results/bench_h100_t5-large.md), and
    configurations measured one after the other would each get a different stretch of it.

    Memory is read per configuration as it warms up, as if it were alone: the shared backbone
    plus what this configuration adds (the others' blocks and optimizer states left out). On
    CUDA, that is; on the CPU the process's peak RSS only grows, and these numbers mean little."""
    backbone = build_backbone(shape, where.device)
    backbone_mb = where.memory_mb()
    trials, memory = {}, {}
    for name in names:
        where.reset_peak()
        held = where.memory_mb()  # the backbone and the configurations built so far
        trial = Trial(name, shape, where, backbone)
        before = where.memory_mb()
        trial.warm_up()
        peak = where.peak_mb()
        memory[name] = (backbone_mb + peak - held, peak - before)
        trial.generate()  # warms generation up
        trials[name] = trial
    per_round = steps_per_round(shape, rounds)
    for _ in range(rounds):
        for trial in trials.values():
            trial.step()  # untimed: the first step after another configuration's
            trial.time_steps(per_round)
            trial.time_generate()
    return {name: trial.row(*memory[name]) for name, trial in trials.items()}


def run_child(name: str, shape_name: str, where: Where) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "sapt_lightning.bench",
        "--one",
        name,
        "--shape",
        shape_name,
        "--device",
        where.device,
        "--precision",
        where.precision,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: bench config {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rows: dict[str, dict[str, Any]], shape: Shape) -> dict[str, Any]:
    n = max(shape.block_counts)
    lora, fused = rows[LORA], rows[f"sapt-fused-{n}"]
    summary = {
        "blocks": n,
        "sapt_over_lora": round(fused["step_ms"] / lora["step_ms"], 3),
        "gen_sapt_over_lora": round(fused["gen_ms"] / lora["gen_ms"], 3),
        "peak_mem_sapt_over_lora": round(fused["peak_mb"] / lora["peak_mb"], 3),
        "train_mem_sapt_over_lora": round(fused["train_mb"] / max(lora["train_mb"], 1e-9), 3),
        "lora_step_ms": round(lora["step_ms"], 1),
        "sapt_step_ms": round(fused["step_ms"], 1),
        "threads": lora["threads"],
        "device": lora["device"],
        "precision": lora["precision"],
        "shape": {k: v for k, v in asdict(shape).items() if k != "block_counts"},
    }
    loop = rows.get(f"sapt-loop-{n}")
    if loop is not None:
        summary["loop_over_fused"] = round(loop["step_ms"] / fused["step_ms"], 3)
        summary["loop_step_ms"] = round(loop["step_ms"], 1)
    compiled = {name.removesuffix(COMPILED): row for name, row in rows.items() if row.get("compiled")}
    if compiled:  # --compile: each compiled step against the same configuration's eager one
        summary["compiled_over_eager"] = {
            name: round(row["step_ms"] / rows[name]["step_ms"], 3) for name, row in compiled.items()
        }
        summary["compiled_step_ms"] = {name: round(row["step_ms"], 1) for name, row in compiled.items()}
        summary["compile_s"] = {name: row["compile_s"] for name, row in compiled.items()}
    if len(fused["step_ms_by_round"]) > 1:  # interleaved rounds (CUDA): how far the ratio moves between them
        summary["sapt_over_lora_by_round"] = [
            round(f / one, 3) for f, one in zip(fused["step_ms_by_round"], lora["step_ms_by_round"])
        ]
    return summary


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    lora = rows[LORA]
    compiled = any(row.get("compiled") for row in rows.values())
    print(
        f"{'config':<25}{'blocks':>7}{'step ms':>10}{'x LoRA':>8}{'peak MB':>9}{'train MB':>10}{'gen ms':>9}{'x LoRA':>8}"
        + (f"{'x eager':>9}{'compile s':>11}" if compiled else "")
    )
    for name, row in rows.items():
        line = (
            f"{row['config']:<25}{row['blocks']:>7}{row['step_ms']:>10.1f}{row['step_ms'] / lora['step_ms']:>8.2f}"
            f"{row['peak_mb']:>9.0f}{row['train_mb']:>10.0f}{row['gen_ms']:>9.1f}{row['gen_ms'] / lora['gen_ms']:>8.2f}"
        )
        if row.get("compiled"):
            eager = rows[name.removesuffix(COMPILED)]
            line += f"{row['step_ms'] / eager['step_ms']:>9.2f}{row['compile_s']:>11.1f}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sapt_lightning.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape, 2 steps: a wiring check, not a measurement")
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="mid",
        help="mid: d_model 512, 4+4 layers (default, CPU); t5-large: T5-Large's shape (GPU); "
        "overhead: 24+24 layers of width 64 (per-layer cost on CPU)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--precision",
        choices=["32", "bf16-mixed"],
        default="32",
        help="bf16-mixed: bf16 autocast over fp32 weights, as Lightning's bf16-mixed",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="on CUDA: the configurations take turns in this many rounds (default 5)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="measure a single LoRA and SAPT fused at the most blocks, each eager and with its step "
        "compiled (torch.compile, as trainer.compile=true); the first step's time is the compile time",
    )
    parser.add_argument("--one", metavar="CONFIG", help="measure one configuration in this process, print its JSON")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="with --one: also profile 3 steps, write DIR/<config>.txt (host vs device time, top operators)",
    )
    args = parser.parse_args(argv)
    if args.quick and args.shape != "mid":
        parser.error(f"--quick runs its own tiny shape; drop --quick to measure --shape {args.shape}")
    shape_name = "quick" if args.quick else args.shape
    shape, where = SHAPES[shape_name], Where(args.device, args.precision)
    if where.cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible; use --device cpu")
    if not where.cuda and args.device != "cpu":
        parser.error(f"--device {args.device}: expected cpu or cuda")
    if where.cuda and torch.device(args.device).index is not None:
        torch.cuda.set_device(
            torch.device(args.device)
        )  # `cuda:1`: the name and memory counters read the current device
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be at least 1")
    if args.profile is not None and not args.one:
        parser.error("--profile needs --one CONFIG (one profile per configuration)")
    if args.profile is not None:
        try:
            check_output_dir("--profile", args.profile)
        except UserError as err:
            parser.error(str(err))
    if args.one:
        print(json.dumps(measure_one(args.one, shape, where, args.profile)))
        return
    started = time.time()
    device_name = torch.cuda.get_device_name() if where.cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{device_name}, precision {where.precision}", flush=True)
    print(
        f"T5 d_model {shape.d_model}, d_ff {shape.d_ff}, {shape.layers}+{shape.layers} layers, vocab {shape.vocab}; "
        f"batch {shape.batch}, source {shape.source_len}, target {shape.target_len}; LoRA r={shape.r} on q,v",
        flush=True,
    )
    if where.cuda:
        print(
            f"step = forward + backward + AdamW, median of {args.rounds} rounds x {steps_per_round(shape, args.rounds)} "
            f"after {shape.warmup} warm-up; gen = greedy, {shape.new_tokens} new tokens, median of {args.rounds}; one process, one shared "
            "frozen backbone, the configurations taking turns in each round",
            flush=True,
        )
        print(
            "peak MB = torch.cuda.max_memory_allocated, as if alone (backbone + this configuration); "
            "train MB = that peak minus the memory allocated before the first step",
            flush=True,
        )
        rows = run_interleaved(config_names(shape, args.compile), shape, where, args.rounds)
    else:
        print(
            f"step = forward + backward + AdamW, median of {shape.steps} after {shape.warmup} warm-up; "
            f"gen = greedy, {shape.new_tokens} new tokens, median of {shape.gen_reps}; one fresh process per config",
            flush=True,
        )
        print(
            "peak MB = the process's peak RSS (Python + torch + model + training); "
            "train MB = peak RSS minus RSS before the first step",
            flush=True,
        )
        rows = {name: run_child(name, shape_name, where) for name in config_names(shape, args.compile)}
    print_table(rows)
    print(f"({time.time() - started:.0f}s)")
    print(json.dumps(summarise(rows, shape)))


if __name__ == "__main__":
    main()
