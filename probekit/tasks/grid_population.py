"""Synthetic populations of rate maps with known answers: grid modules plus distractors.

The ground truth the grid detector (:mod:`probekit.grid`) is tested against: grid cells in
modules of given spacing and orientation (a rectified sum of three plane waves), Gaussian place
fields, band cells (one rectified plane wave), smooth random fields and white noise, sampled at
the bin centres of a box. :func:`synthetic_population` is also importable as
``pk.grid.synthetic_population``.

Example::

    >>> from probekit.tasks.grid_population import synthetic_population
    >>> pop = synthetic_population(modules=[(0.3, 10.0)], cells_per_module=4, n_place=2,
    ...                            n_band=0, n_random=0)
    >>> pop.ratemaps.shape, list(pop.truth["kind"].unique())
    ((6, 20, 20), ['grid', 'place'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from probekit.stats.grid import Extent, as_array, check_bins, check_extent

__all__ = ["SyntheticPopulation", "grid_field", "synthetic_population"]


def grid_field(xy: np.ndarray, spacing: float, orientation_deg: float, phase: np.ndarray):
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
        to test the whole path activations -> ``pk.grid.ratemaps`` -> ``pk.grid.score``."""
        xy = as_array(positions, "positions").reshape(-1, 2)
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
        return grid_field(xy, row.spacing, row.orientation, phase)
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

    extent = check_extent(extent)
    nx, ny = check_bins(bins)
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
