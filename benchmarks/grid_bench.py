"""Vectorised grid scoring vs a straightforward per-unit loop, 4096 units at 20 x 20 bins.

The population is a synthetic one (``pk.grid.synthetic_population``: grid cells in four
modules, place, band and random-field distractors, 10 % noise, 15 unvisited bins per map), so
the scores cover every kind of map.

- loop: for each unit, the autocorrelogram by direct correlation (``scipy.signal.correlate2d``
  of the masked map, its square and the validity mask: the overlap count, sums and sums of
  squares at every lag), then ``scipy.ndimage.rotate(sac, angle, reshape=False)`` for each of
  the 7 angles, then the 10 annuli one by one — the reference scorer written out per unit;
- vectorised: ``pk.grid.score``: all autocorrelograms by FFT at once, all rotations as one
  sparse operator on the spline coefficients, the annulus sums as matrix products. Timed cold
  (first call in the process, building the rotation operator) and warm; the loop and the warm
  call alternate ``--repeats`` times and the best of each is kept (this VM's speed drifts).

Prints both timings, the ratios, the largest score difference (must be <= 1e-6) and peak RSS.
Run: ``python benchmarks/grid_bench.py`` (``--units``, ``--loop-units`` to time the loop on a
subset and scale it; the default runs the loop on every unit).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def _population(units: int, bins: int, seed: int) -> np.ndarray:
    import probekit.grid as grid

    per_kind = units // 8
    n_grid = units - 3 * per_kind
    counts = [n_grid // 4 + (1 if i < n_grid % 4 else 0) for i in range(4)]
    pop = grid.synthetic_population(
        modules=[(0.2, 3.0), (0.28, 14.0), (0.39, 27.0), (0.55, 41.0)],
        cells_per_module=counts,
        n_place=per_kind,
        n_band=per_kind,
        n_random=per_kind,
        noise=0.1,
        bins=bins,
        seed=seed,
    )
    maps = pop.ratemaps.copy()
    rng = np.random.default_rng(seed)
    holes = rng.integers(0, bins, size=(len(maps), 15, 2))
    maps[np.arange(len(maps))[:, None], holes[..., 0], holes[..., 1]] = np.nan
    return maps


def _sac_loop(m: np.ndarray) -> np.ndarray:
    """Pearson correlation at every lag over the overlapping valid bins, by direct correlation."""
    from scipy.signal import correlate2d

    valid = np.isfinite(m)
    x = np.where(valid, m - m[valid].mean(), 0.0)
    x = x / max(np.sqrt((x * x).sum() / valid.sum()), 1e-300)
    v = valid.astype(np.float64)
    n = np.rint(correlate2d(v, v))
    s1, s2 = correlate2d(x, v), correlate2d(v, x)
    s11, s22 = correlate2d(x * x, v), correlate2d(v, x * x)
    s12 = correlate2d(x, x)
    var1, var2 = n * s11 - s1 * s1, n * s22 - s2 * s2
    ok = (n >= 2) & (var1 > 1e-9 * n * s11) & (var2 > 1e-9 * n * s22)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (n * s12 - s1 * s2) / np.sqrt(var1 * var2)
    r[~ok] = np.nan
    return r


def score_loop(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """score60, score90 of every map, one unit at a time (the reference scorer written out)."""
    from scipy import ndimage

    angles = (30, 45, 60, 90, 120, 135, 150)
    bins = maps.shape[1]
    h = 2 * bins - 1
    yy, xx = np.mgrid[:h, :h]
    r = np.hypot(yy - (h - 1) / 2, xx - (h - 1) / 2)
    masks = [(r >= 0.2 * bins) & (r <= o) for o in np.linspace(0.4, 1.0, 10) * bins]
    s60 = np.empty(len(maps))
    s90 = np.empty(len(maps))
    for u, m in enumerate(maps):
        sac = _sac_loop(m)
        if not np.isfinite(sac[bins - 1, bins - 1]):
            s60[u] = s90[u] = np.nan
            continue
        sac = np.nan_to_num(sac)
        rots = {a: ndimage.rotate(sac, a, reshape=False) for a in angles}
        best60 = best90 = -np.inf
        for mask in masks:
            mu = sac[mask].mean()
            c = sac[mask] - mu
            den = (c * c).sum() + 1e-5 * mask.sum()
            corr = {a: (c * (rots[a][mask] - mu)).sum() / den for a in angles}
            best60 = max(best60, (corr[60] + corr[120]) / 2 - (corr[30] + corr[90] + corr[150]) / 3)
            best90 = max(best90, corr[90] - (corr[45] + corr[135]) / 2)
        s60[u], s90[u] = best60, best90
    return s60, s90


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=4096)
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--loop-units", type=int, default=None, help="time the loop on this many")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="loop / warm pairs, timed alternately")
    args = ap.parse_args()

    import probekit.grid as grid

    maps = _population(args.units, args.bins, args.seed)
    wall, cpu = time.perf_counter, time.process_time
    t0, c0 = wall(), cpu()
    cold = grid.score(maps)
    t_cold, c_cold = wall() - t0, cpu() - c0
    rss_vec = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    n_loop = args.units if args.loop_units is None else min(args.loop_units, args.units)
    scale = args.units / n_loop
    # The loop and the warm vectorised call alternate, so that each pair sees the machine in
    # the same state (this VM's speed drifts by 10-30% over minutes).
    pairs = []
    for _ in range(max(1, args.repeats)):
        t0, c0 = wall(), cpu()
        l60, l90 = score_loop(maps[:n_loop])
        t_loop, c_loop = (wall() - t0) * scale, (cpu() - c0) * scale
        t0, c0 = wall(), cpu()
        warm = grid.score(maps)
        pairs.append((t_loop, c_loop, wall() - t0, cpu() - c0))
    t_loop, c_loop = min(p[0] for p in pairs), min(p[1] for p in pairs)
    t_warm, c_warm = min(p[2] for p in pairs), min(p[3] for p in pairs)
    pair_ratios = sorted(p[1] / p[3] for p in pairs)

    v60 = warm.frame["score60"].to_numpy()[:n_loop]
    v90 = warm.frame["score90"].to_numpy()[:n_loop]
    assert np.array_equal(np.isnan(v60), np.isnan(l60)), "NaN scores differ"
    diff = max(np.nanmax(np.abs(v60 - l60)), np.nanmax(np.abs(v90 - l90)))
    same_cold = np.array_equal(cold.frame["score60"], warm.frame["score60"], equal_nan=True)
    print(f"{args.units} units, {args.bins}x{args.bins} bins, 7 angles, 10 annuli")
    print(
        "times: wall s (CPU s of this process; on a shared machine the CPU ratio is the steadier);"
        f" loop and warm: best of {len(pairs)} alternating runs"
    )
    print(
        f"loop (per unit: correlate2d SAC, ndimage.rotate x7): {t_loop:8.2f} ({c_loop:.2f})"
        + (f" (timed on {n_loop} units, scaled)" if n_loop < args.units else "")
    )
    print(
        f"vectorised pk.grid.score, cold (builds rotation operator): {t_cold:8.3f} ({c_cold:.3f})"
    )
    print(f"vectorised pk.grid.score, warm: {t_warm:8.3f} ({c_warm:.3f})")
    print(
        f"ratio loop / vectorised, wall: cold {t_loop / t_cold:.1f}x, warm {t_loop / t_warm:.1f}x;"
        f" CPU: cold {c_loop / c_cold:.1f}x, warm {c_loop / c_warm:.1f}x"
    )
    print(
        "CPU ratio of each alternating pair (loop / warm): "
        + ", ".join(f"{r:.1f}x" for r in pair_ratios)
        + f"; median {float(np.median(pair_ratios)):.1f}x"
    )
    print(
        f"max |score difference| over {n_loop} units: {diff:.2e} (limit 1e-6); "
        f"cold == warm: {same_cold}"
    )
    print(f"peak RSS after vectorised scoring: {rss_vec:.0f} MiB")
    if diff > 1e-6:
        raise SystemExit("scores differ by more than 1e-6")


if __name__ == "__main__":
    main()
