"""Knowledge editing: ROME, MEMIT and a fine-tuning baseline (seeds/abstracts.md §1).

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
"""

from probekit.edit.finetune import finetune
from probekit.edit.memit import memit
from probekit.edit.request import EditRequest, key_covariance, prepare, success
from probekit.edit.rome import rank_one_update, rome

__all__ = [
    "EditRequest",
    "finetune",
    "key_covariance",
    "memit",
    "prepare",
    "rank_one_update",
    "rome",
    "success",
]
