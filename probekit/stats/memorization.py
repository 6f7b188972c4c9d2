"""The memorization and membership scores as pure functions over tensors and arrays.

Each function is one formula from ``docs/memorization.md``: per-token log-probabilities and the
Min-K%++ z-score, Min-K% Prob and Min-K%++, the zlib ratio, token-level Levenshtein distance,
AUROC (Mann-Whitney), ROC points and TPR at a fixed FPR, a logistic fit with standard errors,
and the Duan et al. latent-memorization labels. Model running lives in
:mod:`probekit.models.runner`, the audit in :mod:`probekit.memorization`.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from torch import Tensor


def token_scores(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probability and Min-K%++ z-score of each next token.

    ``logits [N, L, V]`` from a causal LM on ``tokens [N, L]``; returns ``(logp, z)``, both
    ``[N, L - 1]``: ``logp[:, t] = log p(tokens[:, t+1] | tokens[:, :t+1])`` and
    ``z = (logp - mu) / sigma`` with ``mu = sum_v p(v) log p(v)`` and
    ``sigma^2 = sum_v p(v) (log p(v))^2 - mu^2`` under the same predictive distribution
    (Zhang et al. 2024). Computed in float32 (float64 if the logits are).
    """
    if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [N, L, V] and tokens [N, L], got {tuple(logits.shape)} and "
            f"{tuple(tokens.shape)}"
        )
    # A few rows at a time: each pass over the [rows, L, V] block then stays in the CPU's cache
    # (2x faster than whole-batch passes at 128 x 96 x 2048), and the values are the same.
    per_row = max(1, logits.shape[1] * logits.shape[2])
    rows = max(2, _CHUNK_ELEMENTS // per_row)
    parts = [
        _token_scores_block(logits[i : i + rows], tokens[i : i + rows])
        for i in range(0, len(logits), rows)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


_CHUNK_ELEMENTS = 3 * 2**19  # ~6 MB of float32 logits per block


def _token_scores_block(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logprobs = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1)
    target = tokens[:, 1:].to(logits.device)
    logp = logprobs.gather(-1, target[..., None])[..., 0]
    probs = logprobs.exp()
    # the two moments as fused multiply-sums: no [N, L, V] temporaries beyond probs
    mu = torch.einsum("nlv,nlv->nl", probs, logprobs)
    second = torch.einsum("nlv,nlv->nl", probs, logprobs.square_())
    var = second - mu.square()
    z = (logp - mu) / var.clamp_min(1e-12).sqrt()
    return logp, z


def _lowest_k_mean(values: Tensor, k_percent: float) -> Tensor:
    n = values.shape[-1]
    count = max(1, math.floor(k_percent / 100.0 * n))
    return values.sort(dim=-1).values[..., :count].mean(-1)


def min_k_prob(logp: Tensor, k_percent: float = 20) -> Tensor:
    """Min-K% Prob (Shi et al. 2023): mean of the lowest ``floor(k% * n)`` (at least 1) values.

    ``logp [N, n]`` per-token log-probabilities -> ``[N]``; higher = more likely a member.
    """
    return _lowest_k_mean(logp, k_percent)


def min_k_pp(z: Tensor, k_percent: float = 20) -> Tensor:
    """Min-K%++ (Zhang et al. 2024): mean of the ``floor(k% * n)`` smallest z-scores -> ``[N]``.

    ``z [N, n]`` from :func:`token_scores`; higher = more likely a member.
    """
    return _lowest_k_mean(z, k_percent)


def levenshtein(a: Tensor, b: Tensor) -> Tensor:
    """Token-level edit distance between rows of ``a [N, m]`` and ``b [N, n]`` -> ``LongTensor [N]``.

    Unit-cost insertions, deletions and substitutions on token ids. One dynamic-programme row
    per token of ``a``, vectorised over the batch and over ``b``: the within-row insertion
    recurrence ``D[i, j] = min(t[j], D[i, j-1] + 1)`` is solved with a cumulative minimum,
    ``D[i, j] = j + cummin_k<=j (t[k] - k)``.
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must be [N, m] and [N, n] token ids, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    n_rows, n = b.shape
    b = b.to(a.device)
    offsets = torch.arange(n + 1, device=a.device)
    prev = offsets.expand(n_rows, n + 1)
    for i in range(a.shape[1]):
        cost = (a[:, i : i + 1] != b).long()  # [N, n]
        t = torch.empty_like(prev)
        t[:, 0] = i + 1
        t[:, 1:] = torch.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
        prev = offsets + torch.cummin(t - offsets, dim=1).values
    return prev[:, n].clone()


def zlib_length(text: str) -> int:
    """Bytes of ``text`` (UTF-8) after zlib compression at the default level."""
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(ce: float, text: str) -> float:
    """Mean token cross-entropy over zlib-compressed length (Carlini et al. 2021): low = the
    model finds the text easier than a generic compressor does."""
    return float(ce) / zlib_length(text)


def complexity(text: str) -> float:
    """zlib-compressed bytes per raw UTF-8 byte of ``text``: low = repetitive text."""
    return zlib_length(text) / max(len(text.encode("utf-8")), 1)


def auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores [R, n]`` against ``labels [R, n]`` (Mann-Whitney, ties 1/2)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=-1)
    n_pos = labels.sum(-1)
    n_neg = labels.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR among ROC points with FPR at or below ``target`` (0 if none)."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Newton-Raphson logistic regression ``y ~ b0 + b1 x``; (coef, standard errors) or None."""
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(design @ beta)))
        w = p * (1 - p)
        hessian = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    if not np.all(np.isfinite(beta)) or np.abs(beta).max() > 50:
        return None  # separated data: no finite maximum-likelihood slope
    p = 1 / (1 + np.exp(-(design @ beta)))
    cov = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))
    return beta, np.sqrt(np.diag(cov))


def latent_labels(
    lev: np.ndarray,
    first_index: np.ndarray,
    repetitions: np.ndarray,
    memorized_threshold: float,
    latent_threshold: float,
) -> np.ndarray:
    """Duan et al. labels from edit distances ``lev [N, C]`` over ``C`` checkpoints.

    ``first_index [N]``: the index of each sequence's first-exposure checkpoint (``C`` or more
    = never followed by a checkpoint); ``repetitions [N]``. Returns an object array ``[N]`` of
    ``"memorized"`` (lev < memorized_threshold at first exposure), ``"latent"`` (lev >
    latent_threshold there, min lev over later checkpoints < memorized_threshold, seen once),
    ``"control"`` (lev > latent_threshold at every checkpoint from first exposure on),
    ``"never-seen"`` (repetitions 0: a planted control never trained on, whose
    ``first_index`` is the checkpoint after the step it would have been shown at),
    ``"unseen"`` (no checkpoint after the first exposure) or ``"other"``.
    """
    lev = np.asarray(lev, dtype=float)
    n, n_ckpt = lev.shape
    first_index = np.asarray(first_index)
    unseen = first_index >= n_ckpt
    safe = np.minimum(first_index, n_ckpt - 1)
    lev_first = lev[np.arange(n), safe]
    index = np.arange(n_ckpt)[None, :]
    min_later = np.where(index > safe[:, None], lev, np.inf).min(axis=1)
    min_from_first = np.where(index >= safe[:, None], lev, np.inf).min(axis=1)
    label = np.full(n, "other", dtype=object)
    label[min_from_first > latent_threshold] = "control"
    is_latent = (lev_first > latent_threshold) & (min_later < memorized_threshold)
    label[is_latent & (np.asarray(repetitions) == 1)] = "latent"
    label[lev_first < memorized_threshold] = "memorized"
    label[np.asarray(repetitions) == 0] = "never-seen"
    label[unseen] = "unseen"
    return label


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` for "higher score = positive", one point per distinct threshold.

    Starts at (0, 0) and ends at (1, 1); tied scores move together (one point). scikit-learn's
    ``roc_curve`` without dropping intermediate points.
    """
    from sklearn.metrics import roc_curve

    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr
