"""What geometry do multi-view embeddings have, and how close is it to MMCR's optimum?

Maximum Manifold Capacity Representations (MMCR; Yerxa et al. 2023) train an encoder so that
the centroids of each item's views have the largest nuclear norm. Schaeffer et al. 2024
(seeds/abstracts.md §4) show that this drives *alignment* (views of one item agree) and
*uniformity* (items spread over the sphere), that such embeddings maximise a variational lower
bound on the mutual information between views, and that the distance of the nuclear norm from
its bound ``sqrt(N min(N, D))`` is non-monotonic in the number of items N and the dimension D,
worst at N = D (for isotropic embeddings the ratio there is the Marchenko-Pastur value
``8 / (3 pi) ~ 0.849``). This module measures all of it on any embeddings
``[items, views, dim]``: a tensor, or an :class:`~probekit.ActivationStore` (or its path) and a
hook name. Formulas: :mod:`probekit.stats.mmcr`; method: ``docs/embedding_geometry.md``.

- :func:`mmcr`: loss, nuclear norm, bound, gap, alignment, uniformity, effective rank,
  centroid norms and the mutual-information estimate of one set of embeddings;
- :func:`sweep`: the gap over a grid of (N, D), for embeddings you give;
  :func:`isotropic_sweep`: the same for random isotropic embeddings, with the Marchenko-Pastur
  prediction (:func:`marchenko_pastur_ratio`);
- :func:`trajectory`: the geometry of a model's embeddings over training steps.

Example::

    >>> import torch, probekit as pk
    >>> z = torch.randn(256, 4, 64)                     # [items, views, dim]
    >>> result = pk.geometry.mmcr(z)
    >>> sorted(result.summary)[:3]
    ['alignment', 'bound', 'dim']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probekit.stats import mmcr as formulas
from probekit.validation import as_generator, check_positive_float, check_positive_int

__all__ = [
    "GeometryResult",
    "SweepResult",
    "TrajectoryResult",
    "as_views",
    "isotropic_sweep",
    "marchenko_pastur_ratio",
    "mmcr",
    "sweep",
    "trajectory",
]

#: How :func:`mmcr` estimates the mutual-information lower bound (also in its summary).
MI_ESTIMATOR = (
    "variational bound H(Z) + E log q(z_a | z_b), von Mises-Fisher q and resubstitution vMF "
    "kernel entropy with kappa = 2t; equals -(uniformity + t * alignment) nats"
)


# ============================================================================ inputs


def as_views(embeddings: Any, hook: str | None = None, views: int | None = None) -> Tensor:
    """Embeddings as a float tensor ``[items, views, dim]``.

    ``embeddings``: a tensor / array ``[items, views, dim]``, or ``[items * views, dim]`` with
    ``views`` given (rows item-major: all views of item 0, then item 1, ...); or an
    :class:`~probekit.ActivationStore` or a path to one, with ``hook`` naming the stored
    activations (same shapes).
    """
    from probekit.activations import ActivationStore

    if isinstance(embeddings, (str, os.PathLike)):
        path = Path(embeddings)
        if not path.exists():
            raise ValueError(f"embeddings path {str(path)!r} does not exist")
        embeddings = ActivationStore.open(path)
    if isinstance(embeddings, ActivationStore):
        if hook is None or hook not in embeddings.names:
            raise ValueError(
                f"hook must name activations in the store, one of {embeddings.names}, got {hook!r}"
            )
        embeddings = embeddings[hook]
    elif hook is not None:
        raise ValueError("hook is only used with an ActivationStore or a store path")
    if isinstance(embeddings, np.ndarray):
        embeddings = torch.from_numpy(embeddings)
    if not isinstance(embeddings, Tensor):
        raise ValueError(
            "embeddings must be a tensor [items, views, dim], an ActivationStore or a store path, "
            f"got {type(embeddings).__name__}"
        )
    z = embeddings.detach()
    if z.ndim == 2:
        if views is None:
            raise ValueError(
                f"embeddings of shape {tuple(z.shape)} are [rows, dim]: give views= to read them "
                "as [items, views, dim]"
            )
        check_positive_int("views", views)
        if z.shape[0] % views:
            raise ValueError(f"{z.shape[0]} rows are not a multiple of views={views}")
        z = z.reshape(z.shape[0] // views, views, z.shape[1])
    elif views is not None and z.ndim == 3 and z.shape[1] != views:
        raise ValueError(f"views={views} but embeddings have {z.shape[1]} views")
    if z.ndim != 3:
        raise ValueError(f"embeddings must be [items, views, dim], got shape {tuple(z.shape)}")
    if z.shape[0] < 2 or z.shape[2] < 1 or z.shape[1] < 1:
        raise ValueError(
            f"embeddings must have at least 2 items, 1 view and 1 dimension, got {tuple(z.shape)}"
        )
    if not z.is_floating_point():
        z = z.float()
    if not bool(torch.isfinite(z).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return z


# ============================================================================ one set of embeddings


@dataclass
class GeometryResult:
    """The geometry of one set of embeddings.

    ``frame``: one row per item (``item``, ``centroid_norm``, ``view_nuclear_norm`` =
    ``||Z_n||_*``); ``summary``: ``loss``, ``nuclear_norm``, ``bound``, ``gap``,
    ``alignment``, ``uniformity``, ``effective_rank``, centroid norms, ``mi_lower_bound`` (nats)
    with ``mi_estimator``, and the sizes; ``singular_values``: of the centroid matrix.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    singular_values: np.ndarray = field(repr=False)
    title: str = "MMCR embedding geometry"

    def figures(self) -> list[Any]:
        from probekit.report.figures import geometry as figs

        return [
            figs.spectrum(self.singular_values, self.summary),
            figs.centroid_norms(self.frame),
        ]


def mmcr(
    embeddings: Any,
    lmbda: float = 0.0,
    hook: str | None = None,
    views: int | None = None,
    t: float = 2.0,
) -> GeometryResult:
    """MMCR loss and geometry of ``embeddings [items, views, dim]`` (see :func:`as_views`).

    Every embedding is unit-normalised. ``loss = lmbda * mean_n ||Z_n||_* - ||M||_*`` (the
    authors' loss; ``M [items, dim]`` the centroids), ``bound = sqrt(N min(N, D))``,
    ``gap = 1 - ||M||_* / bound``; alignment and uniformity (temperature ``t``) as in
    Wang & Isola; effective rank of ``M``; ``mi_lower_bound = -(uniformity + t * alignment)``
    (:data:`MI_ESTIMATOR`). Computed in float64.
    """
    if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not math.isfinite(lmbda):
        raise ValueError(f"lmbda must be a finite number, got {lmbda!r}")
    t = check_positive_float("t", t)
    z = formulas.unit(as_views(embeddings, hook, views).double())
    n, k, d = z.shape
    with torch.no_grad():
        m = z.mean(1)
        s = formulas.singular_values(m)
        nuclear = float(s.sum())
        local = formulas.nuclear_norm(z) if k > 1 or lmbda else torch.ones(n, dtype=z.dtype)
        bound = formulas.capacity_bound(n, d)
        align = float(formulas.alignment(z)) if k > 1 else float("nan")
        uniform = float(formulas.uniformity(z, t))
        norms = m.norm(dim=-1)
        summary: dict[str, Any] = {
            "loss": float(lmbda * local.mean()) - nuclear,
            "nuclear_norm": nuclear,
            "bound": bound,
            "gap": 1 - nuclear / bound,
            "alignment": align,
            "uniformity": uniform,
            "effective_rank": float(formulas.effective_rank(m)),
            "mean_centroid_norm": float(norms.mean()),
            "min_centroid_norm": float(norms.min()),
            "mean_view_nuclear_norm": float(local.mean()),
            "mi_lower_bound": -(uniform + t * align),
            "mi_estimator": MI_ESTIMATOR,
            "lmbda": float(lmbda),
            "t": t,
            "items": n,
            "views": k,
            "dim": d,
        }
    frame = pd.DataFrame(
        {
            "item": np.arange(n),
            "centroid_norm": norms.numpy(),
            "view_nuclear_norm": local.numpy(),
        }
    )
    return GeometryResult(frame, summary, s.numpy())


# ============================================================================ sweeps over N and D


def marchenko_pastur_ratio(items: int, dim: int) -> float:
    """Expected ``||M||_* / sqrt(N min(N, D))`` for ``N`` isotropic unit vectors in ``R^D``.

    In the large-size limit the squared singular values of ``M`` (normalised to mean 1) follow
    the Marchenko-Pastur law of ratio ``c = min(N, D) / max(N, D)``; the ratio is its mean square
    root, ``int sqrt(x) sqrt((x+ - x)(x - x-)) / (2 pi c x) dx`` with ``x+- = (1 +- sqrt c)^2``.
    ``8 / (3 pi)`` at ``c = 1``; tends to 1 as ``c -> 0``.
    """
    from scipy.integrate import quad

    check_positive_int("items", items)
    check_positive_int("dim", dim)
    c = min(items, dim) / max(items, dim)
    lo, hi = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2

    def density_times_root(x: float) -> float:
        return math.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * math.pi * c * math.sqrt(x))

    value, _ = quad(density_times_root, lo, hi, limit=200)
    return float(value)


@dataclass
class SweepResult:
    """The gap ``1 - ||M||_* / sqrt(N min(N, D))`` over a grid of items N and dimensions D.

    ``frame``: one row per (N, D): ``items``, ``dim``, ``ratio`` = N / D, ``gap`` (mean over the
    batches given), ``gap_std``, ``batches``, and ``predicted_gap`` (Marchenko-Pastur) when
    computed; ``summary``: the worst (N, D) per D and whether it sits at N = D.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "MMCR gap over items and dimensions"
    label: str = "embeddings"

    def figures(self) -> list[Any]:
        from probekit.report.figures import geometry as figs

        return [figs.sweep(self.frame, self.label)]


def sweep(
    embeddings: Mapping[tuple[int, int], Tensor | Sequence[Tensor]], label: str = "embeddings"
) -> SweepResult:
    """The MMCR gap for each ``(items, dim) -> embeddings`` entry (one tensor or several batches).

    Each tensor is ``[items, views, dim]`` with the key's sizes. ``summary`` gives, per D, the N
    with the largest gap (``peak_items``), and ``peak_at_n_equals_d`` (the share of D whose
    worst N is D itself, among D that have an N = D entry).
    """
    if not isinstance(embeddings, Mapping) or not embeddings:
        raise ValueError("embeddings must be a non-empty mapping (items, dim) -> embeddings")
    rows = []
    for key, value in embeddings.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"embeddings keys must be (items, dim) pairs, got {key!r}")
        batches = [value] if isinstance(value, Tensor) else list(value)
        gaps = []
        for batch in batches:
            z = as_views(batch)
            if (z.shape[0], z.shape[2]) != tuple(key):
                raise ValueError(
                    f"embeddings[{key}] must be [{key[0]}, views, {key[1]}], got {tuple(z.shape)}"
                )
            m = formulas.centroids(z.double())
            gaps.append(
                1 - float(formulas.singular_values(m).sum()) / formulas.capacity_bound(*key)
            )
        rows.append(
            {
                "items": key[0],
                "dim": key[1],
                "ratio": key[0] / key[1],
                "gap": float(np.mean(gaps)),
                "gap_std": float(np.std(gaps)),
                "batches": len(gaps),
            }
        )
    frame = pd.DataFrame(rows).sort_values(["dim", "items"], ignore_index=True)
    return SweepResult(frame, _sweep_summary(frame), label=label)


def _sweep_summary(frame: pd.DataFrame) -> dict[str, Any]:
    peaks = frame.loc[frame.groupby("dim")["gap"].idxmax()]
    with_diag = [d for d in peaks["dim"] if ((frame["dim"] == d) & (frame["items"] == d)).any()]
    at_diag = [d for d in with_diag if int(peaks.loc[peaks["dim"] == d, "items"].iloc[0]) == d]
    summary: dict[str, Any] = {
        "peak_items": {int(r.dim): int(r.items) for r in peaks.itertuples()},
        "peak_gap": {int(r.dim): float(r.gap) for r in peaks.itertuples()},
        "peak_at_n_equals_d": len(at_diag) / len(with_diag) if with_diag else float("nan"),
        "max_gap": float(frame["gap"].max()),
    }
    return summary


def isotropic_sweep(
    items: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
    dims: Sequence[int] = (32, 64, 128, 256),
    views: int = 1,
    repeats: int = 3,
    seed: int | torch.Generator = 0,
) -> SweepResult:
    """:func:`sweep` over random isotropic unit embeddings ``[N, views, D]`` (Gaussian, normalised).

    With ``views = 1`` the centroids are the embeddings themselves. Adds ``predicted_gap``
    (``1 -`` :func:`marchenko_pastur_ratio`) and, at N = D, ``gap_at_n_equals_d`` per D to the
    summary (the source's ``8 / (3 pi)`` dip: ``1 - 0.849 = 0.151`` for large D).
    """
    check_positive_int("views", views)
    check_positive_int("repeats", repeats)
    for name, values in (("items", items), ("dims", dims)):
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
        ):
            raise ValueError(
                f"{name} must be a non-empty list of positive integers, got {values!r}"
            )
    g = as_generator(seed)
    data = {
        (n, d): [torch.randn(n, views, d, generator=g, dtype=torch.float64) for _ in range(repeats)]
        for d in dims
        for n in items
    }
    result = sweep(data, label="isotropic random")
    result.frame["predicted_gap"] = [
        1 - marchenko_pastur_ratio(int(n), int(d))
        for n, d in zip(result.frame["items"], result.frame["dim"])
    ]
    diag = result.frame[result.frame["items"] == result.frame["dim"]]
    result.summary["gap_at_n_equals_d"] = {int(r.dim): float(r.gap) for r in diag.itertuples()}
    result.summary["ratio_at_n_equals_d"] = {
        int(r.dim): 1 - float(r.gap) for r in diag.itertuples()
    }
    result.summary["marchenko_pastur_ratio_at_n_equals_d"] = 8 / (3 * math.pi)
    result.title = "MMCR gap of isotropic random embeddings"
    return result


# ============================================================================ over training


@dataclass
class TrajectoryResult:
    """Geometry over training: one row per step of every :func:`mmcr` summary number."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "MMCR geometry over training"

    def figures(self) -> list[Any]:
        from probekit.report.figures import geometry as figs

        return figs.trajectory(self.frame)


def trajectory(embeddings_by_step: Mapping[int, Any], lmbda: float = 0.0) -> TrajectoryResult:
    """:func:`mmcr` of each ``step -> embeddings [items, views, dim]``, as a table over steps.

    ``summary``: the first and last step's alignment, uniformity, gap and MI estimate, and
    whether alignment and uniformity both fell (``both_improved``: lower is better for both).
    """
    if not isinstance(embeddings_by_step, Mapping) or not embeddings_by_step:
        raise ValueError("embeddings_by_step must be a non-empty mapping step -> embeddings")
    rows = []
    for step in sorted(embeddings_by_step):
        summary = mmcr(embeddings_by_step[step], lmbda=lmbda).summary
        rows.append({"step": int(step)} | {k: v for k, v in summary.items() if k != "mi_estimator"})
    frame = pd.DataFrame(rows)
    first, last = frame.iloc[0], frame.iloc[-1]
    summary = {
        f"{key}_{when}": float(row[key])
        for key in ("alignment", "uniformity", "gap", "mi_lower_bound", "effective_rank")
        for when, row in (("first", first), ("last", last))
    }
    summary["both_improved"] = bool(
        last["alignment"] < first["alignment"] and last["uniformity"] < first["uniformity"]
    )
    summary["steps"] = [int(s) for s in frame["step"]]
    return TrajectoryResult(frame, summary)
