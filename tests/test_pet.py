"""SALS building blocks: fused == loop, masked pooling, plain-LoRA equivalence, exact freezing."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from sapt_lightning.methods.sapt.attention import SharedAttention, pool_embeddings
from sapt_lightning.pet.lora import MixingState, inject_lora, lora_layers
from sapt_lightning.pet.prompt import prepend_prompt


def tiny(family: str):
    torch.manual_seed(0)
    if family == "t5":
        m = T5ForConditionalGeneration(
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
        return m, ["q", "v"]
    m = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    )
    return m, ["q_proj", "v_proj"]


def padded_batch():
    ids = torch.randint(3, 64, (3, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask, torch.randint(3, 64, (3, 4))


def with_blocks(family: str, mixing: str, n_blocks: int, detach: bool = False):
    model, targets = tiny(family)
    model.requires_grad_(False)
    state = MixingState()
    inject_lora(model, targets, r=4, alpha=8, state=state, mixing=mixing, detach_finished=detach)
    torch.manual_seed(1)
    for _ in range(n_blocks):
        for _, layer in lora_layers(model):
            layer.add_block()
            torch.nn.init.normal_(layer.lora_B[-1])  # non-zero so every block matters
    return model, state


def forward_loss(model, family, ids, mask, labels):
    if family == "t5":
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("detach", [False, True])
def test_fused_equals_loop_forward_and_gradients(family, detach):
    ids, mask, labels = padded_batch()
    results = {}
    for mixing in ("fused", "loop"):
        model, state = with_blocks(family, mixing, n_blocks=4, detach=detach)
        logits = torch.randn(3, 4, requires_grad=True)
        state.weights = logits.softmax(-1)
        loss = forward_loss(model, family, ids, mask, labels)
        loss.backward()
        grads = [p.grad.clone() for _, layer in lora_layers(model) for p in (layer.lora_A[-1], layer.lora_B[-1])]
        results[mixing] = (loss.detach(), logits.grad.clone(), grads)
    (lf, gf, pf), (ll, gl, pl) = results["fused"], results["loop"]
    assert torch.allclose(lf, ll, atol=1e-5)
    assert torch.allclose(gf, gl, atol=1e-5)
    for a, b in zip(pf, pl):
        assert torch.allclose(a, b, atol=1e-5)


def mixed_loss_and_grads(family: str, mixing: str, device: str, bf16: bool):
    """Loss, α gradient and newest-block gradients of a 4-block model (fp32 weights; bf16: under autocast)."""
    torch.manual_seed(0)
    ids, mask, labels = (t.to(device) for t in padded_batch())
    model, state = with_blocks(family, mixing, n_blocks=4)
    model.to(device)
    logits = torch.randn(3, 4, device=device, requires_grad=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        state.weights = logits.softmax(-1)
        loss = forward_loss(model, family, ids, mask, labels)
    loss.backward()
    grads = [p.grad for _, layer in lora_layers(model) for p in (layer.lora_A[-1], layer.lora_B[-1])]
    return loss.detach().cpu(), logits.grad.cpu(), [g.cpu() for g in grads]


def check_bf16_tracks_fp32(family: str, device: str) -> None:
    """bf16-mixed: the fp32 loss to bf16's precision; gradients finite and pointing the same way."""
    full, half = (mixed_loss_and_grads(family, "fused", device, bf16=b) for b in (False, True))
    torch.testing.assert_close(half[0], full[0], rtol=2e-2, atol=2e-2)
    for a, b in zip(half[2], full[2]):
        assert torch.isfinite(a).all()
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_bf16_autocast_tracks_fp32(family):
    """As Lightning's bf16-mixed runs on a CPU (tests/test_gpu.py repeats it on CUDA)."""
    check_bf16_tracks_fp32(family, "cpu")


def test_detaching_finished_blocks_changes_activation_gradients_only():
    """fidelity=official: old blocks pass no gradient to activations, but still to the weights α."""
    ids, mask, labels = padded_batch()
    grads = {}
    for detach in (False, True):
        model, state = with_blocks("t5", "fused", 3, detach)
        logits = torch.randn(3, 3, requires_grad=True)
        state.weights = logits.softmax(-1)
        forward_loss(model, "t5", ids, mask, labels).backward()
        layer = next(layer for _, layer in lora_layers(model))
        grads[detach] = (logits.grad.abs().sum().item(), layer.lora_A[-1].grad.clone())
    assert grads[True][0] > 0
    assert not torch.allclose(grads[False][1], grads[True][1])


def test_one_block_equals_plain_peft_lora():
    from peft import LoraConfig, get_peft_model

    ids, mask, labels = padded_batch()
    base, targets = tiny("t5")
    reference = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    model, state = copy.deepcopy(base), MixingState()
    inject_lora(model, targets, 4, 8, state, "fused", False)
    for name, layer in lora_layers(model):
        layer.add_block()
        peft_layer = reference.base_model.model.get_submodule(name)
        torch.nn.init.normal_(peft_layer.lora_B["default"].weight)
        layer.lora_A[0].data.copy_(peft_layer.lora_A["default"].weight)
        layer.lora_B[0].data.copy_(peft_layer.lora_B["default"].weight)
    state.weights = torch.ones(3, 1)
    ours = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    theirs = reference(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_new_block_starts_as_identity_and_freezes_older_blocks():
    ids, mask, labels = padded_batch()
    model, state = with_blocks("t5", "fused", 2)
    state.weights = torch.tensor([[0.5, 0.5]] * 3)
    before = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    for _, layer in lora_layers(model):
        layer.add_block()
    state.weights = torch.tensor([[0.5, 0.5, 0.0]] * 3)
    after = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.allclose(before, after, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A.2", ".lora_B.2")) for n in trainable)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_masked_pooling_is_independent_of_the_batch(pooling):
    emb = torch.nn.Embedding(64, 16)
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 13]])
    mask = (ids != 0).long()
    together = pool_embeddings(emb(ids), mask, pooling)[0]
    alone = pool_embeddings(emb(ids[:1, :3]), mask[:1, :3], pooling)[0]
    if pooling == "max":  # a max picks values: bit-identical, whatever else is in the batch
        assert torch.equal(together, alone)
    assert torch.allclose(together, alone, atol=1e-6)
    expected = emb(ids[0, :3]).max(0).values if pooling == "max" else emb(ids[0, :3]).mean(0)
    assert torch.allclose(alone, expected, atol=1e-6)
    unmasked = pool_embeddings(emb(ids), None, pooling)[0]  # fidelity=official lets padding in
    assert not torch.allclose(unmasked, alone)


def test_attention_keys_and_temperature():
    att = SharedAttention(d=16, hidden=8)
    for _ in range(3):
        att.add_key()
    assert att.temperature == pytest.approx(4.0)
    assert [k.requires_grad for k in att.keys] == [False, False, True]
    w = att(torch.randn(5, 16))
    assert w.shape == (5, 3) and torch.allclose(w.sum(-1), torch.ones(5))


def test_prompt_goes_after_left_padding():
    embeds = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    prompt = torch.full((2, 2, 1), -1.0)
    out, new_mask = prepend_prompt(embeds, mask, prompt, left_padded=True)
    assert out[0, :, 0].tolist() == [0, 1, -1, -1, 2, 3]
    assert new_mask[0].tolist() == [0, 0, 1, 1, 1, 1]
    assert out[1, :, 0].tolist() == [-1, -1, 4, 5, 6, 7]


def test_per_block_dropout_draws_one_mask_per_block():
    """fidelity.lora_dropout_masks: `shared` drops the layer input once for all blocks; `per_block`
    (the release: one LoRA module per block) draws a mask per block, in block order."""
    from sapt_lightning.pet.lora import MultiTaskLoRALinear

    def layer(per_block: bool) -> MultiTaskLoRALinear:
        torch.manual_seed(0)
        state = MixingState()
        lora = MultiTaskLoRALinear(
            torch.nn.Linear(8, 6), 2, 4, state, "fused", dropout=0.5, dropout_per_block=per_block
        )
        for _ in range(2):
            lora.add_block()
            torch.nn.init.normal_(lora.lora_B[-1])
        state.weights = torch.tensor([[0.3, 0.7]])
        return lora

    x = torch.randn(1, 5, 8)
    deltas = {}
    for per_block in (False, True):
        lora = layer(per_block)
        torch.manual_seed(3)
        deltas[per_block] = lora(x) - lora.base_layer(x)
    torch.manual_seed(3)
    masks = [torch.nn.functional.dropout(torch.ones_like(x), 0.5) for _ in range(2)]
    lora = layer(True)
    expected = sum(
        w * lora.scaling * (masks[j] * x) @ lora.lora_A[j].T @ lora.lora_B[j].T for j, w in enumerate((0.3, 0.7))
    )
    torch.testing.assert_close(deltas[True], expected)
    shared = sum(
        w * lora.scaling * (masks[0] * x) @ lora.lora_A[j].T @ lora.lora_B[j].T for j, w in enumerate((0.3, 0.7))
    )
    torch.testing.assert_close(deltas[False], shared)
    lora.eval()  # no dropout at inference, whichever the masks
    torch.testing.assert_close(
        lora(x) - lora.base_layer(x),
        sum(w * lora.scaling * x @ lora.lora_A[j].T @ lora.lora_B[j].T for j, w in enumerate((0.3, 0.7))),
    )
