"""Figures of :mod:`probekit.modularity`: task-variance heatmaps, silhouette against k, unit maps,
the anatomy against its label-shuffle null, and cluster lesions.

Each builder takes arrays and names from a modularity result and returns Plotly figures with
every axis and colour bar titled (units in brackets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

#: what each anatomical metric is measured in, for axis titles
METRIC_UNITS = {
    "Q": "Newman Q (unitless)",
    "within_fraction": "within-cluster fraction of |W_rec| (fraction)",
    "locality": "mean within-cluster distance (grid units)",
}


def heatmap(
    z: np.ndarray,
    x: Sequence[str],
    y: Sequence[str],
    title: str,
    *,
    x_title: str,
    y_title: str,
    colorbar_title: str,
    colorscale: str = "Viridis",
) -> go.Figure:
    """A titled heatmap ``z [len(y), len(x)]`` with named rows and columns."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(x),
            y=list(y),
            colorscale=colorscale,
            colorbar={"title": {"text": colorbar_title}},
        )
    )
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    return fig


def task_variance_heatmap(values: np.ndarray, task_names: Sequence[str]) -> go.Figure:
    """Units x tasks task variance ``values [units, tasks]``, units sorted by total variance."""
    order = np.argsort(-values.sum(1))
    return heatmap(
        values[order],
        task_names,
        [str(u) for u in order],
        "Task variance (units sorted by total variance)",
        x_title="task",
        y_title="unit",
        colorbar_title="task variance (activity², a.u.)",
    )


def cluster_figures(
    normalized: np.ndarray,
    labels: np.ndarray,
    active: np.ndarray,
    k: int,
    silhouettes: dict[int, float],
    task_names: Sequence[str],
    preferred_task: np.ndarray,
    normalize: str,
    maps: dict[str, np.ndarray],
) -> list[go.Figure]:
    """The normalised task variance sorted by cluster, silhouette against k, and one scatter
    per 2-D map in ``maps`` (``{"tsne": [active units, 2], ...}``) coloured by cluster."""
    import plotly.graph_objects as go

    order = np.argsort(labels[active], kind="stable")
    units = np.flatnonzero(active)[order]
    heat = heatmap(
        normalized[order],
        task_names,
        [f"{u} (c{labels[u]})" for u in units],
        f"Normalised task variance, units sorted by cluster (k = {k})",
        x_title="task",
        y_title="unit (cluster)",
        colorbar_title=f"task variance / unit's {normalize} (unitless)",
    )
    ks = sorted(silhouettes)
    sil = go.Figure(
        go.Scatter(
            x=ks, y=[silhouettes[k] for k in ks], mode="lines+markers", name="mean silhouette"
        )
    )
    sil.update_layout(
        title="Silhouette score against k",
        xaxis_title="k (number of clusters)",
        yaxis_title="mean silhouette (unitless, -1..1)",
    )
    figs = [heat, sil]
    hover = [f"unit {u}, cluster {labels[u]}" for u in np.flatnonzero(active)]
    active_labels = labels[active]
    names = {"tsne": "t-SNE", "umap": "UMAP"}
    for method, xy in maps.items():
        fig = go.Figure()
        for c in range(k):
            sel = active_labels == c
            fig.add_trace(
                go.Scattergl(
                    x=xy[sel, 0],
                    y=xy[sel, 1],
                    mode="markers",
                    name=f"cluster {c}: {task_names[preferred_task[c]]}",
                    text=[h for h, s in zip(hover, sel, strict=True) if s],
                )
            )
        label = names.get(method, method)
        fig.update_layout(
            title=f"{label} of units, coloured by cluster",
            xaxis_title=f"{label} 1 (a.u.)",
            yaxis_title=f"{label} 2 (a.u.)",
        )
        figs.append(fig)
    return figs


def anatomical_figures(
    adjacency: np.ndarray,
    labels: np.ndarray,
    units: np.ndarray,
    observed: dict[str, float],
    null: dict[str, np.ndarray],
    positions: np.ndarray | None,
) -> list[go.Figure]:
    """The symmetrised ``|W_rec|`` sorted by cluster, each metric against its null, and the unit
    positions coloured by cluster (when there are positions)."""
    import plotly.graph_objects as go

    order = np.argsort(labels, kind="stable")
    names = [f"{u} (c{c})" for u, c in zip(units[order], labels[order], strict=True)]
    figs = [
        heatmap(
            adjacency[np.ix_(order, order)],
            names,
            names,
            "Symmetrised |W_rec|, units sorted by cluster",
            x_title="unit (cluster)",
            y_title="unit (cluster)",
            colorbar_title="(|W_ij| + |W_ji|) / 2 (weight, a.u.)",
            colorscale="Blues",
        )
    ]
    for name, value in observed.items():
        fig = go.Figure(go.Histogram(x=null[name], name="shuffled labels"))
        fig.add_vline(x=value, line_color="red", annotation_text="observed")
        fig.update_layout(
            title=f"{name}: observed against {len(null[name])} label shuffles",
            xaxis_title=METRIC_UNITS.get(name, name),
            yaxis_title="label shuffles",
        )
        figs.append(fig)
    if positions is not None:
        fig = go.Figure()
        for c in np.unique(labels):
            sel = labels == c
            fig.add_trace(
                go.Scatter(
                    x=positions[sel, 0],
                    y=positions[sel, 1],
                    mode="markers",
                    marker={"size": 12},
                    name=f"cluster {c}",
                    text=[f"unit {u}" for u in units[sel]],
                )
            )
        fig.update_layout(
            title="Unit positions coloured by functional cluster",
            xaxis_title="position x (grid units)",
            yaxis_title="position y (grid units)",
        )
        figs.append(fig)
    return figs


def lesion_heatmap(
    drop: np.ndarray, task_names: Sequence[str], clusters: Sequence[int], sizes: Sequence[int]
) -> go.Figure:
    """Accuracy drop ``[clusters, tasks]`` after silencing each cluster."""
    return heatmap(
        drop,
        task_names,
        [f"cluster {c} ({n} units)" for c, n in zip(clusters, sizes, strict=True)],
        "Accuracy drop after silencing each cluster",
        x_title="task",
        y_title="silenced cluster",
        colorbar_title="accuracy drop (fraction of trials)",
        colorscale="Reds",
    )
