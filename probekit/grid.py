"""Grid cells and grid modules: which units fire on a hexagonal lattice, and in how many modules?

A network trained to path-integrate may develop grid cells, units whose spatial rate map is a
hexagonal lattice, organised (in the brain, and in some models) into a few discrete modules of
different spacing (seeds/abstracts.md §9; method in shared/specs/grid.md). This module answers
that question from a model's activations along trajectories:

- :func:`ratemaps`: mean activation per spatial bin, ``[units, ny, nx]``, row = y, column = x,
  NaN where nothing was visited;
- :func:`autocorrelogram`: the spatial autocorrelogram (SAC) of every map, the Pearson
  correlation at every 2-D lag over the bins valid in both copies (FFT, vectorised);
- :func:`score`: the grid score of Sargolini et al. (2006) / Banino et al. (2018) as used by
  Sorscher et al.: SAC rotated by 30..150 degrees (``scipy.ndimage.rotate`` semantics, cubic
  spline, applied to all units at once through a precomputed sparse operator), correlated with
  itself inside annuli, maximised over the annuli; ``score60`` for hexagonal, ``score90`` for
  square lattices;
- :func:`spacing_orientation` and :func:`modules`: spacing and orientation from the six SAC peaks
  nearest the centre, and grid cells clustered into modules on (log spacing, orientation mod 60);
- :func:`shuffle_null`: scores of rate maps built from circularly shifted activity;
- :func:`synthetic_population`: populations with known answers (grid modules plus place, band,
  random-field distractors) to test the detector.

Example::

    >>> import probekit as pk
    >>> pop = pk.grid.synthetic_population(modules=[(0.3, 10.0), (0.45, 25.0)], cells_per_module=12)
    >>> found = pk.grid.modules(pop.ratemaps, extent=pop.extent)
    >>> found.summary["n_modules"]
    2
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ANGLES = (30, 45, 60, 90, 120, 135, 150)
Extent = tuple[tuple[float, float], tuple[float, float]]


# ----------------------------------------------------------------------------- input checks


def _as_numpy(x: Any, name: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # a torch tensor implies torch is imported; never import it
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_extent(extent: Any) -> Extent:
    try:
        (x0, x1), (y0, y1) = extent
        x0, x1, y0, y1 = float(x0), float(x1), float(y0), float(y1)
    except (TypeError, ValueError):
        raise ValueError(f"extent must be ((x0, x1), (y0, y1)), got {extent!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must have x1 > x0 and y1 > y0, got {extent!r}")
    return ((x0, x1), (y0, y1))


def _check_bins(bins: Any) -> tuple[int, int]:
    """``(nx, ny)`` from ``bins`` = n or (nx, ny)."""
    if isinstance(bins, (int, np.integer)):
        nx = ny = int(bins)
    else:
        try:
            nx, ny = (int(b) for b in bins)
        except (TypeError, ValueError):
            raise ValueError(f"bins must be an int or (nx, ny), got {bins!r}") from None
    if nx < 3 or ny < 3:
        raise ValueError(f"bins must be at least 3 per axis, got {bins!r}")
    return nx, ny


def _check_maps(maps: Any, name: str = "ratemaps") -> np.ndarray:
    arr = _as_numpy(maps, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < 3 or arr.shape[2] < 3:
        raise ValueError(f"{name} must be [units, ny, nx] with ny, nx >= 3, got {arr.shape}")
    return arr


# ----------------------------------------------------------------------------- rate maps


def ratemaps(
    activations: Any,
    positions: Any,
    bins: int | tuple[int, int] = 20,
    extent: Extent | None = None,
) -> np.ndarray:
    """Mean activation of every unit in every spatial bin.

    Args:
        activations: ``[samples, units]`` or ``[batch, time, units]`` (numpy or torch).
        positions: ``[samples, 2]`` or ``[batch, time, 2]``, columns ``(x, y)``.
        bins: bins per axis, or ``(nx, ny)`` for a non-square binning.
        extent: ``((x0, x1), (y0, y1))``; default the range of ``positions``. Bins are half-open
            ``[lo, hi)`` except the last, which includes ``x1`` (``y1``); samples outside the
            extent are ignored.

    Returns:
        ``[units, ny, nx]`` float64: row index = y (increasing with y), column index = x; NaN in
        bins no sample fell in.
    """
    acts = _as_numpy(activations, "activations")
    pos = _as_numpy(positions, "positions")
    if pos.shape[-1] != 2 or pos.ndim not in (2, 3):
        raise ValueError(f"positions must be [samples, 2] or [batch, time, 2], got {pos.shape}")
    if acts.ndim != pos.ndim or acts.shape[:-1] != pos.shape[:-1]:
        raise ValueError(
            f"activations must be [samples, units] or [batch, time, units] matching positions "
            f"{pos.shape}, got {acts.shape}"
        )
    acts = acts.reshape(-1, acts.shape[-1])
    pos = pos.reshape(-1, 2)
    nx, ny = _check_bins(bins)
    if extent is None:
        if len(pos) == 0:
            raise ValueError("positions is empty; pass extent")
        extent = ((pos[:, 0].min(), pos[:, 0].max()), (pos[:, 1].min(), pos[:, 1].max()))
    (x0, x1), (y0, y1) = _check_extent(extent)
    ix = np.floor((pos[:, 0] - x0) / (x1 - x0) * nx).astype(np.int64)
    iy = np.floor((pos[:, 1] - y0) / (y1 - y0) * ny).astype(np.int64)
    ix[pos[:, 0] == x1] = nx - 1
    iy[pos[:, 1] == y1] = ny - 1
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & np.isfinite(pos).all(1)
    flat = iy[inside] * nx + ix[inside]
    counts = np.bincount(flat, minlength=nx * ny).astype(np.float64)
    from scipy import sparse

    onehot = sparse.csr_matrix(
        (np.ones(len(flat)), (flat, np.arange(len(flat)))), shape=(nx * ny, len(flat))
    )
    sums = onehot @ acts[inside]  # [bins, units]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return np.ascontiguousarray(means.T.reshape(-1, ny, nx))


# ----------------------------------------------------------------------------- autocorrelogram


def autocorrelogram(maps: Any, chunk: int = 128) -> np.ndarray:
    """Spatial autocorrelogram of every rate map, NaN-aware.

    ``sac[u, ny - 1 + dy, nx - 1 + dx]`` is the Pearson correlation between ``map[u, y, x]`` and
    ``map[u, y + dy, x + dx]`` over every ``(y, x)`` where both bins are valid (not NaN); the
    means and variances are those of the overlapping bins, so each lag is normalised by its own
    overlap count. Lags with fewer than 2 overlapping bins or a constant overlap are NaN.

    Args:
        maps: ``[units, ny, nx]`` (or one ``[ny, nx]`` map).

    Returns:
        ``[units, 2 ny - 1, 2 nx - 1]`` float64, centre ``[ny - 1, nx - 1]`` (1 for a
        non-constant map). Computed ``chunk`` units at a time, so the working set stays in cache.
    """
    x = _check_maps(maps, "maps")
    u, ny, nx = x.shape
    out = np.empty((u, 2 * ny - 1, 2 * nx - 1))
    for lo in range(0, u, chunk):
        out[lo : lo + chunk] = _autocorrelogram_block(x[lo : lo + chunk])
    return out


def _autocorrelogram_block(x: np.ndarray) -> np.ndarray:
    _, ny, nx = x.shape
    valid = np.isfinite(x)
    n_valid = valid.sum(axis=(1, 2), keepdims=True)
    # Pearson is invariant to shifting and scaling a map; standardising first keeps the FFT sums
    # O(1) and their rounding far below the 1e-6 the scores are compared at.
    xv = np.where(valid, x, 0.0)
    mean = xv.sum(axis=(1, 2), keepdims=True) / np.maximum(n_valid, 1)
    sd = np.sqrt(np.where(valid, (x - mean) ** 2, 0.0).sum(axis=(1, 2), keepdims=True))
    sd = np.where(sd > 0, sd / np.sqrt(np.maximum(n_valid, 1)), 1.0)
    z = np.where(valid, (x - mean) / sd, 0.0)
    m = valid.astype(np.float64)
    from scipy import fft

    # any size >= 2n - 1 per axis gives the linear (not circular) correlation; a fast one is
    # several times quicker than 2n - 1 itself
    shape = (fft.next_fast_len(2 * ny - 1, real=True), fft.next_fast_len(2 * nx - 1, real=True))
    fz, fz2, fm = (fft.rfft2(a, s=shape) for a in (z, z * z, m))
    rows = np.r_[shape[0] - (ny - 1) : shape[0], 0:ny]
    cols = np.r_[shape[1] - (nx - 1) : shape[1], 0:nx]

    def corr(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        # c[d] = sum_p a[p + d] b[p] for lags d = -(n - 1) .. n - 1, lag 0 at the centre
        c = fft.irfft2(fa * np.conj(fb), s=shape)
        return c[:, rows][:, :, cols]

    n = np.rint(corr(fm, fm))
    s1, s11, s12 = corr(fz, fm), corr(fz2, fm), corr(fz, fz)
    # corr(m, z)[d] = corr(z, m)[-d]: the second copy's sums are the first's, point-reflected
    s2, s22 = s1[:, ::-1, ::-1], s11[:, ::-1, ::-1]
    var1 = n * s11 - s1 * s1
    var2 = n * s22 - s2 * s2
    cov = n * s12 - s1 * s2
    tol = 1e-9
    ok = (
        (n >= 2)
        & (var1 > tol * np.maximum(n * s11, 1e-300))
        & (var2 > tol * np.maximum(n * s22, 1e-300))
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        sac = cov / np.sqrt(np.where(ok, var1 * var2, 1.0))
    sac[~ok] = np.nan
    return np.clip(sac, -1.0, 1.0, out=sac, where=ok)


# ----------------------------------------------------------------------------- rotations


@functools.lru_cache(maxsize=8)
def _rotation_operator(shape: tuple[int, int], angles: tuple[float, ...]):
    """Sparse ``[len(angles) * P, P]`` map from spline coefficients to rotated images.

    ``scipy.ndimage.rotate(img, a, reshape=False)`` (order 3, mode ``"constant"``) is a cubic
    B-spline prefilter followed by an interpolation in which each output pixel weighs the
    coefficients within 3 pixels (per axis) of the point it samples, boundary reflections
    included. That second step is linear and the same for every image, so it is read off by
    rotating (``prefilter=False``) 64 comb images with impulses 8 pixels apart: each output
    pixel sees at most one impulse of a comb, the one nearest the point it samples.
    """
    from scipy import ndimage, sparse, special

    h, w = shape
    step = 8
    probes = np.zeros((step * step, h, w))
    offsets = [(i, j) for i in range(step) for j in range(step)]
    for k, (i, j) in enumerate(offsets):
        probes[k, i::step, j::step] = 1.0
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    out_idx = np.arange(h * w)
    blocks = []
    for angle in angles:
        cos, sin = special.cosdg(angle), special.sindg(angle)
        centre_y, centre_x = (h - 1) / 2, (w - 1) / 2
        # rotate's affine map from output to input coordinates
        src_y = cos * (yy - centre_y) + sin * (xx - centre_x) + centre_y
        src_x = -sin * (yy - centre_y) + cos * (xx - centre_x) + centre_x
        resp = ndimage.rotate(probes, angle, axes=(1, 2), reshape=False, order=3, prefilter=False)
        rows, cols, vals = [], [], []
        for k, (i, j) in enumerate(offsets):
            qy = i + step * np.rint((src_y - i) / step)
            qx = j + step * np.rint((src_x - j) / step)
            val = resp[k].ravel()
            keep = (val != 0) & (qy.ravel() >= 0) & (qy.ravel() < h)
            keep &= (qx.ravel() >= 0) & (qx.ravel() < w)
            rows.append(out_idx[keep])
            cols.append((qy.ravel()[keep] * w + qx.ravel()[keep]).astype(np.int64))
            vals.append(val[keep])
        blocks.append(
            sparse.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(h * w, h * w),
            )
        )
    return sparse.vstack(blocks).tocsr()


@functools.lru_cache(maxsize=8)
def _annulus_operator(shape: tuple[int, int]):
    """What the annulus sweep needs for SACs of ``shape``, cached: ``(op, pixels, masks, area)``.

    ``pixels``: the flat indices of the pixels in some annulus (the only ones any sum reads);
    ``op``: the rotation operator's rows for those pixels, angle major (``[A * P_sel, P]``);
    ``masks``: ``[K, P_sel]`` the annuli on those pixels; ``area``: ``[K]`` their sizes.
    """
    masks, _ = annulus_masks(shape)
    flat = masks.reshape(len(masks), -1)
    pixels = np.flatnonzero(flat.any(0))
    p = shape[0] * shape[1]
    full = _rotation_operator(shape, tuple(float(a) for a in ANGLES))
    rows = (np.arange(len(ANGLES))[:, None] * p + pixels[None, :]).ravel()
    mask_sel = np.ascontiguousarray(flat[:, pixels].astype(np.float64))
    return full[rows], pixels, mask_sel, mask_sel.sum(1)


def _spline_coefficients(images: np.ndarray) -> np.ndarray:
    """The order-3, mode ``"constant"`` spline prefilter scipy's rotate applies to each plane."""
    from scipy import ndimage

    c = ndimage.spline_filter1d(images, 3, axis=1, mode="constant", output=np.float64)
    return ndimage.spline_filter1d(c, 3, axis=2, mode="constant", output=np.float64)


def rotate_stack(images: Any, angles: Sequence[float] = ANGLES) -> np.ndarray:
    """``[len(angles), n, h, w]``: every image rotated about its centre by every angle (degrees).

    Equal (to float rounding) to ``scipy.ndimage.rotate(img, angle, reshape=False)`` with its
    defaults (cubic spline, ``mode="constant"``, ``cval=0``), for all images at once. NaN is not
    allowed (replace it first).
    """
    imgs = _check_maps(images, "images")
    n, h, w = imgs.shape
    op = _rotation_operator((h, w), tuple(float(a) for a in angles))
    coef = _spline_coefficients(imgs).reshape(n, h * w)
    out = op @ coef.T  # [A * P, n]
    return out.reshape(len(angles), h * w, n).transpose(0, 2, 1).reshape(len(angles), n, h, w)


# ----------------------------------------------------------------------------- scores


def annulus_masks(shape: tuple[int, int], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 10 annular masks of the grid score on a SAC of ``shape`` -> ``(masks [10, h, w], outer)``.

    Distances in bins from the centre bin; inner radius ``0.2 n``, outer radii
    ``linspace(0.4, 1.0, 10) * n`` (``outer`` returned, in bins), both boundaries inclusive;
    ``n`` defaults to the rate map's bin count ``min((h + 1) / 2, (w + 1) / 2)``.
    """
    h, w = shape
    if n is None:
        n = min((h + 1) // 2, (w + 1) // 2)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    outer = np.linspace(0.4, 1.0, 10) * n
    inner = 0.2 * n
    masks = (r[None] >= inner) & (r[None] <= outer[:, None, None])
    return masks, outer


def grid_scores_from_sac(
    sac: Any, method: str = "banino", chunk: int = 128
) -> dict[str, np.ndarray]:
    """Grid scores of autocorrelograms ``[units, h, w]`` (NaN read as 0, as the reference does).

    For each annulus ``m`` with ``mu`` the mean SAC inside it,
    ``r_a = sum((sac - mu)(rot_a - mu) m) / (sum((sac - mu)^2 m) + 1e-5 |m|)``;
    ``score60 = (r60 + r120)/2 - (r30 + r90 + r150)/3`` (``"banino"``) or
    ``min(r60, r120) - max(r30, r90, r150)`` (``"min_max"``); ``score90 = r90 - (r45 + r135)/2``;
    each maximised over the annuli. Returns ``score60``, ``score90``, ``mask60``, ``mask90``
    (index of the winning annulus), ``r`` (``[units, annuli, angles]``).
    """
    if method not in ("banino", "min_max"):
        raise ValueError(f"method must be 'banino' or 'min_max', got {method!r}")
    s = np.nan_to_num(_check_maps(sac, "sac"), nan=0.0)
    with _single_thread_blas():
        return _scores_from_sac(s, method, chunk)


@contextlib.contextmanager
def _single_thread_blas():
    """The products here are small ([10, ~1200] @ [~1200, chunk]); a multi-threaded BLAS spends
    far longer synchronising its threads than computing them, badly so on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _scores_from_sac(s: np.ndarray, method: str, chunk: int) -> dict[str, np.ndarray]:
    u, h, w = s.shape
    op, pixels, masks, area = _annulus_operator((h, w))
    n_ang = len(ANGLES)
    r_all = np.empty((u, len(area), n_ang))
    for lo in range(0, u, chunk):
        part = s[lo : lo + chunk]
        n = len(part)
        flat_t = np.ascontiguousarray(part.reshape(n, -1)[:, pixels].T)  # [P_sel, n]
        coef = _spline_coefficients(part).reshape(n, -1)
        rot = (op @ coef.T).reshape(n_ang, -1, n)  # [A, P_sel, n], rotated SAC at those pixels
        mu = masks @ flat_t / area[:, None]  # [K, n]
        den = masks @ (flat_t * flat_t) - mu * mu * area[:, None] + 1e-5 * area[:, None]
        # sum_p m (sac - mu)(rot - mu) = sum_p m sac rot - mu sum_p m rot, as sum_p m (sac - mu)
        # is 0: two [K, P_sel] @ [P_sel, n] products per angle
        for a in range(n_ang):
            num = masks @ (rot[a] * flat_t) - mu * (masks @ rot[a])
            r_all[lo : lo + chunk, :, a] = (num / den).T
    r = {angle: r_all[:, :, i] for i, angle in enumerate(ANGLES)}
    if method == "banino":
        s60 = (r[60] + r[120]) / 2 - (r[30] + r[90] + r[150]) / 3
    else:
        s60 = np.minimum(r[60], r[120]) - np.maximum(np.maximum(r[30], r[90]), r[150])
    s90 = r[90] - (r[45] + r[135]) / 2
    return {
        "score60": s60.max(1),
        "score90": s90.max(1),
        "mask60": s60.argmax(1),
        "mask90": s90.argmax(1),
        "r": r_all,
    }


@dataclass
class GridScores:
    """Grid scores of a population of rate maps.

    Attributes:
        frame: one row per unit: ``unit``, ``score60``, ``score90``, ``mask60`` / ``mask90``
            (winning annulus index), ``mask60_outer`` (its outer radius in bins), ``is_grid``.
        summary: ``n_units``, ``threshold``, ``n_grid``, ``fraction_grid``, ``median_score60``,
            ``method``.
        sacs: ``[units, 2 ny - 1, 2 nx - 1]`` autocorrelograms.
        ratemaps: the scored ``[units, ny, nx]`` maps.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    sacs: np.ndarray
    ratemaps: np.ndarray
    title: str = "Grid scores"
    description: str = (
        "Grid score (Banino et al. 2018) of each unit's rate map: autocorrelogram rotated by "
        "30..150 degrees, correlated inside the best of 10 annuli."
    )

    def figures(self) -> list:
        import plotly.graph_objects as go

        fig = go.Figure(go.Histogram(x=self.frame["score60"].dropna(), nbinsx=40, name="score60"))
        fig.add_vline(x=self.summary["threshold"], line_dash="dash")
        fig.update_layout(title="score60 over units", xaxis_title="score60", yaxis_title="units")
        return [fig]


def score(
    ratemaps: Any, method: str = "banino", threshold: float = 0.3, chunk: int = 128
) -> GridScores:
    """Grid scores of rate maps ``[units, ny, nx]`` (NaN = unvisited; see :func:`ratemaps`).

    Steps (shared/specs/grid.md): NaN-aware SAC (:func:`autocorrelogram`), its rotations by 30,
    45, 60, 90, 120, 135, 150 degrees as ``scipy.ndimage.rotate(sac, a, reshape=False)``, the
    annulus sweep of :func:`grid_scores_from_sac`. A constant (e.g. silent) map has no SAC and
    scores NaN. A unit is a grid cell when ``score60 > threshold``.
    """
    maps = _check_maps(ratemaps)
    if method not in ("banino", "min_max"):
        raise ValueError(f"method must be 'banino' or 'min_max', got {method!r}")
    sacs = autocorrelogram(maps, chunk=chunk)
    res = grid_scores_from_sac(sacs, method=method, chunk=chunk)
    h, w = sacs.shape[1:]
    constant = ~np.isfinite(sacs[:, h // 2, w // 2])
    s60 = np.where(constant, np.nan, res["score60"])
    s90 = np.where(constant, np.nan, res["score90"])
    _, outer = annulus_masks((h, w))
    frame = pd.DataFrame(
        {
            "unit": np.arange(len(maps)),
            "score60": s60,
            "score90": s90,
            "mask60": res["mask60"],
            "mask90": res["mask90"],
            "mask60_outer": outer[res["mask60"]],
            "is_grid": s60 > threshold,
        }
    )
    n_grid = int(frame["is_grid"].sum())
    summary = {
        "method": method,
        "n_units": len(maps),
        "threshold": threshold,
        "n_grid": n_grid,
        "fraction_grid": n_grid / len(maps),
        "median_score60": float(np.nanmedian(s60)) if np.isfinite(s60).any() else float("nan"),
        "n_constant": int(constant.sum()),
    }
    return GridScores(frame=frame, summary=summary, sacs=sacs, ratemaps=maps)


# ----------------------------------------------------------------------------- spacing, orientation


def _bin_size(extent: Extent | None, ny: int, nx: int) -> tuple[float, float]:
    if extent is None:
        return 1.0, 1.0
    (x0, x1), (y0, y1) = _check_extent(extent)
    return (y1 - y0) / ny, (x1 - x0) / nx


def _parabola_offset(lo: np.ndarray, mid: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Vertex offset (in [-0.5, 0.5]) of the parabola through three equally spaced values."""
    den = lo - 2 * mid + hi
    ok = np.isfinite(den) & (den < 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(ok, 0.5 * (lo - hi) / np.where(ok, den, -1.0), 0.0)
    return np.clip(off, -0.5, 0.5)


def spacing_orientation(sacs: Any, extent: Extent | None = None, n_peaks: int = 6) -> pd.DataFrame:
    """Spacing and orientation of each autocorrelogram's inner ring of peaks.

    Peaks are local maxima (5 x 5 neighbourhood) with a positive correlation, the centre
    excluded, refined to sub-bin precision by a parabola per axis; the ``n_peaks`` nearest the
    centre are kept. ``spacing`` is their mean distance from the centre in box units (bins when
    ``extent`` is None), ``orientation`` the circular mean of their angles mod 60 degrees, in
    ``[0, 60)``, angles measured from the +x axis towards +y; ``spacing_sd`` and
    ``orientation_sd`` (circular, degrees) say how regular the ring is. NaN when fewer than 3
    peaks are found. All units at once.

    Args:
        sacs: ``[units, 2 ny - 1, 2 nx - 1]`` from :func:`autocorrelogram`.
        extent: the rate maps' ``((x0, x1), (y0, y1))``.
    """
    from scipy import ndimage

    s = np.nan_to_num(_check_maps(sacs, "sacs"), nan=-np.inf)
    u, h, w = s.shape
    by, bx = _bin_size(extent, (h + 1) // 2, (w + 1) // 2)
    cy, cx = (h - 1) // 2, (w - 1) // 2
    local_max = ndimage.maximum_filter(s, size=(1, 5, 5), mode="constant", cval=-np.inf)
    peak = (local_max == s) & (s > 0)
    peak[:, cy, cx] = False
    unit, py, px = np.nonzero(peak)  # sorted by unit
    padded = np.pad(s, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    mid = s[unit, py, px]
    fy = py + _parabola_offset(padded[unit, py, px + 1], mid, padded[unit, py + 2, px + 1])
    fx = px + _parabola_offset(padded[unit, py + 1, px], mid, padded[unit, py + 1, px + 2])
    dy, dx = (fy - cy) * by, (fx - cx) * bx
    dist = np.hypot(dy, dx)
    order = np.lexsort((dist, unit))  # by unit, then distance
    unit, dist, ang = unit[order], dist[order], np.arctan2(dy, dx)[order]
    first = np.searchsorted(unit, unit, side="left")
    keep = (np.arange(len(unit)) - first) < n_peaks  # the n_peaks nearest of each unit
    unit, dist, ang = unit[keep], dist[keep], ang[keep]
    count = np.bincount(unit, minlength=u).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_d = np.bincount(unit, dist, minlength=u) / count
        sd_d = np.sqrt(np.maximum(np.bincount(unit, dist**2, minlength=u) / count - mean_d**2, 0))
        z = (
            np.bincount(unit, np.cos(6 * ang), minlength=u)
            + 1j * np.bincount(unit, np.sin(6 * ang), minlength=u)
        ) / count
    orient = np.degrees(np.angle(z)) / 6 % 60.0
    circ_sd = np.degrees(np.sqrt(np.maximum(-2 * np.log(np.maximum(np.abs(z), 1e-12)), 0))) / 6
    few = count < 3
    out = pd.DataFrame(
        {
            "unit": np.arange(u),
            "spacing": mean_d,
            "spacing_sd": sd_d,
            "orientation": orient,
            "orientation_sd": circ_sd,
            "n_peaks": np.bincount(unit, minlength=u),
        }
    )
    out.loc[few, ["spacing", "spacing_sd", "orientation", "orientation_sd"]] = np.nan
    return out


# ----------------------------------------------------------------------------- modules


def _merge_close_components(
    labels: np.ndarray,
    log_spacing: np.ndarray,
    theta6: np.ndarray,
    max_dlog: float,
    max_dtheta6: float,
) -> np.ndarray:
    """Relabel so that components with close means (both criteria) share one label, transitively."""
    comps = np.unique(labels)
    mean_log = np.array([log_spacing[labels == c].mean() for c in comps])
    mean_dir = np.array([np.angle(np.exp(1j * theta6[labels == c]).mean()) for c in comps])
    d_log = np.abs(mean_log[:, None] - mean_log[None, :])
    d_dir = np.abs(np.angle(np.exp(1j * (mean_dir[:, None] - mean_dir[None, :]))))
    from scipy.sparse.csgraph import connected_components

    _, merged = connected_components((d_log < max_dlog) & (d_dir < max_dtheta6), directed=False)
    return merged[np.searchsorted(comps, labels)]


def _cluster_modules(
    spacing: np.ndarray,
    orientation: np.ndarray,
    max_modules: int,
    min_units: int,
    spacing_tol: float,
    orientation_tol: float,
    seed: int,
) -> np.ndarray:
    """Module labels (0..k-1, ascending spacing; -1 for units in too-small clusters).

    Features: ``log(spacing) / spacing_tol`` and the orientation on the circle mod 60 degrees,
    ``(cos 6 theta, sin 6 theta) / (6 orientation_tol)``, so one unit of distance is a
    ``spacing_tol`` relative spacing change or ``orientation_tol`` radians of orientation. A
    Gaussian mixture (spherical, variance floor 0.25, i.e. half a unit of spread) is fitted for
    k = 1..max_modules and k chosen by BIC. A mixture also cuts a continuum (one spacing,
    orientations spread over the circle) into pieces, which are not modules: components whose
    mean spacings differ by less than ``3 spacing_tol`` (relative) and mean orientations by less
    than ``4 orientation_tol`` are merged, transitively, so a module is separated from the next
    by a gap in spacing or orientation.
    """
    from sklearn.mixture import GaussianMixture

    n = len(spacing)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    theta = np.radians(orientation) * 6
    feats = np.column_stack(
        [
            np.log(spacing) / spacing_tol,
            np.cos(theta) / (6 * orientation_tol),
            np.sin(theta) / (6 * orientation_tol),
        ]
    )
    best_bic, best_labels = np.inf, np.zeros(n, dtype=np.int64)
    with _single_thread_blas():
        for k in range(1, max(1, min(max_modules, n // max(min_units, 1))) + 1):
            gm = GaussianMixture(
                k, covariance_type="spherical", reg_covar=0.25, n_init=3, random_state=seed
            ).fit(feats)
            bic = gm.bic(feats)
            if bic < best_bic - 1e-9:
                best_bic, best_labels = bic, gm.predict(feats)
    best_labels = _merge_close_components(
        best_labels, np.log(spacing), theta, 3 * spacing_tol, 4 * 6 * orientation_tol
    )
    labels = np.full(n, -1, dtype=np.int64)
    kept = [c for c in np.unique(best_labels) if (best_labels == c).sum() >= min_units]
    kept.sort(key=lambda c: np.median(spacing[best_labels == c]))
    for new, c in enumerate(kept):
        labels[best_labels == c] = new
    return labels


@dataclass
class GridModules:
    """Grid cells, their spacing and orientation, and the modules they form.

    Attributes:
        frame: one row per unit: ``unit``, ``score60``, ``score90``, ``is_grid``, ``spacing``,
            ``orientation`` (degrees mod 60), ``spacing_sd``, ``orientation_sd``, ``n_peaks``,
            ``score_pass`` (score60 > threshold), ``regular`` (a regular six-peak ring),
            ``module`` (-1 for non-grid units and grid units in no module).
        summary: ``n_units``, ``n_score_pass``, ``n_grid``, ``n_modules``, ``spacings`` (per-module mean,
            ascending), ``spacing_sds``, ``orientations`` (per-module circular mean), ``orientation_sds``
            (circular sd, degrees),
            ``module_sizes``, ``spacing_ratios`` (consecutive), ``threshold``, ``null``
            (what the null scores are) and ``null_p95`` (95th percentile of the null).
        ratemaps, sacs: the inputs and their autocorrelograms; ``null_scores``: score60 under
            the null.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    ratemaps: np.ndarray
    sacs: np.ndarray
    null_scores: np.ndarray
    extent: Extent | None = None
    title: str = "Grid modules"
    description: str = (
        "Grid cells (score60 above the threshold), their spacing and orientation from the six "
        "autocorrelogram peaks nearest the centre, clustered into modules on (log spacing, "
        "orientation mod 60 degrees)."
    )
    top_per_module: int = field(default=4)

    def figures(self) -> list:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        figs = []
        f = self.frame
        modules = sorted(m for m in f["module"].unique() if m >= 0)
        picks: list[tuple[str, int]] = []
        for m in modules:
            top = f[f["module"] == m].nlargest(self.top_per_module, "score60")
            picks += [(f"module {m} unit {u}", int(u)) for u in top["unit"]]
        if not picks:  # no modules: show the best-scoring units
            top = f.nlargest(min(8, len(f)), "score60")
            picks = [(f"unit {u} ({s:.2f})", int(u)) for u, s in zip(top["unit"], top["score60"])]
        if picks:
            cols = max(self.top_per_module, 1) if modules else 4
            rows = math.ceil(len(picks) / cols)
            fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in picks])
            x_ext = y_ext = None
            if self.extent is not None:
                (x0, x1), (y0, y1) = self.extent
                ny, nx = self.ratemaps.shape[1:]
                x_ext = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
                y_ext = y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny
            for i, (_, u) in enumerate(picks):
                fig.add_trace(
                    go.Heatmap(
                        z=self.ratemaps[u], x=x_ext, y=y_ext, showscale=False, colorscale="Viridis"
                    ),
                    row=i // cols + 1,
                    col=i % cols + 1,
                )
            fig.update_yaxes(scaleanchor="x")
            fig.update_layout(
                title="Rate maps of the top-scoring units" + (" per module" if modules else ""),
                height=220 * rows + 80,
            )
            figs.append(fig)
        grid = f[f["is_grid"] & f["spacing"].notna()]
        fig = go.Figure()
        for m in sorted(grid["module"].unique()):
            part = grid[grid["module"] == m]
            fig.add_trace(
                go.Scatter(
                    x=part["spacing"],
                    y=part["orientation"],
                    mode="markers",
                    name=f"module {m}" if m >= 0 else "no module",
                    text=[f"unit {u}" for u in part["unit"]],
                )
            )
        fig.update_layout(
            title="Grid cells: spacing vs orientation, coloured by module",
            xaxis_title="spacing (box units)",
            yaxis_title="orientation (deg mod 60)",
            xaxis_type="log",
        )
        figs.append(fig)
        fig = go.Figure()
        fig.add_trace(
            go.Histogram(
                x=f["score60"].dropna(),
                name="units",
                opacity=0.7,
                histnorm="probability",
                nbinsx=40,
            )
        )
        if len(self.null_scores):
            fig.add_trace(
                go.Histogram(
                    x=self.null_scores[np.isfinite(self.null_scores)],
                    name=f"null ({self.summary['null']})",
                    opacity=0.6,
                    histnorm="probability",
                    nbinsx=40,
                )
            )
        fig.add_vline(x=self.summary["threshold"], line_dash="dash")
        fig.update_layout(
            title="score60: units vs null",
            barmode="overlay",
            xaxis_title="score60",
            yaxis_title="fraction",
        )
        figs.append(fig)
        return figs


def _bin_shuffle_null(maps: np.ndarray, n_shuffles: int, seed: int) -> np.ndarray:
    """score60 of maps whose valid bins are randomly permuted (spatial structure destroyed)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_shuffles):
        shuffled = maps.copy()
        flat = shuffled.reshape(len(maps), -1)
        keys = rng.random(flat.shape)
        keys[~np.isfinite(flat)] = np.inf  # NaN bins stay where they are
        order = np.argsort(keys, axis=1)  # each row: its valid bins in random order, then NaNs
        slots = np.argsort(~np.isfinite(flat), axis=1, kind="stable")  # valid bins, then NaNs
        np.put_along_axis(flat, slots, np.take_along_axis(flat, order, axis=1), axis=1)
        out.append(score(shuffled).frame["score60"].to_numpy())
    return np.concatenate(out) if out else np.zeros(0)


def shuffle_null(
    activations: Any,
    positions: Any,
    bins: int | tuple[int, int] = 20,
    extent: Extent | None = None,
    n_shuffles: int = 5,
    min_shift: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """score60 of rate maps from circularly shifted activity: ``[n_shuffles * units]``.

    Each unit's activity (flattened over batch and time, in order) is rolled by its own random
    shift in ``[min_shift, samples - min_shift)`` (default a tenth of the samples), which keeps
    its distribution and temporal structure but breaks its tie to position.
    """
    acts = _as_numpy(activations, "activations")
    pos = _as_numpy(positions, "positions")
    acts2 = acts.reshape(-1, acts.shape[-1])
    pos2 = pos.reshape(-1, 2)
    n = len(acts2)
    if n < 4:
        raise ValueError(f"activations must hold at least 4 samples, got {n}")
    min_shift = max(1, n // 10) if min_shift is None else int(min_shift)
    if not 0 < min_shift < n // 2 + 1:
        raise ValueError(f"min_shift must lie in [1, samples/2], got {min_shift}")
    rng = np.random.default_rng(seed)
    out = []
    idx = np.arange(n)
    for _ in range(n_shuffles):
        shifts = rng.integers(min_shift, n - min_shift + 1, size=acts2.shape[1])
        rolled = np.take_along_axis(acts2, (idx[:, None] - shifts[None, :]) % n, axis=0)
        out.append(score(ratemaps(rolled, pos2, bins=bins, extent=extent)).frame["score60"])
    return np.concatenate([np.asarray(o) for o in out])


def modules(
    ratemaps: Any,
    extent: Extent | None = None,
    threshold: float = 0.3,
    method: str = "banino",
    min_units: int = 3,
    max_modules: int = 8,
    spacing_tol: float = 0.05,
    orientation_tol_deg: float = 3.0,
    max_spacing_cv: float = 0.1,
    max_orientation_sd: float = 6.0,
    null_scores: Any = None,
    n_null_shuffles: int = 1,
    seed: int = 0,
) -> GridModules:
    """Grid cells and their modules from rate maps ``[units, ny, nx]``.

    Grid cells are units with ``score60 > threshold`` (:func:`score`) whose autocorrelogram has a
    regular inner ring: six peaks (:func:`spacing_orientation`) whose distances vary by at most
    ``max_spacing_cv`` of their mean and whose angles mod 60 have a circular sd of at most
    ``max_orientation_sd`` degrees. The score alone passes some smooth random fields and band
    cells (their SAC can correlate with its 60-degree rotation inside one annulus); a module
    needs a well-defined spacing and orientation, so the ring is required too (``frame`` keeps
    ``score_pass`` and ``regular`` separately). Spacing is in box units (from ``extent``),
    orientation in degrees mod 60. Grid cells are clustered into modules by :func:`_cluster_modules` (Gaussian mixture, k by BIC),
    and clusters of fewer than ``min_units`` cells are not modules (their cells get module -1).

    Args:
        ratemaps: ``[units, ny, nx]`` from :func:`ratemaps` (row = y).
        extent: ``((x0, x1), (y0, y1))`` of the maps, for spacing in box units.
        null_scores: score60 under a null, e.g. :func:`shuffle_null` on the activations; when
            None, a bin-permutation null of the maps themselves (``n_null_shuffles`` draws).
        spacing_tol, orientation_tol_deg: one unit of the clustering distance.
    """
    maps = _check_maps(ratemaps)
    for name, value in (
        ("threshold", threshold),
        ("spacing_tol", spacing_tol),
        ("orientation_tol_deg", orientation_tol_deg),
    ):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if spacing_tol <= 0 or orientation_tol_deg <= 0:
        raise ValueError("spacing_tol and orientation_tol_deg must be positive")
    if not isinstance(min_units, (int, np.integer)) or min_units < 1:
        raise ValueError(f"min_units must be a positive int, got {min_units!r}")
    if extent is not None:
        extent = _check_extent(extent)
    scores = score(maps, method=method, threshold=threshold)
    geo = spacing_orientation(scores.sacs, extent=extent)
    frame = scores.frame[["unit", "score60", "score90", "is_grid"]].copy()
    for col in ("spacing", "spacing_sd", "orientation", "orientation_sd"):
        frame[col] = geo[col].to_numpy()
    frame["n_peaks"] = geo["n_peaks"].to_numpy()
    frame["score_pass"] = frame["is_grid"]
    frame["regular"] = (
        (frame["n_peaks"] == 6)
        & (frame["spacing_sd"] <= max_spacing_cv * frame["spacing"])
        & (frame["orientation_sd"] <= max_orientation_sd)
    )
    frame["is_grid"] = frame["score_pass"] & frame["regular"]
    frame["module"] = -1
    sel = frame["is_grid"].to_numpy()
    labels = _cluster_modules(
        frame.loc[sel, "spacing"].to_numpy(),
        frame.loc[sel, "orientation"].to_numpy(),
        max_modules=max_modules,
        min_units=min_units,
        spacing_tol=spacing_tol,
        orientation_tol=math.radians(orientation_tol_deg),
        seed=seed,
    )
    frame.loc[sel, "module"] = labels
    if null_scores is None:
        null = _bin_shuffle_null(maps, n_null_shuffles, seed)
        null_kind = "bin permutation of each map"
    else:
        null = np.asarray(_as_numpy(null_scores, "null_scores")).ravel()
        null_kind = "given (e.g. circularly shifted activity)"
    spacings, sds, orients, orient_sds, sizes = [], [], [], [], []
    for m in range(int(labels.max()) + 1 if len(labels) else 0):
        part = frame[frame["module"] == m]
        spacings.append(float(part["spacing"].mean()))
        sds.append(float(part["spacing"].std(ddof=0)))
        z = np.exp(6j * np.radians(part["orientation"].to_numpy())).mean()
        orients.append(float(np.degrees(np.angle(z)) / 6 % 60.0))
        orient_sds.append(float(np.degrees(np.sqrt(-2 * np.log(max(abs(z), 1e-12)))) / 6))
        sizes.append(len(part))
    finite_null = null[np.isfinite(null)]
    summary = {
        "n_units": len(maps),
        "threshold": threshold,
        "method": method,
        "n_score_pass": int(frame["score_pass"].sum()),
        "n_grid": int(frame["is_grid"].sum()),
        "n_modules": len(spacings),
        "spacings": spacings,
        "spacing_sds": sds,
        "orientations": orients,
        "orientation_sds": orient_sds,
        "module_sizes": sizes,
        "spacing_ratios": [b / a for a, b in zip(spacings[:-1], spacings[1:])],
        "null": null_kind,
        "null_p95": float(np.percentile(finite_null, 95)) if len(finite_null) else float("nan"),
        "fraction_above_null_p95": float(
            np.mean(frame["score60"].to_numpy() > np.percentile(finite_null, 95))
        )
        if len(finite_null)
        else float("nan"),
        "spacing_unit": "box units" if extent is not None else "bins",
    }
    return GridModules(
        frame=frame,
        summary=summary,
        ratemaps=maps,
        sacs=scores.sacs,
        null_scores=null,
        extent=extent,
    )


# ----------------------------------------------------------------------------- ground truth


def _grid_field(xy: np.ndarray, spacing: float, orientation_deg: float, phase: np.ndarray):
    """Rectified sum of three plane waves: a hexagonal lattice of peaks ``spacing`` apart.

    The lattice's nearest-neighbour peaks lie at ``orientation + k 60`` degrees (so the wave
    vectors point at ``orientation + 30 + k 60``, length ``4 pi / (sqrt(3) spacing)``); one peak
    sits at ``phase``. Values in ``[0, 1]``.
    """
    k = 4 * math.pi / (math.sqrt(3) * spacing)
    angles = np.radians(orientation_deg + 30.0 + np.array([0.0, 60.0, 120.0]))
    kvec = k * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [3, 2]
    g = np.cos((xy - phase) @ kvec.T).sum(-1)
    return np.maximum(g, 0.0) / 3.0


@dataclass
class SyntheticPopulation:
    """A population of rate maps with known answers (:func:`synthetic_population`).

    Attributes:
        ratemaps: ``[units, ny, nx]`` (row = y), sampled at bin centres, noise added.
        truth: one row per unit: ``unit``, ``kind`` (grid / place / band / random / noise),
            ``module`` (-1 if not grid), ``spacing``, ``orientation`` (degrees mod 60, grid
            cells), ``phase_x``, ``phase_y``.
        extent: the box ``((x0, x1), (y0, y1))``.
    """

    ratemaps: np.ndarray
    truth: pd.DataFrame
    extent: Extent
    params: dict[str, Any]

    def rates(self, positions: Any) -> np.ndarray:
        """Noise-free activity ``[samples, units]`` of grid, place and band units at positions
        ``[samples, 2]`` (random-field and noise units read from their rate map's nearest bin),
        to test the whole path activations -> :func:`ratemaps` -> :func:`score`."""
        xy = _as_numpy(positions, "positions").reshape(-1, 2)
        out = np.zeros((len(xy), len(self.truth)))
        (x0, x1), (y0, y1) = self.extent
        ny, nx = self.ratemaps.shape[1:]
        ix = np.clip(((xy[:, 0] - x0) / (x1 - x0) * nx).astype(int), 0, nx - 1)
        iy = np.clip(((xy[:, 1] - y0) / (y1 - y0) * ny).astype(int), 0, ny - 1)
        for row in self.truth.itertuples():
            out[:, row.unit] = _unit_field(row, xy, self.params)
            if row.kind in ("random", "noise"):
                out[:, row.unit] = self.ratemaps[row.unit, iy, ix]
        return out


def _unit_field(row: Any, xy: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    phase = np.array([row.phase_x, row.phase_y])
    if row.kind == "grid":
        return _grid_field(xy, row.spacing, row.orientation, phase)
    if row.kind == "place":
        d2 = ((xy - phase) ** 2).sum(-1)
        return np.exp(-d2 / (2 * params["place_width"] ** 2))
    if row.kind == "band":
        theta = math.radians(row.orientation)
        k = 2 * math.pi / row.spacing
        proj = (xy - phase) @ np.array([math.cos(theta), math.sin(theta)])
        return np.maximum(np.cos(k * proj), 0.0)
    return np.zeros(len(xy))


def synthetic_population(
    modules: Sequence[tuple[float, float]] = ((0.28, 5.0), (0.4, 20.0), (0.56, 35.0)),
    cells_per_module: int | Sequence[int] = 20,
    n_place: int = 10,
    n_band: int = 10,
    n_random: int = 10,
    n_noise: int = 0,
    noise: float = 0.0,
    bins: int | tuple[int, int] = 20,
    extent: Extent = ((0.0, 1.0), (0.0, 1.0)),
    place_width: float = 0.08,
    random_smoothness: float = 1.5,
    seed: int = 0,
) -> SyntheticPopulation:
    """A population of rate maps with known grid modules and distractors.

    Args:
        modules: ``(spacing, orientation_deg)`` per module; spacing in box units (the
            nearest-neighbour distance of the lattice), orientation of its peaks mod 60.
        cells_per_module: grid cells per module (an int or one per module); each cell gets a
            uniformly random phase (spatial offset).
        n_place: Gaussian place fields of width ``place_width`` at random centres.
        n_band: band cells (one rectified plane wave; random orientation, period 0.2..0.5 of
            the box width, phase).
        n_random: smooth random fields (white noise blurred by ``random_smoothness`` bins).
        n_noise: pure white-noise maps.
        noise: sd of Gaussian noise added to every map, relative to the map's own sd.
        bins, extent: the rate-map grid and the box.
        seed: every random draw.

    Returns:
        :class:`SyntheticPopulation` with ``ratemaps [units, ny, nx]`` and ``truth``.
    """
    from scipy import ndimage

    extent = _check_extent(extent)
    nx, ny = _check_bins(bins)
    if isinstance(cells_per_module, (int, np.integer)):
        counts = [int(cells_per_module)] * len(modules)
    else:
        counts = [int(c) for c in cells_per_module]
    if len(counts) != len(modules):
        raise ValueError(
            f"cells_per_module must be an int or one count per module ({len(modules)}), got "
            f"{cells_per_module!r}"
        )
    for spacing, _ in modules:
        if not spacing > 0:
            raise ValueError(f"module spacings must be positive, got {modules!r}")
    for name, value in (
        ("n_place", n_place),
        ("n_band", n_band),
        ("n_random", n_random),
        ("n_noise", n_noise),
    ):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = extent
    width = x1 - x0
    lo, hi = np.array([x0, y0]), np.array([x1, y1])
    rows: list[dict[str, Any]] = []
    for m, ((spacing, orient), count) in enumerate(zip(modules, counts)):
        for _ in range(count):
            ph = lo + rng.random(2) * (hi - lo)
            rows.append(
                {
                    "kind": "grid",
                    "module": m,
                    "spacing": float(spacing),
                    "orientation": float(orient) % 60.0,
                    "phase_x": ph[0],
                    "phase_y": ph[1],
                }
            )
    for _ in range(n_place):
        ph = lo + rng.random(2) * (hi - lo)
        rows.append(
            {
                "kind": "place",
                "module": -1,
                "spacing": np.nan,
                "orientation": np.nan,
                "phase_x": ph[0],
                "phase_y": ph[1],
            }
        )
    for _ in range(n_band):
        ph = lo + rng.random(2) * (hi - lo)
        rows.append(
            {
                "kind": "band",
                "module": -1,
                "spacing": float(rng.uniform(0.2, 0.5) * width),
                "orientation": float(rng.uniform(0, 180)),
                "phase_x": ph[0],
                "phase_y": ph[1],
            }
        )
    for kind, count in (("random", n_random), ("noise", n_noise)):
        for _ in range(count):
            rows.append(
                {
                    "kind": kind,
                    "module": -1,
                    "spacing": np.nan,
                    "orientation": np.nan,
                    "phase_x": np.nan,
                    "phase_y": np.nan,
                }
            )
    truth = pd.DataFrame(
        rows, columns=["kind", "module", "spacing", "orientation", "phase_x", "phase_y"]
    )
    truth.insert(0, "unit", np.arange(len(truth)))
    params = {"place_width": place_width}
    xs = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
    ys = y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny
    gx, gy = np.meshgrid(xs, ys)  # [ny, nx]: row = y
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    maps = np.zeros((len(truth), ny, nx))
    for row in truth.itertuples():
        if row.kind == "random":
            field_ = ndimage.gaussian_filter(
                rng.normal(size=(ny, nx)), random_smoothness, mode="wrap"
            )
            maps[row.unit] = field_ - field_.min()
        elif row.kind == "noise":
            maps[row.unit] = rng.random((ny, nx))
        else:
            maps[row.unit] = _unit_field(row, xy, params).reshape(ny, nx)
    if noise > 0:
        sd = maps.reshape(len(maps), -1).std(1)[:, None, None]
        maps = maps + noise * sd * rng.normal(size=maps.shape)
    return SyntheticPopulation(ratemaps=maps, truth=truth, extent=extent, params=params)
