"""method=lamol: generation rows while a task trains, the model's own samples of earlier tasks after."""

from __future__ import annotations

import json

from conftest import TRAINED_SMOKE, assert_reload_reproduces_run

from sapt_lightning.methods.generator import GEN
from sapt_lightning.run import run


def test_lamol_samples_its_tasks_replays_them_after_a_resume_and_reloads_exactly(make_cfg, tmp_path):
    from sapt_lightning.methods.baselines.lamol import PSEUDO_DIR

    first = run(make_cfg(*TRAINED_SMOKE, "method=lamol"))
    run_dir = tmp_path / "run"
    task_dirs = sorted((run_dir / "tasks").iterdir())
    written = json.loads((task_dirs[0] / PSEUDO_DIR / "1-reverse.json").read_text())
    assert written["Definition"] == ["Reverse the order of these words."] and written["Instances"]
    assert not (task_dirs[1] / PSEUDO_DIR).exists()  # the last task has no next task to replay for

    # Stopped after task 1: the re-run reads its samples back instead of drawing new ones.
    state = json.loads((run_dir / "stream_state.json").read_text())
    state.update(completed=1, matrix=state["matrix"][:1])
    (run_dir / "stream_state.json").write_text(json.dumps(state))
    again = run(make_cfg(*TRAINED_SMOKE, "method=lamol"))
    assert again["matrix"] == first["matrix"]
    assert_reload_reproduces_run(run_dir)


def test_a_task_trains_on_its_generation_rows_and_the_earlier_samples(make_cfg, cache_dir, tmp_path):
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.benchmarks import build_tasks
    from sapt_lightning.data.io import per_task_path, write_task_json
    from sapt_lightning.data.task import Example
    from sapt_lightning.methods.baselines.lamol import PSEUDO_DIR
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", "method=lamol")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    tasks = build_tasks(cfg)
    module.save_task(0, tasks[0], tmp_path)
    sample = Example(tasks[0].train[0].definition, "mifo gisa", ("gisa mifo",))
    write_task_json(per_task_path(tmp_path / PSEUDO_DIR, 0, tasks[0].name), [sample])
    module.load_task(0, tasks[0], tmp_path)

    extra = module.start_task(1, tasks[1])
    own = [ex for ex in extra if ex.input == GEN and ex.definition == tasks[1].train[0].definition]
    assert len(own) == round(0.25 * len(tasks[1].train))  # gen_fraction of the task's own examples
    assert all("__ans__" in ex.target for ex in own)
    assert [ex for ex in extra if ex.input != GEN] == [sample]  # replayed as it was written
    # and as a generation row (at least one), so the model keeps writing the earlier task
    assert [ex.target for ex in extra if ex.input == GEN and ex.definition == sample.definition] == [
        "gisa mifo __ans__ mifo gisa"
    ]
