"""Modularity formulas: task variance, Newman Q, within-cluster weight, wiring length, locality.

Pure tensor maths, no model running and no plotting: the analysis module
:mod:`probekit.modularity` builds its results from these, and the BIMT recipe
(``train/cognitive.py``) uses the unit-grid geometry (:func:`grid_positions`,
:func:`distance_matrix`, :func:`connection_cost`). Sources: Yang et al. 2019 (Nature
Neuroscience 22:297, task variance), Newman 2006 (PNAS 103:8577, modularity Q), Liu, Gan &
Tegmark 2023 (Entropy 26:41, brain-inspired modular training, BIMT); the method in
``docs/modularity.md``.

Every partition argument ``labels`` is ``[n]`` or a batch ``[batch, n]`` of integer cluster ids
``0..k-1``; a batch gives one value per partition (the label-shuffle nulls use this).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "between_distance",
    "connection_cost",
    "distance_matrix",
    "grid_positions",
    "locality",
    "newman_modularity",
    "one_hot",
    "symmetric_graph",
    "top_fraction",
    "trial_variance",
    "wiring_length",
    "within_fraction",
]


def trial_variance(activity: Tensor) -> Tensor:
    """``[trials, time, units] -> [units]``: variance across trials at each step (population
    variance, ``ddof = 0``), averaged over steps (Yang et al. 2019's task variance)."""
    if activity.ndim != 3:
        raise ValueError(f"activity must be [trials, time, units], got {tuple(activity.shape)}")
    return activity.double().var(dim=0, unbiased=False).mean(dim=0)


def one_hot(labels: Tensor, n_clusters: int) -> Tensor:
    """``[..., n] -> [..., n, k]`` float64 one-hot of integer cluster ids."""
    return torch.nn.functional.one_hot(labels, n_clusters).double()


def symmetric_graph(weights: Tensor) -> Tensor:
    """The undirected graph of a weight matrix: ``(|W| + |W|^T) / 2`` with a zero diagonal,
    float64 ``[n, n]``."""
    a = weights.detach().double().abs()
    a = (a + a.T) / 2
    return a.fill_diagonal_(0.0)


def newman_modularity(adjacency: Tensor, labels: Tensor) -> Tensor:
    """Newman modularity of a weighted undirected graph under one or many partitions.

    ``Q = (1 / 2m) sum_ij [A_ij - k_i k_j / 2m] delta(c_i, c_j)``, ``k_i = sum_j A_ij``,
    ``2m = sum_ij A_ij`` (Newman 2006; networkx's ``community.modularity`` with resolution 1).

    Args:
        adjacency: symmetric ``[n, n]`` non-negative weights.
        labels: ``[n]`` or ``[batch, n]`` integer cluster ids ``0..k-1``.

    Returns:
        a scalar, or ``[batch]`` for a batch of partitions.
    """
    a = adjacency.double()
    c = one_hot(labels.long(), int(labels.max()) + 1)  # [..., n, k]
    two_m = a.sum()
    degree = a.sum(1)
    within = torch.einsum("...ik,ij,...jk->...", c, a, c)
    expected = ((degree @ c) ** 2).sum(-1) / two_m  # sum_k (sum_{i in k} k_i)^2 / 2m
    return (within - expected) / two_m


def within_fraction(weights: Tensor, labels: Tensor) -> Tensor:
    """Fraction of ``sum_{i != j} |W_ij|`` between units of the same cluster
    (``weights [n, n]``; ``labels`` ``[n]`` or ``[batch, n]``); 1 = every connection inside
    a cluster."""
    a = weights.detach().double().abs().fill_diagonal_(0.0)
    c = one_hot(labels.long(), int(labels.max()) + 1)
    return torch.einsum("...ik,ij,...jk->...", c, a, c) / a.sum()


def locality(positions: Tensor, labels: Tensor) -> Tensor:
    """Mean distance between the positions of two distinct units of the same cluster
    (``[n, d]`` positions; ``labels`` ``[n]`` or ``[batch, n]``); lower is more local."""
    d = torch.cdist(positions.double(), positions.double())
    c = one_hot(labels.long(), int(labels.max()) + 1)
    total = torch.einsum("...ik,ij,...jk->...", c, d, c)
    sizes = c.sum(-2)
    pairs = (sizes * (sizes - 1)).sum(-1)
    return total / pairs


def between_distance(positions: Tensor, labels: Tensor) -> Tensor:
    """Mean distance between the positions of two units of different clusters (``[n, d]``
    positions; ``labels`` ``[n]`` or ``[batch, n]``); the across-cluster counterpart of
    :func:`locality` (local modules: ``locality`` well below it)."""
    d = torch.cdist(positions.double(), positions.double())
    c = one_hot(labels.long(), int(labels.max()) + 1)
    same = torch.einsum("...ik,...jk->...ij", c, c)
    across = 1.0 - same
    return (across * d).sum((-1, -2)) / across.sum((-1, -2))


def grid_positions(n_units: int, columns: int | None = None) -> Tensor:
    """``[n_units, 2]`` float64 positions on a grid, row-major, spacing ``1 / (columns - 1)``.

    ``columns`` defaults to ``ceil(sqrt(n_units))`` (at least 2); the grid has
    ``ceil(n / columns)`` rows, so a full square grid spans the unit square (BIMT's layout).
    """
    if columns is None:
        columns = max(2, math.ceil(math.sqrt(n_units)))
    idx = torch.arange(n_units)
    spacing = 1.0 / (columns - 1)
    return torch.stack([(idx % columns).double(), (idx // columns).double()], dim=1) * spacing


def distance_matrix(positions: Tensor) -> Tensor:
    """``[n, d] -> [n, n]`` float64 Euclidean distances between unit positions."""
    return torch.cdist(positions.double(), positions.double())


def connection_cost(weights: Tensor, positions: Tensor, A: float = 1.0, l0: float = 0.2) -> Tensor:
    """BIMT connection cost ``sum_ij |W_ij| * (A * d_ij + l0)`` of a ``[n, n]`` weight matrix
    with units at ``positions [n, d]`` (Liu, Gan & Tegmark 2023), in ``weights``' dtype."""
    d = distance_matrix(positions).to(weights.dtype)
    return (weights.abs() * (A * d + l0)).sum()


def wiring_length(weights: Tensor, positions: Tensor) -> Tensor:
    """Weighted mean connection length ``sum_ij |W_ij| d_ij / sum_ij |W_ij|`` (float64 scalar):
    how far, on average, a unit of ``|W|`` travels between units at ``positions [n, d]`` (on
    BIMT's unit grid, 0 .. sqrt(2)); the diagonal has ``d = 0`` and adds only to the total."""
    w = weights.detach().double().abs()
    return (w * distance_matrix(positions)).sum() / w.sum()


def top_fraction(weights: Tensor, fraction: float = 0.1) -> Tensor:
    """Share of ``sum_ij |W_ij|`` carried by the strongest ``fraction`` of the entries of
    ``weights [n, n]`` (float64 scalar; ``ceil(fraction * n^2)`` entries, diagonal included):
    a sparsity measure, ``fraction`` for uniform weights and 1 when those entries hold all of
    it. BIMT and L1 networks are compared at matched values of it (docs/modularity.md)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    w = weights.detach().double().abs().flatten()
    k = math.ceil(fraction * w.numel())
    return torch.topk(w, k).values.sum() / w.sum()
