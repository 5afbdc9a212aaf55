"""`sapt-plan [overrides]` (or `python -m sapt_lightning.plan`): parameter counts and a GPU-memory
estimate, before queueing.

Takes the same overrides as a run (`experiment=... backbone=... strategy=...`) and loads
nothing; it runs offline in a second (see `estimate.py`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from .cli import config_tool
from .config_checks import check_values
from .estimate import GIB, count, estimate, method_sizes, optimizer_name, stream_length


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"


def describe(cfg: DictConfig) -> str:
    c = count(cfg)
    n_tasks = stream_length(cfg)
    sizes = method_sizes(cfg, c, n_tasks)
    mem = estimate(cfg, c, sizes, n_tasks)
    s = cfg.strategy
    devices = int(s.devices) * int(s.num_nodes)
    pet = f"r={cfg.pet.r}" if cfg.pet.type == "lora" else f"length {cfg.pet.length}"
    lines = [
        f"plan: method={cfg.method.name} pet={cfg.pet.type} ({pet}) on {cfg.backbone.name} "
        f"({cfg.backbone.name_or_path or 'built locally'}), {cfg.benchmark.name}: {n_tasks} tasks",
        f"strategy={s.name}: {s.devices} device(s) x {s.num_nodes} node(s), precision {s.precision}, "
        f"batch {cfg.data.batch_size} x accumulate {cfg.trainer.accumulate_grad_batches} x {devices} device(s), "
        f"source/target length {cfg.data.max_source_length}/{cfg.data.max_target_length}, "
        f"gradient checkpointing {'on' if cfg.trainer.gradient_checkpointing else 'off'}",
        "",
        "parameters",
        f"  backbone (frozen)                  {human(c.frozen):>10}   {c.targets} target linears {list(cfg.backbone.target_modules)}",
        f"  trainable while learning a task    {human(sizes['trainable']):>10}   ({100 * sizes['trainable'] / c.frozen:.3f}% of the backbone)",
        f"  stored per task                    {human(sizes['per_task']):>10}",
        f"  stored after {n_tasks:>2} tasks              {human(sizes['total']):>10}   ({sizes['total'] * 4 / 2**20:.0f} MiB in float32)",
        "",
        "memory per device (estimate, +-30%)",
        f"  backbone weights ({cfg.backbone.dtype})      {mem['weights'] / GIB:8.2f} GiB",
        f"  PET blocks of all tasks (fp32)     {mem['pet'] / GIB:8.2f} GiB",
        f"  {'gradients + ' + optimizer_name(cfg) + ' states':<35}{mem['optimizer'] / GIB:8.2f} GiB",
        f"  activations (one training step)    {mem['activations'] / GIB:8.2f} GiB",
        f"  total with 15% overhead            {mem['total'] / GIB:8.2f} GiB",
        f"  between tasks (whole model)        {mem['between_tasks'] / GIB:8.2f} GiB   (generator, statistics, scoring)",
    ]
    for gpu, size in (("40 GiB (A100-40G)", 40), ("80 GiB (A100/A800/H100-80G)", 80)):
        lines.append(f"  fits {gpu}: {'yes' if mem['peak'] / GIB < size * 0.95 else 'no'}")
    return "\n".join(lines)


def checked_plan(cfg: DictConfig) -> str:
    check_values(cfg)
    return describe(cfg)


def main(argv: list[str] | None = None) -> int:
    return config_tool(argv, checked_plan)


if __name__ == "__main__":
    raise SystemExit(main())
