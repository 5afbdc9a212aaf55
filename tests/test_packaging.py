"""The wheel a user installs with `pip install .` holds the config tree and the console scripts."""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
import zipfile

from conftest import ROOT

SCRIPTS = {
    "sapt",
    "sapt-plan",
    "sapt-evaluate",
    "sapt-report",
    "sapt-tables",
    "sapt-bench",
    "sapt-bench-stream",
    "sapt-padding",
    "sapt-build-backbone",
    "sapt-import-release",
}


def test_wheel_holds_the_configs_and_the_console_scripts(tmp_path):
    # No build isolation: the environment's setuptools builds it, so the test needs no download.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("sapt_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = ROOT / "sapt_lightning" / "conf"
    shipped = {str(p.relative_to(ROOT)) for p in conf.rglob("*.yaml") if "local" not in p.relative_to(conf).parts}
    assert "sapt_lightning/conf/train.yaml" in shipped
    assert shipped <= names, sorted(shipped - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    assert set(parser["console_scripts"]) == SCRIPTS
    for target in parser["console_scripts"].values():  # each names a function that exists
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_sapt_console_script_finds_its_configs_from_any_folder(tmp_path):
    """The installed `sapt` imports sapt_lightning.__main__ as a module (not as `python -m` runs it):
    Hydra must still find the packaged configs."""
    launcher = "import sys; from sapt_lightning.__main__ import cli; sys.argv[0] = 'sapt'; cli()"
    proc = subprocess.run(
        [sys.executable, "-c", launcher, "method=seq_lora", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "name: seq_lora" in proc.stdout
