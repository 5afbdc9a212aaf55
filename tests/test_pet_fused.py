"""The fused mixing path (one autograd node with a hand-written backward that skips the
frozen blocks' gradients) must agree with the per-block loop in every case that matters:
which blocks train, detached finished blocks, no autograd at all."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from sapt_lightning.pet.lora import BlockMix, MixingState, block_columns, inject_lora, lora_layers, mix_blocks


def model_with_blocks(mixing: str, n_blocks: int, detach: bool = False):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=64,
            d_model=32,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            d_kv=8,
            dropout_rate=0.0,
            decoder_start_token_id=0,
        )
    )
    model.requires_grad_(False)
    state = MixingState()
    inject_lora(model, ["q", "v"], r=4, alpha=8, state=state, mixing=mixing, detach_finished=detach)
    torch.manual_seed(1)
    for _ in range(n_blocks):
        for _, layer in lora_layers(model):
            layer.add_block()
            torch.nn.init.normal_(layer.lora_B[-1])
    return model, state


def inputs():
    g = torch.Generator().manual_seed(2)
    return {"input_ids": torch.randint(3, 64, (3, 7), generator=g), "labels": torch.randint(3, 64, (3, 4), generator=g)}


def run(mixing: str, n_blocks: int, detach: bool, setup, grad: bool = True):
    model, state = model_with_blocks(mixing, n_blocks, detach)
    setup(model)
    logits = torch.randn(3, n_blocks, generator=torch.Generator().manual_seed(3)).requires_grad_(grad)
    state.weights = logits.softmax(-1)
    if not grad:
        with torch.no_grad():
            return model(**inputs()).logits, None, []
    loss = model(**inputs()).loss
    loss.backward()
    params = [
        p.grad.clone() for _, layer in lora_layers(model) for p in [*layer.lora_A, *layer.lora_B] if p.requires_grad
    ]
    return loss.detach(), logits.grad.clone(), params


def unfreeze_first(model):  # an older block trains again: it must get its gradient
    for _, layer in lora_layers(model):
        layer.lora_A[0].requires_grad_(True)
        layer.lora_B[0].requires_grad_(True)


def freeze_all(model):  # nothing trains, but autograd runs (e.g. gradients for the router only)
    model.requires_grad_(False)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("setup", [lambda m: None, unfreeze_first, freeze_all], ids=["newest", "first+newest", "none"])
def test_fused_equals_loop_whichever_blocks_train(setup, detach):
    fused, loop = run("fused", 4, detach, setup), run("loop", 4, detach, setup)
    assert torch.allclose(fused[0], loop[0], atol=1e-5)
    assert torch.allclose(fused[1], loop[1], atol=1e-5)
    assert len(fused[2]) == len(loop[2])
    for a, b in zip(fused[2], loop[2]):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_fused_equals_loop_without_autograd(n_blocks):
    fused, _, _ = run("fused", n_blocks, False, lambda m: None, grad=False)
    loop, _, _ = run("loop", n_blocks, False, lambda m: None, grad=False)
    assert torch.allclose(fused, loop, atol=1e-5)


def test_a_block_changed_in_place_is_used_at_once():
    """No stale cache: a frozen block edited through .data (which autograd cannot see) counts."""
    model, state = model_with_blocks("fused", 3)
    state.weights = torch.full((3, 3), 1 / 3)
    before = model(**inputs()).logits.detach()
    for _, layer in lora_layers(model):
        layer.lora_B[0].data.mul_(2.0)
    after = model(**inputs()).logits.detach()
    assert not torch.allclose(before, after, atol=1e-4)


def test_layers_share_weights_derived_once_per_forward_and_never_stale():
    """MixingState derives the scaled, cast, beam-expanded weights once per forward for every layer;
    new weights, another grad mode or another batch size derive them again."""
    model, state = model_with_blocks("fused", 3)
    batch = inputs()
    with torch.no_grad():
        state.weights = torch.full((3, 3), 1 / 3)
        first = model(**batch).loss
        cached = state.for_batch(3, 2.0, torch.float32)
        assert state.for_batch(3, 2.0, torch.float32) is cached  # one derivation, shared
        state.weights = torch.tensor([[1.0, 0, 0]] * 3)
        assert model(**batch).loss != first  # not served the previous weights
    logits = torch.zeros(3, 3, requires_grad=True)
    state.weights = logits.softmax(-1)
    with torch.no_grad():  # a no-grad pass (a reentrant checkpoint's first) must not feed the next one
        model(**batch)
    model(**batch).loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert state.for_batch(6, 2.0, torch.float32).shape == (6, 3)  # beams: rows repeated per sample


@pytest.mark.parametrize("newest_only", [False, True])
@pytest.mark.parametrize("x_shape", [(3, 5, 6), (3, 6)], ids=["tokens", "rows"])
def test_block_mix_backward_is_the_exact_gradient(newest_only, x_shape):
    """BlockMix's hand-written backward against finite differences (float64): the input, the
    block weights and the blocks that train, here the first and the newest of three."""
    g = torch.Generator().manual_seed(4)
    r, n, d_in, d_out = 2, 3, x_shape[-1], 4
    # With newest_only the input's gradient is by design not the exact one: checked apart below.
    x = torch.randn(*x_shape, generator=g, dtype=torch.float64, requires_grad=not newest_only)
    w = torch.rand(3, n, generator=g, dtype=torch.float64, requires_grad=True)
    As = [torch.randn(r, d_in, generator=g, dtype=torch.float64, requires_grad=j != 1) for j in range(n)]
    Bs = [torch.randn(d_out, r, generator=g, dtype=torch.float64, requires_grad=j != 1) for j in range(n)]

    def block_mix(x, w, a0, a2, b0, b2):  # block 1 frozen; the stack built afresh, as the layer does
        a, b = torch.cat([a0, As[1], a2]).detach(), torch.cat([b0, Bs[1], b2], dim=1).detach()
        return BlockMix.apply(x, block_columns(w, r), a, b, r, newest_only, (0, 2), a0, b0, a2, b2)

    assert torch.autograd.gradcheck(block_mix, (x, w, As[0], As[2], Bs[0], Bs[2]))
    if newest_only:  # the finished blocks pass nothing to x
        x.requires_grad_(True)
        (gx,) = torch.autograd.grad(block_mix(x, w, As[0], As[2], Bs[0], Bs[2]).sum(), x)
        (gx_newest,) = torch.autograd.grad(mix_blocks(x, w[:, -1:], As[-1], Bs[-1], r).sum(), x)
        assert torch.allclose(gx, gx_newest)


def test_block_mix_forward_equals_mix_blocks():
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 3, 6, generator=g), torch.rand(2, 4, generator=g)
    As, Bs = [torch.randn(2, 6, generator=g) for _ in range(4)], [torch.randn(5, 2, generator=g) for _ in range(4)]
    expected = sum(w[:, j, None, None] * (x @ As[j].t() @ Bs[j].t()) for j in range(4))
    assert torch.allclose(mix_blocks(x, w, torch.cat(As), torch.cat(Bs, dim=1), 2), expected, atol=1e-5)
    assert torch.allclose(
        BlockMix.apply(x, block_columns(w, 2), torch.cat(As), torch.cat(Bs, dim=1), 2, False, ()), expected, atol=1e-5
    )


def test_a_bf16_backbone_with_fp32_blocks_without_autocast():
    """A backbone loaded in bf16 keeps its dtype; the blocks stay fp32 and take its activations."""
    out = {}
    for mixing in ("fused", "loop"):
        model, state = model_with_blocks(mixing, 3)
        for name, p in model.named_parameters():
            if "lora_" not in name:
                p.data = p.data.to(torch.bfloat16)
        state.weights = torch.full((3, 3), 1 / 3)
        out[mixing] = model(**inputs()).logits
    assert out["fused"].dtype == torch.bfloat16
    assert torch.allclose(out["fused"].float(), out["loop"].float(), atol=5e-2)


def test_blocks_are_stacked_once_per_generate_call_and_afresh_after():
    """Within MixingState.fixed_blocks (one generate call) each layer stacks its blocks once;
    outputs are the same as outside it, and a block edited after the scope counts at once."""
    model, state = model_with_blocks("fused", 3)
    state.weights = torch.full((3, 3), 1 / 3)
    batch = inputs()
    with torch.no_grad():
        outside = model(**batch).logits
        with state.fixed_blocks():
            inside = model(**batch).logits
            again = model(**batch).logits
            assert len(state._stacks) == len(list(lora_layers(model)))  # one stack per layer, reused
        assert torch.equal(inside, outside) and torch.equal(again, outside)
        assert state._stacks is None
        for _, layer in lora_layers(model):
            layer.lora_B[0].data.mul_(2.0)
        assert not torch.allclose(model(**batch).logits, outside, atol=1e-4)


def test_nested_fixed_blocks_keep_the_outer_stacks_and_an_empty_batch_passes():
    model, state = model_with_blocks("fused", 3)
    layer = next(layer for _, layer in lora_layers(model))
    state.weights = torch.full((2, 3), 1 / 3)
    with torch.no_grad(), state.fixed_blocks():
        layer(torch.randn(2, 5, 32))
        with state.fixed_blocks():
            pass
        assert state._stacks  # still the outer scope's
    state.weights = torch.zeros(0, 3, requires_grad=True)
    x = torch.randn(0, 5, 32, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == (0, 5, 32) and x.grad.shape == x.shape
