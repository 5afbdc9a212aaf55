"""run(cfg): one continual stream, start to finish. The CLI, tests and sweeps all call it."""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import Strategy, StrategyRegistry
from omegaconf import DictConfig, OmegaConf

from .cl.checkpoints import drop_all as drop_all_checkpoints
from .cl.fit_guard import FitGuard
from .cl.loop import STATE_FILE, ContinualLoop, StreamState, task_dir
from .cl.progress import StreamProgressBar
from .cl.unseen import build_unseen_tasks, evaluate_unseen
from .config_checks import check_resolvable, check_values, resolved_path
from .data.benchmarks import build_tasks, task_names
from .data.io import PSEUDO_FILE, read_split
from .errors import ConfigError
from .methods.registry import check_method_tasks, method_class
from .metrics.matrix import format_matrix, joint_summary, release_variants, summary
from .metrics.trivial import trivial_baselines
from .reporting.results import CONFIG_FILE, RESULTS_FILE, write_results
from .reporting.run_report import write_report
from .stream import assemble_stream
from .utils import compiling, phases, preemption, run_lock
from .utils.distributed import is_global_zero
from .utils.io import atomic_write_json, read_json
from .utils.logging import StreamSteps, log_stream_outputs, make_loggers, quiet_libraries, uses_wandb, wandb_sync_hint
from .utils.paths import check_output_dir
from .utils.phases import phase
from .utils.progress import progress as step_progress
from .utils.progress import show_bars
from .utils.reference import check_single_results, load_single_scores, store_single_scores

log = logging.getLogger(__name__)
# Keys that never change results: a resumed run may differ in these.
_IRRELEVANT = ("logger", "paths", "hydra", "resume", "tags", "metrics")  # metrics: FWT's reference, read at the end


def run(cfg: DictConfig) -> dict[str, Any]:
    started = time.time()
    quiet_libraries()
    if not is_global_zero():  # data-parallel ranks > 0 run the same stream; rank 0 reports it
        logging.getLogger("sapt_lightning").setLevel(logging.WARNING)
    check_config(cfg)
    announce_quiet_outputs(cfg)
    preemption.install()
    run_dir = resolved_path(cfg, "paths.output_dir")
    check_paths(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_global_zero():  # the other ranks of a data-parallel run share rank 0's directory
        return _run_stream(cfg, run_dir, started)
    with run_lock.hold(run_dir):
        return _run_stream(cfg, run_dir, started)


def _run_stream(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tasks = build_tasks(cfg)  # reads and validates all data before any model loads
    check_method_tasks(cfg, tasks)
    check_resume(cfg, run_dir)  # records the config: only once every check has passed
    unseen = build_unseen_tasks(cfg, tasks)
    stream = assemble_stream(cfg, tasks)
    module, data = stream.module, stream.data
    loggers = make_loggers(cfg, run_dir)
    log_config(loggers, cfg)
    steps = StreamSteps(loggers)
    names = [t.name for t in tasks]

    def on_row(index: int, row: list[float | None]) -> None:
        metrics = {f"eval/{names[j]}/{tasks[j].metric}": v for j, v in enumerate(row) if v is not None}
        metrics["stream/task"] = index + 1
        for lg in loggers:
            lg.log_metrics(metrics, step=steps.in_task())

    def trainer_for(index: int, task, callbacks: list[L.Callback]) -> L.Trainer:
        budget = module.task_max_steps(index, len(tasks), int(cfg.trainer.max_steps))
        epochs = module.task_max_epochs(task, int(cfg.trainer.max_epochs))
        progress = StreamProgressBar(index, len(tasks), task.name)
        trainer = make_trainer(cfg, run_dir, loggers, progress, budget, epochs, callbacks)
        steps.start_task(trainer)
        return trainer

    loop = ContinualLoop(cfg, module, data, run_dir, trainer_for, on_row)
    try:
        with compiling.compile_errors() if module.compiles else nullcontext():
            state = loop.run()
        after_stream = time.time()
        phases.take()
        if module.isolated_tasks:  # method=single: its own diagonal is the single-task reference
            single = [state.matrix[i][i] for i in range(len(tasks))]
        else:
            single = load_single_scores(cfg)
        results = {
            "method": cfg.method.name,
            "benchmark": cfg.benchmark.name,
            "order": names,
            "metric": {t.name: t.metric for t in tasks},
            "matrix": state.matrix,
            "single": single,
            "summary": joint_summary(state.matrix) if module.joint_training else summary(state.matrix, single),
            "release_metrics": {} if module.joint_training else release_variants(state.matrix),
            "trivial": {t.name: trivial_baselines(t, str(cfg.fidelity.multi_reference)) for t in tasks},
            "ablations": sorted(cfg.ablations),
            "seed": int(cfg.seed),
            "label": cfg.label,
            "config": OmegaConf.to_container(cfg, resolve=False),
            "wall_s": round(state.wall_s, 1),
        }
        if hasattr(module, "mean_attention"):
            with phase("statistics"):
                results["attention"] = attention_statistics(module, tasks, data)
        with phase("evaluation"):
            results["examples"] = {t.name: loop.predictions(t, 3) for t in tasks}
            results.update(evaluate_unseen(loop, unseen))
        results["pseudo_examples"] = pseudo_examples(run_dir, tasks)
        results["phases_s"] = stream_phases(state, phases.take(), time.time() - after_stream)
        with phase("writing"):
            write_results(run_dir, results)
        with step_progress("writing report.md and its plots", None, "files") as step:
            plots = write_report(results, run_dir) if is_global_zero() else {}
            step.update(len(plots) + 1)
        log_stream_outputs(loggers, plots, results, run_dir, steps.in_task())
        if module.isolated_tasks:
            store_single_scores(cfg, results["single"])
        for lg in loggers:
            lg.log_metrics(
                {f"summary/{k}": v for k, v in results["summary"].items() if v is not None}, step=steps.in_task()
            )
        status = "success"
    except BaseException:
        status = "failed"
        raise
    finally:
        # Always close the loggers, so a crashed job never takes a sweep's W&B process down with it.
        for lg in loggers:
            lg.finalize(status)
        sync_hint = wandb_sync_hint(loggers)
        if uses_wandb(loggers):
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
        log.info("run directory: %s (%.0fs)", run_dir, time.time() - started)
    if is_global_zero():
        print_summary(results, run_dir)  # last, after the loggers' own closing output
        if sync_hint:
            print(sync_hint)
    return results


def announce_quiet_outputs(cfg: DictConfig) -> None:
    """Say which outputs this config turns off (debug=smoke turns off both), so none is missed silently."""
    show_bars(bool(cfg.trainer.enable_progress_bar))
    if not cfg.trainer.enable_progress_bar:
        log.info("progress bars off (trainer.enable_progress_bar=false); each step still logs its count and time")
    if not cfg.logger.wandb.enabled:
        log.info("W&B off (logger.wandb.enabled=false); metrics go to the CSV log and results.json")


def stream_phases(state: StreamState, after: dict[str, float], after_wall_s: float) -> dict[str, float]:
    """The stream's wall time by phase: its tasks' (recorded across resumes) plus what ran after
    the last one, up to results.json (which does not count its own writing or the report's)."""
    total = {name: state.phases_s.get(name, 0.0) + after.get(name, 0.0) for name in phases.PHASES}
    return phases.with_other(total, state.wall_s + after_wall_s)


def attention_statistics(module: Any, tasks: list, data: Any) -> dict[str, list[list[float]]]:
    """Mean block weights of each task's test inputs and of up to 200 of its training inputs (Figure 3)."""
    with step_progress("attention statistics", 2 * len(tasks), "task splits") as step:
        stats: dict[str, list[list[float]]] = {"test": [], "train": []}
        for split, limit in (("test", None), ("train", 200)):
            for task in tasks:
                stats[split].append(module.mean_attention(task, getattr(task, split)[:limit], data))
                step.update()
    return stats


def log_config(loggers: list, cfg: DictConfig) -> None:
    """The composed config as the run's hyper-parameters (W&B config panel, CSV hparams.yaml)."""
    try:
        params = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        params = OmegaConf.to_container(cfg, resolve=False)
    for lg in loggers:
        lg.log_hyperparams(params)


def pseudo_examples(run_dir: Path, tasks: list, limit: int = 5) -> dict[str, list[dict[str, str]]]:
    """A few of each task's generated pseudo samples (SAPT's ARM, LFPT5), for the report and W&B."""
    out = {}
    for index, task in enumerate(tasks):
        path = task_dir(run_dir, index, task) / PSEUDO_FILE
        if path.exists():
            out[task.name] = [{"input": ex.input, "output": ex.target} for ex in read_split(path, task.name)[:limit]]
    return out


def make_trainer(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list,
    progress: L.Callback | None = None,
    max_steps: int | None = None,
    max_epochs: int | None = None,
    callbacks: list[L.Callback] = (),
) -> L.Trainer:
    s, t = cfg.strategy, cfg.trainer
    show_progress = bool(t.enable_progress_bar)
    # Under SLURM, checkpoints.py answers the requeue signal (a checkpoint at a step boundary, then
    # exit 143); Lightning's own answer would save mid-step into the run directory.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    return L.Trainer(
        accelerator=s.accelerator,
        devices=s.devices,
        num_nodes=s.num_nodes,
        precision=s.precision,
        strategy=build_strategy(s),
        max_steps=int(t.max_steps if max_steps is None else max_steps),
        max_epochs=int(t.max_epochs if max_epochs is None else max_epochs),
        accumulate_grad_batches=int(t.accumulate_grad_batches),
        gradient_clip_val=t.gradient_clip_val,
        logger=loggers or False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=show_progress,
        callbacks=[FitGuard(), *callbacks] + ([progress] if (progress and show_progress) else []),
        plugins=plugins,
        use_distributed_sampler=False,  # the DataModule splits batches across ranks itself (RankSlicedBatches)
        default_root_dir=str(run_dir),
    )


def build_strategy(s: DictConfig) -> str | Strategy:
    """The Trainer's strategy: Lightning's preset of that name, DeepSpeed's with one change.

    ZeRO-Offload refuses a torch optimizer unless told otherwise, for speed: it wants DeepSpeed's
    compiled CPU Adam. The methods train megabytes per task (SAPT: one block, one key, the query
    network), so torch's AdamW on the offloaded partitions costs nothing that matters and needs no
    compiler."""
    name = str(s.strategy)
    if not name.startswith("deepspeed"):
        return name
    strategy = StrategyRegistry.get(name)
    if strategy.config["zero_optimization"].get("offload_optimizer"):
        strategy.config["zero_force_ds_cpu_optimizer"] = False
    return strategy


def check_config(cfg: DictConfig) -> None:
    """Every check that needs neither data nor a model. A run starts with it; a sweep runs it on
    each of its points before the first job starts (cli.precheck_sweep)."""
    check_resolvable(cfg)
    check_values(cfg)  # the method's own rules too, and whether it trains this PET type
    task_names(cfg)
    method_class(cfg.method).check_order(cfg.method, task_names(cfg, whole_order=True))
    check_strategy(cfg)
    check_compile(cfg)
    check_single_results(cfg)


def check_compile(cfg: DictConfig) -> None:
    """trainer.compile=true: refused before anything loads where it cannot compile."""
    if not cfg.trainer.get("compile"):
        if cfg.trainer.get("compile_mode") is not None:
            raise ConfigError(
                f"trainer.compile_mode={cfg.trainer.compile_mode} applies only with trainer.compile=true: "
                "set that too, or drop trainer.compile_mode"
            )
        return
    if "deepspeed" in str(cfg.strategy.strategy):
        raise ConfigError(
            f"trainer.compile=true does not run under strategy={cfg.strategy.name}: DeepSpeed's engine "
            f"gathers and partitions the weights around each forward; use strategy=single_gpu or ddp, or {compiling.TURN_OFF}"
        )
    compiling.check_compile_available(str(cfg.strategy.accelerator))


def check_strategy(cfg: DictConfig) -> None:
    """Before any model loads: does the strategy exist here, and does the backbone fit it?"""
    s = cfg.strategy
    if "deepspeed" in str(s.strategy) and str(cfg.trainer.optimizer) == "adafactor":
        # ZeRO flattens each parameter group into one 1-D partition per rank: Adafactor would keep an
        # unfactored moment and clip its update over a rank's whole slice instead of per tensor.
        raise ConfigError(
            f"trainer.optimizer=adafactor cannot run under strategy={s.name}: DeepSpeed ZeRO gives the "
            "optimizer flat partitions, on which Adafactor neither factors nor clips per tensor (it would "
            "train differently from one GPU); use strategy=single_gpu or ddp, or trainer.optimizer=adamw"
        )
    if "deepspeed" in str(s.strategy) and s.accelerator != "gpu":
        raise ConfigError(
            f"strategy={s.name} (DeepSpeed) needs CUDA GPUs (strategy.accelerator=gpu); on CPU use strategy=cpu"
        )
    if s.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError(f"strategy={s.name} needs CUDA GPUs, none is visible; use strategy=cpu")
    if s.accelerator == "gpu" and int(s.devices) > torch.cuda.device_count():
        raise ConfigError(f"strategy.devices={s.devices} but only {torch.cuda.device_count()} GPU(s) are visible")
    if s.accelerator == "gpu" and s.check_memory:
        check_memory_fits(cfg)


def check_memory_fits(cfg: DictConfig) -> None:
    """Refuse a backbone/strategy pair whose estimated memory exceeds the GPU (strategy.check_memory=false skips)."""
    from .estimate import GIB, count, estimate, method_sizes, stream_length

    c, n_tasks = count(cfg), stream_length(cfg)
    mem = estimate(cfg, c, method_sizes(cfg, c, n_tasks), n_tasks)
    need, have = mem["peak"], torch.cuda.get_device_properties(0).total_memory
    if need > have:
        when = (
            "between tasks, where each device holds the whole model"
            if mem["between_tasks"] > mem["total"]
            else "while training"
        )
        raise ConfigError(
            f"backbone={cfg.backbone.name} does not fit strategy={cfg.strategy.name}: about {need / GIB:.0f} GiB per device "
            f"needed {when}, the GPU has {have / GIB:.0f} GiB (details: python -m sapt_lightning.plan with the same overrides); "
            f"try {_memory_remedies(cfg, mem)} (strategy.check_memory=false skips this check)"
        )


def _memory_remedies(cfg: DictConfig, mem: dict[str, float]) -> str:
    if mem["between_tasks"] <= mem["total"]:
        return "strategy=deepspeed_zero2 or deepspeed_zero3_offload, trainer.gradient_checkpointing=true or a smaller data.batch_size"
    remedies = "trainer.gradient_checkpointing=true, a smaller data.batch_size"
    if mem["generator_activations"] > mem["activations"]:
        remedies = "a smaller method.generator.micro_batch_size (same steps, less memory), " + remedies
    return remedies + " or GPUs with more memory (ZeRO-3 shards the training only)"


def _relevant(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in _IRRELEVANT}
    for section, key in (("method", "paper_name"), ("trainer", "checkpoint_every_n_steps")):
        if isinstance(out.get(section), dict):  # a label, and how often to save: never a result
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def check_resume(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse a run directory made by a different config (`refuse_other_config`), then record the
    config. A config that is let in with changes (nothing finished yet, or resume=force) cannot go
    on from a checkpoint that another config's training wrote."""
    if refuse_other_config(cfg, run_dir):
        drop_all_checkpoints(run_dir)
    atomic_write_json(run_dir / CONFIG_FILE, _recorded(cfg))


def _recorded(cfg: DictConfig) -> dict[str, Any]:
    return json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=False), default=str))


def refuse_other_config(cfg: DictConfig, run_dir: Path) -> list[str]:
    """A directory where no task has finished holds nothing to protect: the new config replaces
    the old. A finished run is never relabelled: resume=force would train nothing and only
    record a config that did not make its results. Writes nothing (the CLI asks it before Hydra
    records the command in the directory). Returns the differences it let in."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return []
    diffs = _diff(_relevant(read_json(path, dict)), _relevant(_recorded(cfg)), now=cfg)
    done, total = _finished_tasks(run_dir)
    if diffs and done and done == total:
        raise ConfigError(
            f"{run_dir} holds a finished run ({done}/{total} tasks) of another config "
            f"({'; '.join(diffs[:5])}); use a new run directory (resume=force only continues "
            "an unfinished run)"
        )
    if diffs and done and cfg.resume != "force":
        raise ConfigError(
            f"{run_dir} holds a run of another config ({'; '.join(diffs[:5])}); "
            "use a new run directory, or resume=force to continue anyway"
        )
    return diffs


def _finished_tasks(run_dir: Path) -> tuple[int, int]:
    """(finished, total) tasks recorded in the run directory's stream state; (0, 0) without one."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        return 0, 0
    state = read_json(path, dict)
    return int(state.get("completed", 0)), len(state.get("tasks") or [])


def check_paths(cfg: DictConfig, run_dir: Path) -> None:
    """Every `paths.*` resolves; the run and cache directories can be made and written."""
    for key in cfg.paths:
        resolved_path(cfg, f"paths.{key}")
    check_output_dir("hydra.run.dir", run_dir)
    check_output_dir("paths.cache_dir", resolved_path(cfg, "paths.cache_dir"))


def _diff(a: Any, b: Any, prefix: str = "", now: DictConfig | None = None) -> list[str]:
    """The differences between a recorded config `a` and the new one `b` (both unresolved, as
    recorded). A key that one side lacks and the other has at null is none: keys are added at
    null, their off value (what the code did before them), so a run recorded before one is the
    same run. For a new key, null is its value in `now` (the new config) once resolved: a preset
    sets it through an interpolation that may resolve to null."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if (k not in a and _is_null(b[k], now, f"{prefix}{k}")) or (k not in b and a[k] is None):
                continue
            out += _diff(a.get(k, "<unset>"), b.get(k, "<unset>"), f"{prefix}{k}.", now)
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} -> {b!r}"]


def _is_null(value: Any, cfg: DictConfig | None, key: str) -> bool:
    if value is None:
        return True
    if cfg is None or not (isinstance(value, str) and "${" in value):
        return False
    return OmegaConf.select(cfg, key, throw_on_resolution_failure=False) is None


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    names = results["order"]
    print(f"\nScore matrix ({results['method']} on {results['benchmark']}; row i = after training task i, percent):")
    print(format_matrix(names, results["matrix"]))
    s = results["summary"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
    print(f"AP {fmt(s['ap'])}  F.Ra {fmt(s['f_ra'])}  FWT {fmt(s['fwt'])}  BWT {fmt(s['bwt'])}")
    trivial = results.get("trivial") or {}
    if results["method"] == "single" and trivial:
        print("Single-task scores beside trivial baselines (majority answer / copied input):")
        for i, name in enumerate(names):
            t = trivial[name]
            print(
                f"  {name}: {fmt(results['matrix'][i][i])}  (majority {fmt(t['majority'])}, copy {fmt(t['copy_input'])})"
            )
    if s["fwt"] is None and s["f_ra"] is not None:  # (joint training has no FWT at all)
        print("(FWT needs single-task scores: run the same stream with method=single first)")
    print(f"results: {run_dir / RESULTS_FILE}")
