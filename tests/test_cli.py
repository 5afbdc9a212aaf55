"""The command line as a user types it: sweeps, and one clear line for each mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import DATA_DIR, ROOT


def cli(*args: str, cache=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "SAPT_DATA_DIR": str(DATA_DIR)}
    if cache is not None:
        env["SAPT_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "sapt_lightning", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BAD_INPUTS = [
    (["method=sapt_lora"], "unknown option 'sapt_lora' for method=; valid: "),
    (["ablation=[no_arm,nope]"], "unknown option 'nope' for ablation="),
    (["trainer.max_step=3"], "unknown config key 'trainer.max_step'"),
    (["metod=sapt"], "unknown config key 'metod'"),
    (["benchmark=superni", "order=3"], "order=3 is a long_sequence order, but benchmark=superni"),
    (
        ["benchmark=superni", "order=1", "paths.data_dir=/no/such/dir"],
        "benchmark folder not found: /no/such/dir/SuperNI",
    ),
    (["benchmark=superni"], "needs a task order"),
    (["benchmark.tasks=[reverse,nosuchtask]"], "unknown synthetic task 'nosuchtask'"),
    (["method=seq_lora", "pet=prompt"], "method=seq_lora does not support pet=prompt"),
    (["strategy=single_gpu"], "needs CUDA GPUs"),
    (["trainer.max_steps=abc"], "trainer.max_steps must be an integer (default 300), got 'abc'"),
    (["method.lr=fast"], "method.lr must be a number"),
    (
        ["trainer.gradient_checkpointing=maybe"],
        "trainer.gradient_checkpointing must be true or false (default false), got 'maybe'",
    ),
    (["data.batch_size=-4"], "data.batch_size=-4 cannot work: it must be an integer >= 1"),
    (["method.lr=0"], "method.lr=0 cannot work: it must be a number > 0"),
    (["strategy.devices=0"], "strategy.devices=0 cannot work"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 cannot work: it must be -1 (no limit) or an integer >= 1"),
    (["trainer.max_steps=-1"], "trainer.max_steps=-1 and trainer.max_epochs=-1: each task would train forever"),
    (["resume=no"], "resume='no' cannot work: it must be auto or force"),
    (["method.sapt.mixing=fusd"], "method.sapt.mixing='fusd' cannot work: it must be fused or loop"),
    (
        ["benchmark.tasks=reverse"],
        "benchmark.tasks='reverse' must be a list of task names, e.g. benchmark.tasks=[reverse]",
    ),
    (["benchmark.tasks=[]"], "benchmark.tasks=[] names no task"),
    (["benchmark.num_tasks=9"], "benchmark.num_tasks=9, but the stream has 5 tasks"),
    (["metrics.single_results=/no/such.json"], "metrics.single_results=/no/such.json: no such file"),
    (["backbone.name_or_path=/no/such/model"], "backbone.name_or_path=/no/such/model: no such directory"),
    (["paths.cache_dir=/etc/hostname"], "paths.cache_dir=/etc/hostname is a file, not a directory"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(args, message, tmp_path):
    proc = cli(*args, "logger=csv", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def test_run_directory_that_is_a_file_gets_one_line(tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    proc = cli("logger=csv", f"hydra.run.dir={taken}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"error: hydra.run.dir={taken} is a file, not a directory; point it at a directory"
    assert taken.read_text() == "mine"


def test_sweep_checks_every_point_before_the_first_job(tmp_path):
    """Job 1 cannot work (seq_lora has no prompt PET): refused before job 0 trains for nothing."""
    proc = cli(
        "-m", "method=sapt,seq_lora", "pet=prompt", "debug=smoke", "logger=csv", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "error: sweep job 1 (method=seq_lora pet=prompt debug=smoke logger=csv): method=seq_lora "
        "does not support pet=prompt; it supports pet=lora; nothing was started"
    )
    assert not (tmp_path / "sweep").exists()


def test_sweep_precheck_refuses_a_seed_that_is_not_an_integer(capsys):
    from sapt_lightning.cli import precheck_sweep

    with pytest.raises(SystemExit) as exit_:
        precheck_sweep(["-m", "debug=smoke", "seed=1,nan"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: sweep job 1 (debug=smoke seed=nan): seed=nan cannot work: it must be an integer; nothing was started\n"
    )


def test_multirun_gives_one_run_directory_per_job(tmp_path, cache_dir):
    proc = cli(
        "-m", "method=seq_lora,single", "debug=smoke", "logger=csv", f"hydra.sweep.dir={tmp_path}", cache=cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {}
    # job folders are named by their overrides (the sweep directory's own override left out)
    for job in ("0_debug=smoke,logger=csv,method=seq_lora", "1_debug=smoke,logger=csv,method=single"):
        results = json.loads((tmp_path / job / "results.json").read_text())
        found[results["method"]] = results
        assert len(results["matrix"]) == 2
    assert set(found) == {"seq_lora", "single"}
    assert "Score matrix" in proc.stdout and "AP " in proc.stdout
    # the sweep ends with the comparison over its jobs, printed and written into the sweep directory
    summary = proc.stdout.split(f"Sweep summary ({tmp_path}):")[1]
    assert "| seq_lora |" in summary and "| single |" in summary
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
        assert (tmp_path / name).is_file(), name


def test_hparams_search_composes_an_optuna_sweep():
    """The search config drives Hydra's Optuna sweeper over SAPT's lr, lambda and key lr, maximising AP."""
    from sapt_lightning.configs import compose

    cfg = compose(["hparams_search=sapt_quickstart"], with_hydra=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 1234
    assert set(sweeper.params) == {"method.lr", "method.arm.kl_weight", "method.sapt.key_lr"}


@pytest.mark.slow
def test_hparams_search_runs_trials_and_summarises_them(tmp_path, cache_dir):
    proc = cli(
        "hparams_search=sapt_quickstart",
        "debug=smoke",
        "logger=csv",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={tmp_path}",
        cache=cache_dir,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = sorted(tmp_path.glob("*/results.json"))
    aps = [json.loads(p.read_text())["summary"]["ap"] for p in trials]
    assert len(trials) == 2
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(aps))
    summary = proc.stdout.split(f"Sweep summary ({tmp_path}):")[1]
    assert summary.count("| sapt |") == 2, "one row per trial, told apart by its label"


def test_hparams_search_without_optuna_says_how_to_install(monkeypatch, capsys):
    import builtins

    from sapt_lightning.cli import check_launcher

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name.startswith("hydra_plugins.hydra_optuna_sweeper"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(SystemExit) as exit_:
        check_launcher(["hparams_search=sapt_quickstart"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: hparams_search needs the Hydra Optuna sweeper: pip install hydra-optuna-sweeper "
        "(or pip install -e .[search])\n"
    )


def test_importing_the_package_registers_the_resolvers():
    """A SLURM job's process resolves hydra.sweep.subdir after only importing the package (to unpickle
    the task function), so the resolvers cannot wait for the command line's code."""
    code = """
import sapt_lightning.errors
from omegaconf import OmegaConf
node = OmegaConf.create(
    {"o": "backbone.name_or_path=org/model", "d": "${sapt_job_dir:3,${o}}", "x": "${sapt_round:0.000123456}"}
)
print(node.d, node.x)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3_backbone.name_or_path=org_model", "0.000123"]
