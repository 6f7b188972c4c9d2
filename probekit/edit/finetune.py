"""Fine-tuning baseline for knowledge edits (docs/shattering.md).

The plain alternative to ROME and MEMIT: gradient steps on ``-log p(target | prompt)`` for the
requested facts, changing only the MLP output projections of ``layers`` (all of the model's
MLP output projections by default), until every target is the argmax with probability at least
``stop_prob`` or ``steps`` run out. No locality constraint at all, which is what makes it a
baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from probekit.edit.request import (
    EditRequest,
    check_layer,
    copy_model,
    frozen,
    mlp_out_proj,
    prepare,
)


def finetune(
    model: Any,
    requests: Sequence[EditRequest] | EditRequest,
    layers: Sequence[int] | None = None,
    *,
    steps: int = 50,
    lr: float = 1e-3,
    stop_prob: float = 0.9,
) -> Any:
    """Edit by Adam on the targets' negative log-likelihood; returns a new model."""
    if isinstance(requests, EditRequest):
        requests = [requests]
    requests = list(requests)
    if not requests:
        raise ValueError("requests must hold at least one EditRequest")
    n_layers = int(model.cfg.n_layers)
    layers = list(range(n_layers)) if layers is None else list(layers)
    for layer in layers:
        check_layer(model, layer, "layers")
    prepared = [prepare(model, r) for r in requests]
    edited = copy_model(model)
    device = next(edited.parameters()).device
    params = [p for layer in layers for p in mlp_out_proj(edited, layer).parameters()]
    with frozen(edited):
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            losses, probs = [], []
            for item in prepared:
                logits = edited(item.prompt[None].to(device))[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                losses.append(-logp[item.target])
                probs.append(float(logp[item.target].detach().exp()))
            if min(probs) >= stop_prob:
                break
            loss = torch.stack(losses).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in params:
        p.grad = None
    return edited
