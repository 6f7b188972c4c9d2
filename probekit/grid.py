"""Grid cells and grid modules: which units fire on a hexagonal lattice, and in how many modules?

A network trained to path-integrate may develop grid cells, units whose spatial rate map is a
hexagonal lattice, organised (in the brain, and in some models) into a few discrete modules of
different spacing (Banino et al. 2018; Sorscher et al. 2023; method in ``docs/grid.md``). This
module answers that question from a model's activations along trajectories:

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
- :func:`synthetic_population` (from :mod:`probekit.tasks.grid_population`): populations with
  known answers (grid modules plus place, band, random-field distractors) to test the detector.

The formulas live in :mod:`probekit.stats.grid` and the figures in
:mod:`probekit.report.figures.grid`; this module holds the results and the public entry points.
Activations may come from a live rollout (:func:`probekit.tasks.navigation.rollout`) or from an
activation store written with ``pk.cache`` (``store["hook_hidden"]``, ``store["positions"]``).

Example::

    >>> import probekit as pk
    >>> pop = pk.grid.synthetic_population(modules=[(0.3, 10.0), (0.45, 25.0)], cells_per_module=12)
    >>> found = pk.grid.modules(pop.ratemaps, extent=pop.extent)
    >>> found.summary["n_modules"]
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from probekit.stats.grid import (
    ANGLES,
    Extent,
    annulus_masks,
    autocorrelogram,
    check_maps,
    grid_scores_from_sac,
    module_table,
    ratemaps,
    rotate_stack,
    score_table,
    shuffle_null,
    spacing_orientation,
)
from probekit.tasks.grid_population import SyntheticPopulation, synthetic_population

__all__ = [
    "ANGLES",
    "Extent",
    "GridModules",
    "GridScores",
    "SyntheticPopulation",
    "annulus_masks",
    "autocorrelogram",
    "grid_scores_from_sac",
    "modules",
    "ratemaps",
    "rotate_stack",
    "score",
    "shuffle_null",
    "spacing_orientation",
    "synthetic_population",
]


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
        from probekit.report.figures.grid import score_histogram

        return [score_histogram(self.frame, self.summary["threshold"])]


def score(
    ratemaps: Any, method: str = "banino", threshold: float = 0.3, chunk: int = 128
) -> GridScores:
    """Grid scores of rate maps ``[units, ny, nx]`` (NaN = unvisited; see :func:`ratemaps`).

    Steps: NaN-aware SAC (:func:`autocorrelogram`), its rotations by 30,
    45, 60, 90, 120, 135, 150 degrees as ``scipy.ndimage.rotate(sac, a, reshape=False)``, the
    annulus sweep of :func:`grid_scores_from_sac`. A constant (e.g. silent) map has no SAC and
    scores NaN. A unit is a grid cell when ``score60 > threshold``.
    """
    maps = check_maps(ratemaps)
    frame, summary, sacs = score_table(maps, method=method, threshold=threshold, chunk=chunk)
    return GridScores(frame=frame, summary=summary, sacs=sacs, ratemaps=maps)


@dataclass
class GridModules:
    """Grid cells, their spacing and orientation, and the modules they form.

    Attributes:
        frame: one row per unit: ``unit``, ``score60``, ``score90``, ``is_grid``, ``spacing``,
            ``orientation`` (degrees mod 60), ``spacing_sd``, ``orientation_sd``, ``n_peaks``,
            ``score_pass`` (score60 > threshold), ``regular`` (a regular six-peak ring),
            ``module`` (-1 for non-grid units and grid units in no module).
        summary: ``n_units``, ``n_score_pass``, ``n_grid``, ``n_modules``, ``spacings``
            (per-module mean, ascending), ``spacing_sds``, ``orientations`` (per-module circular
            mean), ``orientation_sds`` (circular sd, degrees), ``module_sizes``,
            ``spacing_ratios`` (consecutive), ``threshold``, ``null`` (what the null scores
            are) and ``null_p95`` (95th percentile of the null).
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
        from probekit.report.figures.grid import module_figures

        return module_figures(
            self.frame,
            self.summary,
            self.ratemaps,
            self.null_scores,
            self.extent,
            self.top_per_module,
        )


def modules(ratemaps: Any, extent: Extent | None = None, **options: Any) -> GridModules:
    """Grid cells and their modules from rate maps ``[units, ny, nx]``.

    Grid cells are units with ``score60 > threshold`` (:func:`score`) whose autocorrelogram has a
    regular inner ring: six peaks (:func:`spacing_orientation`) whose distances vary by at most
    ``max_spacing_cv`` of their mean and whose angles mod 60 have a circular sd of at most
    ``max_orientation_sd`` degrees. The score alone passes some smooth random fields and band
    cells (their SAC can correlate with its 60-degree rotation inside one annulus); a module
    needs a well-defined spacing and orientation, so the ring is required too (``frame`` keeps
    ``score_pass`` and ``regular`` separately). Spacing is in box units (from ``extent``),
    orientation in degrees mod 60. Grid cells are clustered into modules with a Gaussian
    mixture, k by BIC (:func:`probekit.stats.grid.cluster_modules`), and clusters of fewer than
    ``min_units`` cells are not modules (their cells get module -1).

    Args:
        ratemaps: ``[units, ny, nx]`` from :func:`ratemaps` (row = y).
        extent: ``((x0, x1), (y0, y1))`` of the maps, for spacing in box units.
        options: those of :func:`probekit.stats.grid.module_table`, with their defaults:
            ``threshold=0.3``, ``method="banino"``, ``min_units=3``, ``max_modules=8``,
            ``spacing_tol=0.05`` and ``orientation_tol_deg=3.0`` (one unit of the clustering
            distance), ``max_spacing_cv=0.1``, ``max_orientation_sd=6.0``, ``null_scores``
            (score60 under a null, e.g. :func:`shuffle_null` on the activations; when None, a
            bin-permutation null of the maps themselves, ``n_null_shuffles=1`` draws) and
            ``seed=0``.
    """
    return GridModules(**module_table(ratemaps, extent, **options))
