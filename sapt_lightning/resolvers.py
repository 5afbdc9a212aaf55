"""The project's OmegaConf resolvers, registered when the package is imported.

At import rather than in the CLI: a SLURM job's process resolves `hydra.sweep.subdir` without
running the command line's code, but it imports the package to unpickle the task function.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

JOB_DIR_CHARS = 120  # well under the 255 bytes a file name may have


def job_dirname(number: Any, overrides: Any) -> str:
    """A sweep job's folder: its number, then its overrides as one path component ('/' would nest)."""
    name = f"{number}_{overrides}" if overrides else str(number)
    name = name.replace("/", "_")
    return name if len(name) <= JOB_DIR_CHARS else name[: JOB_DIR_CHARS - 1] + "~"


def significant(value: Any) -> float:
    """A number to 3 significant digits (labels of searched values)."""
    return float(f"{float(value):.3g}")


def gpus_asked(accelerator: str, devices: Any) -> int:
    """GPUs a SLURM job asks for: the devices on a GPU run, none on a CPU one."""
    return int(devices) if accelerator == "gpu" else 0


RESOLVERS = {
    "sapt_gpus": gpus_asked,  # conf/hydra/launcher/slurm.yaml
    "sapt_job_dir": job_dirname,  # conf/hydra/default.yaml
    "sapt_round": significant,  # conf/hparams_search/
}


def register_resolvers() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
