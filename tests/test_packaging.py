"""The wheel a user installs with `pip install .` holds the config tree and the console scripts."""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
import zipfile

from conftest import ROOT

SCRIPTS = {"sapt", "sapt-plan", "sapt-evaluate", "sapt-report", "sapt-tables", "sapt-bench"}


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
