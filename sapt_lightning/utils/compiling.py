"""Compiled training forwards (`trainer.compile=true`): torch.compile of the backbone, used where a
method trains (its task loss, the replay and teacher forwards, SAPT's generator); decoding and
evaluation stay eager, since each decoding step has a new shape and would compile again.

What it compiles is the whole backbone with its PET (LoRA blocks and their mixing trace without a
graph break), so one graph covers a forward and AOTAutograd compiles its backward. Each task adds
a block, so a task starts from a clean compile cache (`fresh_cache`) rather than piling up guards
until dynamo's recompile limit silently drops it back to eager. A failure to compile is an error
(`compile_errors`), never a quiet fallback to eager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import ConfigError

COMPILE_KEYS = ("compile", "compile_mode")  # trainer.*: how steps run, never what they compute
TURN_OFF = "set trainer.compile=null to train without compiling"


def check_compile_available(accelerator: str) -> None:
    """Refuse trainer.compile=true, before anything loads, where torch.compile cannot work: a Python
    dynamo does not support, no C++ compiler for inductor's CPU kernels, no Triton for its GPU ones."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        import sys

        raise ConfigError(
            f"trainer.compile=true: torch.compile does not support Python {sys.version.split()[0]} "
            f"with torch {torch.__version__}; {TURN_OFF}"
        )
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError(f"trainer.compile=true needs Triton on a GPU (pip install triton); {TURN_OFF}")
        return
    from torch._inductor import cpp_builder
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        cpp_builder.get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError(
            "trainer.compile=true needs a C++ compiler on the CPU (g++ or clang++ on PATH, or the CXX "
            f"environment variable); {TURN_OFF}"
        ) from None


def compiled(model: torch.nn.Module, mode: str | None) -> torch.nn.Module:
    """`model` compiled: a wrapper that shares its parameters and runs its forward as a graph."""
    return torch.compile(model, mode=mode)


def fresh_cache() -> None:
    """Forget every compiled graph: the model's structure changed (a task added its block)."""
    import torch._dynamo

    torch._dynamo.reset()


@contextmanager
def compile_errors() -> Iterator[None]:
    """Turn a failure of dynamo or inductor, which surfaces at a compiled forward or its backward,
    into one line that says how to go on without compiling."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    try:
        yield
    except (TorchDynamoException, InductorError) as err:
        cause = getattr(err, "inner_exception", None) or err  # a backend's failure, as it raised it
        text = " ".join(str(cause).split())[:300]
        raise ConfigError(
            f"trainer.compile=true: compiling failed ({type(cause).__name__}: {text}); {TURN_OFF}"
        ) from None
