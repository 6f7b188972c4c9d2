"""Figures of :mod:`probekit.shattering`: entity geometry before and after an edit, and R and
the accuracy drop against the edit distance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch


def project(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D embedding of ``x [n, d]`` by ``"pca"``, ``"isomap"`` or ``"umap"`` (seeded)."""
    n = x.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x)
    if method == "isomap":
        from sklearn.manifold import Isomap

        return Isomap(n_neighbors=min(10, n - 1), n_components=2).fit_transform(x)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(x)
    raise ValueError(f"projection must be 'pca', 'isomap' or 'umap', got {method!r}")


def projection_figure(
    before: torch.Tensor,
    after: torch.Tensor,
    positions: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    marked: int | None = None,
    methods: Sequence[str] = ("isomap", "pca", "umap"),
    seed: int = 0,
    title: str = "Entity representations before and after the edit",
) -> Any:
    """Rows: before / after; columns: one per projection. Colour = ``positions`` (cyclic order).

    PCA of "after" uses the axes fitted on "before" (same frame); Isomap and UMAP are fitted on
    each set separately. ``marked``: row index of the edited entity (drawn as a black star).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    methods = list(methods)
    titles = [f"{m} {when}" for when in ("before", "after") for m in methods]
    fig = make_subplots(rows=2, cols=len(methods), subplot_titles=titles)
    xb, xa = before.numpy().astype(np.float64), after.numpy().astype(np.float64)
    n = xb.shape[0]
    color = np.arange(n) if positions is None else np.asarray(positions)
    text = labels if labels is not None else [str(i) for i in range(n)]
    for col, method in enumerate(methods, start=1):
        if method == "pca":
            mean = xb.mean(0)
            _, _, vt = np.linalg.svd(xb - mean, full_matrices=False)
            pair = ((xb - mean) @ vt[:2].T, (xa - mean) @ vt[:2].T)
        else:
            pair = (project(xb, method, seed), project(xa, method, seed))
        for row, points in enumerate(pair, start=1):
            fig.add_trace(
                go.Scatter(
                    x=points[:, 0],
                    y=points[:, 1],
                    mode="markers",
                    text=list(text),
                    marker=dict(
                        color=color,
                        colorscale="HSV",
                        size=6,
                        showscale=(row == 1 and col == 1),
                        colorbar=dict(title="cyclic position"),
                    ),
                    showlegend=False,
                ),
                row=row,
                col=col,
            )
            if marked is not None:
                fig.add_trace(
                    go.Scatter(
                        x=[points[marked, 0]],
                        y=[points[marked, 1]],
                        mode="markers",
                        marker=dict(symbol="star", size=14, color="black"),
                        name="edited entity",
                        showlegend=(row == 1 and col == 1),
                    ),
                    row=row,
                    col=col,
                )
    fig.update_layout(title=title, height=650)
    # Projections have no units: each axis is a component of the 2-D embedding.
    for col, method in enumerate(methods, start=1):
        for row in (1, 2):
            fig.update_xaxes(title_text=f"{method} component 1", row=row, col=col)
            fig.update_yaxes(title_text=f"{method} component 2", row=row, col=col)
    return fig


# ----------------------------------------------------------------------------- one edit


def sweep_figures(frame: pd.DataFrame) -> list[Any]:
    """R against d (box per method), accuracy drop against R (scatter), the accuracy drop
    against d (mean and 95% t interval over the edits, drawn from 0 = the accuracy before)."""
    import plotly.graph_objects as go

    from probekit.stats.shattering import mean_ci

    box = go.Figure()
    scatter = go.Figure()
    acc = go.Figure()
    for method, part in frame.groupby("method", sort=False):
        box.add_trace(go.Box(x=part["distance"], y=part["R"], name=str(method), boxpoints="all"))
        scatter.add_trace(go.Scatter(x=part["R"], y=part["drop"], mode="markers", name=str(method)))
        stats = [(d, *mean_ci(g["drop"]), len(g)) for d, g in part.groupby("distance")]
        ds, mean, low, high, count = (list(v) for v in zip(*stats, strict=True))
        acc.add_trace(
            go.Scatter(
                x=ds,
                y=mean,
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [h - m for h, m in zip(high, mean, strict=True)],
                    "arrayminus": [m - lo for lo, m in zip(low, mean, strict=True)],
                },
                customdata=count,
                hovertemplate="d = %{x}: drop %{y:.4f} (%{customdata} edits)<extra></extra>",
                mode="lines+markers",
                name=f"{method}: mean drop, 95% interval",
            )
        )
    box.update_layout(
        title="Shattering R by edit distance d", xaxis_title="d", yaxis_title="R", boxmode="group"
    )
    scatter.update_layout(
        title="Accuracy drop against R (one point per edit)",
        xaxis_title="R",
        yaxis_title="mean accuracy drop (direct, logical, compositional)",
    )
    acc.add_hline(y=0.0, line_dash="dot", annotation_text="no change (accuracy before)")
    acc.update_layout(
        title="Accuracy drop by d (before - after, mean over the edits)",
        xaxis_title="d (ring distance of the new object from the true one)",
        yaxis_title="accuracy drop (direct, logical, compositional)",
        yaxis_rangemode="tozero",
    )
    return [box, scatter, acc]
