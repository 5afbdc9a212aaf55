"""MTL: every task's training data at once, one LoRA - the multi-task upper bound (not continual).

The loop hands it the tasks one by one like any method; it defers training to the
last, then trains on the union with trainer.max_steps per task. Only the last row
of its score matrix exists, so only AP is defined.
"""

from __future__ import annotations

from ...data.datamodule import ContinualDataModule
from ..registry import register_method
from .seq_lora import PeftLoRAModule


@register_method("mtl")
class MTLModule(PeftLoRAModule):
    joint_training = True

    def attach_replay(self, data: ContinualDataModule) -> None:
        data.extra_train = [ex for task in data.tasks[: self.task_index] for ex in task.train]

    def task_max_steps(self, index: int, n_tasks: int, max_steps: int) -> int:
        return max_steps * n_tasks if max_steps > 0 else max_steps  # the budget of the whole stream, at once
