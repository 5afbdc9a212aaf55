"""A progress bar that shows where the stream is, not only where the step is."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StreamProgressBar(TQDMProgressBar):
    """`task 2/5 first_word · step 120/300` instead of Lightning's per-epoch counter."""

    def __init__(self, task_index: int, n_tasks: int, task_name: str) -> None:
        super().__init__(leave=False)
        self.label = f"task {task_index + 1}/{n_tasks} {task_name}"

    def on_train_epoch_start(self, trainer, *args) -> None:
        budget = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if budget is None or trainer.current_epoch == 0:
            super().on_train_epoch_start(trainer, *args)
        if budget is not None and trainer.current_epoch == 0:
            # one bar for the whole task (its optimizer-step budget), not one per epoch, so the ETA holds
            self.train_progress_bar.reset(total=budget * trainer.accumulate_grad_batches)
        self.train_progress_bar.set_description(f"{self.label} · epoch {trainer.current_epoch}")

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version number says nothing here
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = (
            trainer.global_step * trainer.accumulate_grad_batches
            if trainer.max_steps and trainer.max_steps > 0
            else batch_idx + 1
        )
        if self._should_update(n, self.train_progress_bar.total):
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()
