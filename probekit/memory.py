"""How many patterns can a Gaussian kernel density estimator store as an associative memory?

The third bridge of seeds/abstracts.md §6 (docs/attention_clustering.md): the negative log
likelihood of a Gaussian KDE with centres ``mu_k`` (the stored patterns) and inverse temperature
``beta`` is an associative-memory energy,

    E(x) = -(1/beta) log sum_k exp(-beta ||x - mu_k||^2),

and minimising it by the fixed-point (concave-convex) iteration

    v <- sum_k softmax_k(-beta ||mu_k - v||^2) mu_k

is retrieval. For patterns on a sphere ``||mu_k||`` is constant, so the softmax equals
``softmax_k(2 beta mu_k . v)``: one step is exactly one softmax-attention step with the patterns
as keys and values, the query ``v`` and scale ``2 beta`` (:func:`retrieve`).

Capacity: with ``K`` random patterns on the unit sphere in ``D`` dimensions, a pattern is
retrieved when the iteration started from a perturbed copy (cosine ``rho`` to it) ends on it;
the capacity ``K*`` is the largest ``K`` with at least 99 % of the patterns retrieved
(:func:`capacity`, :func:`capacity_sweep`). The source characterises this capacity analytically
as exponential in ``D``: ``log K*`` linear in ``D``. :func:`predicted_log_capacity` gives the
slope for this retrieval test from a signal-to-noise (random-energy) argument, derived in
docs/attention_clustering.md: at ``beta = b D``,
``log K* / D = 2 b (rho - b)`` for ``b <= rho / 2`` and ``rho^2 / 2`` beyond.

Example::

    >>> patterns = pk.memory.random_patterns(64, 16, seed=0)       # [K, D] on the unit sphere
    >>> pk.memory.retrieve(patterns, patterns + 0.1, beta=8.0, steps=5).shape
    torch.Size([64, 16])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probekit.validation import (
    as_generator,
    check_fraction,
    check_int,
    check_positive_float,
    check_positive_int,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "CapacityResult",
    "capacity",
    "capacity_sweep",
    "kde_energy",
    "perturb",
    "predicted_log_capacity",
    "random_patterns",
    "retrieval_fraction",
    "retrieve",
]


def _check_patterns(patterns: Any, name: str = "patterns") -> torch.Tensor:
    if not isinstance(patterns, torch.Tensor) or patterns.ndim != 2 or patterns.shape[0] < 1:
        shape = tuple(patterns.shape) if isinstance(patterns, torch.Tensor) else type(patterns)
        raise ValueError(f"{name} must be a float tensor [K, D] with K >= 1, got {shape}")
    if not patterns.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {patterns.dtype}")
    return patterns


def kde_energy(x: torch.Tensor, patterns: torch.Tensor, beta: float) -> torch.Tensor:
    """The KDE energy ``E(x) = -(1/beta) log sum_k exp(-beta ||x - mu_k||^2)``: ``[Q]``.

    ``x: [Q, D]``, ``patterns: [K, D]``; the negative log density of the Gaussian KDE with
    bandwidth ``1/sqrt(2 beta)`` up to ``(1/beta)`` times a constant."""
    _check_patterns(patterns)
    beta = check_positive_float("beta", beta)
    d2 = torch.cdist(x, patterns).pow(2)
    return -torch.logsumexp(-beta * d2, -1) / beta


def retrieve(
    patterns: torch.Tensor, queries: torch.Tensor, beta: float, steps: int = 1
) -> torch.Tensor:
    """Fixed-point retrieval ``v <- sum_k softmax_k(-beta ||mu_k - v||^2) mu_k``, ``steps`` times.

    Args:
        patterns: the stored patterns ``[K, D]``.
        queries: the starting states ``[Q, D]``.
        beta: inverse temperature (> 0).
        steps: number of updates (>= 1).

    Returns:
        ``[Q, D]``, the states after ``steps`` updates. Each update lowers :func:`kde_energy`
        (it is the concave-convex procedure on it).
    """
    patterns = _check_patterns(patterns)
    queries = _check_patterns(queries, "queries")
    if queries.shape[1] != patterns.shape[1]:
        raise ValueError(
            f"queries must be [Q, {patterns.shape[1]}] like patterns [K, D], "
            f"got {tuple(queries.shape)}"
        )
    beta = check_positive_float("beta", beta)
    steps = check_positive_int("steps", steps)
    v = queries
    for _ in range(steps):
        d2 = torch.cdist(v, patterns).pow(2)
        v = torch.softmax(-beta * d2, -1) @ patterns
    return v


def random_patterns(
    k: int, d: int, seed: int | torch.Generator | None = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``k`` patterns uniform on the unit sphere in ``d`` dimensions: ``[k, d]``."""
    k = check_positive_int("k", k)
    d = check_positive_int("d", d)
    x = torch.randn(k, d, generator=as_generator(seed), dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def perturb(
    patterns: torch.Tensor, overlap: float, seed: int | torch.Generator | None = 0
) -> torch.Tensor:
    """Starts on the unit sphere with cosine ``overlap`` to each (unit) pattern: ``[K, D]``,
    ``overlap * mu + sqrt(1 - overlap^2) * u`` with ``u`` a random unit vector orthogonal to
    ``mu``."""
    overlap = check_fraction("overlap", overlap)
    noise = torch.randn(patterns.shape, generator=as_generator(seed), dtype=patterns.dtype)
    noise = noise - (noise * patterns).sum(-1, keepdim=True) * patterns
    noise = noise / noise.norm(dim=-1, keepdim=True)
    return overlap * patterns + math.sqrt(1 - overlap**2) * noise


def retrieval_fraction(
    patterns: torch.Tensor,
    beta: float,
    overlap: float = 0.6,
    steps: int = 10,
    threshold: float = 0.99,
    seed: int | torch.Generator | None = 0,
) -> float:
    """Share of patterns retrieved: started at :func:`perturb` (cosine ``overlap``), after
    ``steps`` updates the state's cosine to its own pattern is above ``threshold`` and larger
    than to any other pattern."""
    starts = perturb(patterns, overlap, seed)
    end = retrieve(patterns, starts, beta, steps)
    end = end / end.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = end @ patterns.T
    own = cos.diagonal()
    ok = (own > threshold) & (cos.argmax(-1) == torch.arange(len(patterns)))
    return float(ok.double().mean())


def capacity(
    d: int,
    beta: float,
    overlap: float = 0.6,
    required: float = 0.99,
    steps: int = 10,
    k_max: int = 1 << 16,
    trials: int = 2,
    seed: int = 0,
    orthogonal: bool = False,
) -> int:
    """The largest ``K`` (bisection over ``1..k_max``, ``trials`` pattern sets per ``K``, all
    of which must pass) with at least ``required`` of ``K`` random unit patterns in ``d``
    dimensions retrieved from starts of cosine ``overlap``. Returns ``k_max`` when even that
    many are retrieved. ``orthogonal``: the patterns are ``K`` orthonormal directions (random
    rotation of the first ``K`` basis vectors), so ``K <= d`` and ``k_max`` is capped at ``d``."""
    d = check_positive_int("d", d)
    beta = check_positive_float("beta", beta)
    required = check_fraction("required", required)
    k_max = check_int("k_max", k_max, low=1)
    if orthogonal:
        k_max = min(k_max, d)

    def ok(k: int) -> bool:
        for trial in range(trials):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + k * 101 + trial)
            if orthogonal:
                q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
                pats = q.T[:k].contiguous()
            else:
                pats = random_patterns(k, d, gen)
            if retrieval_fraction(pats, beta, overlap, steps, seed=gen) < required:
                return False
        return True

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= k_max and ok(hi):
        lo, hi = hi, hi * 2
    if hi > k_max:
        return k_max if ok(k_max) else _bisect(ok, lo, k_max)
    return _bisect(ok, lo, hi)


def _bisect(ok: Any, lo: int, hi: int) -> int:
    """Largest k in [lo, hi) with ok(k), given ok(lo) and not ok(hi)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def predicted_log_capacity(d: np.ndarray | float, beta: float, overlap: float) -> np.ndarray:
    """Signal-to-noise prediction of ``log K*`` for :func:`capacity` at inverse temperature
    ``beta`` and start cosine ``overlap`` (``rho``), to leading order in ``D``.

    The start feels its own pattern with weight ``exp(2 beta rho)`` and the ``K - 1`` others with
    ``exp(2 beta z_k)``, ``z_k ~ N(0, 1/D)``: a random-energy sum. With ``b = beta / D``, its log
    is ``log K + 2 b^2 D`` while ``log K > 2 b^2 D`` (bulk) and ``2 b D sqrt(2 log K / D)``
    below (frozen: the closest other pattern dominates). Retrieval needs it below ``2 beta
    rho``, so ``log K* = 2 b (rho - b) D`` for ``b <= rho / 2`` and ``rho^2 D / 2`` beyond
    (the closest of ``K`` random patterns must stay farther than the start's own). ``[len(d)]``.
    """
    d = np.asarray(d, dtype=float)
    b = beta / d
    return np.where(b <= overlap / 2, 2 * b * (overlap - b) * d, overlap**2 * d / 2)


@dataclass
class CapacityResult:
    """One row per dimension: ``d``, ``beta``, ``capacity`` (K*), ``log_capacity``,
    ``predicted_log_capacity``. ``summary``: the slope of ``log K*`` against ``D`` (fit) and of
    the prediction, and their ratio."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Memory capacity of a Gaussian KDE"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        """``log K*`` against ``D``, measured and predicted."""
        from probekit.report.figures.memory import capacity_figure

        return [capacity_figure(self.frame, self.summary)]


def capacity_sweep(
    dims: list[int],
    beta_per_dim: float = 1.0,
    overlap: float = 0.6,
    required: float = 0.99,
    steps: int = 10,
    k_max: int = 1 << 14,
    trials: int = 2,
    seed: int = 0,
) -> CapacityResult:
    """Capacity ``K*`` for each ``D`` in ``dims`` at ``beta = beta_per_dim * D`` (the scaling
    under which the source's analysis gives ``log K*`` linear in ``D``), with the prediction."""
    import pandas as pd

    if not dims:
        raise ValueError("dims must be a non-empty list of positive integers")
    beta_per_dim = check_positive_float("beta_per_dim", beta_per_dim)
    rows = []
    for d in dims:
        d = check_positive_int("dims", d)
        beta = beta_per_dim * d
        k = capacity(d, beta, overlap, required, steps, k_max, trials, seed)
        rows.append(
            {
                "d": d,
                "beta": beta,
                "capacity": k,
                "log_capacity": math.log(k) if k > 0 else math.nan,
                "predicted_log_capacity": float(predicted_log_capacity(d, beta, overlap)),
                "saturated": k >= k_max,
            }
        )
    frame = pd.DataFrame(rows)
    ok = frame[~frame["saturated"] & frame["log_capacity"].notna()]
    slope = float(np.polyfit(ok["d"], ok["log_capacity"], 1)[0]) if len(ok) >= 2 else math.nan
    pred_slope = float(np.polyfit(frame["d"], frame["predicted_log_capacity"], 1)[0])
    summary = {
        "dims": list(dims),
        "beta_per_dim": beta_per_dim,
        "overlap": overlap,
        "required": required,
        "slope_measured": slope,
        "slope_predicted": pred_slope,
        "slope_ratio": slope / pred_slope if pred_slope else math.nan,
        "k_max": k_max,
    }
    description = (
        f"log K* grows by {slope:.3f} per dimension (prediction {pred_slope:.3f}) at beta = "
        f"{beta_per_dim:g} D, starts at cosine {overlap}."
    )
    return CapacityResult(frame, summary, description=description)
