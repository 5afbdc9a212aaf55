"""W&B offline: a stream's run is read back from its .wandb log with wandb's own protobuf messages."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket

import matplotlib.image
import pytest

from sapt_lightning.errors import DataError
from sapt_lightning.run import run
from sapt_lightning.utils.wandb_offline import read_offline_run


@pytest.fixture
def no_remote_network(monkeypatch):
    """Fail any connection that leaves the machine; wandb's local service socket stays allowed."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            raise AssertionError(f"offline run tried the network: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # anything that still tried would fail, not hang


def test_offline_run_holds_metrics_tables_and_images(make_cfg, tmp_path, no_remote_network):
    cfg = make_cfg(
        "debug=smoke", "logger=default", "logger.wandb.enabled=true", "trainer.log_every_n_steps=1", "seed=3"
    )
    results = run(cfg)
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one W&B run per stream"
    wb = read_offline_run(runs[0])

    # grouping: a sweep over seeds or ablations lands in one comparable group
    assert wb.group == "synthetic-custom" and wb.job_type == "sapt"
    assert {"sapt", "synthetic", "seed3"} <= set(wb.tags)
    assert wb.config["method"]["name"] == "sapt" and wb.config["seed"] == 3

    # per-step losses, the KL separately once there is an earlier task, and one step axis across tasks
    steps = wb.metric("trainer/global_step")
    assert steps == sorted(steps) and max(steps) >= 2 * cfg.trainer.max_steps - 1
    assert len(wb.metric("train/task_loss")) >= 2 * cfg.trainer.max_steps - 2
    assert len(wb.metric("train/kl")) >= cfg.trainer.max_steps - 1

    # per-task evaluation rows and the summary equal what results.json says
    first, second = results["order"]
    assert wb.metric(f"eval/{first}/exact_match") == [results["matrix"][0][0], results["matrix"][1][0]]
    assert wb.metric(f"eval/{second}/exact_match") == [results["matrix"][1][1]]
    assert wb.summary["summary/ap"] == pytest.approx(results["summary"]["ap"])

    # tables: score matrix, attention per task, predictions, pseudo samples; the files wandb wrote hold the rows
    tables = {p.name.rsplit("_", 2)[0]: p for p in wb.media("table")}
    assert set(tables) == {"score_matrix", "attention_test", "attention_train", "predictions", "pseudo_samples"}
    matrix_table = json.loads(tables["score_matrix"].read_text())
    assert [row[1:] for row in matrix_table["data"]] == results["matrix"]
    attention = json.loads(tables["attention_test"].read_text())
    assert [row[0] for row in attention["data"]] == results["order"]
    for logged, measured in zip(attention["data"], results["attention"]["test"], strict=True):
        assert logged[1:] == pytest.approx(measured)
    assert json.loads(tables["pseudo_samples"].read_text())["data"], "pseudo samples logged"

    # media share one history row, on the stream's step axis (the last training step)
    media_rows = [row for row in wb.history if any(k.startswith(("plots/", "tables/")) for k in row)]
    assert len(media_rows) == 1 and media_rows[0]["trainer/global_step"] == max(steps)

    # results.json and every task's artifacts as one W&B artifact
    (artifact,) = [a for a in wb.artifacts.values() if a.type == "stream-outputs"]  # (tables are artifacts too)
    task_files = sorted(
        f"tasks/{p.relative_to(tmp_path / 'run' / 'tasks')}"
        for p in (tmp_path / "run" / "tasks").rglob("*")
        if p.is_file()
    )
    assert artifact.files == sorted(["results.json", *task_files])

    # the heatmaps and curves, as PNG files that decode
    images = {p.name.rsplit("_", 2)[0]: p for p in wb.media("images")}
    assert set(images) == {"score_matrix", "attention_test", "attention_train", "scores_over_time"}
    for path in images.values():
        assert matplotlib.image.imread(path).shape[0] > 100


def test_csv_only_writes_no_wandb_files(make_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sapt_lightning"):
        run(make_cfg("debug=smoke", "logger=csv"))
    assert not (tmp_path / "run" / "wandb").exists()
    metrics = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "eval/reverse/exact_match" in metrics[0]
    # what the config turned off is said; every long step leaves a line with its count and time
    said = caplog.text
    assert "W&B off (logger.wandb.enabled=false)" in said and "progress bars off" in said
    for step in (
        "training the generator for reverse: 5 steps in",
        "sampling pseudo samples of reverse: 1 samples in",
        "evaluating reverse (test): 16 examples in",
        "attention statistics: 4 task splits in",
        "writing report.md and its plots: 5 files in",
    ):
        assert step in said, step


def test_reader_refuses_a_file_that_is_not_a_run_log(tmp_path):
    (tmp_path / "run-x.wandb").write_bytes(b"not a run")
    with pytest.raises(DataError, match="not a W&B run log"):
        read_offline_run(tmp_path)


def test_online_without_login_stops_before_anything_runs(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    from sapt_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"not logged in.*wandb login.*offline=true"):
        run(make_cfg("debug=smoke", "logger=wandb", "logger.wandb.enabled=true", "logger.wandb.offline=false"))
    assert not (tmp_path / "run" / "results.json").exists()
    assert not list((tmp_path / "run").glob("tasks/*")), "no task started"


def test_wandb_missing_says_how_to_switch(make_cfg, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    from sapt_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match=r"wandb is not installed.*logger=csv"):
        run(make_cfg("debug=smoke", "logger=default", "logger.wandb.enabled=true"))
