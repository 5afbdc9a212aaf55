"""What a task scores without learning anything: the training split's most common answer for every
test instance (majority), or the test input copied out (copy-input). A single-task score is
worth reading only beside the better of the two."""

from __future__ import annotations

from collections import Counter

from ..data.task import Task
from .scoring import score_task


def trivial_baselines(task: Task, multi_reference: str = "best") -> dict[str, float]:
    """The task's test score, in percent, of always answering the majority answer and of copying the input."""
    references = [ex.outputs for ex in task.test]
    majority = Counter(ex.target for ex in task.train).most_common(1)[0][0] if task.train else ""
    return {
        "majority": score_task([majority] * len(task.test), references, task.metric, multi_reference),
        "copy_input": score_task([ex.input for ex in task.test], references, task.metric, multi_reference),
    }
