"""ROME: a rank-one update of one MLP output projection (Meng et al. 2022).

Which edit does the shattering study (docs/shattering.md) apply? ROME treats a layer's MLP
output projection ``W [d_out, d_mlp]`` as a key-value memory: the key ``k*`` is the MLP's
hidden activation at the subject's last token, the value ``v* = W k* + delta`` is what makes
the model output the new object (``delta`` from
:func:`probekit.edit.request.optimise_output_shift`). The update

    u = C^-1 k*,    W' = W + (v* - W k*) u^T / (u^T k*)

maps ``k*`` exactly to ``v*`` while changing the outputs for other keys as little as possible
under the key covariance ``C = E[k k^T]`` (estimated from activations over the training
distribution, :func:`probekit.edit.request.key_covariance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from probekit.edit.request import (
    EditRequest,
    check_layer,
    copy_model,
    key_covariance,
    mlp_out_proj,
    optimise_output_shift,
    prepare,
    subject_keys,
    weight_view,
)


def rank_one_update(
    key: torch.Tensor, shift: torch.Tensor, covariance: torch.Tensor, ridge: float = 1e-4
) -> torch.Tensor:
    """ROME's ``Delta W [d_out, d_mlp] = shift u^T / (u^T key)`` with ``u = C^-1 key``.

    ``key [d_mlp]``, ``shift = v* - W key [d_out]``, ``covariance [d_mlp, d_mlp]``; ``ridge``
    adds ``ridge * mean(diag C)`` to the diagonal so a rank-deficient C is invertible. The result
    has rank one and satisfies ``Delta W @ key == shift`` (up to float rounding).
    """
    d = covariance.shape[0]
    eye = torch.eye(d, dtype=covariance.dtype, device=covariance.device)
    reg = covariance + ridge * covariance.diagonal().mean().clamp_min(1e-12) * eye
    u = torch.linalg.solve(reg, key)
    return torch.outer(shift, u) / (u @ key)


def rome_deltas(
    model: Any,
    request: EditRequest,
    layer: int,
    covariance: torch.Tensor,
    position: str = "subject",
    shift: torch.Tensor | None = None,
    **shift_kwargs: Any,
) -> dict[int, torch.Tensor]:
    """``{layer: Delta W [d_out, d_mlp]}`` for ``request``, without changing ``model``.

    ``shift``: the output shift ``[d_model]`` when already found (e.g. for many requests at once
    by :func:`probekit.edit.optimise_output_shifts`); else it is optimised here."""
    item = prepare(model, request, position)
    if shift is None:
        shift = optimise_output_shift(model, item, layer, **shift_kwargs)
    key = subject_keys(model, [item], layer)[0]
    return {layer: rank_one_update(key, shift, covariance.to(key))}


@torch.no_grad()
def apply_deltas(model: Any, deltas: dict[int, torch.Tensor]) -> None:
    """Add each ``Delta W [d_out, d_mlp]`` to layer's MLP output projection, in place."""
    for layer, delta in deltas.items():
        weight = weight_view(mlp_out_proj(model, layer))
        weight.add_(delta.to(weight))


def _covariance(
    model: Any,
    layers: Sequence[int],
    covariance: dict[int, torch.Tensor] | torch.Tensor | None,
    cov_tokens: torch.Tensor | None,
) -> dict[int, torch.Tensor]:
    if covariance is None:
        if cov_tokens is None:
            raise ValueError(
                "give cov_tokens (token ids [N, L] from the training distribution) or a "
                "covariance from probekit.edit.key_covariance"
            )
        return key_covariance(model, cov_tokens, layers)
    if isinstance(covariance, torch.Tensor):
        if len(layers) != 1:
            raise ValueError(
                "covariance must be a {layer: tensor} dict when editing several layers"
            )
        covariance = {layers[0]: covariance}
    d_mlp = weight_view(mlp_out_proj(model, layers[0])).shape[1]
    for layer in layers:
        if layer not in covariance:
            raise ValueError(f"covariance has no entry for layer {layer}")
        if tuple(covariance[layer].shape) != (d_mlp, d_mlp):
            raise ValueError(
                f"covariance[{layer}] must be [d_mlp, d_mlp] = [{d_mlp}, {d_mlp}], got "
                f"{tuple(covariance[layer].shape)}"
            )
    return covariance


def rome(
    model: Any,
    request: EditRequest,
    layer: int = 0,
    *,
    covariance: dict[int, torch.Tensor] | torch.Tensor | None = None,
    cov_tokens: torch.Tensor | None = None,
    position: str = "subject",
    steps: int = 40,
    lr: float = 0.2,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.01,
) -> Any:
    """Write one fact with a rank-one update of layer ``layer``'s MLP output projection.

    ``model``: a bridge (``pk.load``); ``request``: :class:`EditRequest`. The key covariance is
    ``covariance`` (``[d_mlp, d_mlp]`` or ``{layer: ...}``) or estimated from ``cov_tokens
    [N, L]``. ``position``: ``"subject"`` (ROME) or ``"last"`` (key at the prompt's last
    token). ``steps``, ``lr``, ``kl_weight``, ``weight_decay`` control the search for the
    value vector. Returns a new model; ``model`` is unchanged (same fingerprint). Check the
    result with :func:`probekit.edit.success`.
    """
    check_layer(model, layer)
    prepare(model, request, position)  # validate before any expensive work
    cov = _covariance(model, [layer], covariance, cov_tokens)
    deltas = rome_deltas(
        model,
        request,
        layer,
        cov[layer],
        position,
        steps=steps,
        lr=lr,
        kl_weight=kl_weight,
        weight_decay=weight_decay,
    )
    edited = copy_model(model)
    apply_deltas(edited, deltas)
    return edited
