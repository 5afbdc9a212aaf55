"""A Hydra callback that summarises a finished multirun: the comparison over every job,
written into the sweep directory (comparison.md, .csv, .png) and printed.

Registered in conf/hydra/default.yaml, so `python -m sapt_lightning -m ...` ends with one table
instead of leaving the user to run `python -m sapt_lightning.report` on the sweep directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..errors import UserError
from .compare import build_report
from .stats import STD_NOTE

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """After the last job of a sweep: the report over the sweep directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            table, paths = build_report([sweep_dir])
        except UserError as err:  # no job finished: say so, the jobs' own errors were printed already
            log.warning("sweep summary skipped: %s", err)
            return
        print(f"\nSweep summary ({sweep_dir}):\n\n{table}\n\nstd: {STD_NOTE}.")
        print(f"wrote {paths['md']}, {paths['csv'].name}, {paths['png'].name}")
