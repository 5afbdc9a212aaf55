"""`python -m sapt_lightning.tables <target> [--smoke] [--seeds 1,2,3] [--out DIR] [--dry-run] [overrides ...]`

The paper's tables and figures, one command each (`make table1` ... `make fig6`).
A target is a list of Hydra sweeps run in order (`python -m sapt_lightning -m ...`,
single-task references first so that FWT finds them), then the report over all
the runs they wrote. Re-running the same command resumes: each sweep point keeps
its run directory, and finished tasks are not retrained.

`--smoke` swaps the paper's streams for a 2-task synthetic stream with a tiny
backbone and a few steps (`debug=smoke`), so every target's wiring runs on a CPU.
Extra overrides go to every sweep (e.g. `hydra/launcher=slurm`,
`paths.data_dir=/data/CL_Benchmark`).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compare import ReportError, build_report


@dataclass(frozen=True)
class Sweep:
    name: str                 # sub-directory of the target's output
    overrides: tuple[str, ...]


# The streams of the paper (Table 1 averages orders 1-2 and 3-4) and their CPU stand-ins.
PAPER_STREAMS = {"sni": ("experiment=superni_order1,superni_order2",),
                 "long": ("experiment=long_sequence_order3,long_sequence_order4",)}
SMOKE_STREAMS = {"sni": ("benchmark=synthetic", "debug=smoke"),
                 # classification tasks, so that EPI (classification only) runs as on Long Sequence
                 "long": ("benchmark=synthetic", "debug=smoke", "benchmark.tasks=[topic,sentiment]")}
LORA_BASELINES = "seq_lora,replay,olora,mtl,sapt"
PROMPT_BASELINES = {"sni": "l2p,lfpt5,progprompt,sapt", "long": "l2p,lfpt5,progprompt,epi,sapt"}
ABLATIONS = "none,no_arm,replay,no_alignment,no_sa"
VOLUMES = "0.02,0.05,0.1,0.5,1.0"
UNSEEN_SMOKE = "[last_word,count]"


def table1(streams: dict[str, tuple[str, ...]]) -> list[Sweep]:
    sweeps = []
    for name, stream in streams.items():
        sweeps += [Sweep(f"{name}-single", (*stream, "method=single")),
                   Sweep(f"{name}-lora", (*stream, f"method={LORA_BASELINES}")),
                   Sweep(f"{name}-prompt", (*stream, f"method={PROMPT_BASELINES[name]}", "pet=prompt"))]
    return sweeps


def table2(streams: dict[str, tuple[str, ...]]) -> list[Sweep]:
    sweeps = []
    for name, stream in streams.items():
        sweeps += [Sweep(f"{name}-single", (*stream, "method=single")),
                   Sweep(f"{name}-ablations", (*stream, "method=sapt", f"ablation={ABLATIONS}"))]
    return sweeps


def table3(streams: dict[str, tuple[str, ...]], unseen: str) -> list[Sweep]:
    stream, extra = streams["sni"], (f"eval.unseen_tasks={unseen}",)
    return [Sweep("sni-lora", (*stream, "method=olora,sapt", *extra)),
            Sweep("sni-prompt", (*stream, "method=lfpt5", "pet=prompt", *extra))]


def backbone_sweeps(stream: tuple[str, ...], backbones: dict[str, tuple[str, ...]], methods: str) -> list[Sweep]:
    return [Sweep(f"{name}-single", (*stream, *settings, "method=single")) for name, settings in backbones.items()] + \
           [Sweep(name, (*stream, *settings, f"method={methods}")) for name, settings in backbones.items()]


def fig6(stream: tuple[str, ...]) -> list[Sweep]:
    """Replay volume: real samples (Replay) against SAPT's pseudo samples, 2% to 100%."""
    return [Sweep("real", (*stream, "method=replay", f"method.replay_fraction={VOLUMES}",
                           "label=real${method.replay_fraction}")),
            Sweep("pseudo", (*stream, "method=sapt", f"method.arm.pseudo_fraction={VOLUMES}",
                             "label=pseudo${method.arm.pseudo_fraction}"))]


PAPER_GPU = ("strategy=single_gpu",)
PAPER_MULTI_GPU = ("strategy=deepspeed_zero2", "strategy.devices=4")


def sweeps_for(target: str, smoke: bool, unseen: str | None) -> list[Sweep]:
    streams = SMOKE_STREAMS if smoke else PAPER_STREAMS
    first_order = (SMOKE_STREAMS["sni"] if smoke else ("experiment=superni_order1",))
    if target == "table1":
        return table1(streams)
    if target == "table2":
        return table2(streams)
    if target == "table3":
        if not (unseen or smoke):
            raise SystemExit("error: table3 scores tasks outside the stream (the paper's Table 6), which CL_Benchmark "
                             "does not ship: pass them with UNSEEN='[task_a,task_b,...]' (make) or --unseen")
        return table3(streams, unseen or UNSEEN_SMOKE)
    if target == "fig4":  # T5 sizes
        # (two tiny widths share the name tiny_t5: a label keeps them apart in the report)
        sizes = ({"small": ("backbone.tiny.d_model=64", "label=d64"), "base": ("backbone.tiny.d_model=128", "label=d128")}
                 if smoke else
                 {"t5_large": ("backbone=t5_large", *PAPER_GPU), "t5_xl": ("backbone=t5_xl", *PAPER_MULTI_GPU),
                  "t5_xxl": ("backbone=t5_xxl", *PAPER_MULTI_GPU)})
        return backbone_sweeps(first_order, sizes, "seq_lora,replay,olora,sapt")
    if target == "fig5":  # T5 against LLaMA-2
        families = ({"t5": ("backbone=tiny_t5",), "llama": ("backbone=tiny_llama",)} if smoke else
                    {"t5_large": ("backbone=t5_large", *PAPER_GPU),
                     "llama2_7b": ("backbone=llama2_7b", *PAPER_MULTI_GPU),
                     "llama2_13b": ("backbone=llama2_13b", *PAPER_MULTI_GPU)})
        return backbone_sweeps(first_order, families, "replay,olora,sapt")
    if target == "fig6":
        return fig6(first_order)
    raise SystemExit(f"error: unknown target '{target}'; targets: {', '.join(TARGETS)}")


TARGETS = {"table1": "baselines against SAPT-LoRA/-Prompt, SuperNI and Long Sequence",
           "table2": "ablations -ARM, +Replay, -Alignment, -SA",
           "table3": "unseen tasks after the SuperNI stream",
           "fig4": "T5 sizes (large, XL, XXL)",
           "fig5": "T5-Large against LLaMA-2-7B/13B",
           "fig6": "replay volume, real samples against pseudo samples"}


def sweep_command(sweep: Sweep, out: Path, seeds: str, extra: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "sapt_lightning", "-m", *sweep.overrides, f"seed={seeds}",
            f"hydra.sweep.dir={out / sweep.name}", *extra]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sapt_lightning.tables",
                                     description="Run the sweeps of one of the paper's tables or figures, then the report.",
                                     epilog="targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()))
    parser.add_argument("target", help=", ".join(TARGETS))
    parser.add_argument("--smoke", action="store_true", help="tiny backbone, 2 synthetic tasks, a few steps (CPU)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3; smoke 1,2)")
    parser.add_argument("--out", type=Path, default=None, help="default logs/tables/<target>[-smoke]")
    parser.add_argument("--unseen", default=None, help="table3: unseen tasks as a Hydra list, e.g. '[task_a,task_b]'")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every sweep")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.target not in TARGETS:
        print(f"error: unknown target '{args.target}'; targets: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    seeds = args.seeds or ("1,2" if args.smoke else "1,2,3")
    out = args.out or Path("logs") / "tables" / (args.target + ("-smoke" if args.smoke else ""))
    commands = [sweep_command(s, out, seeds, args.overrides) for s in sweeps_for(args.target, args.smoke, args.unseen)]
    for command in commands:
        print("$ python " + shlex.join(command[1:]), flush=True)
        if args.dry_run:
            continue
        code = subprocess.call(command)
        if code != 0:
            print(f"error: this sweep failed (exit {code}); finished runs are kept - fix the cause and re-run "
                  f"the same command to resume", file=sys.stderr)
            return code
    if args.dry_run:
        return 0
    try:
        table, paths = build_report([out], out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{TARGETS[args.target]} ({'smoke' if args.smoke else 'paper setting'}, seeds {seeds}):\n{table}")
    print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['png'].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
