"""Is a pre-norm attention head a von Mises-Fisher mixture? Attention as clustering on the sphere.

The observation of seeds/abstracts.md §6 (docs/attention_clustering.md): a normalisation followed
by self-attention performs clustering on the hypersphere. For a pre-norm head with the norm's
output ``gamma * x_hat + delta`` (``x_hat`` the normalised input before the gain, ``||x_hat|| ~
sqrt(D)``), query map ``q = x W_Q + b_Q`` and keys ``k_j``, the attention logits rewrite exactly as

    logit_ij = kappa_j m_j . v_i + log pi_j,    v_i = x_hat_i / sqrt(D) (on the unit sphere),
    w_j = diag(gamma) W_Q k_j,   kappa_j = s sqrt(D) ||w_j||,   m_j = w_j / ||w_j||,
    log pi_j = s k_j . (delta W_Q + b_Q),

with ``s`` the attention scale (``1/sqrt(d_head)``). Each attention row is then the posterior
over keys of a mixture of vMF components with mean directions ``m_j``, concentrations
``kappa_j`` and log weights ``log pi_j`` (which absorb the vMF normalisers).

RoPE. With rotary embeddings the logit is ``(R_i q_i) . (R_j k_j) = q_i . (R_i^T R_j k_j)``, so the
key a query at position ``i`` sees is ``R_i^T R_j k_j``: ``kappa``, ``m`` and ``log pi`` depend on
the query position ``i`` as well as on ``j`` (through the offset ``j - i``). They are computed per
``(i, j)`` from the model's own ``hook_cos``/``hook_sin`` (rotate-half convention, partial rotary
supported); the frame's ``rope`` column says when this happened.

Per head :func:`hypersphere` reports the reconstruction error against the model's own
``hook_pattern``, the distributions of ``kappa`` and ``log pi`` and their correlation, the KL
from the real attention to a constant-``kappa`` surrogate, and the number of modes found by the
fixed-point iteration ``v <- normalise(sum_j softmax(kappa_j m_j . v + log pi_j) m_j)`` from every
token, against spherical k-means on the key directions.

Example::

    >>> model = pk.load("checkpoints/cyclic-lm")
    >>> result = pk.attention.hypersphere(model, tokens)          # tokens [batch, pos]
    >>> result.frame[["layer", "head", "reconstruction_error", "kappa_mean"]]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probekit.validation import check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "HypersphereResult",
    "constant_kappa_kl",
    "fixed_point_modes",
    "hypersphere",
    "rotate_keys_to_query_frame",
    "spherical_kmeans_modes",
    "vmf_logits",
    "vmf_parameters",
]

NORMALIZED = "blocks.{}.ln1.hook_normalized"
KEYS = "blocks.{}.attn.hook_k"
QUERIES = "blocks.{}.attn.hook_q"
PATTERN = "blocks.{}.attn.hook_pattern"
COS = "blocks.{}.attn.hook_cos"
SIN = "blocks.{}.attn.hook_sin"


# ----------------------------------------------------------------------------- formulas


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


def rotate_keys_to_query_frame(
    keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """The key each query position sees under RoPE, ``R_i^T R_j k_j``: ``[B, H, Tq, Tk, dh]``.

    ``keys: [B, Tk, H, dh]`` before rotation; ``cos, sin: [1 or B, T, r]`` the model's rotary
    tables (rotate-half convention, rotating the first ``r`` of ``dh`` dimensions:
    ``R_p y = y cos_p + rotate_half(y) sin_p``, ``R_p^T y = y cos_p - rotate_half(y) sin_p``).
    """
    r = cos.shape[-1]
    k = keys.permute(0, 2, 1, 3)  # [B, H, T, dh]
    c, s = cos[:, None], sin[:, None]  # [B|1, 1, T, r]
    rot, rest = k[..., :r], k[..., r:]
    rot = rot * c + _rotate_half(rot) * s  # R_j k_j
    rot = rot[:, :, None]  # [B, H, 1, Tk, r]
    ci, si = c[:, :, :, None], s[:, :, :, None]  # [B|1, 1, Tq, 1, r]
    seen = rot * ci - _rotate_half(rot) * si  # R_i^T R_j k_j
    rest = rest[:, :, None].expand(*seen.shape[:-1], rest.shape[-1])
    return torch.cat([seen, rest], -1)


def vmf_parameters(
    keys: torch.Tensor,
    W_Q: torch.Tensor,
    b_Q: torch.Tensor | None,
    gamma: torch.Tensor,
    delta: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``kappa``, ``m`` and ``log pi`` of one layer's heads from the keys each query sees.

    ``keys: [B, H, Tq|1, Tk, dh]`` (``Tq = 1`` without RoPE: the same keys for every query);
    ``W_Q: [H, D, dh]``, ``b_Q: [H, dh]`` (TransformerLens layout, ``q = x W_Q + b_Q``);
    ``gamma``, ``delta: [D]`` the norm's gain and bias (None for RMSNorm); ``scale`` the
    attention scale. Returns ``kappa [B, H, Tq|1, Tk]``, ``m [B, H, Tq|1, Tk, D]`` (unit
    vectors), ``log_pi [B, H, Tq|1, Tk]``. Formulas in the module docstring.
    """
    d = W_Q.shape[1]
    w = torch.einsum("bhqke,hde->bhqkd", keys, W_Q) * gamma
    norm = w.norm(dim=-1)
    kappa = scale * math.sqrt(d) * norm
    m = w / norm.clamp_min(torch.finfo(w.dtype).tiny)[..., None]
    c = torch.zeros_like(W_Q[:, 0]) if b_Q is None else b_Q.clone()
    if delta is not None:
        c = c + torch.einsum("d,hde->he", delta, W_Q)
    log_pi = scale * torch.einsum("bhqke,he->bhqk", keys, c)
    return kappa, m, log_pi


def vmf_logits(
    kappa: torch.Tensor, m: torch.Tensor, log_pi: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Mixture log-posteriors (unnormalised) ``kappa_j m_j . v_i + log pi_j``: ``[B, H, Tq, Tk]``.

    ``kappa, log_pi: [B, H, Tq|1, Tk]``, ``m: [B, H, Tq|1, Tk, D]``, ``v: [B, Tq, D]`` the
    queries on the sphere (``x_hat / sqrt(D)``)."""
    if m.shape[2] == 1:
        dots = torch.einsum("bhkd,bqd->bhqk", m[:, :, 0], v)
    else:
        dots = torch.einsum("bhqkd,bqd->bhqk", m, v)
    return kappa * dots + log_pi


def _causal_softmax(logits: torch.Tensor) -> torch.Tensor:
    t = logits.shape[-1]
    mask = torch.ones(t, t, dtype=torch.bool, device=logits.device).tril()
    return torch.softmax(logits.masked_fill(~mask, -math.inf), -1)


def constant_kappa_kl(
    pattern: torch.Tensor,
    kappa: torch.Tensor,
    m: torch.Tensor,
    log_pi: torch.Tensor,
    v: torch.Tensor,
) -> torch.Tensor:
    """Per head ``[H]``: mean over batch and query rows of ``KL(attention_i || surrogate_i)``
    in nats, the surrogate being the same mixture with every ``kappa`` replaced by the head's
    mean ``kappa`` over the causal (query, key) pairs. ``pattern: [B, H, T, T]`` causal."""
    t = pattern.shape[-1]
    mask = torch.ones(t, t, dtype=torch.bool, device=pattern.device).tril()
    full = kappa.expand(-1, -1, t, -1)
    kbar = (full * mask).sum((0, 2, 3)) / (mask.sum() * full.shape[0])
    surrogate = _causal_softmax(vmf_logits(kbar[None, :, None, None], m, log_pi, v))
    p = pattern.double()
    logp = torch.log(p.clamp_min(1e-300))
    logq = torch.log(surrogate.double().clamp_min(1e-300))
    kl = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)
    return kl.mean((0, 2))


def fixed_point_modes(
    kappa: torch.Tensor,
    m: torch.Tensor,
    log_pi: torch.Tensor,
    starts: torch.Tensor,
    iterations: int = 200,
    tolerance: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Modes of vMF mixtures by the fixed-point iteration of the source, from every start.

    ``kappa, log_pi: [..., K]`` and ``m: [..., K, D]`` mixtures (any batch shape ``...``);
    ``starts: [..., S, D]``. Iterates ``v <- normalise(sum_j softmax_j(kappa_j m_j . v +
    log pi_j) m_j)`` (until no point moves by more than 1e-7, or ``iterations``) and counts the
    distinct end points: an end point is a new mode unless an earlier one lies within
    ``tolerance`` in cosine distance. Returns counts ``[...]`` (long) and end points
    ``[..., S, D]``.
    """
    v = starts / starts.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    for _ in range(iterations):
        logits = kappa[..., None, :] * (v @ m.transpose(-1, -2)) + log_pi[..., None, :]
        new = torch.softmax(logits, -1) @ m
        new = new / new.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        moved = float((new - v).abs().max())
        v = new
        if moved < 1e-7:
            break
    close = (v @ v.transpose(-1, -2)) > 1 - tolerance
    earlier = torch.ones(close.shape[-2:], dtype=torch.bool, device=v.device).tril(-1)
    counts = (~(close & earlier).any(-1)).sum(-1)
    return counts, v


def spherical_kmeans_modes(directions: np.ndarray, max_k: int = 8, seed: int = 0) -> int:
    """Number of clusters of unit vectors ``[K, D]`` by k-means on the sphere (scikit-learn
    ``KMeans`` on the unit vectors, whose Euclidean distance is monotone in cosine), ``k`` chosen
    by the best silhouette over ``2..max_k`` in cosine distance; 1 when no ``k`` has silhouette
    above 0.25 (no cluster structure)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    n = len(directions)
    best_k, best = 1, 0.25
    # one thread: many tiny fits, where OpenMP start-up costs more than it saves
    with threadpool_limits(1):
        for k in range(2, min(max_k, n - 1) + 1):
            labels = KMeans(k, n_init=2, random_state=seed).fit_predict(directions)
            if len(set(labels)) < 2:
                continue
            score = silhouette_score(directions, labels, metric="cosine")
            if score > best:
                best_k, best = k, score
    return best_k


# ----------------------------------------------------------------------------- model access


def _layer_weights(model: Any, layer: int) -> dict[str, Any]:
    block = model.blocks[layer]
    attn, ln = block.attn, block.ln1
    W_Q = attn.W_Q.detach().float()
    b_Q = getattr(attn, "b_Q", None)
    gamma = ln.w.detach().float()
    delta = getattr(ln, "b", None)
    return {
        "W_Q": W_Q,
        "b_Q": None if b_Q is None else b_Q.detach().float(),
        "gamma": gamma,
        "delta": None if delta is None else delta.detach().float(),
    }


def _attention_scale(cfg: Any, d_head: int) -> float:
    attn_scale = getattr(cfg, "attn_scale", -1.0)
    if getattr(cfg, "use_attn_scale", True) is False:
        return 1.0
    if attn_scale is not None and attn_scale > 0:
        return 1.0 / float(attn_scale)
    return 1.0 / math.sqrt(d_head)


def _check_model(model: Any) -> None:
    if not (hasattr(model, "blocks") and hasattr(model, "cfg") and hasattr(model, "hook_dict")):
        raise ValueError(
            "model must be a transformer loaded with pk.load (a TransformerBridge), got "
            f"{type(model).__name__}"
        )
    if getattr(model.cfg, "normalization_type", None) not in ("LN", "LNPre", "RMS", "RMSPre"):
        raise ValueError(
            "model must be a pre-norm transformer (LayerNorm or RMSNorm before attention), "
            f"got normalization_type {model.cfg.normalization_type!r}"
        )


def _names(layer: int, rope: bool) -> list[str]:
    names = [NORMALIZED.format(layer), KEYS.format(layer), PATTERN.format(layer)]
    if rope:
        names += [COS.format(layer), SIN.format(layer)]
    return names


def _from_model(model: Any, tokens: torch.Tensor, layers: list[int], rope: bool) -> dict:
    from probekit.models.runner import runner

    names = [n for layer in layers for n in _names(layer, rope)]
    with torch.no_grad():
        cache = runner(model).activations(tokens, names)
    return {n: cache[n].detach().float().cpu() for n in names}


def _from_store(model: Any, acts: Any, layers: list[int], rope: bool) -> dict:
    from probekit.activations import ActivationStore

    if isinstance(acts, str | os.PathLike):
        acts = ActivationStore.open(acts)
    available = list(acts.names) if isinstance(acts, ActivationStore) else list(acts)
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        needed = [NORMALIZED.format(layer), KEYS.format(layer)]
        missing = [n for n in needed if n not in available]
        if missing:
            raise ValueError(
                f"activations lack {missing}; hypersphere needs each layer's "
                "ln1.hook_normalized and attn.hook_k (and attn.hook_pattern or attn.hook_q)"
            )
        for n in needed + [PATTERN.format(layer), QUERIES.format(layer)]:
            if n in available:
                out[n] = torch.as_tensor(acts[n]).float()
    if rope:
        # the rotary tables depend only on position: read them off one short forward pass
        t = out[KEYS.format(layers[0])].shape[1]
        tables = _from_model(model, torch.zeros(1, t, dtype=torch.long), layers, rope=True)
        for layer in layers:
            for name in (COS.format(layer), SIN.format(layer)):
                out[name] = tables[name]
    for layer in layers:
        if PATTERN.format(layer) not in out:
            if QUERIES.format(layer) not in out:
                raise ValueError(
                    f"activations need {PATTERN.format(layer)} or {QUERIES.format(layer)} "
                    "to compare the reconstruction with"
                )
            out[PATTERN.format(layer)] = _pattern_from_qk(model, out, layer, rope)
    return out


def _pattern_from_qk(model: Any, acts: dict, layer: int, rope: bool) -> torch.Tensor:
    q = acts[QUERIES.format(layer)]
    k = acts[KEYS.format(layer)]
    q, k = _expand_kv(q, k)
    scale = _attention_scale(model.cfg, q.shape[-1])
    if rope:
        cos, sin = acts[COS.format(layer)], acts[SIN.format(layer)]
        r = cos.shape[-1]

        def rot(x: torch.Tensor) -> torch.Tensor:
            c, s = cos[:, :, None], sin[:, :, None]
            return torch.cat([x[..., :r] * c + _rotate_half(x[..., :r]) * s, x[..., r:]], -1)

        q, k = rot(q), rot(k)
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * scale
    return _causal_softmax(scores)


def _expand_kv(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat grouped key heads ``[B, T, Hkv, dh]`` to the query heads ``[B, T, H, dh]``."""
    h, hkv = q.shape[2], k.shape[2]
    if h != hkv:
        k = k.repeat_interleave(h // hkv, dim=2)
    return q, k


# ----------------------------------------------------------------------------- the analysis


@dataclass
class HypersphereResult:
    """One row per (layer, head) of the vMF view of a model's attention.

    ``frame`` columns: ``layer``, ``head``, ``rope`` (m_j depends on the query position),
    ``reconstruction_error`` (max |vMF attention - model pattern| over the batch),
    ``kappa_mean``, ``kappa_std``, ``kappa_cv``, ``log_pi_mean``, ``log_pi_std``,
    ``kappa_log_pi_corr`` (Pearson, over causal pairs), ``kl_constant_kappa`` (nats per row),
    ``entropy`` (mean attention entropy, nats), ``modes_fixed_point`` and ``modes_kmeans``
    (means over the mode sequences). ``summary``: headline numbers. ``kappa`` and ``log_pi``:
    per ``(layer, head)`` samples of the distributions (for the figures).
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    kappa: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    log_pi: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    title: str = "Attention heads as von Mises-Fisher mixtures"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        """Per layer the kappa and log pi distributions per head; then errors, KL and modes."""
        from probekit.report.figures.attention import hypersphere_figures

        return hypersphere_figures(self)


def hypersphere(
    model: Any,
    tokens: Any,
    *,
    layers: list[int] | None = None,
    mode_sequences: int = 4,
    max_samples: int = 4000,
    seed: int = 0,
) -> HypersphereResult:
    """The exact vMF-mixture rewrite of every pre-norm attention head, measured.

    Args:
        model: a transformer from ``pk.load`` (TransformerBridge; GPT-2, NeoX, Llama, ...):
            gives the weights ``W_Q``, ``b_Q`` and the norm's gain and bias.
        tokens: ``LongTensor [batch, pos]`` to run the model on (``run_with_cache``), or cached
            activations: an ``ActivationStore``, its path, or a ``{hook: tensor}`` mapping with
            each layer's ``blocks.L.ln1.hook_normalized`` ``[n, pos, D]`` and
            ``blocks.L.attn.hook_k`` ``[n, pos, heads, d_head]``, plus ``attn.hook_pattern`` or
            ``attn.hook_q`` to compare against.
        layers: which layers (default all).
        mode_sequences: how many sequences the mode counts use (k-means per head and sequence).
        max_samples: cap on stored kappa / log pi samples per head (figures only).
        seed: subsampling and k-means.

    Memory: ``m`` is ``[batch, heads, pos, D]`` per layer, and ``[batch, heads, pos, pos, D]``
    with RoPE (one mixture per query position): keep batch and length small on large models.

    Returns:
        :class:`HypersphereResult`.
    """
    import pandas as pd

    _check_model(model)
    mode_sequences = check_positive_int("mode_sequences", mode_sequences)
    n_layers = int(model.cfg.n_layers)
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty list of layer indices in 0..{n_layers - 1}")
    rope = getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"
    if isinstance(tokens, torch.Tensor) and not tokens.is_floating_point():
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise ValueError(
                f"tokens must be a LongTensor [batch, pos] with pos >= 2, got {tuple(tokens.shape)}"
            )
        acts = _from_model(model, tokens, layers, rope)
    elif isinstance(tokens, Mapping | str | os.PathLike) or hasattr(tokens, "names"):
        acts = _from_store(model, tokens, layers, rope)
    else:
        raise ValueError(
            "tokens must be a LongTensor [batch, pos] or cached activations (an ActivationStore, "
            f"its path, or a {{hook: tensor}} mapping), got {type(tokens).__name__}"
        )

    rng = np.random.default_rng(seed)
    rows, kappa_samples, log_pi_samples = [], {}, {}
    query_norm_dev = 0.0
    for layer in layers:
        x_hat = acts[NORMALIZED.format(layer)]
        keys = acts[KEYS.format(layer)]
        pattern = acts[PATTERN.format(layer)]
        b, t, d = x_hat.shape
        weights = _layer_weights(model, layer)
        n_heads, d_head = weights["W_Q"].shape[0], weights["W_Q"].shape[2]
        _, keys = _expand_kv(torch.empty(b, t, n_heads, d_head), keys)
        if rope:
            seen = rotate_keys_to_query_frame(
                keys, acts[COS.format(layer)], acts[SIN.format(layer)]
            )
        else:
            seen = keys.permute(0, 2, 1, 3)[:, :, None]
        scale = _attention_scale(model.cfg, d_head)
        kappa, m, log_pi = vmf_parameters(seen, **weights, scale=scale)
        v = x_hat / math.sqrt(d)
        query_norm_dev = max(query_norm_dev, float((v.norm(dim=-1) - 1).abs().max()))
        recon = _causal_softmax(vmf_logits(kappa, m, log_pi, v))
        err = (recon - pattern).abs().amax((0, 2, 3))
        kl = constant_kappa_kl(pattern, kappa, m, log_pi, v)
        p = pattern.double().clamp_min(1e-300)
        entropy = -(pattern.double() * p.log()).sum(-1).mean((0, 2))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        # modes of the mixture the last query position sees (every key of the sequence),
        # iterated from every token of that sequence, all heads at once
        n_modes, qi = min(mode_sequences, b), -1 if rope else 0
        fixed_counts, _ = fixed_point_modes(
            kappa[:n_modes, :, qi],
            m[:n_modes, :, qi],
            log_pi[:n_modes, :, qi],
            v[:n_modes, None].expand(-1, n_heads, -1, -1),
        )
        for h in range(n_heads):
            kh = kappa[:, h].expand(-1, t, -1)[:, causal] if rope else kappa[:, h, 0]
            lh = log_pi[:, h].expand(-1, t, -1)[:, causal] if rope else log_pi[:, h, 0]
            kf, lf = kh.reshape(-1).numpy(), lh.reshape(-1).numpy()
            corr = float(np.corrcoef(kf, lf)[0, 1]) if kf.std() > 0 and lf.std() > 0 else 0.0
            km = [
                spherical_kmeans_modes(m[s, h, qi].numpy().astype(np.float64), seed=seed)
                for s in range(n_modes)
            ]
            keep = rng.permutation(len(kf))[:max_samples]
            kappa_samples[(layer, h)] = kf[keep]
            log_pi_samples[(layer, h)] = lf[keep]
            rows.append(
                {
                    "layer": layer,
                    "head": h,
                    "rope": rope,
                    "reconstruction_error": float(err[h]),
                    "kappa_mean": float(kf.mean()),
                    "kappa_std": float(kf.std()),
                    "kappa_cv": float(kf.std() / kf.mean()) if kf.mean() > 0 else math.nan,
                    "log_pi_mean": float(lf.mean()),
                    "log_pi_std": float(lf.std()),
                    "kappa_log_pi_corr": corr,
                    "kl_constant_kappa": float(kl[h]),
                    "entropy": float(entropy[h]),
                    "modes_fixed_point": float(fixed_counts[:, h].double().mean()),
                    "modes_kmeans": float(np.mean(km)),
                }
            )
    frame = pd.DataFrame(rows)
    summary = {
        "heads": len(frame),
        "layers": layers,
        "rope": rope,
        "max_reconstruction_error": float(frame["reconstruction_error"].max()),
        "median_kappa": float(frame["kappa_mean"].median()),
        "median_kappa_cv": float(frame["kappa_cv"].median()),
        "median_kl_constant_kappa": float(frame["kl_constant_kappa"].median()),
        "max_kl_constant_kappa": float(frame["kl_constant_kappa"].max()),
        "mean_modes_fixed_point": float(frame["modes_fixed_point"].mean()),
        "mean_modes_kmeans": float(frame["modes_kmeans"].mean()),
        "max_query_norm_deviation": query_norm_dev,
    }
    description = (
        f"{len(frame)} heads rewritten as vMF mixtures; the reconstructed attention matches the "
        f"model's own pattern to {summary['max_reconstruction_error']:.1e}. "
        + (
            "RoPE: kappa, m and log pi depend on the query position (offset j - i). "
            if rope
            else ""
        )
        + f"Median kappa {summary['median_kappa']:.2f} (coefficient of variation "
        f"{summary['median_kappa_cv']:.2f}); a constant-kappa surrogate costs "
        f"{summary['median_kl_constant_kappa']:.3f} nats per row (median head)."
    )
    return HypersphereResult(frame, summary, kappa_samples, log_pi_samples, description=description)
