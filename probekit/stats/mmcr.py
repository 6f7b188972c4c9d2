"""The geometry of multi-view embeddings as pure formulas: MMCR loss, bound, alignment, uniformity.

Each function takes embeddings ``z [items, views, dim]`` (or a matrix) and returns a tensor; the
analysis around them (validation, sweeps, results, figures) is :mod:`probekit.geometry`, the
method is written up in ``docs/embedding_geometry.md``. Sources: Yerxa et al. 2023 (the MMCR
loss), Schaeffer et al. 2024 (its bound, alignment/uniformity and the N = D dip; seeds §4),
Wang & Isola 2020 (alignment and uniformity), Roy & Vetterli 2007 (effective rank).

Everything here is differentiable; :func:`nuclear_norm` has a hand-written backward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


class _NuclearNorm(torch.autograd.Function):
    """Sum of singular values with the gradient ``U V^T``, computed in float64.

    ``torch.linalg.svdvals`` differentiates through the SVD, whose backward divides by
    ``sigma_i^2 - sigma_j^2`` and gives NaN when two singular values coincide (identical or
    symmetric inputs); the nuclear norm has the (sub)gradient ``U V^T`` everywhere, which needs
    no such division.
    """

    @staticmethod
    def forward(ctx: Any, matrix: Tensor) -> Tensor:
        u, s, vh = torch.linalg.svd(_tall(matrix.double()), full_matrices=False)
        ctx.save_for_backward(u, vh)
        ctx.dtype = matrix.dtype
        ctx.wide = matrix.shape[-2] < matrix.shape[-1]
        return s.sum(-1).to(matrix.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        u, vh = ctx.saved_tensors
        g = grad.double()[..., None, None] * (u @ vh)
        return (g.transpose(-2, -1) if ctx.wide else g).to(ctx.dtype)


def _tall(matrix: Tensor) -> Tensor:
    # LAPACK's batched SVD of many wide matrices is ~1000x slower on the CPU than of their
    # transposes; the singular values are the same.
    return matrix.transpose(-2, -1) if matrix.shape[-2] < matrix.shape[-1] else matrix


def singular_values(matrix: Tensor) -> Tensor:
    """Singular values of each matrix in ``matrix [..., m, n]``: ``[..., min(m, n)]``, descending."""
    return torch.linalg.svdvals(_tall(matrix))


def nuclear_norm(matrix: Tensor) -> Tensor:
    """Nuclear norm ``||A||_* = sum_i sigma_i(A)`` of each matrix in ``matrix [..., m, n]``.

    Returns ``[...]``. Computed in float64 and returned in the input dtype; the gradient is
    ``U V^T`` from the thin SVD, finite at repeated and at zero singular values.
    """
    return _NuclearNorm.apply(matrix)


def unit(z: Tensor) -> Tensor:
    """Each embedding (last axis) scaled to unit L2 norm (zero vectors stay zero)."""
    return nn.functional.normalize(z, dim=-1)


def centroids(z: Tensor) -> Tensor:
    """Centroids ``mu_n = (1/K) sum_k z_n^(k)`` of unit-normalised views: ``[items, dim]``."""
    return unit(z).mean(-2)


def mmcr_loss(z: Tensor, lmbda: float = 0.0) -> Tensor:
    """The MMCR loss as its authors implement it, for ``z [items, views, dim]``: a scalar.

    Unit-normalise each embedding, ``M [items, dim]`` the centroids, loss
    ``= lmbda * mean_n ||Z_n||_* - ||M||_*`` with ``Z_n [views, dim]`` the views of item ``n``
    (Yerxa et al. 2023, their ``MMCR_Loss``), using :func:`nuclear_norm` for the gradient.
    """
    zn = unit(z)
    loss = -nuclear_norm(zn.mean(-2))
    if lmbda:
        loss = loss + lmbda * nuclear_norm(zn).mean()
    return loss


def capacity_bound(items: int, dim: int) -> float:
    """Upper bound of ``||M||_*`` for ``items`` centroids of norm <= 1 in ``dim`` dimensions.

    ``sqrt(N min(N, D))``: ``||M||_* <= sqrt(rank) ||M||_F <= sqrt(min(N, D)) sqrt(N)``, with
    equality when the centroids have unit norm and ``M`` has equal singular values (orthonormal
    centroids for N <= D, a tight frame for N >= D).
    """
    return math.sqrt(items * min(items, dim))


def alignment(z: Tensor) -> Tensor:
    """Alignment (Wang & Isola): mean ``||z^(a) - z^(b)||^2`` over view pairs ``a < b`` of an item.

    ``z [items, views, dim]`` (unit-normalised here) -> scalar in ``[0, 4]``; 0 = all views of
    each item agree. For unit vectors it equals ``2K (1 - mean ||mu_n||^2) / (K - 1)``.
    """
    zn = unit(z)
    views = zn.shape[-2]
    d2 = torch.cdist(zn, zn).square()  # [items, K, K]
    iu = torch.triu_indices(views, views, offset=1)
    return d2[:, iu[0], iu[1]].mean()


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity (Wang & Isola): ``log E exp(-t ||z_i - z_j||^2)`` over pairs of distinct items.

    ``z [items, views, dim]``: every view of item ``i`` against every view of item ``j != i``
    (unit-normalised). A scalar in ``[-4t, 0]``; lower = more uniform on the sphere, 0 = all
    embeddings at one point. Uniform random unit vectors give about ``-2t`` in high dimension.
    """
    zn = unit(z)
    n, k, _ = zn.shape
    flat = zn.reshape(n * k, -1)
    item = torch.arange(n, device=z.device).repeat_interleave(k)
    terms = []
    for start in range(0, n * k, 1024):  # row blocks keep memory at 1024 x (N K)
        rows = flat[start : start + 1024]
        e = -t * torch.cdist(rows, flat).square()
        other = item[start : start + 1024, None] != item[None, :]
        terms.append(torch.where(other, e, torch.full_like(e, -math.inf)).flatten())
    pairs = n * k * (n - 1) * k
    return torch.logsumexp(torch.cat(terms), 0) - math.log(pairs)


def effective_rank(matrix: Tensor) -> Tensor:
    """Effective rank ``exp(H(p))``, ``p_i = sigma_i / sum_j sigma_j`` (Roy & Vetterli 2007).

    ``matrix [m, n]`` -> scalar in ``[1, min(m, n)]`` (singular values in float64).
    """
    s = singular_values(matrix.double())
    p = s / s.sum().clamp_min(1e-300)
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


def mi_lower_bound(z: Tensor, t: float = 2.0) -> Tensor:
    """A plug-in estimate of the variational lower bound on the mutual information between views.

    ``I(Z^a; Z^b) >= H(Z) + E log q(z^a | z^b)`` (Barber & Agakov) with ``q`` a von Mises-Fisher
    density of concentration ``kappa = 2t`` centred on the other view, and ``H(Z)`` estimated by
    resubstitution with a vMF kernel density of the same ``kappa`` over the other items'
    embeddings. The normalising constants cancel and the estimate is
    ``-(uniformity(z, t) + t * alignment(z))`` nats: uniformity raises the entropy term,
    alignment the reconstruction term. The entropy estimate is capped near ``log(items * views)``
    and biased for small samples, so read it as a comparison between embeddings of the same size.
    """
    return -(uniformity(z, t) + t * alignment(z))
