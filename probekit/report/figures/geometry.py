"""Figures of :mod:`probekit.geometry`: spectrum, centroid norms, N x D sweeps, training curves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def spectrum(singular_values: np.ndarray, summary: dict[str, Any]) -> Any:
    """Singular values of the centroid matrix, largest first, against the flat optimum."""
    import plotly.graph_objects as go

    s = np.sort(np.asarray(singular_values))[::-1]
    n, d = summary["items"], summary["dim"]
    flat = summary["bound"] / min(n, d)  # equal singular values reach the bound
    fig = go.Figure()
    fig.add_bar(x=np.arange(1, len(s) + 1), y=s, name="centroid matrix")
    fig.add_scatter(
        x=[1, len(s)], y=[flat, flat], mode="lines", name="optimum (equal values)",
        line={"dash": "dash"},
    )  # fmt: skip
    fig.update_layout(
        title=f"Singular values of the centroid matrix (N={n}, D={d}; gap {summary['gap']:.3f})",
        xaxis_title="index (largest first)",
        yaxis_title="singular value (unit-norm embeddings)",
        yaxis_rangemode="tozero",
    )
    return fig


def centroid_norms(frame: pd.DataFrame) -> Any:
    """Histogram of the per-item centroid norms (1 = all views of the item agree)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=frame["centroid_norm"], nbinsx=40, name="items"))
    fig.update_layout(
        title="Centroid norm per item",
        xaxis_title="||mean of unit-norm views|| (1 = views agree)",
        yaxis_title="items (count)",
        xaxis_range=[0, 1.02],
    )
    return fig


def sweep(frame: pd.DataFrame, label: str) -> Any:
    """Gap against N / D, one line per D; the Marchenko-Pastur prediction when present."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for dim, rows in frame.groupby("dim"):
        fig.add_scatter(
            x=rows["ratio"], y=rows["gap"], mode="lines+markers", name=f"{label}, D={dim}",
            error_y={"type": "data", "array": rows["gap_std"], "visible": True},
        )  # fmt: skip
    if "predicted_gap" in frame:
        pred = frame.drop_duplicates("ratio").sort_values("ratio")
        fig.add_scatter(
            x=pred["ratio"], y=pred["predicted_gap"], mode="lines", name="Marchenko-Pastur",
            line={"dash": "dash", "color": "black"},
        )  # fmt: skip
    fig.add_vline(x=1.0, line_dash="dot", annotation_text="N = D")
    fig.update_layout(
        title=f"MMCR gap 1 - ||M||_* / sqrt(N min(N, D)): {label}",
        xaxis_title="items / embedding dimension (N / D, log scale)",
        yaxis_title="gap (fraction of the bound)",
        xaxis_type="log",
        yaxis_rangemode="tozero",
    )
    return fig


def trajectory(frame: pd.DataFrame) -> list[Any]:
    """Alignment and uniformity over training steps, and the gap and MI estimate."""
    from plotly.subplots import make_subplots

    x = frame["step"].clip(lower=0.5)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=x, y=frame["alignment"], mode="lines+markers", name="alignment")
    fig.add_scatter(
        x=x, y=frame["uniformity"], mode="lines+markers", name="uniformity (t = 2)",
        secondary_y=True,
    )  # fmt: skip
    fig.update_layout(
        title="Alignment and uniformity over training (lower is better for both)",
        xaxis_title="training step (log scale; step 0 drawn at 0.5)",
        xaxis_type="log",
    )
    fig.update_yaxes(
        title_text="alignment: mean ||z_a - z_b||^2 (squared units)", secondary_y=False
    )
    fig.update_yaxes(
        title_text="uniformity: log E exp(-2 ||z_i - z_j||^2) (nats)", secondary_y=True
    )
    fig2 = make_subplots(specs=[[{"secondary_y": True}]])
    fig2.add_scatter(x=x, y=frame["gap"], mode="lines+markers", name="gap")
    fig2.add_scatter(
        x=x, y=frame["mi_lower_bound"], mode="lines+markers", name="MI lower bound estimate",
        secondary_y=True,
    )  # fmt: skip
    fig2.update_layout(
        title="MMCR gap and mutual-information estimate over training",
        xaxis_title="training step (log scale; step 0 drawn at 0.5)",
        xaxis_type="log",
    )
    fig2.update_yaxes(title_text="gap (fraction of the bound)", secondary_y=False)
    fig2.update_yaxes(title_text="MI lower bound estimate (nats)", secondary_y=True)
    return [fig, fig2]
