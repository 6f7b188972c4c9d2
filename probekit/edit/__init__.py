"""Knowledge editing: ROME, MEMIT and a fine-tuning baseline (docs/shattering.md).

Which fact does a model store where, and what happens to the rest when one is rewritten? Each
editor takes a bridge from ``pk.load`` and returns a new, edited model; the original keeps its
fingerprint. Example (kg-ring)::

    import probekit as pk
    model = pk.load("checkpoints/kg-ring")
    request = pk.edit.EditRequest(subject="e12", context="I_C1", target="e40")
    cov = pk.edit.key_covariance(model, walk_tokens, layers=[0, 1])
    edited = pk.edit.rome(model, request, layer=1, covariance=cov)
    pk.edit.success(edited, [request])            # DataFrame: predicted, target_prob, success
    edited = pk.edit.memit(model, [request, ...], layers=[0, 1], covariance=cov)


Sweeps that edit one working copy many times use the pieces: ``rome_deltas`` /
``memit_deltas`` compute ``{layer: Delta W}`` without changing the model, ``apply_deltas`` adds
them in place, and ``mlp_weights`` / ``set_mlp_weights`` save and restore the projections.
"""

from probekit.edit.finetune import finetune
from probekit.edit.memit import memit, memit_deltas
from probekit.edit.request import (
    EditRequest,
    copy_model,
    key_covariance,
    mlp_weights,
    optimise_output_shift,
    optimise_output_shifts,
    prepare,
    set_mlp_weights,
    success,
)
from probekit.edit.rome import apply_deltas, rank_one_update, rome, rome_deltas

__all__ = [
    "EditRequest",
    "apply_deltas",
    "copy_model",
    "finetune",
    "key_covariance",
    "memit",
    "memit_deltas",
    "mlp_weights",
    "optimise_output_shift",
    "optimise_output_shifts",
    "prepare",
    "rank_one_update",
    "rome",
    "rome_deltas",
    "set_mlp_weights",
    "success",
]
