"""Figures of :mod:`probekit.grid`: score histograms, rate maps of top units, spacing/orientation.

Each builder takes the arrays and frames a grid result holds and returns Plotly figures with
every axis titled (units in brackets). Spacing is in box units when the result has an extent,
else in bins.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

SCORE_AXIS = "grid score60 (correlation difference, unitless)"


def score_histogram(frame: pd.DataFrame, threshold: float) -> go.Figure:
    """Histogram of ``frame["score60"]`` over units, the grid-cell threshold dashed."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=frame["score60"].dropna(), nbinsx=40, name="score60"))
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:g}")
    fig.update_layout(title="score60 over units", xaxis_title=SCORE_AXIS, yaxis_title="units")
    return fig


def top_ratemaps(
    frame: pd.DataFrame,
    ratemaps: np.ndarray,
    extent: Any | None,
    top_per_module: int = 4,
    unit: str = "position units",
) -> go.Figure | None:
    """Rate maps ``[units, ny, nx]`` of the top-scoring units of each module (or of the best
    units when there is no module), one panel each; None when there are no units."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    modules = sorted(m for m in frame["module"].unique() if m >= 0)
    picks: list[tuple[str, int]] = []
    for m in modules:
        top = frame[frame["module"] == m].nlargest(top_per_module, "score60")
        picks += [(f"module {m} unit {u}", int(u)) for u in top["unit"]]
    if not picks:  # no modules: show the best-scoring units
        top = frame.nlargest(min(8, len(frame)), "score60")
        picks = [(f"unit {u} ({s:.2f})", int(u)) for u, s in zip(top["unit"], top["score60"])]
    if not picks:
        return None
    cols = max(top_per_module, 1) if modules else 4
    rows = math.ceil(len(picks) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in picks])
    x_ext = y_ext = None
    if extent is None:
        unit = "bin"
    else:
        (x0, x1), (y0, y1) = extent
        ny, nx = ratemaps.shape[1:]
        x_ext = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
        y_ext = y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny
    for i, (_, u) in enumerate(picks):
        peak = np.nanmax(np.abs(ratemaps[u])) if np.isfinite(ratemaps[u]).any() else 0.0
        fig.add_trace(
            go.Heatmap(
                z=ratemaps[u] / (peak if peak > 0 else 1.0),
                x=x_ext,
                y=y_ext,
                coloraxis="coloraxis",
                name=f"unit {u}",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_yaxes(scaleanchor="x")
    fig.update_xaxes(title_text=f"x ({unit})")
    fig.update_yaxes(title_text=f"y ({unit})")
    fig.update_layout(
        title="Rate maps of the top-scoring units" + (" per module" if modules else ""),
        height=220 * rows + 80,
        coloraxis={
            "colorscale": "Viridis",
            "colorbar": {"title": {"text": "activation / unit's peak (unitless)"}},
        },
    )
    return fig


def spacing_orientation_scatter(frame: pd.DataFrame, spacing_unit: str) -> go.Figure:
    """Grid cells' spacing (log axis) against orientation mod 60, coloured by module."""
    import plotly.graph_objects as go

    grid = frame[frame["is_grid"] & frame["spacing"].notna()]
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
        xaxis_title=f"spacing ({spacing_unit}, log scale)",
        yaxis_title="orientation (degrees mod 60)",
        xaxis_type="log",
    )
    return fig


def score_vs_null(
    frame: pd.DataFrame, null_scores: np.ndarray, null_kind: str, threshold: float
) -> go.Figure:
    """Overlaid histograms (fractions) of the units' score60 and the null's score60."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=frame["score60"].dropna(),
            name="units",
            opacity=0.7,
            histnorm="probability",
            nbinsx=40,
        )
    )
    if len(null_scores):
        fig.add_trace(
            go.Histogram(
                x=null_scores[np.isfinite(null_scores)],
                name=f"null ({null_kind})",
                opacity=0.6,
                histnorm="probability",
                nbinsx=40,
            )
        )
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:g}")
    fig.update_layout(
        title="score60: units vs null",
        barmode="overlay",
        xaxis_title=SCORE_AXIS,
        yaxis_title="fraction of units",
    )
    return fig


def module_figures(
    frame: pd.DataFrame,
    summary: dict[str, Any],
    ratemaps: np.ndarray,
    null_scores: np.ndarray,
    extent: Any | None,
    top_per_module: int = 4,
) -> list[go.Figure]:
    """The figures of a :class:`probekit.grid.GridModules`: top rate maps, spacing vs
    orientation, score60 of units vs the null."""
    figs = []
    maps = top_ratemaps(
        frame, ratemaps, extent, top_per_module, unit=summary.get("spacing_unit", "bins")
    )
    if maps is not None:
        figs.append(maps)
    figs.append(spacing_orientation_scatter(frame, summary.get("spacing_unit", "bins")))
    figs.append(score_vs_null(frame, null_scores, summary["null"], summary["threshold"]))
    return figs
