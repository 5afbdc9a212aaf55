"""trainer.compile: the compiled training forward computes what the eager one does, and where it
cannot compile the run stops in one line before anything loads (or, failing later, says how to
turn it off) - never a quiet fallback to eager."""

from __future__ import annotations

import pytest
import torch

from sapt_lightning.data.task import Example, Task
from sapt_lightning.errors import ConfigError


def _can_compile() -> bool:
    from sapt_lightning.utils.compiling import check_compile_available

    try:
        check_compile_available("cpu")
    except ConfigError:
        return False
    return True


needs_compiler = pytest.mark.skipif(not _can_compile(), reason="no C++ compiler for torch.compile on this machine")


def _task(name: str, words: list[str]) -> Task:
    train = [Example("Repeat the words.", " ".join(words[i : i + 3]), (words[i],)) for i in range(6)]
    return Task(name, "exact_match", "synthetic", train, train, train)


def _loss_and_grads(module, forward, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    loss = forward(**module.backbone_inputs(batch)).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.requires_grad]


@needs_compiler
@pytest.mark.parametrize("backbone", ["tiny_t5", pytest.param("tiny_llama", marks=pytest.mark.slow)])
def test_compiled_step_matches_eager(make_cfg, cache_dir, backbone):
    """SAPT-LoRA at its second task (two blocks, a finished one with non-zero B, routing that
    trains), in training mode: loss and every trainable gradient (the new block, its key, the query
    network) equal eager's within fp32 tolerance; the backbone traces as one graph, no break; the
    compiled wrapper stays out of the checkpoint."""
    from sapt_lightning.backbones import load_backbone
    from sapt_lightning.data.collate import Collator
    from sapt_lightning.methods.registry import build_method

    cfg = make_cfg("debug=smoke", f"backbone={backbone}", "trainer.compile=true")
    module = build_method(cfg, load_backbone(cfg.backbone, cache_dir))
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    module.start_task(0, _task("first", words))
    module.targets, module.pseudo = [torch.ones(1)], [[]]
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)  # the finished block's output is no longer zero
    module.start_task(1, _task("second", words[::-1]))
    assert module.model.training and not any(  # no dropout anywhere: both passes see one network
        m.p > 0 for m in module.model.modules() if isinstance(m, torch.nn.Dropout)
    )
    collate = Collator(module.tokenizer, module.family, "long_sequence", 32, 8, with_labels=True)
    batch = collate(_task("second", words[::-1]).train[:4] + _task("first", words).train[:2])

    eager_loss, eager_grads = _loss_and_grads(module, module.model, batch)
    compiled_loss, compiled_grads = _loss_and_grads(module, module.step_model, batch)

    assert module.step_model is not module.model
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    assert len(compiled_grads) == len(eager_grads) > 3
    for compiled, eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
    assert not any("_orig_mod" in key for key in module.state_dict())
    explained = torch._dynamo.explain(module.model)(**module.backbone_inputs(batch))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    torch._dynamo.reset()


def test_a_compile_failure_is_one_line_saying_how_to_turn_it_off():
    """A backend that fails while compiling (as inductor does without its compiler) surfaces at
    the first compiled call; compile_errors turns it into the run's one-line error."""
    from sapt_lightning.utils.compiling import compile_errors

    def failing_backend(graph, example_inputs):
        raise RuntimeError("no kernels for you")

    compiled = torch.compile(lambda x: torch.sin(x) + 1, backend=failing_backend)
    with pytest.raises(ConfigError) as err, compile_errors():
        compiled(torch.ones(3))
    message = str(err.value)
    assert message.startswith("trainer.compile=true: compiling failed (RuntimeError: no kernels for you)")
    assert message.endswith(
        "set trainer.compile=null to train without compiling (with resume=force to keep this run's finished tasks)"
    )
    assert "\n" not in message


def test_the_recompile_limit_stops_the_run_instead_of_running_eager(monkeypatch):
    import torch._dynamo

    from sapt_lightning.utils.compiling import compile_errors

    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False, recompile_limit=1)
    with pytest.raises(ConfigError, match=r"compiling failed \(FailOnRecompileLimitHit"), compile_errors():
        for dtype in (torch.float32, torch.float64, torch.int64):
            fn(torch.ones(2, dtype=dtype))
    torch._dynamo.reset()


def test_compiling_is_part_of_what_a_run_is(make_cfg):
    """Compiled steps are not bit-identical to eager ones (kernels, dropout masks): a run and its
    single-task references keep the setting; off (null or false) is the run from before the key."""
    from sapt_lightning.run import _diff, _recorded, _relevant
    from sapt_lightning.utils.reference import stream_key

    base, on, off = (
        make_cfg("debug=smoke"),
        make_cfg("debug=smoke", "trainer.compile=true"),
        make_cfg("debug=smoke", "trainer.compile=false"),
    )
    assert stream_key(on) != stream_key(base) == stream_key(off)
    before_the_key = _relevant(_recorded(base))
    del before_the_key["trainer"]["compile"], before_the_key["trainer"]["compile_mode"]
    assert _diff(before_the_key, _relevant(_recorded(base)), now=base) == []
    assert _diff(_relevant(_recorded(base)), _relevant(_recorded(on)), now=on) == ["trainer.compile: None -> True"]


def test_no_cpp_compiler_is_refused_before_anything_loads(make_cfg, monkeypatch):
    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import cpp_compiler_search

    from sapt_lightning.run import check_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "no-such-compiler-here"))
    cpp_compiler_search.cache_clear()
    try:
        with pytest.raises(
            ConfigError, match=r"trainer.compile=true needs a C\+\+ compiler on the CPU .*trainer.compile=null"
        ):
            check_config(make_cfg("debug=smoke", "trainer.compile=true"))
    finally:
        cpp_compiler_search.cache_clear()
    check_config(make_cfg("debug=smoke"))  # off: nothing is asked of the machine


def test_deepspeed_is_refused(make_cfg):
    """ZeRO gathers and partitions the weights around each forward (checked apart from
    check_config, which first refuses DeepSpeed on a machine without CUDA)."""
    from sapt_lightning.run import check_compile

    with pytest.raises(ConfigError, match=r"trainer\.compile=true does not run under strategy=deepspeed_zero2"):
        check_compile(make_cfg("debug=smoke", "strategy=deepspeed_zero2", "trainer.compile=true"))


def test_an_unknown_compile_mode_is_named(make_cfg):
    from sapt_lightning.run import check_config

    with pytest.raises(ConfigError, match=r"trainer\.compile_mode='fastest'"):
        check_config(make_cfg("debug=smoke", "trainer.compile_mode=fastest"))
    with pytest.raises(
        ConfigError, match=r"trainer\.compile_mode=max-autotune applies only with trainer\.compile=true"
    ):
        check_config(make_cfg("debug=smoke", "trainer.compile_mode=max-autotune"))
