"""The main app and every tool answer a bad path, an interpolation that cannot resolve and a JSON
file of the wrong shape in one line naming it, exit 2: checked where each enters, before anything
is written."""

from __future__ import annotations

import json

import pytest
from test_cli import cli

from sapt_lightning import bench, build_backbone, evaluate, plan
from sapt_lightning.errors import DataError
from sapt_lightning.reporting import compare, tables

UNSET = "${oc.env:SAPT_TEST_UNSET_VARIABLE}"


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize(
    "override, message",
    [
        ("hydra.run.dir={file}/run", "hydra.run.dir={file}/run lies under {file}, which is a file"),
        (
            f"hydra.run.dir={UNSET}",
            "hydra.run.dir cannot be resolved: the environment variable SAPT_TEST_UNSET_VARIABLE",
        ),
        ("paths.cache_dir={file}/cache", "paths.cache_dir={file}/cache lies under {file}, which is a file"),
    ],
)
def test_the_main_app(override, message, a_file, tmp_path):
    args = ["debug=smoke", "logger=csv"] + (
        [] if override.startswith("hydra.run.dir") else [f"hydra.run.dir={tmp_path}/run"]
    )
    proc = cli(*args, override.replace("{file}", str(a_file)))
    assert proc.returncode == 2
    assert message.replace("{file}", str(a_file)) in one_error_line(proc.stderr)


def test_the_tools(a_file, tmp_path, capsys):
    def refused(call, message: str) -> None:
        try:
            code = call()
        except SystemExit as exit_:
            code = exit_.code
        assert code == 2
        assert message in one_error_line(capsys.readouterr().err)

    refused(lambda: plan.main([f"backbone.name_or_path={UNSET}"]), "backbone.name_or_path cannot be resolved")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "t5", ')
    refused(lambda: plan.main([f"backbone.name_or_path={model}"]), "config.json is not a usable transformers config")
    refused(
        lambda: build_backbone.main([f"paths.cache_dir={a_file}/cache"]), f"paths.cache_dir={a_file}/cache lies under"
    )
    refused(lambda: build_backbone.main([f"paths.cache_dir={UNSET}"]), "paths.cache_dir cannot be resolved")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("[1, 2]")
    (run_dir / "stream_state.json").write_text('{"tasks": ["reverse"], "completed": 1}')
    refused(lambda: evaluate.main([f"run_dir={run_dir}"]), "config.json: expected a JSON object at the top, found list")
    results = tmp_path / "runs" / "one"
    results.mkdir(parents=True)
    (results / "results.json").write_text(json.dumps(["not", "a", "run"]))
    refused(lambda: compare.main([str(results.parent)]), "no usable results.json")
    refused(lambda: tables.main(["table2", "--out", f"{a_file}/out", "--dry-run"]), f"--out={a_file}/out lies under")
    refused(lambda: bench.main(["--one", "x", "--profile", f"{a_file}/p"]), f"--profile={a_file}/p lies under")


def test_a_run_directory_whose_stream_state_is_not_an_object(make_cfg, tmp_path):
    from sapt_lightning.run import run

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "stream_state.json").write_text('{"tasks": ["reverse", "first_word"], "done": 1}')
    with pytest.raises(DataError, match=r"stream_state\.json: expected the keys"):
        run(make_cfg("debug=smoke", "logger=csv", run_dir=tmp_path / "run"))
