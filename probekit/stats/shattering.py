"""Representation shattering as pure functions: pairwise distances, the distortion R, and the
correlation between R and the accuracy drop (method: ``docs/shattering.md``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix ``[n, n]`` of the rows of ``x [n, d]`` (float64)."""
    x = torch.as_tensor(x).double()
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    d2.fill_diagonal_(0)
    return d2.sqrt()


def _mean_off_diagonal(d: torch.Tensor) -> torch.Tensor:
    n = d.shape[0]
    return d.sum() / (n * (n - 1))


def distortion(before: torch.Tensor, after: torch.Tensor, normalize: bool = False) -> float:
    """Shattering ``R = ||D* - D0||_F / ||D0||_F`` (docs/shattering.md).

    ``before``, ``after``: ``[entities, d]`` representations of the same entities in the same
    order. ``D0``, ``D*``: their pairwise Euclidean distance matrices. ``normalize=True`` divides
    each matrix by its mean off-diagonal entry first (invariant to a global rescaling). R = 0
    means no pairwise distance changed; R is invariant to rotations and translations of either
    set, and changes when entities are permuted in one set only.
    """
    before, after = torch.as_tensor(before), torch.as_tensor(after)
    if before.ndim != 2 or after.ndim != 2 or before.shape[0] != after.shape[0]:
        raise ValueError(
            f"before and after must be [entities, d] with the same entities, got shapes "
            f"{tuple(before.shape)} and {tuple(after.shape)}"
        )
    if before.shape[0] < 2:
        raise ValueError(f"need at least 2 entities, got {before.shape[0]}")
    d0, d1 = pairwise_distances(before), pairwise_distances(after)
    if normalize:
        d0 = d0 / _mean_off_diagonal(d0).clamp_min(1e-300)
        d1 = d1 / _mean_off_diagonal(d1).clamp_min(1e-300)
    norm = torch.linalg.matrix_norm(d0)
    if float(norm) == 0.0:
        raise ValueError("before has all entities at one point (||D0|| = 0); R is undefined")
    return float(torch.linalg.matrix_norm(d1 - d0) / norm)


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and r^2 of two 1-D arrays (nan when either is constant or n < 3)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan, math.nan
    r = float(np.corrcoef(x, y)[0, 1])
    return r, r * r


def mean_ci(values: Any, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its ``level`` confidence interval
    from Student's t (``mean +- t * sd / sqrt(n)``); the interval is NaN for fewer than two
    values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half
