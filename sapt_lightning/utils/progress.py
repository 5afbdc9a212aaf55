"""Progress for the long steps outside Lightning's training loop: evaluation and generation, the
generator's training, pseudo sampling, attention statistics, the report's plots.

One style throughout: a tqdm bar on the console (the library Lightning's own progress bar uses)
while the step runs, and one log line with its count and wall time when it ends, so run.log keeps
what the bar showed. Bars follow `trainer.enable_progress_bar` and only rank 0 draws them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from .distributed import is_global_zero

log = logging.getLogger("sapt_lightning.progress")
_bars_enabled = True


def show_bars(enabled: bool) -> None:
    """Turn the bars on or off for this process (the log lines stay)."""
    global _bars_enabled
    _bars_enabled = enabled


class Step:
    """What a step reports: a count and a few values (loss, ...); the bar shows them when it is drawn."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.n = 0
        self.values: dict[str, str] = {}

    def update(self, k: int = 1) -> None:
        self.n += k
        self.bar.update(k)

    def show(self, **values: float | str) -> None:
        self.values = {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in values.items()}
        self.bar.set_postfix(self.values, refresh=False)


@contextmanager
def progress(label: str, total: int | None, unit: str) -> Iterator[Step]:
    """A bar for one step, counted with `step.update(k)`, values shown with `step.show(loss=...)`.

    On leaving, logs '<label>: <n> <unit> in <s> s' and the last values, bar or no bar.
    """
    started = time.monotonic()
    bar = tqdm(
        total=total,
        desc=label,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        disable=not (_bars_enabled and is_global_zero()),
    )
    step = Step(bar)
    try:
        yield step
    finally:
        bar.close()
    values = ", ".join(f"{k} {v}" for k, v in step.values.items())
    log.info("%s: %d %s in %.1f s%s", label, step.n, unit, time.monotonic() - started, f" ({values})" if values else "")
