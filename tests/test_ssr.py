"""method=ssr: the base model's in-context inputs, a diverse subset kept, answered by the latest model."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TRAINED_SMOKE, assert_reload_reproduces_run, compose_cfg

from sapt_lightning.errors import ConfigError
from sapt_lightning.run import run


def test_the_kept_inputs_spread_over_the_clusters():
    from sapt_lightning.methods.baselines.ssr import diverse_subset

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(5, 2, generator=g) for c in centres])  # 3 clusters of 5
    picked = diverse_subset(points, 3, seed=1)
    assert len(picked) == 3 and sorted(i // 5 for i in picked) == [0, 1, 2]
    assert diverse_subset(points[:2], 3, seed=1) == [0, 1]  # fewer than k: all of them


def test_ssr_relabels_every_tasks_memory_resumes_and_reloads_exactly(make_cfg, tmp_path):
    from sapt_lightning.methods.baselines.ssr import MEMORY_DIR

    ssr = [*TRAINED_SMOKE, "method=ssr", "method.replay_fraction=0.1", "benchmark.num_tasks=3"]
    first = run(make_cfg(*ssr))
    run_dir = tmp_path / "run"
    one, two, three = sorted((run_dir / "tasks").iterdir())
    kept = [x["input"] for x in json.loads((one / MEMORY_DIR / "1-reverse.json").read_text())["Instances"]]
    again = [x["input"] for x in json.loads((two / MEMORY_DIR / "1-reverse.json").read_text())["Instances"]]
    assert kept and set(again) <= set(kept)  # the same inputs, answered anew (empty answers dropped)
    assert (two / MEMORY_DIR / "2-first_word.json").is_file()
    assert not (three / MEMORY_DIR).exists()  # the last task has no later task to rehearse for

    state = json.loads((run_dir / "stream_state.json").read_text())
    state.update(completed=1, matrix=state["matrix"][:1])
    (run_dir / "stream_state.json").write_text(json.dumps(state))
    assert run(make_cfg(*ssr))["matrix"] == first["matrix"]
    assert_reload_reproduces_run(run_dir)


def test_no_demonstrations_is_refused():
    from sapt_lightning.config_checks import check_values

    message = "method.demonstrations=0 cannot work: it must be an integer >= 1"
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        check_values(compose_cfg(["method=ssr", "method.demonstrations=0"]))
