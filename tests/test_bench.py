"""`make bench` wiring: the benchmark runs end to end (tiny shape) and ends with its JSON summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sapt_lightning.bench import QUICK, config_names, parse_config


def test_config_names_cover_lora_and_both_mixings():
    names = config_names(QUICK)
    assert names[0] == "lora"
    assert {parse_config(n) for n in names[1:]} == {
        (m, n, False) for m in ("fused", "loop") for n in QUICK.block_counts
    }
    with pytest.raises(SystemExit):
        parse_config("sapt-blend-3")


def test_compile_pairs_each_step_with_its_compiled_self():
    """--compile: a single LoRA and SAPT at the most blocks, each eager and compiled."""
    names = config_names(QUICK, compile_steps=True)
    most = max(QUICK.block_counts)
    assert [parse_config(n) for n in names] == [
        ("lora", 1, False),
        ("lora", 1, True),
        ("fused", most, False),
        ("fused", most, True),
    ]


def test_quick_with_a_shape_is_refused(capsys):
    from sapt_lightning.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--shape", "t5-large"])
    assert exit_info.value.code == 2
    assert "--quick runs its own tiny shape; drop --quick to measure --shape t5-large" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_bench_ends_with_the_json_summary():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sapt_lightning.bench", "--quick"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["blocks"] == max(QUICK.block_counts)
    for key in ("sapt_over_lora", "loop_over_fused", "gen_sapt_over_lora", "peak_mem_sapt_over_lora"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert any(line.startswith("sapt-loop-") for line in lines)  # the table lists every configuration


@pytest.mark.parametrize("device, selected", [("cuda", None), ("cuda:1", "cuda:1")])
def test_cuda_device_is_selected_only_when_it_names_an_index(monkeypatch, capsys, device, selected):
    """`--device cuda` measures on the current GPU (torch.cuda.set_device refuses a device without an
    index); `--device cuda:1` makes GPU 1 current first."""
    import torch

    from sapt_lightning import bench

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(str(d)))
    monkeypatch.setattr(
        bench, "measure_one", lambda name, shape, where, profile_dir: {"config": name, "device": where.device}
    )
    bench.main(["--device", device, "--one", "lora"])
    assert chosen == ([selected] if selected else [])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"config": "lora", "device": device}


def test_profile_writes_host_and_operator_summary(tmp_path):
    """`--one CONFIG --profile DIR`: the question a step time leaves open (host-bound or
    kernel-bound) answered in DIR/<config>.txt; without --one it is refused in one line."""
    from sapt_lightning.bench import main

    main(["--quick", "--one", "sapt-fused-2", "--profile", str(tmp_path)])
    text = (tmp_path / "sapt-fused-2.txt").read_text()
    assert "top-level aten calls per step:" in text and "BlockMixBackward" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--profile", str(tmp_path)])
    assert exit_info.value.code == 2


def test_configurations_share_the_frozen_backbone_and_leave_it_untouched():
    """On CUDA every configuration stays resident (T5-Large's shape: one backbone, not seven);
    building LoRA or SAPT on the shared backbone must not change the backbone itself."""
    from sapt_lightning.bench import build_backbone, build_lora, build_sapt
    from sapt_lightning.pet.lora import lora_layers

    backbone = build_backbone(QUICK)
    names_before = [n for n, _ in backbone.named_modules()]
    lora = build_lora(QUICK, backbone=backbone)
    sapt = build_sapt(QUICK, "fused", 2, backbone=backbone)
    assert [n for n, _ in backbone.named_modules()] == names_before
    assert not any(p.requires_grad for p in backbone.parameters())
    shared = backbone.get_input_embeddings().weight
    for variant in (lora, sapt):
        assert variant.model.get_input_embeddings().weight is shared
    assert len(list(lora_layers(sapt.model))) == 6 * QUICK.layers  # q and v: encoder self, decoder self and cross


def test_interleaved_rounds_time_every_configuration_in_each_round():
    from sapt_lightning.bench import Where, run_interleaved, summarise

    rows = run_interleaved(config_names(QUICK), QUICK, Where(), rounds=2)
    assert list(rows) == config_names(QUICK)
    for row in rows.values():
        assert len(row["step_ms_by_round"]) == 2 and row["step_ms"] > 0 and row["gen_ms"] > 0
    summary = summarise(rows, QUICK)
    assert len(summary["sapt_over_lora_by_round"]) == 2 and summary["sapt_over_lora"] > 0


def test_rounds_must_be_positive(capsys):
    from sapt_lightning.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--quick", "--rounds", "0"])
    assert exit_info.value.code == 2
    assert "--rounds 0: must be at least 1" in capsys.readouterr().err


def test_compiled_rows_are_summarised_against_their_eager_selves(capsys):
    from sapt_lightning.bench import print_table, summarise

    def row(name: str, step_ms: float, compile_s: float | None = None) -> dict:
        return {
            "config": name,
            "blocks": 2 if name.startswith("sapt") else 1,
            "step_ms": step_ms,
            "gen_ms": 10.0,
            "step_ms_by_round": [step_ms],
            "peak_mb": 100.0,
            "train_mb": 10.0,
            "threads": 1,
            "device": "cpu",
            "precision": "32",
            "compiled": compile_s is not None,
            "compile_s": compile_s,
        }

    names = config_names(QUICK, compile_steps=True)
    rows = dict(
        zip(names, [row(names[0], 40.0), row(names[1], 20.0, 60.0), row(names[2], 50.0), row(names[3], 40.0, 90.0)])
    )
    summary = summarise(rows, QUICK)
    assert summary["compiled_over_eager"] == {"lora": 0.5, "sapt-fused-2": 0.8}
    assert summary["compile_s"] == {"lora": 60.0, "sapt-fused-2": 90.0}
    assert "loop_over_fused" not in summary  # --compile measures no loop mixing
    print_table(rows)
    compiled_line = capsys.readouterr().out.splitlines()[4]
    assert compiled_line.split()[0] == "sapt-fused-2+compiled" and compiled_line.split()[-2:] == ["0.80", "90.0"]
