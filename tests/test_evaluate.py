"""python -m sapt_lightning.evaluate: re-scoring a finished stream from disk gives the
scores recorded when the stream ran (same artifacts, same predictions)."""

from __future__ import annotations

import json

import pytest

from sapt_lightning.errors import UserError
from sapt_lightning.evaluate import EVAL_FILE, evaluate_run, main
from sapt_lightning.run import run

SMOKE = ["debug=smoke", "logger=csv"]
# A little pretraining and training, so predictions are non-empty text that any change in
# the loaded weights would alter (the random smoke model predicts '' everywhere).
TRAINED = ["backbone.tiny.pretrain_steps=100", "trainer.max_steps=30"]


@pytest.mark.parametrize("method", ["sapt", "single"])
def test_evaluate_from_disk_reproduces_the_last_row(make_cfg, tmp_path, method):
    run(make_cfg(*SMOKE, *TRAINED, f"method={method}"))
    run_dir = tmp_path / "run"
    recorded = json.loads((run_dir / "results.json").read_text())

    results = evaluate_run(run_dir)  # everything rebuilt from config.json and the task folders

    assert results["row"] == recorded["matrix"][-1]
    # Same predictions, not only the same scores. (run.py decodes its examples with the last
    # model, which for method=single is the last task's adapter: compare that task there.)
    compared = recorded["order"] if method == "sapt" else recorded["order"][-1:]
    assert any(e["prediction"] for name in compared for e in recorded["examples"][name])
    for name in compared:
        assert results["examples"][name] == recorded["examples"][name]
    if method == "sapt":  # the routing too: keys, query network and pooling restored exactly
        assert results["attention"]["test"] == recorded["attention"]["test"]
    saved = json.loads((run_dir / EVAL_FILE).read_text())
    assert saved["row"] == recorded["matrix"][-1] and saved["matches_recorded"] is True
    assert list(saved["scores"]) == saved["order"] and saved["completed"] == 2


def test_partial_stream_scores_completed_tasks_only(make_cfg, tmp_path):
    run(make_cfg(*SMOKE, "method=seq_lora"))
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "stream_state.json").read_text())
    # As if the stream had stopped after task 1: its adapter file was overwritten by task 2,
    # so only the shape of the result is checked here.
    state.update(completed=1, matrix=state["matrix"][:1])
    (run_dir / "stream_state.json").write_text(json.dumps(state))
    results = evaluate_run(run_dir)
    assert results["completed"] == 1 and results["row"][1] is None and len(results["scores"]) == 1


def test_not_a_run_directory_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(UserError, match=rf"{tmp_path / 'config.json'} not found"):
        evaluate_run(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([f"run_dir={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(tmp_path) in err
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "run_dir=" in capsys.readouterr().err


def test_unknown_override_is_refused(make_cfg, tmp_path):
    run(make_cfg(*SMOKE, "method=seq_lora"))
    with pytest.raises(UserError, match=r"unknown config key 'data\.no_such_key'"):
        evaluate_run(tmp_path / "run", ["data.no_such_key=1"])


def test_bad_device_override_and_damaged_state_are_one_line(make_cfg, tmp_path):
    run(make_cfg(*SMOKE, "method=seq_lora"))
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match=r"device=gpu: use auto, cpu, cuda or cuda:<index>"):
        evaluate_run(run_dir, device="gpu")
    with pytest.raises(UserError, match=r"data.eval_batch_size='abc' cannot work: it must be an integer >= 1"):
        evaluate_run(run_dir, ["data.eval_batch_size=abc"])
    state = json.loads((run_dir / "stream_state.json").read_text())
    (run_dir / "stream_state.json").write_text(json.dumps({**state, "completed": 5}))
    with pytest.raises(UserError, match=r"records 5 finished tasks of a 2-task stream"):
        evaluate_run(run_dir)
