"""`make table1..fig6`: the recipes build the sweeps they always built, and every sweep point of
every target composes and names a runnable method."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from conftest import compose_cfg
from hydra.core.override_parser.overrides_parser import OverridesParser

from sapt_lightning.methods.registry import check_method
from sapt_lightning.reporting.tables import (
    RecipeError,
    default_recipes_dir,
    load_recipe,
    main,
    recipe_targets,
    sweep_command,
    sweeps_for,
)

TARGETS = recipe_targets(default_recipes_dir())
#: The sweeps (and default seeds) each target ran when they were Python constants in tables.py.
RECORDED = json.loads((Path(__file__).parent / "fixtures" / "table_sweeps.json").read_text(encoding="utf-8"))


def test_recipes_build_the_recorded_sweeps():
    """Moving the recipes into experiments/recipes changed no command: same sweeps, order, overrides, seeds."""
    assert {key.removesuffix("-smoke") for key in RECORDED} <= set(TARGETS)
    for key, recorded in RECORDED.items():
        target, smoke = key.removesuffix("-smoke"), key.endswith("-smoke")
        seeds = load_recipe(default_recipes_dir(), target, smoke).seeds
        commands = [sweep_command(s, Path("OUT"), seeds, [])[2:] for s in sweeps_for(target, smoke, recorded["unseen"])]
        assert seeds == recorded["seeds"], key
        assert commands == recorded["commands"], key


def sweep_points(overrides: tuple[str, ...]) -> list[list[str]]:
    """The cartesian product Hydra's multirun expands `a=1,2 b=x,y` into."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = [
        [f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in parsed
    ]
    return [list(point) for point in itertools.product(*choices)]


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "paper"])
@pytest.mark.parametrize("target", TARGETS)
def test_every_sweep_point_composes(target, smoke):
    sweeps = sweeps_for(target, smoke, unseen="[task_a,task_b]")
    assert sweeps
    for sweep in sweeps:
        for point in sweep_points(sweep.overrides):
            cfg = compose_cfg(point)
            check_method(cfg)  # e.g. a prompt method left on pet=lora would fail here
            if smoke:
                assert cfg.backbone.tiny.pretrain_steps == 0 and cfg.trainer.max_steps <= 10
            if "label=" in " ".join(point) and target == "fig6":
                assert str(cfg.label) in {
                    f"{k}{v}" for k in ("real", "pseudo") for v in ("0.02", "0.05", "0.1", "0.5", "1.0")
                }


def test_single_task_references_run_first():
    for target in ("table1", "table2"):
        names = [s.name for s in sweeps_for(target, False, None)]
        for stream in ("sni", "long"):
            assert names.index(f"{stream}-single") < min(
                i for i, n in enumerate(names) if n.startswith(stream) and "single" not in n
            )


def test_table3_needs_the_unseen_tasks_on_real_data(capsys):
    with pytest.raises(RecipeError, match="UNSEEN="):
        sweeps_for("table3", False, None)
    assert main(["table3", "--dry-run"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_unknown_target_is_one_line(capsys):
    assert main(["table9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        f"no recipe {default_recipes_dir() / 'table9.yaml'} (unknown target 'table9'); targets: cpu_tier, fig4, fig5, fig6, table1"
        in err
    )


def test_missing_recipes_folder_names_the_file(tmp_path, capsys):
    assert main(["table1", "--recipes", str(tmp_path / "none"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: no recipe {tmp_path / 'none' / 'table1.yaml'}: no folder {tmp_path / 'none'} "
        "(pass --recipes DIR, the experiments/recipes folder of a sapt_lightning checkout)"
    )


def test_own_recipe_folder_and_its_mistakes(tmp_path, capsys):
    """A recipe folder of one's own runs; a list split at a comma (YAML flow style) is caught, not run."""
    (tmp_path / "mine.yaml").write_text(
        "description: mine\nseeds: [7]\n"
        "sweeps:\n  - {name: a, overrides: [benchmark=synthetic, method=seq_lora,sapt]}\n"
    )
    assert main(["mine", "--recipes", str(tmp_path), "--dry-run"]) == 2
    assert "sweeps[0]: 'sapt' is not a Hydra override" in capsys.readouterr().err
    (tmp_path / "mine.yaml").write_text(
        "description: mine\nseeds: [7]\nwandb_group: mine\n"
        "sweeps:\n  - {name: a, overrides: [benchmark=synthetic, 'method=seq_lora,sapt']}\n"
    )
    assert main(["mine", "--recipes", str(tmp_path), "--dry-run", "--out", "/tmp/x"]) == 0
    assert capsys.readouterr().out.strip() == (
        "$ python -m sapt_lightning -m benchmark=synthetic method=seq_lora,sapt "
        "logger.wandb.group=mine seed=7 hydra.sweep.dir=/tmp/x/a"
    )
    assert main(["mine", "--recipes", str(tmp_path), "--smoke"]) == 2
    assert "no `smoke:` variant" in capsys.readouterr().err


def test_dry_run_prints_the_sweeps(capsys):
    assert main(["table2", "--smoke", "--dry-run", "--out", "/tmp/x"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("$ python -m sapt_lightning -m ") for line in out)
    assert (
        "ablation=none,no_arm,replay,no_alignment,no_sa" in out[1] and "hydra.sweep.dir=/tmp/x/sni-ablations" in out[1]
    )


def test_sweeps_runs_part_of_a_recipe(capsys):
    """A recipe too long for one sitting runs in parts: --sweeps keeps the named sweeps, in the recipe's order."""
    assert main(["table2", "--smoke", "--dry-run", "--out", "/tmp/x", "--sweeps", "sni-ablations"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "hydra.sweep.dir=/tmp/x/sni-ablations" in out[0]
    assert main(["table2", "--smoke", "--dry-run", "--sweeps", "sni-ablation"]) == 2
    err = capsys.readouterr().err
    assert "--sweeps 'sni-ablation': no sweep named sni-ablation in table2; its sweeps: " in err
    assert err.count("\n") == 1


def test_flags_between_target_and_overrides(capsys):
    """As the Makefile orders them: target, flags (SMOKE=1 ...), then ARGS' overrides."""
    assert main(["fig6", "--smoke", "--out", "/tmp/x", "paths.data_dir=/d", "--dry-run", "trainer.max_steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.endswith("paths.data_dir=/d trainer.max_steps=2") for line in out)


@pytest.mark.slow
def test_table2_smoke_end_to_end(tmp_path, cache_dir, monkeypatch, capsys):
    """`make table2 SMOKE=1`: the sweeps run and the table has one row per ablation and stream, over 2 seeds."""
    monkeypatch.setenv("SAPT_CACHE_DIR", str(cache_dir))
    assert main(["table2", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| sapt ")]
    assert len(table) == 2 * 5, table  # 5 ablations x 2 streams
    assert all("| 2 |" in row for row in table), "two seeds each"
