"""`sapt-bench-stream` (or `python -m sapt_lightning.bench_stream`, `make bench-stream`): the wall
time of whole streams, by phase, for SAPT-LoRA and SeqLoRA.

Each run is a plain `python -m sapt_lightning` in a fresh process and run directory; its
results.json records the stream's time by phase (training, ARM replay, generator training, pseudo
sampling, evaluation, statistics, writing, other: see utils/phases.py). Streams:
- `quickstart`: the default job (tiny T5, the five synthetic tasks, every default);
- `superni`: SuperNI order 1's first tasks, real data (SAPT_DATA_DIR or paths.data_dir) at the
  paper's source length, on a random T5 of the mid-size shape of `sapt-bench` (d_model 512, 4+4
  layers; nothing pretrained), 20 steps per task and SAPT's generator in its default proportion to them.
`--variant name:override,override` adds a row per stream and method with those overrides (e.g.
`--variant grouped:data.group_by_length=true`), beside the `default` row. Extra arguments are
overrides for every run. `--quick`: two tasks and a few steps, a wiring check.

The last line printed is one JSON object (machine-readable summary).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .utils.phases import PHASES

METHODS = ("sapt", "seq_lora")
STREAMS: dict[str, list[str]] = {
    "quickstart": [],
    "superni": [
        "benchmark=superni",
        "order=1",
        "benchmark.num_tasks=3",
        "benchmark.max_train_per_task=128",
        "benchmark.max_eval_per_task=32",
        "data.max_source_length=512",
        "data.max_target_length=50",
        "data.batch_size=8",
        "data.eval_batch_size=32",
        "trainer.max_steps=20",
        "backbone.tiny.d_model=512",
        "backbone.tiny.d_ff=2048",
        "backbone.tiny.num_layers=4",
        "backbone.tiny.num_decoder_layers=4",
        "backbone.tiny.num_heads=8",
        "backbone.tiny.d_kv=64",
        "backbone.tiny.pretrain_steps=0",
    ],
}
QUICK = [
    "benchmark.num_tasks=2",
    "trainer.max_steps=4",
    "benchmark.max_eval_per_task=8",
    "backbone.tiny.pretrain_steps=0",
]
# SAPT's generator in this project's default proportion: its 300 steps (batch 32, up to 256 tokens
# written) against the paper's T5 SuperNI budget of about 3,000 training steps per task (100 epochs of
# 1,000 instances at 32 per step) are one generator step per ten training steps.
STREAM_METHOD = {("superni", "sapt"): ["method.generator.steps=2"]}
QUICK_METHOD = {"sapt": ["method.generator.steps=2"]}
COLUMNS = (*PHASES, "other")
LABELS = dict(
    zip(COLUMNS, ("train", "replay", "gen-train", "sampling", "eval", "stats", "write", "other"), strict=True)
)


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition(":")
    if not sep or not name or not overrides:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected name:override[,override...]")
    return name, overrides.split(",")


def run_one(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One stream in its own process; its phases, its recorded wall time and the process's."""
    command = [sys.executable, "-m", "sapt_lightning", *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    process_s = time.perf_counter() - started
    if done.returncode != 0:  # (the run's own last line says why: a missing data folder, a bad override)
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"error: `sapt {' '.join(command[3:])}` failed (exit {done.returncode}): {last}", file=sys.stderr)
        raise SystemExit(2)
    results = json.loads((run_dir / "results.json").read_text())
    return {"phases_s": results["phases_s"], "wall_s": results["wall_s"], "process_s": round(process_s, 1)}


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'stream':<11}{'method':<9}{'variant':<10}" + "".join(f"{LABELS[c]:>11}" for c in COLUMNS) + f"{'process':>9}"
    )
    print(header)
    for row in rows:
        spent = row["phases_s"]
        total = sum(spent[c] for c in COLUMNS) or 1.0
        cells = "".join(f"{spent[c]:>6.1f} {100 * spent[c] / total:>2.0f}%" for c in COLUMNS)
        print(f"{row['stream']:<11}{row['method']:<9}{row['variant']:<10}{cells}{row['process_s']:>8.0f}s")
    print(
        "seconds and share of the stream's phases (train: task training; replay: ARM's replay forward; gen-train, "
        "sampling: SAPT's generator; stats: attention targets and statistics); process: the whole command"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sapt_lightning.bench_stream", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="quickstart,superni", help="comma-separated: quickstart, superni")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default sapt,seq_lora)")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="NAME:OVERRIDES")
    parser.add_argument(
        "--quick", action="store_true", help="two tasks, a few steps: a wiring check, not a measurement"
    )
    parser.add_argument("--out", type=Path, help="keep the run directories here (default: a temporary folder)")
    args, overrides = parser.parse_known_args(argv)
    streams = args.streams.split(",")
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        parser.error(f"--streams: unknown {unknown}; choose from {sorted(STREAMS)}")
    variants = [("default", []), *args.variant]
    common = ["logger=csv", "trainer.enable_progress_bar=false", *(QUICK if args.quick else []), *overrides]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sapt-bench-stream-") as scratch:
        out = args.out or Path(scratch)
        for stream in streams:
            for method in args.methods.split(","):
                for variant, extra in variants:
                    name = f"{stream}-{method}-{variant}"
                    print(f"running {name} ...", flush=True)
                    own = [
                        *STREAM_METHOD.get((stream, method), []),
                        *(QUICK_METHOD.get(method, []) if args.quick else []),
                    ]
                    got = run_one([*STREAMS[stream], f"method={method}", *common, *own, *extra], out / name)
                    rows.append({"stream": stream, "method": method, "variant": variant, **got})
    print_table(rows)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
