"""`make table1..fig6`: every sweep point of every target composes and names a runnable method."""

from __future__ import annotations

import itertools

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from sapt_lightning.methods.registry import check_method
from sapt_lightning.reporting.tables import TARGETS, main, sweeps_for

from conftest import compose_cfg


def sweep_points(overrides: tuple[str, ...]) -> list[list[str]]:
    """The cartesian product Hydra's multirun expands `a=1,2 b=x,y` into."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
               for o in parsed]
    return [list(point) for point in itertools.product(*choices)]


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "paper"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_every_sweep_point_composes(target, smoke):
    sweeps = sweeps_for(target, smoke, unseen="[task_a,task_b]")
    assert sweeps
    for sweep in sweeps:
        for point in sweep_points(sweep.overrides):
            cfg = compose_cfg(point)
            check_method(cfg)  # e.g. a prompt method left on pet=lora would fail here
            if smoke:
                assert cfg.backbone.name.startswith("tiny") and cfg.trainer.max_steps <= 10
            if "label=" in " ".join(point) and target == "fig6":
                assert str(cfg.label) in {f"{k}{v}" for k in ("real", "pseudo") for v in ("0.02", "0.05", "0.1", "0.5", "1.0")}


def test_single_task_references_run_first():
    for target in ("table1", "table2"):
        names = [s.name for s in sweeps_for(target, False, None)]
        for stream in ("sni", "long"):
            assert names.index(f"{stream}-single") < min(i for i, n in enumerate(names) if n.startswith(stream) and "single" not in n)


def test_table3_needs_the_unseen_tasks_on_real_data():
    with pytest.raises(SystemExit, match="UNSEEN="):
        sweeps_for("table3", False, None)


def test_unknown_target_is_one_line(capsys):
    assert main(["table9"]) == 2
    assert "unknown target 'table9'; targets: table1" in capsys.readouterr().err


def test_dry_run_prints_the_sweeps(capsys):
    assert main(["table2", "--smoke", "--dry-run", "--out", "/tmp/x"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("$ python -m sapt_lightning -m ") for line in out)
    assert "ablation=none,no_arm,replay,no_alignment,no_sa" in out[1] and "hydra.sweep.dir=/tmp/x/sni-ablations" in out[1]


@pytest.mark.slow
def test_table2_smoke_end_to_end(tmp_path, cache_dir, monkeypatch, capsys):
    """`make table2 SMOKE=1`: the sweeps run and the table has one row per ablation and stream, over 2 seeds."""
    monkeypatch.setenv("SAPT_CACHE_DIR", str(cache_dir))
    assert main(["table2", "--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| sapt ")]
    assert len(table) == 2 * 5, table  # 5 ablations x 2 streams
    assert all("| 2 |" in row for row in table), "two seeds each"
