"""A method outside the package (examples/custom_method): it runs on the smoke stream through the
same command line a user types, and shows in plan and in the report; a method that lacks a
declaration, or a config folder that does not exist, is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, compose_cfg
from omegaconf import OmegaConf

from sapt_lightning.configs import set_user_config_dirs
from sapt_lightning.errors import ConfigError
from sapt_lightning.methods import ContinualModule, register_method
from sapt_lightning.methods.registry import method_class

EXAMPLE = ROOT / "examples" / "custom_method"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE}]"


@pytest.fixture
def example_folder():
    set_user_config_dirs([EXAMPLE])
    yield
    set_user_config_dirs([])


def test_example_runs_on_the_smoke_stream_and_shows_in_plan_and_report(tmp_path, cache_dir, example_folder):
    from sapt_lightning.plan import describe
    from sapt_lightning.report import main as report
    from sapt_lightning.run import run

    cfg = compose_cfg([SEARCHPATH, "method=l2_lora", "debug=smoke", "logger=csv"], tmp_path / "run", cache_dir)
    assert describe(cfg).startswith("plan: method=l2_lora pet=lora")
    results = run(cfg)
    assert results["method"] == "l2_lora" and len(results["matrix"]) == 2
    assert json.loads((tmp_path / "run" / "results.json").read_text())["method"] == "l2_lora"
    assert report([str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    assert "l2_lora" in (tmp_path / "report" / "comparison.md").read_text()


def test_example_rules_are_checked(example_folder):
    from sapt_lightning.config_checks import check_values

    cfg = compose_cfg([SEARCHPATH, "method=l2_lora", "method.anchor_weight=-1"])
    with pytest.raises(ConfigError, match=r"^method.anchor_weight=-1 cannot work: it must be a number >= 0$"):
        check_values(cfg)


def test_a_method_without_its_declarations_is_refused_by_name():
    class NoDeclarations(ContinualModule):
        pass

    with pytest.raises(ConfigError) as err:
        register_method("half_done")(NoDeclarations)
    message = str(err.value)
    assert message.startswith("method 'half_done' (")
    assert "pet_types" in message and "save_task" in message and "load_task" in message


def test_unknown_method_and_missing_module_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"^method 'nope' is not implemented; available: (\w+, )*epi, "):
        method_class(OmegaConf.create({"name": "nope", "module": None}))
    with pytest.raises(
        ConfigError, match=r"^method 'mine': its module 'no_such_module' \(method.module\) is not importable"
    ):
        method_class(OmegaConf.create({"name": "mine", "module": "no_such_module"}))


def test_user_method_missing_a_declaration_is_one_line_at_the_command_line(tmp_path):
    folder = tmp_path / "mine"
    (folder / "method").mkdir(parents=True)
    (folder / "method" / "half.yaml").write_text("name: half\nmodule: half_method\nlr: 0.001\n")
    (folder / "half_method.py").write_text(
        textwrap.dedent("""
        from sapt_lightning.methods import ContinualModule, register_method

        @register_method("half")
        class Half(ContinualModule):
            pet_types = ("lora",)
    """)
    )
    missing_folder = tmp_path / "not_there"
    for args, message in [
        (
            [f"hydra.searchpath=[file://{folder}]", "method=half"],
            "error: method 'half' (half_method.Half) is missing save_task(self, index, task, task_dir); "
            "load_task(self, index, task, task_dir)",
        ),
        (
            [f"hydra.searchpath=[file://{missing_folder}]"],
            f"error: hydra.searchpath: config folder 'file://{missing_folder}' does not exist ({missing_folder})",
        ),
    ]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sapt_lightning",
                *args,
                "debug=smoke",
                "logger=csv",
                f"hydra.run.dir={tmp_path / 'run'}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == message, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


def test_a_conf_folder_in_the_working_directory_joins_by_itself(tmp_path, monkeypatch):
    """A checkout's conf/local/default.yaml (machine-local settings) still applies."""
    from sapt_lightning.configs import compose, with_user_folders

    (tmp_path / "conf" / "local").mkdir(parents=True)
    (tmp_path / "conf" / "local" / "default.yaml").write_text("# @package _global_\nseed: 7\n")
    monkeypatch.chdir(tmp_path)
    try:
        assert compose(with_user_folders(["method=seq_lora"])).seed == 7
    finally:
        set_user_config_dirs([])


def test_a_method_module_that_fails_to_import_is_one_line(tmp_path):
    (tmp_path / "boom_method.py").write_text("raise RuntimeError('half-written')\n")
    set_user_config_dirs([tmp_path])
    try:
        with pytest.raises(
            ConfigError,
            match=r"^method 'boom': importing its module 'boom_method' failed: "
            r"RuntimeError: half-written$",
        ):
            method_class(OmegaConf.create({"name": "boom", "module": "boom_method"}))
        with pytest.raises(ConfigError, match=r"^method.name is missing"):
            method_class(OmegaConf.create({"module": "boom_method"}))
    finally:
        set_user_config_dirs([])


def test_the_joined_search_path_stays_beside_the_other_overrides(tmp_path, monkeypatch):
    """Hydra takes the overrides as one run of arguments: one after a flag would be refused."""
    from sapt_lightning.configs import with_user_folders

    monkeypatch.chdir(tmp_path)
    searchpath = f"hydra.searchpath=[file://{tmp_path},pkg://other.conf]"
    try:
        assert with_user_folders(["method=a,b", "-m"]) == ["method=a,b", "-m"]
        assert with_user_folders(["-m", "method=a", searchpath]) == ["-m", searchpath, "method=a"]
        assert with_user_folders(["--cfg", "job", searchpath]) == [searchpath, "--cfg", "job"]
    finally:
        set_user_config_dirs([])
