"""probekit.grid: rate maps, autocorrelograms, grid scores, spacing/orientation, modules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, stats

import probekit.grid as grid
from probekit.tasks.grid_population import grid_field

BOX = ((0.0, 1.0), (0.0, 1.0))


def _lattice(kind: str, spacing: float = 0.3, orientation: float = 0.0, bins: int = 20):
    """A noise-free hexagonal (three waves) or square (two waves at 90 deg) lattice map."""
    xs = (np.arange(bins) + 0.5) / bins
    gx, gy = np.meshgrid(xs, xs)
    xy = np.stack([gx, gy], -1)
    if kind == "hex":
        return grid_field(xy, spacing, orientation, np.array([0.5, 0.5]))
    k = 2 * math.pi / spacing
    return np.cos(k * gx) + np.cos(k * gy)


def _sac_direct(m: np.ndarray) -> np.ndarray:
    """Pearson correlation at every lag over the bins valid in both copies, by explicit loops."""
    ny, nx = m.shape
    out = np.full((2 * ny - 1, 2 * nx - 1), np.nan)
    for dy in range(-ny + 1, ny):
        for dx in range(-nx + 1, nx):
            a = m[max(0, -dy) : ny - max(0, dy), max(0, -dx) : nx - max(0, dx)]
            b = m[max(0, dy) : ny + min(0, dy), max(0, dx) : nx + min(0, dx)]
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() >= 2 and a[ok].std() > 0 and b[ok].std() > 0:
                out[dy + ny - 1, dx + nx - 1] = np.corrcoef(a[ok], b[ok])[0, 1]
    return out


def _scores_direct(sac: np.ndarray, method: str) -> tuple[float, float]:
    """score60 / score90 of one SAC with scipy's rotate per angle and explicit mask sums."""
    s = np.nan_to_num(sac)
    h, w = s.shape
    n = (h + 1) // 2
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    best60 = best90 = -np.inf
    for outer in np.linspace(0.4, 1.0, 10) * n:
        m = (r >= 0.2 * n) & (r <= outer)
        mu = s[m].mean()
        corr = {}
        for angle in (30, 45, 60, 90, 120, 135, 150):
            rot = ndimage.rotate(s, angle, reshape=False)
            num = ((s - mu) * (rot - mu))[m].sum()
            corr[angle] = num / (((s - mu) ** 2)[m].sum() + 1e-5 * m.sum())
        if method == "banino":
            s60 = (corr[60] + corr[120]) / 2 - (corr[30] + corr[90] + corr[150]) / 3
        else:
            s60 = min(corr[60], corr[120]) - max(corr[30], corr[90], corr[150])
        best60 = max(best60, s60)
        best90 = max(best90, corr[90] - (corr[45] + corr[135]) / 2)
    return best60, best90


# ----------------------------------------------------------------------------- rate maps


def test_ratemap_rows_are_y_and_columns_are_x():
    rng = np.random.default_rng(0)
    pos = rng.random((5000, 2))
    acts = np.column_stack([pos[:, 0], pos[:, 1]])  # unit 0 = x, unit 1 = y
    maps = grid.ratemaps(acts, pos, bins=10, extent=BOX)
    assert maps.shape == (2, 10, 10)
    # unit 0 grows along columns (x), constant-ish down rows; unit 1 the other way round
    assert np.all(np.diff(maps[0], axis=1) > 0.05)
    assert np.all(np.abs(np.diff(maps[0], axis=0)) < 0.05)
    assert np.all(np.diff(maps[1], axis=0) > 0.05)
    # the same numbers as scipy's binned_statistic_2d, transposed (its first index is x)
    ref = stats.binned_statistic_2d(
        pos[:, 0], pos[:, 1], acts[:, 0], "mean", bins=10, range=[[0, 1], [0, 1]]
    ).statistic
    np.testing.assert_allclose(maps[0], ref.T, atol=1e-12)


def test_ratemap_non_square_bins_and_batch_time_inputs():
    rng = np.random.default_rng(1)
    pos = rng.random((4, 500, 2)) * [2.0, 1.0]
    acts = rng.random((4, 500, 3))
    maps = grid.ratemaps(acts, pos, bins=(8, 4), extent=((0, 2), (0, 1)))
    assert maps.shape == (3, 4, 8)
    flat = grid.ratemaps(
        acts.reshape(-1, 3), pos.reshape(-1, 2), bins=(8, 4), extent=((0, 2), (0, 1))
    )
    np.testing.assert_array_equal(maps, flat)
    # bin (row 1, col 5) by hand
    p, a = pos.reshape(-1, 2), acts.reshape(-1, 3)
    sel = (p[:, 0] >= 1.25) & (p[:, 0] < 1.5) & (p[:, 1] >= 0.25) & (p[:, 1] < 0.5)
    np.testing.assert_allclose(maps[:, 1, 5], a[sel].mean(0), rtol=1e-12)


def test_unvisited_bins_are_nan_and_do_not_poison_scores():
    pop = grid.synthetic_population(
        modules=[(0.3, 10.0)], cells_per_module=3, n_place=0, n_band=0, n_random=0, seed=3
    )
    rng = np.random.default_rng(2)
    pos = rng.random((60000, 2))
    # never visit a disc in the box: its bins must come out NaN, not 0
    pos = pos[np.hypot(pos[:, 0] - 0.3, pos[:, 1] - 0.6) > 0.12]
    maps = grid.ratemaps(pop.rates(pos), pos, bins=20, extent=BOX)
    assert np.isnan(maps[:, 12, 6]).all()
    assert np.isnan(maps).sum() == 3 * np.isnan(maps[0]).sum() > 0
    holed = grid.score(maps).frame["score60"].to_numpy()
    full = grid.score(pop.ratemaps).frame["score60"].to_numpy()
    assert np.isfinite(holed).all()
    assert np.all(holed > 1.0) and np.all(np.abs(holed - full) < 0.15)


def test_ratemap_rejects_bad_inputs():
    with pytest.raises(ValueError, match="positions must be"):
        grid.ratemaps(np.zeros((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="activations must be"):
        grid.ratemaps(np.zeros((9, 3)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="extent must"):
        grid.ratemaps(np.zeros((10, 3)), np.zeros((10, 2)), extent=((1, 0), (0, 1)))


# ----------------------------------------------------------------------------- autocorrelogram


def test_autocorrelogram_matches_direct_slow_computation_with_nans():
    rng = np.random.default_rng(4)
    maps = ndimage.gaussian_filter(rng.normal(size=(3, 9, 11)), (0, 1, 1))
    maps[0, 2, 3] = np.nan
    maps[1, :, 0] = np.nan
    maps[2, 4:7, 4:8] = np.nan
    sac = grid.autocorrelogram(maps)
    assert sac.shape == (3, 17, 21)
    for u in range(3):
        ref = _sac_direct(maps[u])
        np.testing.assert_array_equal(np.isnan(sac[u]), np.isnan(ref))
        np.testing.assert_allclose(sac[u], ref, atol=1e-10, equal_nan=True)
        assert sac[u, 8, 10] == pytest.approx(1.0)


def test_rotate_stack_equals_scipy_rotate_per_image():
    rng = np.random.default_rng(5)
    imgs = rng.normal(size=(4, 39, 39))
    out = grid.rotate_stack(imgs)
    for i, angle in enumerate(grid.ANGLES):
        ref = np.stack([ndimage.rotate(im, angle, reshape=False) for im in imgs])
        np.testing.assert_allclose(out[i], ref, atol=1e-12)
    odd = rng.normal(size=(2, 13, 21))  # non-square SAC (non-square rate maps)
    np.testing.assert_allclose(
        grid.rotate_stack(odd, [60])[0, 1], ndimage.rotate(odd[1], 60, reshape=False), atol=1e-12
    )


# ----------------------------------------------------------------------------- scores


@pytest.mark.parametrize("method", ["banino", "min_max"])
def test_grid_score_matches_hand_computation(method):
    rng = np.random.default_rng(6)
    maps = np.stack([_lattice("hex", 0.35, 12.0), _lattice("square", 0.3)])
    maps = np.concatenate([maps, ndimage.gaussian_filter(rng.normal(size=(2, 20, 20)), 1.5)])
    res = grid.score(maps, method=method)
    for u in range(len(maps)):
        s60, s90 = _scores_direct(res.sacs[u], method)
        assert res.frame["score60"][u] == pytest.approx(s60, abs=1e-9)
        assert res.frame["score90"][u] == pytest.approx(s90, abs=1e-9)


def test_hexagonal_map_scores_high_on_score60_square_on_score90():
    res = grid.score(np.stack([_lattice("hex", 0.3, 7.0), _lattice("square", 0.3)]))
    hex_row, sq_row = res.frame.iloc[0], res.frame.iloc[1]
    assert hex_row["score60"] > 1.2 and hex_row["score60"] > hex_row["score90"] + 0.5
    assert sq_row["score90"] > 1.0 and sq_row["score60"] < 0.3
    assert res.summary["n_grid"] == 1


def test_constant_map_scores_nan_not_grid():
    maps = np.stack([np.ones((20, 20)), _lattice("hex")])
    res = grid.score(maps)
    assert np.isnan(res.frame["score60"][0]) and not res.frame["is_grid"][0]
    assert res.summary["n_constant"] == 1 and res.summary["n_grid"] == 1


# ----------------------------------------------------------------------------- spacing, modules


def test_spacing_and_orientation_of_a_hexagonal_lattice():
    maps = np.stack([_lattice("hex", s, o) for s, o in [(0.25, 0.0), (0.4, 17.0), (0.55, 44.0)]])
    geo = grid.spacing_orientation(grid.autocorrelogram(maps), extent=((0, 2), (0, 2)))
    # extent of 2 box units: spacing in box units doubles the unit-box value
    np.testing.assert_allclose(geo["spacing"], [0.5, 0.8, 1.1], rtol=0.03)
    err = (geo["orientation"] - [0.0, 17.0, 44.0] + 30) % 60 - 30
    assert np.all(np.abs(err) < 2.0)


MODULE_SETS = {
    1: [(0.35, 12.0)],
    2: [(0.26, 4.0), (0.42, 21.0)],
    3: [(0.24, 8.0), (0.34, 8.0), (0.48, 8.0)],
    4: [(0.2, 3.0), (0.28, 14.0), (0.39, 27.0), (0.55, 41.0)],
}


@pytest.mark.parametrize("n_modules", [1, 2, 3, 4])
def test_modules_recovered_from_synthetic_population(n_modules):
    spec = MODULE_SETS[n_modules]
    pop = grid.synthetic_population(
        modules=spec,
        cells_per_module=8,
        n_place=6,
        n_band=6,
        n_random=6,
        noise=0.1,
        seed=n_modules,
    )
    res = grid.modules(pop.ratemaps, extent=pop.extent)
    assert res.summary["n_modules"] == n_modules
    got = np.array(res.summary["spacings"])
    want = np.array(sorted(s for s, _ in spec))
    np.testing.assert_allclose(got, want, rtol=0.05)
    for m, (_, orient) in enumerate(sorted(spec)):
        err = (res.summary["orientations"][m] - orient + 30) % 60 - 30
        assert abs(err) < 3.0
    truth = pop.truth
    # every grid cell in its module, every distractor rejected
    is_grid_true = (truth["kind"] == "grid").to_numpy()
    np.testing.assert_array_equal(res.frame["is_grid"].to_numpy(), is_grid_true)
    assert (res.frame["module"][~is_grid_true] == -1).all()
    order = np.argsort([s for s, _ in spec])  # modules are numbered by ascending spacing
    expected = np.array([list(order).index(m) for m in truth["module"][is_grid_true]])
    np.testing.assert_array_equal(res.frame["module"][is_grid_true], expected)
    if n_modules > 1:
        np.testing.assert_allclose(res.summary["spacing_ratios"], want[1:] / want[:-1], rtol=0.06)


def test_one_spacing_with_orientations_spread_is_one_module_not_many():
    # a continuum of orientations at one spacing: a mixture cuts it up; the detector must not
    spec = [(0.4, float(o)) for o in np.arange(0.0, 60.0, 3.0)]
    pop = grid.synthetic_population(
        modules=spec, cells_per_module=2, n_place=0, n_band=0, n_random=0, seed=8
    )
    res = grid.modules(pop.ratemaps, extent=pop.extent)
    assert res.summary["n_grid"] == 40 and res.summary["n_modules"] == 1
    assert res.summary["spacings"][0] == pytest.approx(0.4, rel=0.05)
    assert res.summary["orientation_sds"][0] > 10.0


def test_one_or_no_grid_cell_makes_no_module_instead_of_failing():
    pop = grid.synthetic_population(
        modules=[(0.4, 7.0)], cells_per_module=1, n_place=3, n_band=0, n_random=2, seed=2
    )
    res = grid.modules(pop.ratemaps, extent=pop.extent)
    assert res.summary["n_grid"] == 1 and res.summary["n_modules"] == 0
    assert (res.frame["module"] == -1).all()
    from probekit.stats.grid import cluster_modules

    one = cluster_modules(np.array([0.4]), np.array([7.0]), 5, 5, 0.1, 0.1, 0)
    assert one.tolist() == [-1]
    assert cluster_modules(np.zeros(0), np.zeros(0), 5, 5, 0.1, 0.1, 0).shape == (0,)


def test_modules_through_activations_and_shuffle_null():
    pop = grid.synthetic_population(
        modules=[(0.3, 10.0), (0.45, 40.0)],
        cells_per_module=6,
        n_place=3,
        n_band=3,
        n_random=0,
        seed=11,
    )
    rng = np.random.default_rng(12)
    # a smooth random walk, so circular shifts keep temporal structure
    steps = rng.normal(scale=0.05, size=(40000, 2))
    pos = np.abs((np.cumsum(steps, 0) + 0.5) % 2.0 - 1.0)  # reflected into [0, 1]
    acts = pop.rates(pos)
    null = grid.shuffle_null(acts, pos, bins=20, extent=BOX, n_shuffles=2, seed=0)
    assert null.shape == (2 * len(pop.truth),)
    res = grid.modules(grid.ratemaps(acts, pos, 20, BOX), extent=BOX, null_scores=null)
    grid_scores = res.frame["score60"][pop.truth["kind"] == "grid"]
    assert grid_scores.min() > np.nanpercentile(null, 95) + 0.3
    again = grid.shuffle_null(acts, pos, bins=20, extent=BOX, n_shuffles=2, seed=0)
    np.testing.assert_array_equal(null, again)
    assert res.summary["n_modules"] == 2
    np.testing.assert_allclose(res.summary["spacings"], [0.3, 0.45], rtol=0.05)
    assert res.summary["null_p95"] == pytest.approx(np.nanpercentile(null, 95))
    figs = res.figures()
    assert len(figs) == 3 and len(figs[0].data) == 2 * res.top_per_module


def test_modules_rejects_bad_arguments():
    maps = np.zeros((2, 20, 20))
    with pytest.raises(ValueError, match="ratemaps must be"):
        grid.modules(np.zeros((20, 20, 20, 2)))
    with pytest.raises(ValueError, match="min_units"):
        grid.modules(maps, min_units=0)
    with pytest.raises(ValueError, match="method"):
        grid.score(maps, method="sargolini")
