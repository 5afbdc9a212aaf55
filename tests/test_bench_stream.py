"""`sapt-bench-stream`: whole streams by phase (the runs themselves are measured by `make bench-stream`)."""

from __future__ import annotations

import argparse

import pytest

from sapt_lightning.bench_stream import main, parse_variant


def test_variants_parse_and_a_bad_one_is_named():
    assert parse_variant("grouped:data.group_by_length=true,seed=2") == (
        "grouped",
        ["data.group_by_length=true", "seed=2"],
    )
    with pytest.raises(argparse.ArgumentTypeError, match="expected name:override"):
        parse_variant("data.group_by_length=true")


def test_a_run_that_fails_ends_the_bench_with_its_own_one_line_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--streams", "quickstart", "--methods", "seq_lora", "--out", str(tmp_path), "trainer.max_steps=-5"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed (exit 2)" in err[0] and "trainer.max_steps=-5" in err[0]
