"""MEMIT: a batch of edits spread over several MLP layers (Meng et al. 2023).

For ``n`` requests and edited layers ``l_1 < ... < l_T = L``: find the residual-stream target
``z_i = h_i^L + delta_i`` at the subject after layer ``L`` (``delta_i`` shifts layer L's MLP
output, :func:`probekit.edit.request.optimise_output_shift`); then for each layer ``l`` in
order, with the earlier layers already updated, take the keys ``K [n, d_mlp]`` at the subjects,
the remaining residual ``R = (z - h^L) / (L - l + 1)`` spread evenly over the layers left, and

    Delta W_l = R^T K (lambda C_l + K^T K)^-1

the least-squares update that moves ``W_l K^T`` towards ``W_l K^T + R^T`` while keeping
``W_l`` on the covariance ``C_l = E[k k^T]`` of other keys (``lambda`` = ``mom2_weight``, the
weight of the preserved keys relative to the edited ones). Source: docs/shattering.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from probekit.edit.request import (
    EditRequest,
    check_layer,
    copy_model,
    mlp_out_proj,
    optimise_output_shifts,
    prepare,
    residual_at_subject,
    subject_keys,
    weight_view,
)
from probekit.edit.rome import _covariance, apply_deltas


def memit_deltas(
    model: Any,
    requests: Sequence[EditRequest],
    layers: Sequence[int],
    covariance: dict[int, torch.Tensor],
    mom2_weight: float = 10.0,
    position: str = "subject",
    shifts: torch.Tensor | None = None,
    **shift_kwargs: Any,
) -> dict[int, torch.Tensor]:
    """``{layer: Delta W}`` for ``requests``; ``model`` is temporarily updated, then restored.

    ``shifts``: the output shifts ``[n_requests, d_model]`` at the last layer when already
    found; else they are optimised here, all requests in one batch."""
    prepared = [prepare(model, r, position) for r in requests]
    layers = sorted(layers)
    last = layers[-1]
    resid_hook = f"blocks.{last}.hook_resid_post"
    if shifts is None:
        shifts = optimise_output_shifts(model, prepared, last, **shift_kwargs)
    targets = residual_at_subject(model, prepared, resid_hook) + shifts
    originals = {layer: weight_view(mlp_out_proj(model, layer)).clone() for layer in layers}
    deltas: dict[int, torch.Tensor] = {}
    try:
        for i, layer in enumerate(layers):
            keys = subject_keys(model, prepared, layer)  # [n, d_mlp]
            current = residual_at_subject(model, prepared, resid_hook)
            remaining = (targets - current) / (len(layers) - i)  # [n, d_out]
            cov = covariance[layer].to(keys)
            gram = mom2_weight * cov + keys.T @ keys
            # Delta W = R^T K (gram)^-1, via a solve on the symmetric gram matrix.
            delta = torch.linalg.solve(gram, keys.T @ remaining).T
            deltas[layer] = delta
            apply_deltas(model, {layer: delta})
    finally:
        with torch.no_grad():
            for layer, weight in originals.items():
                weight_view(mlp_out_proj(model, layer)).copy_(weight)
    return deltas


def memit(
    model: Any,
    requests: Sequence[EditRequest] | EditRequest,
    layers: Sequence[int] = (0, 1),
    *,
    covariance: dict[int, torch.Tensor] | None = None,
    cov_tokens: torch.Tensor | None = None,
    mom2_weight: float = 10.0,
    position: str = "subject",
    steps: int = 40,
    lr: float = 0.2,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.01,
) -> Any:
    """Write a batch of facts with least-squares updates spread over ``layers``.

    ``requests``: one or more :class:`EditRequest`; ``covariance``: ``{layer: [d_mlp, d_mlp]}``
    or estimated from ``cov_tokens [N, L]``; ``mom2_weight``: lambda above; ``position``:
    ``"subject"`` (MEMIT) or ``"last"`` (keys at the prompt's last token). Returns a new model;
    ``model`` is unchanged (same fingerprint).
    """
    if isinstance(requests, EditRequest):
        requests = [requests]
    requests = list(requests)
    if not requests:
        raise ValueError("requests must hold at least one EditRequest")
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct layer indices, got {layers}")
    for layer in layers:
        check_layer(model, layer, "layers")
    if not mom2_weight >= 0:
        raise ValueError(f"mom2_weight must be >= 0, got {mom2_weight!r}")
    for request in requests:
        prepare(model, request, position)
    cov = _covariance(model, layers, covariance, cov_tokens)
    edited = copy_model(model)
    deltas = memit_deltas(
        edited,
        requests,
        layers,
        cov,
        mom2_weight,
        position,
        steps=steps,
        lr=lr,
        kl_weight=kl_weight,
        weight_decay=weight_decay,
    )
    apply_deltas(edited, deltas)
    return edited
