"""A stream's wall time by phase (results.json `phases_s`)."""

from __future__ import annotations

from sapt_lightning.utils import phases


def test_a_nested_phase_stops_the_outer_clock_and_other_is_the_rest(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(phases.time, "perf_counter", lambda: now[0])
    phases.take()
    with phases.phase("training"):
        now[0] += 2.0
        with phases.phase("arm_replay"):
            now[0] += 0.5
        now[0] += 1.0
    with phases.phase("evaluation"):
        now[0] += 3.0
    totals = phases.take()
    assert totals == {**dict.fromkeys(phases.PHASES, 0.0), "training": 3.0, "arm_replay": 0.5, "evaluation": 3.0}
    assert phases.take()["training"] == 0.0  # take() starts new totals
    assert phases.with_other(totals, 10.0)["other"] == 3.5
