"""Cross-run report: fake results.json files in, comparison.md/.csv/.png and a table out."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sapt_lightning.reporting import paper
from sapt_lightning.reporting.compare import main
from sapt_lightning.reporting.results import RESULTS_FILE, ResultsError, read_results, write_results

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHOD_CONF = ROOT / "sapt_lightning" / "conf" / "method"


def declared_paper_name(method: str) -> dict[str, str]:
    """The `paper_name` a method's yaml declares, as the run records it under config.method."""
    return yaml.safe_load((METHOD_CONF / f"{method}.yaml").read_text(encoding="utf-8")).get("paper_name", {})


def fake_results(
    method: str,
    pet: str,
    benchmark: str,
    order_id: int | None,
    backbone: str,
    seed: int,
    summary: dict,
    ablations: list[str] | None = None,
    paper_name: dict | None = None,
) -> dict:
    """A results.json as run.py writes it (only the fields the report reads are meaningful);
    `paper_name` defaults to what the method's yaml declares."""
    return {
        "method": method,
        "benchmark": benchmark,
        "order": ["a", "b"],
        "metric": {"a": "rougeL", "b": "rougeL"},
        "matrix": [[50.0, None], [40.0, 60.0]],
        "single": None,
        "summary": summary,
        "release_metrics": {},
        "ablations": ablations or [],
        "seed": seed,
        "config": {
            "order": None if order_id is None else {"id": order_id, "benchmark": benchmark, "tasks": ["a", "b"]},
            "backbone": {"name": backbone},
            "pet": {"type": pet},
            "method": {"name": method, "paper_name": declared_paper_name(method) if paper_name is None else paper_name},
        },
        "wall_s": 1.0,
    }


def write(path: Path, obj: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def sweep(tmp_path) -> dict[str, Path]:
    """A sweep like Hydra's (numbered job folders): 2 methods x 2 seeds, one broken file, one empty dir."""
    root = tmp_path / "multiruns" / "2024-01-01"
    sapt = dict(method="sapt", pet="lora", benchmark="superni", order_id=1, backbone="t5_large")
    seq = dict(method="seq_lora", pet="lora", benchmark="synthetic", order_id=None, backbone="tiny_t5")
    write(
        root / "0" / "results.json",
        fake_results(**sapt, seed=1, summary={"ap": 50.0, "f_ra": 0.5, "fwt": None, "bwt": -0.2}),
    )
    write(
        root / "1" / "results.json",
        fake_results(**sapt, seed=2, summary={"ap": 54.0, "f_ra": 0.7, "fwt": None, "bwt": -0.4}),
    )
    write(
        root / "2" / "results.json",
        fake_results(**seq, seed=1, summary={"ap": 10.0, "f_ra": 30.0, "fwt": -1.0, "bwt": -20.0}),
    )
    write(
        root / "3" / "results.json",
        fake_results(**seq, seed=2, summary={"ap": 20.0, "f_ra": 40.0, "fwt": 1.0, "bwt": -30.0}),
    )
    write(root / "4" / "results.json", '{"method": "sapt", "summary": ')  # killed mid-write
    no_summary = fake_results(**seq, seed=3, summary={})
    del no_summary["summary"]
    write(root / "5" / "results.json", no_summary)
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"root": root, "empty": empty, "out": tmp_path / "out"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def table_rows(text: str) -> list[list[str]]:
    """Data rows of the Markdown table in printed text (header and separator dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_report_groups_seeds_and_writes_files(sweep, capsys):
    rc = main([str(sweep["root"]), str(sweep["empty"]), "--out", str(sweep["out"])])
    out, err = capsys.readouterr()
    assert rc == 0, err

    # one line per problem, naming the path and why
    assert f"no results.json under {sweep['empty']}" in err
    assert f"{sweep['root'] / '4' / 'results.json'}: not valid JSON" in err
    assert f"{sweep['root'] / '5' / 'results.json'}: missing key 'summary'" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("skipped")]) == 3

    rows = table_rows(out)
    assert len(rows) == 2  # one per (method, pet, ablation, benchmark, order, backbone)
    # columns every row shares move to a caption; those that differ stay
    assert "All rows: pet lora, ablation none, fidelity clean." in out
    by_method = {r[0]: r for r in rows}
    sapt, seq = by_method["sapt"], by_method["seq_lora"]
    assert sapt[:5] == ["sapt", "superni", "1", "t5_large", "2"]
    assert seq[:5] == ["seq_lora", "synthetic", "custom[a,b]", "tiny_t5", "2"]
    # sample std over 2 seeds: |a - b| / sqrt(2)
    assert sapt[5:9] == ["52.00 ± 2.83", "0.60 ± 0.14", "–", "-0.30 ± 0.14"]
    assert seq[5:9] == ["15.00 ± 7.07", "35.00 ± 7.07", "0.00 ± 1.41", "-25.00 ± 7.07"]
    assert sapt[9] == seq[9] == "0.0"  # minutes per run (1 s)
    assert sapt[10].startswith("52.25 / 0.57") and "order 1" in sapt[10]
    assert seq[10] == "– (the paper ran t5_large only)"  # an empty paper cell says why

    out_dir = sweep["out"]
    assert (out_dir / "comparison.png").read_bytes()[:8] == PNG_MAGIC
    md = (out_dir / "comparison.md").read_text()
    assert "sample standard deviation" in md and table_rows(md) == rows

    data = {r["method"]: r for r in read_csv(out_dir / "comparison.csv")}
    assert len(data) == 2
    s = data["sapt"]
    assert float(s["ap_mean"]) == pytest.approx(52.0)
    assert float(s["ap_std"]) == pytest.approx(math.sqrt(8), rel=1e-5)
    assert float(s["f_ra_std"]) == pytest.approx(math.sqrt(0.02), rel=1e-5)
    assert s["fwt_mean"] == s["fwt_std"] == "" and s["fwt_n"] == "0"
    assert s["seeds"] == "2" and s["seed_list"] == "1;2"
    assert float(s["paper_ap"]) == 52.25 and float(s["paper_f_ra"]) == 0.57
    assert data["seq_lora"]["paper_ap"] == ""
    assert data["seq_lora"]["paper_source"] == "none: the paper ran t5_large only"
    assert float(s["wall_min_mean"]) == pytest.approx(1 / 60, rel=1e-5)


def test_cli_subprocess_and_default_out(sweep):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "sapt_lightning.report", str(sweep["root"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(table_rows(proc.stdout)) == 2
    assert "not valid JSON" in proc.stderr
    for name in ("comparison.md", "comparison.csv", "comparison.png"):  # default --out: the first directory
        assert (sweep["root"] / name).is_file(), name


def test_reporting_imports_no_torch():
    """Reports run wherever results were copied to, without torch: none of the reporting modules pulls it in."""
    modules = ["sapt_lightning.reporting." + m for m in ("results", "compare", "paper", "run_report", "tables")]
    code = f"import sys, {', '.join(modules)}, sapt_lightning.report, sapt_lightning.tables; assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_results_round_trip_and_reasons(tmp_path):
    results = fake_results(
        "sapt", "lora", "superni", 1, "t5_large", seed=1, summary={"ap": 1.0, "f_ra": 0.0, "fwt": None, "bwt": 0.0}
    )
    path = write_results(tmp_path, results)
    assert path == tmp_path / RESULTS_FILE and read_results(path) == results
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    for broken, reason in (
        ({**results, "seed": True}, "'seed' is not an integer: True"),
        ({**results, "summary": [1]}, "'summary' is not an object"),
        ({k: v for k, v in results.items() if k != "config"}, "missing key 'config'"),
    ):
        write(path, broken)
        with pytest.raises(ResultsError, match=reason):
            read_results(path)


def test_nothing_usable_exits_2(tmp_path, capsys):
    write(tmp_path / "bad" / "results.json", "not json")
    assert main([str(tmp_path / "bad"), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: no usable results.json")
    assert not (tmp_path / "bad" / "comparison.md").exists()


def test_out_that_is_a_file_is_refused(sweep, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert main([str(sweep["root"]), "--out", str(taken)]) == 2
    assert (
        capsys.readouterr().err.strip().endswith(f"--out={taken} is a file, not a directory; point it at a directory")
    )
    assert taken.read_text() == "mine"


def test_partial_nulls_single_seed_and_ablations(tmp_path, capsys):
    base = dict(pet="lora", benchmark="long_sequence", order_id=3, backbone="t5_large")
    write(
        tmp_path / "a" / "results.json",
        fake_results(
            "sapt", **base, seed=1, summary={"ap": 80.0, "f_ra": 1.0, "fwt": 2.0, "bwt": -1.0}, ablations=["no_arm"]
        ),
    )
    write(
        tmp_path / "b" / "results.json",
        fake_results(
            "sapt", **base, seed=2, summary={"ap": 82.0, "f_ra": 1.0, "fwt": None, "bwt": -1.0}, ablations=["no_arm"]
        ),
    )
    write(
        tmp_path / "c" / "results.json",
        fake_results(
            "sapt", **{**base, "pet": "prompt"}, seed=1, summary={"ap": 79.0, "f_ra": 1.5, "fwt": 3.0, "bwt": -1.5}
        ),
    )
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    rows = {(r[1], r[2]): r for r in table_rows(capsys.readouterr().out)}
    ablated, prompt = rows[("lora", "no_arm")], rows[("prompt", "none")]
    assert ablated[6] == "2.00 (n=1)"  # FWT present in one of the two seeds
    assert ablated[9].startswith("10.18 / 78.45") and "Table 2" in ablated[9]
    assert prompt[3] == "1" and prompt[4] == "79.00"  # one seed: mean only
    assert prompt[9].startswith("80.20 / 0.91") and "order 3" in prompt[9]


@pytest.mark.parametrize(
    "args, expected",
    [
        (("sapt", "lora", [], "superni", 1, "t5_large"), 52.25),
        (("sapt", "lora", [], "superni", None, "t5_large"), 51.54),
        (("sapt", "prompt", [], "long_sequence", 4, "t5_large"), 78.08),
        (("seq_lora", "lora", [], "superni", 2, "t5_large"), 7.80),
        (("sapt", "lora", ["replay"], "superni", 1, "t5_large"), 45.41),
        (("sapt", "lora", [], "superni", 1, "t5_xl"), None),  # other backbone
        (("sapt", "lora", [], "synthetic", None, "t5_large"), None),  # not a paper benchmark
        (("sapt", "lora", [], "superni", 3, "t5_large"), None),  # Long order on SuperNI
        (("sapt", "lora", ["no_arm", "replay"], "superni", 1, "t5_large"), None),  # never published
        (("sapt", "prompt", ["no_arm"], "superni", 1, "t5_large"), None),  # Table 2 is SAPT-LoRA only
        (("seq_lora", "prompt", [], "superni", 1, "t5_large"), None),
        (("epi", "lora", [], "superni", 1, "t5_large"), None),  # EPI has no SuperNI numbers
        (("single", "lora", [], "superni", 1, "t5_large"), None),
    ],
)
def test_paper_lookup(args, expected):
    method, *rest = args
    match = paper.lookup(declared_paper_name(method), *rest)
    assert (match.scores.ap if match else None) == expected


def test_every_declared_paper_name_is_a_paper_row():
    """A method's `paper_name` must name a row of Table 1, or the report would silently show nothing."""
    rows = {name for table in paper.TABLE1.values() for name in table}
    declared = {m.stem: declared_paper_name(m.stem) for m in METHOD_CONF.glob("*.yaml")}
    assert declared["single"] == declared["mtl"] == {}
    assert declared["sapt"] == {"lora": "SAPT-LoRA", "prompt": "SAPT-Prompt"}
    for method, names in declared.items():
        assert set(names) <= {"lora", "prompt"} and set(names.values()) <= rows, method


def test_paper_row_comes_from_the_recorded_config(tmp_path, capsys):
    """The report reads the row from results.json's config: a user's method can claim one; a run
    recorded before methods declared `paper_name` takes its method's row from the package's yaml;
    a method that declares none gets no paper numbers."""
    base = dict(
        pet="lora",
        benchmark="superni",
        order_id=1,
        backbone="t5_large",
        summary={"ap": 1.0, "f_ra": 1.0, "fwt": None, "bwt": -1.0},
    )
    mine = fake_results("my_method", seed=1, **base, paper_name={"lora": "O-LoRA"})
    old = fake_results("olora", seed=1, **base)
    del old["config"]["method"]["paper_name"]
    write(tmp_path / "mine" / RESULTS_FILE, mine)
    write(tmp_path / "old" / RESULTS_FILE, old)
    write(tmp_path / "mtl" / RESULTS_FILE, fake_results("mtl", seed=1, **base))
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    paper_cell = {r[0]: r[-1] for r in table_rows(capsys.readouterr().out)}
    assert paper_cell["my_method"].startswith("20.95 / 30.91") and "order 1" in paper_cell["my_method"]
    assert paper_cell["olora"] == paper_cell["my_method"]
    assert paper_cell["mtl"] == "– (the method names no paper row for lora (method.paper_name))"


def test_paper_numbers_read_from_the_data_file():
    """A few numbers from each table, as printed in the paper, and the paper's "–" as None."""
    assert paper.TABLE1["superni"]["SeqLoRA"] == (6.43, 33.39, -13.58, -30.94)
    assert paper.TABLE1["superni"]["EPI"] == (None, None, None, None)
    assert paper.TABLE1["long_sequence"]["SAPT-LoRA"].bwt == -1.25
    assert paper.TABLE2["superni"]["– Alignment"] == (45.90, 2.98, -2.42, -2.55)
    assert paper.APPENDIX_D[4]["EPI"] == (75.10, 2.44, 0.00, -2.23)
    assert "EPI" not in paper.APPENDIX_D[1]
    assert paper.ORDER_BENCHMARK == {1: "superni", 2: "superni", 3: "long_sequence", 4: "long_sequence"}
    assert paper.BENCHMARK_ORDERS == {"superni": "1-2", "long_sequence": "3-4"} and paper.PAPER_BACKBONE == "t5_large"


# The paper's own Table 1 does not always equal the mean of its Appendix D orders.
PAPER_INCONSISTENT = {
    ("long_sequence", "Replay", "ap"),
    ("long_sequence", "O-LoRA", "bwt"),
    ("long_sequence", "SAPT-LoRA", "bwt"),
}


def test_paper_tables_are_consistent():
    """Catches transcription slips: Table 1 = mean of its two orders (to rounding), Table 2's base = Table 1."""
    for benchmark, (o1, o2) in {"superni": (1, 2), "long_sequence": (3, 4)}.items():
        assert paper.TABLE2[benchmark]["SAPT-LoRA"] == paper.TABLE1[benchmark]["SAPT-LoRA"]
        for name, avg in paper.TABLE1[benchmark].items():
            a, b = paper.APPENDIX_D[o1].get(name), paper.APPENDIX_D[o2].get(name)
            if a is None or b is None:
                assert name == "EPI" and benchmark == "superni"
                continue
            for metric, x, y, t in zip(paper.PaperScores._fields, a, b, avg):
                if (benchmark, name, metric) not in PAPER_INCONSISTENT:
                    assert (x + y) / 2 == pytest.approx(t, abs=0.011), (benchmark, name, metric)
