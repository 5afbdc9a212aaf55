"""Per-task soft prompts mixed per sample: the prompt form of SAPT (SAPT-Prompt).

P̂_b = Σ_j α_bj P_j, prepended to the input embeddings (docs/method.md §2.8).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import DataError


class PromptBank(nn.Module):
    def __init__(self, length: int, embedding: nn.Embedding, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.length = length
        self.embedding = [embedding]  # a list: not registered, the backbone owns it
        self.generator = generator
        self.prompts = nn.ParameterList()  # each (length, d)

    @property
    def n_blocks(self) -> int:
        return len(self.prompts)

    def add_block(self) -> None:
        """A new prompt initialised from embeddings of randomly sampled vocabulary tokens."""
        for p in self.prompts:
            p.requires_grad_(False)
        weight = self.embedding[0].weight
        ids = torch.randint(0, weight.shape[0], (self.length,), generator=self.generator)
        self.prompts.append(nn.Parameter(weight[ids].detach().clone().float()))

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, N) weights -> (B, length, d) per-sample prompt. (The prompts are read here, in
        forward, where ZeRO-3 gathers them: sapt_lightning/cl/zero3.py.)"""
        stacked = torch.stack(list(self.prompts))  # (N, length, d)
        return torch.einsum("bn,nld->bld", weights.to(stacked.dtype), stacked)


def prepend_prompt(
    embeds: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor, left_padded: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert the prompt before the first real token of each row.

    Right-padded rows (T5) simply get it in front. Left-padded rows (LLaMA) get it
    after their padding, so the real sequence stays contiguous at the right end.
    """
    b, n, _ = embeds.shape
    p = prompt.shape[1]
    prompt = prompt.to(embeds.dtype)
    if not left_padded:
        ones = torch.ones(b, p, dtype=mask.dtype, device=mask.device)
        return torch.cat([prompt, embeds], dim=1), torch.cat([ones, mask], dim=1)
    pads = (mask == 0).sum(dim=1)  # (B,)
    pos = torch.arange(n + p, device=embeds.device)[None, :].expand(b, -1)
    in_prompt = (pos >= pads[:, None]) & (pos < pads[:, None] + p)
    tok_index = torch.where(pos < pads[:, None], pos, pos - p).clamp(0, n - 1)
    prompt_index = (pos - pads[:, None]).clamp(0, p - 1)
    tokens = torch.gather(embeds, 1, tok_index[..., None].expand(-1, -1, embeds.shape[2]))
    prompts = torch.gather(prompt, 1, prompt_index[..., None].expand(-1, -1, embeds.shape[2]))
    out = torch.where(in_prompt[..., None], prompts, tokens)
    new_mask = torch.where(in_prompt, torch.ones_like(pos), torch.gather(mask, 1, tok_index)).to(mask.dtype)
    return out, new_mask


def realign_labels(labels: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Labels of left-padded rows after a prompt of `length` went in after the padding (-100 there)."""
    b, n = labels.shape
    pads = (mask == 0).sum(dim=1)
    pos = torch.arange(n + length, device=labels.device)[None, :].expand(b, -1)
    in_prompt = (pos >= pads[:, None]) & (pos < pads[:, None] + length)
    src = torch.where(pos < pads[:, None], pos, pos - length).clamp(0, n - 1)
    return torch.gather(labels, 1, src).masked_fill(in_prompt, -100)


def with_prompt(model: nn.Module, inputs: dict[str, torch.Tensor], prompt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Backbone inputs with a per-sample prompt (B, P, d) in front of the real tokens."""
    inputs = dict(inputs)
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    left = not model.config.is_encoder_decoder  # decoder-only rows are left-padded
    mask = inputs["attention_mask"]
    inputs["inputs_embeds"], inputs["attention_mask"] = prepend_prompt(embeds, mask, prompt, left)
    if left and "labels" in inputs:
        inputs["labels"] = realign_labels(inputs["labels"], mask, prompt.shape[1])
    return inputs


def load_prompt(param: nn.Parameter, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy a saved `prompt` tensor into a live prompt; a missing or reshaped one names the file."""
    prompt = state.get("prompt")
    if prompt is None or prompt.shape != param.shape:
        raise DataError(
            f"{source}: no prompt of shape {tuple(param.shape)} (saved with another backbone or prompt length?)"
        )
    with torch.no_grad():
        param.copy_(prompt)
