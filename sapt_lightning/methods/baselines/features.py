"""Input features from the frozen backbone, for methods that select by similarity (L2P, EPI).

The mean of the last hidden states over real input tokens, computed with no prompt:
the "frozen pretrained model's representation of the input" these methods query with.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def frozen_features(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, d) float32 features of the batch's prompt tokens (`pool_ids`: for a decoder-only
    training batch `input_ids` also hold the answer, which a test-time query never sees)."""
    ids, mask = batch["pool_ids"], batch["pool_mask"]
    was_training = model.training
    model.eval()  # no dropout: an input's feature (and so its selection) must not be random
    if model.config.is_encoder_decoder:
        hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    model.train(was_training)
    weights = mask.to(hidden.dtype)[..., None]
    return ((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)).float()
