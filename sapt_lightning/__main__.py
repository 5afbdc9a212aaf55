"""`sapt [overrides]` (or `python -m sapt_lightning`): compose the config, run one stream.

User mistakes (config, data, paths) print one line and exit 2; a stop asked for by SIGTERM or
SIGUSR1 saves the task's training and exits 143; unexpected errors keep their traceback and
point to the run's log file.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from .cli import command_line, precheck_overrides, precheck_run_dir, precheck_sweep
from .configs import CONF_DIR
from .errors import Preempted, UserError

log = logging.getLogger("sapt_lightning")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from .run import run  # heavy imports after Hydra has parsed the command line

    try:
        results = run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        raise SystemExit(Preempted.exit_status) from None
    except Exception:
        log.exception("run failed; full log in %s/run.log", cfg.paths.output_dir)
        raise
    return results["summary"]["ap"]


def cli() -> None:
    """The `sapt` console script and `python -m sapt_lightning`: our checks, then Hydra's app."""
    sys.argv[1:] = command_line(sys.argv[1:])
    precheck_overrides(sys.argv[1:])
    precheck_sweep(sys.argv[1:])
    precheck_run_dir(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
