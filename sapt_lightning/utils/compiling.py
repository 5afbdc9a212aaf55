"""Compiled training forwards (`trainer.compile=true`): torch.compile of the backbone where a method
trains through it (its task loss, A-GEM's memory gradient, LFPT5's teacher and student, I-LoRA's
memory batch, SAPT's generator); decoding and evaluation stay eager, since each decoding step has a
new shape and would compile again. Forwards under no_grad beside the step (LwF's teacher, I-LoRA's
stable model, L2P's frozen features) also stay eager.

The whole backbone with its PET (LoRA blocks and their mixing) traces as one graph without a break,
so AOTAutograd compiles its backward too. Each task adds a block, so a task starts from a clean
compile cache (`fresh_cache`) rather than piling up guards until dynamo's recompile limit is hit.
Hitting that limit is an error here, as is any failure to compile (`compile_errors`): never a quiet
fallback to eager.

Compiled and eager steps compute the same function, but not bit for bit: fused kernels reorder
reductions, and inductor draws dropout masks its own way. So whether a run compiles is part of what
the run is (a run resumes only as it started).
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)
TURN_OFF = "set trainer.compile=null to train without compiling"


def check_compile_available(accelerator: str) -> None:
    """Refuse trainer.compile=true, before anything loads, where torch.compile cannot work: a Python
    dynamo does not support, no C++ compiler for inductor's CPU kernels, no Triton (or no C compiler
    for Triton's launcher) for its GPU ones."""
    try:
        import torch._dynamo
        from torch._inductor import cpp_builder
        from torch._inductor.exc import InvalidCxxCompiler
        from torch.utils._triton import has_triton
    except ImportError as err:  # private modules: a torch that moved them cannot be checked here
        raise ConfigError(
            f"trainer.compile=true: this torch ({torch.__version__}) lacks {err.name}; {TURN_OFF}"
        ) from None
    if not torch._dynamo.is_dynamo_supported():
        raise ConfigError(
            f"trainer.compile=true: torch.compile does not support Python {sys.version.split()[0]} "
            f"with torch {torch.__version__}; {TURN_OFF}"
        )
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not has_triton():
            raise ConfigError(
                "trainer.compile=true needs Triton and a GPU of compute capability 7.0 or newer "
                f"(pip install triton where the GPU has it); {TURN_OFF}"
            )
        if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
            raise ConfigError(f"trainer.compile=true needs a C compiler (cc, gcc or clang) for Triton; {TURN_OFF}")
        return
    try:
        cpp_builder.get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError(
            "trainer.compile=true needs a C++ compiler on the CPU (g++ or clang++ on PATH, or the CXX "
            f"environment variable); {TURN_OFF}"
        ) from None


def compiled(model: torch.nn.Module, mode: str | None) -> torch.nn.Module:
    """`model` compiled: a wrapper that shares its parameters and runs its forward as a graph.
    Past dynamo's recompile limit it raises rather than run eager unannounced."""
    import torch._dynamo

    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(model, mode=mode)


def fresh_cache() -> None:
    """Forget every compiled graph: the model's structure changed (a task added its block)."""
    import torch._dynamo

    torch._dynamo.reset()


@contextmanager
def compile_errors() -> Iterator[None]:
    """Turn a failure of dynamo or inductor, which surfaces at a compiled forward or its backward,
    into one line that says how to go on without compiling (the traceback is logged at debug level). An
    error in the traced code itself (TorchRuntimeError: a shape or dtype that would fail eager too)
    is not the compiler's and passes unchanged."""
    from torch._dynamo.exc import FailOnRecompileLimitHit, TorchDynamoException, TorchRuntimeError
    from torch._inductor.exc import InductorError

    try:
        yield
    except TorchRuntimeError:
        raise
    except (TorchDynamoException, InductorError, FailOnRecompileLimitHit) as err:
        log.debug("trainer.compile=true: compiling failed", exc_info=err)  # hydra.verbose=true shows it
        cause = getattr(err, "inner_exception", None) or err  # a backend's failure, as it raised it
        text = " ".join(str(cause).split())[:300]
        raise ConfigError(
            f"trainer.compile=true: compiling failed ({type(cause).__name__}: {text}); {TURN_OFF} "
            "(with resume=force to keep this run's finished tasks)"
        ) from None
