"""Grid-cell formulas: rate maps, spatial autocorrelograms, grid scores, spacing, modules.

Pure array maths (numpy / scipy / scikit-learn), no model running and no plotting: the analysis
module :mod:`probekit.grid` wraps these into results with figures, and the ``grid-rnn`` recipe
measures its card with them. Sources: the grid score of Sargolini et al. (2006, Science
312:758) as used by Banino et al. (2018, Nature 557:429) and Sorscher et al. (2023, Neuron
111:121); the method in ``docs/grid.md``.

Conventions: a rate map is ``[ny, nx]`` with row = y (increasing with y), column = x, NaN where
nothing was visited; a population of maps is ``[units, ny, nx]``; an extent is
``((x0, x1), (y0, y1))`` in box units.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

ANGLES = (30, 45, 60, 90, 120, 135, 150)
Extent = tuple[tuple[float, float], tuple[float, float]]


# ----------------------------------------------------------------------------- input checks


def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` (numpy, torch or a nested sequence) as a float64 numpy array; ``name`` is the
    argument named in the error for a non-numeric input."""
    torch = sys.modules.get("torch")  # a torch tensor implies torch is imported; never import it
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def check_extent(extent: Any) -> Extent:
    """``((x0, x1), (y0, y1))`` as floats, with ``x1 > x0`` and ``y1 > y0``."""
    try:
        (x0, x1), (y0, y1) = extent
        x0, x1, y0, y1 = float(x0), float(x1), float(y0), float(y1)
    except (TypeError, ValueError):
        raise ValueError(f"extent must be ((x0, x1), (y0, y1)), got {extent!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must have x1 > x0 and y1 > y0, got {extent!r}")
    return ((x0, x1), (y0, y1))


def check_bins(bins: Any) -> tuple[int, int]:
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


def check_maps(maps: Any, name: str = "ratemaps") -> np.ndarray:
    """Rate maps as float64 ``[units, ny, nx]`` (one ``[ny, nx]`` map gets a unit axis)."""
    arr = as_array(maps, name)
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
    acts = as_array(activations, "activations")
    pos = as_array(positions, "positions")
    if pos.shape[-1] != 2 or pos.ndim not in (2, 3):
        raise ValueError(f"positions must be [samples, 2] or [batch, time, 2], got {pos.shape}")
    if acts.ndim != pos.ndim or acts.shape[:-1] != pos.shape[:-1]:
        raise ValueError(
            f"activations must be [samples, units] or [batch, time, units] matching positions "
            f"{pos.shape}, got {acts.shape}"
        )
    acts = acts.reshape(-1, acts.shape[-1])
    pos = pos.reshape(-1, 2)
    bad = ~np.isfinite(pos).all(1)
    if bad.any():
        raise ValueError(
            f"positions must be finite; sample {int(np.argmax(bad))} is {pos[np.argmax(bad)]} "
            f"({int(bad.sum())} non-finite samples)"
        )
    nx, ny = check_bins(bins)
    if extent is None:
        if len(pos) == 0:
            raise ValueError("positions is empty; pass extent")
        extent = ((pos[:, 0].min(), pos[:, 0].max()), (pos[:, 1].min(), pos[:, 1].max()))
    (x0, x1), (y0, y1) = check_extent(extent)
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
    x = check_maps(maps, "maps")
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
    lags = _lag_index(shape, ny, nx)
    u = len(x)

    def corr(fa: np.ndarray, conj_fb: np.ndarray) -> np.ndarray:
        # c[d] = sum_p a[p + d] b[p] for lags d = -(n - 1) .. n - 1, lag 0 at the centre
        c = fft.irfft2(fa * conj_fb, s=shape)
        return np.take(c.reshape(u, -1), lags, axis=1).reshape(u, 2 * ny - 1, 2 * nx - 1)

    # the overlap counts are integers of at most ny * nx: float32 transforms round them exactly
    fm32 = fft.rfft2(m.astype(np.float32), s=shape)
    n = np.rint(corr(fm32, np.conj(fm32))).astype(np.float64)
    conj_fm = np.conj(fm)
    s1, s11, s12 = corr(fz, conj_fm), corr(fz2, conj_fm), corr(fz, np.conj(fz))
    # corr(m, z)[d] = corr(z, m)[-d] and n[d] = n[-d] exactly (integer counts), so the second
    # copy's sums, and its variance, are the first's point-reflected: computed once.
    ns11 = n * s11
    var1 = ns11 - s1 * s1
    var2 = var1[:, ::-1, ::-1]
    cov = n * s12
    cov -= s1 * s1[:, ::-1, ::-1]
    np.maximum(ns11, 1e-300, out=ns11)
    ns11 *= 1e-9
    ok1 = var1 > ns11
    ok = (n >= 2) & ok1 & ok1[:, ::-1, ::-1]
    bad = ~ok
    den = var1 * var2
    np.copyto(den, 1.0, where=bad)
    with np.errstate(invalid="ignore", divide="ignore"):
        sac = np.divide(cov, np.sqrt(den, out=den), out=cov)
    np.copyto(sac, np.nan, where=bad)
    return np.clip(sac, -1.0, 1.0, out=sac, where=ok)


@functools.lru_cache(maxsize=8)
def _lag_index(shape: tuple[int, int], ny: int, nx: int) -> np.ndarray:
    """Flat indices into a circular correlation of ``shape`` of the lags -(n-1)..n-1 per axis,
    in SAC order (negative lags wrap to the end)."""
    rows = np.r_[shape[0] - (ny - 1) : shape[0], 0:ny]
    cols = np.r_[shape[1] - (nx - 1) : shape[1], 0:nx]
    return (rows[:, None] * shape[1] + cols[None, :]).ravel()


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

    A SAC is point-symmetric (lag ``d`` and ``-d`` correlate the same pairs of bins), so is its
    rotation about the centre, and so is every annulus: each sum over an annulus is twice the
    sum over its pixels before the centre in flat order (the centre is in no annulus). Only
    those are kept. ``pixels``: their flat indices; ``op``: the rotation operator's rows for
    them, angle major (``[A * P_half, P]``); ``masks``: ``[K, P_half]`` the annuli on them;
    ``area``: ``[K]`` the full annuli's sizes.
    """
    masks, _ = annulus_masks(shape)
    flat = masks.reshape(len(masks), -1)
    p = shape[0] * shape[1]
    pixels = np.flatnonzero(flat.any(0))
    if shape[0] % 2 and shape[1] % 2 and np.array_equal(flat, flat[:, ::-1]):
        pixels = pixels[pixels < (p - 1) // 2]
        weight = 2.0
    else:  # an even-sized SAC has no centre bin to reflect about: keep every pixel
        weight = 1.0
    full = _rotation_operator(shape, tuple(float(a) for a in ANGLES))
    rows = (np.arange(len(ANGLES))[:, None] * p + pixels[None, :]).ravel()
    mask_sel = np.ascontiguousarray(weight * flat[:, pixels].astype(np.float64))
    return full[rows], pixels, mask_sel, flat.sum(1).astype(np.float64)


@functools.lru_cache(maxsize=16)
def _prefilter_matrix(n: int) -> np.ndarray:
    """``[n, n]``: scipy's order-3, mode ``"constant"`` spline prefilter along one axis, as the
    matrix it applies (read off by filtering the identity)."""
    from scipy import ndimage

    return ndimage.spline_filter1d(np.eye(n), 3, axis=0, mode="constant", output=np.float64)


def _spline_coefficients(images: np.ndarray) -> np.ndarray:
    """The order-3, mode ``"constant"`` spline prefilter scipy's rotate applies to each plane:
    ``B_h @ image @ B_w^T`` with the prefilter matrices (equal to ``spline_filter1d`` along
    both axes up to float rounding, and a few times faster for a stack of small images)."""
    _, h, w = images.shape
    return _prefilter_matrix(h) @ images @ _prefilter_matrix(w).T


def rotate_stack(images: Any, angles: Sequence[float] = ANGLES) -> np.ndarray:
    """``[len(angles), n, h, w]``: every image rotated about its centre by every angle (degrees).

    Equal (to float rounding) to ``scipy.ndimage.rotate(img, angle, reshape=False)`` with its
    defaults (cubic spline, ``mode="constant"``, ``cval=0``), for all images at once. NaN is not
    allowed (replace it first).
    """
    imgs = check_maps(images, "images")
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
    s = _nan_as_zero(check_maps(sac, "sac"))
    with single_thread_blas():
        return _scores_from_sac(s, method, chunk)


def _nan_as_zero(s: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(s, nan=0.0)`` (a new array; infinities, never in an autocorrelogram, as
    it treats them) in two passes instead of its six."""
    s = np.where(np.isnan(s), 0.0, s)
    if np.isinf(s).any():
        np.nan_to_num(s, copy=False)
    return s


@contextlib.contextmanager
def single_thread_blas():
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
    b_h, b_w = _prefilter_matrix(h), _prefilter_matrix(w)
    for lo in range(0, u, chunk):
        part = s[lo : lo + chunk]
        n = len(part)
        # units last ([pixels, n]), so the sparse product reads whole rows
        sac_t = np.ascontiguousarray(part.reshape(n, -1).T)
        flat_t = sac_t[pixels]  # [P_sel, n]
        # the spline coefficients B_h @ sac @ B_w^T of every unit, in the same layout
        coef_t = np.matmul(b_w, (b_h @ sac_t.reshape(h, w * n)).reshape(h, w, n))
        rot = (op @ coef_t.reshape(h * w, n)).reshape(n_ang, -1, n)  # [A, P_sel, n]
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


def score_table(
    maps: Any, method: str = "banino", threshold: float = 0.3, chunk: int = 128
) -> tuple[pd.DataFrame, dict[str, Any], np.ndarray]:
    """Grid scores of rate maps ``[units, ny, nx]`` -> ``(frame, summary, sacs)``.

    NaN-aware SAC (:func:`autocorrelogram`), its rotations by 30..150 degrees as
    ``scipy.ndimage.rotate(sac, a, reshape=False)``, the annulus sweep of
    :func:`grid_scores_from_sac`. A constant (e.g. silent) map has no SAC and scores NaN. A unit
    is a grid cell when ``score60 > threshold``. ``frame`` has one row per unit (``unit``,
    ``score60``, ``score90``, ``mask60``, ``mask90``, ``mask60_outer``, ``is_grid``);
    ``sacs`` is ``[units, 2 ny - 1, 2 nx - 1]``.
    """
    maps = check_maps(maps)
    if method not in ("banino", "min_max"):
        raise ValueError(f"method must be 'banino' or 'min_max', got {method!r}")
    # Each chunk's autocorrelograms are scored while they are still in the CPU's cache (the
    # same arithmetic per unit as autocorrelogram() then grid_scores_from_sac()).
    u, ny, nx = maps.shape
    sacs = np.empty((u, 2 * ny - 1, 2 * nx - 1))
    parts = []
    with single_thread_blas():
        for lo in range(0, u, chunk):
            block = _autocorrelogram_block(maps[lo : lo + chunk])
            sacs[lo : lo + chunk] = block
            parts.append(_scores_from_sac(_nan_as_zero(block), method, chunk))
    res = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
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
    return frame, summary, sacs


# ----------------------------------------------------------------------------- spacing, orientation


def _bin_size(extent: Extent | None, ny: int, nx: int) -> tuple[float, float]:
    if extent is None:
        return 1.0, 1.0
    (x0, x1), (y0, y1) = check_extent(extent)
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

    s = np.nan_to_num(check_maps(sacs, "sacs"), nan=-np.inf)
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


def cluster_modules(
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
    if n < max(min_units, 2):  # too few grid cells for any module (and for a mixture fit)
        return np.full(n, -1, dtype=np.int64)
    theta = np.radians(orientation) * 6
    feats = np.column_stack(
        [
            np.log(spacing) / spacing_tol,
            np.cos(theta) / (6 * orientation_tol),
            np.sin(theta) / (6 * orientation_tol),
        ]
    )
    best_bic, best_labels = np.inf, np.zeros(n, dtype=np.int64)
    with single_thread_blas():
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


def bin_shuffle_null(maps: np.ndarray, n_shuffles: int, seed: int) -> np.ndarray:
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
        out.append(score_table(shuffled)[0]["score60"].to_numpy())
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
    acts = as_array(activations, "activations")
    pos = as_array(positions, "positions")
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
        out.append(score_table(ratemaps(rolled, pos2, bins=bins, extent=extent))[0]["score60"])
    return np.concatenate([np.asarray(o) for o in out])


def module_geometry(frame: pd.DataFrame) -> dict[str, list]:
    """Per-module spacing and orientation from a module frame (columns ``module`` (-1 = none),
    ``spacing``, ``orientation`` in degrees mod 60): ``spacings`` (mean), ``spacing_sds``
    (population sd), ``orientations`` (circular mean mod 60 of ``6 theta``, over 6),
    ``orientation_sds`` (circular sd ``sqrt(-2 ln R) / 6``, degrees), ``module_sizes``."""
    labels = frame["module"].to_numpy()
    spacings, sds, orients, orient_sds, sizes = [], [], [], [], []
    for m in range(int(labels.max()) + 1 if len(labels) else 0):
        part = frame[frame["module"] == m]
        spacings.append(float(part["spacing"].mean()))
        sds.append(float(part["spacing"].std(ddof=0)))
        z = np.exp(6j * np.radians(part["orientation"].to_numpy())).mean()
        orients.append(float(np.degrees(np.angle(z)) / 6 % 60.0))
        orient_sds.append(float(np.degrees(np.sqrt(-2 * np.log(max(abs(z), 1e-12)))) / 6))
        sizes.append(len(part))
    return {
        "spacings": spacings,
        "spacing_sds": sds,
        "orientations": orients,
        "orientation_sds": orient_sds,
        "module_sizes": sizes,
    }


def module_table(
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
    unit: str = "position units",
) -> dict[str, Any]:
    """Grid cells and their modules from rate maps ``[units, ny, nx]`` (the maths of
    :func:`probekit.grid.modules`, which describes the method) as a dict: ``frame``,
    ``summary``, ``ratemaps``, ``sacs``, ``null_scores``, ``extent``.

    Args:
        ratemaps: ``[units, ny, nx]`` (row = y); extent: ``((x0, x1), (y0, y1))`` or None.
        threshold, method: of :func:`score_table`.
        min_units, max_modules: the smallest module, the most modules tried.
        spacing_tol, orientation_tol_deg: one unit of the clustering distance
            (:func:`cluster_modules`).
        max_spacing_cv, max_orientation_sd: how regular a grid cell's six-peak ring must be.
        null_scores: score60 under a null; None: ``n_null_shuffles`` bin permutations.
        unit: the unit of the positions (and so of spacing), e.g. ``"m"``; reported as
            ``summary["spacing_unit"]`` and on the figures' axes.
        seed: the mixture's and the null's seed.
    """
    maps = check_maps(ratemaps)
    for name, value in (
        ("threshold", threshold),
        ("spacing_tol", spacing_tol),
        ("orientation_tol_deg", orientation_tol_deg),
    ):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if spacing_tol <= 0 or orientation_tol_deg <= 0:
        raise ValueError("spacing_tol and orientation_tol_deg must be positive")
    from probekit.validation import check_positive_int  # (imports torch: only when called)

    check_positive_int("min_units", min_units)
    if extent is not None:
        extent = check_extent(extent)
    scores, _, sacs = score_table(maps, method=method, threshold=threshold)
    geo = spacing_orientation(sacs, extent=extent)
    frame = scores[["unit", "score60", "score90", "is_grid"]].copy()
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
    labels = cluster_modules(
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
        null = bin_shuffle_null(maps, n_null_shuffles, seed)
        null_kind = "bin permutation of each map"
    else:
        null = np.asarray(as_array(null_scores, "null_scores")).ravel()
        null_kind = "given (e.g. circularly shifted activity)"
    per_module = module_geometry(frame)
    spacings = per_module["spacings"]
    finite_null = null[np.isfinite(null)]
    summary = {
        "n_units": len(maps),
        "threshold": threshold,
        "method": method,
        "n_score_pass": int(frame["score_pass"].sum()),
        "n_grid": int(frame["is_grid"].sum()),
        "n_modules": len(spacings),
        **per_module,
        "spacing_ratios": [b / a for a, b in zip(spacings[:-1], spacings[1:])],
        "null": null_kind,
        "null_p95": float(np.percentile(finite_null, 95)) if len(finite_null) else float("nan"),
        "fraction_above_null_p95": float(
            np.mean(frame["score60"].to_numpy() > np.percentile(finite_null, 95))
        )
        if len(finite_null)
        else float("nan"),
        "spacing_unit": unit if extent is not None else "bins",
    }
    return {
        "frame": frame,
        "summary": summary,
        "ratemaps": maps,
        "sacs": sacs,
        "null_scores": null,
        "extent": extent,
    }
