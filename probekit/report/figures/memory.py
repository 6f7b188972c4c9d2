"""Figures of :mod:`probekit.memory`: the capacity of a Gaussian KDE against dimension."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def capacity_figure(frame: Any, summary: dict[str, Any]) -> go.Figure:
    """``log K*`` against ``D``: measured (markers) and the analytic prediction (line)."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=frame["d"],
            y=frame["log_capacity"],
            mode="markers+lines",
            name=f"measured (>= {summary['required']:.0%} retrieved)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=frame["d"],
            y=frame["predicted_log_capacity"],
            mode="lines",
            line={"dash": "dash"},
            name="prediction (signal-to-noise, leading order)",
        )
    )
    fig.update_layout(
        title=(
            f"KDE memory capacity: beta = {summary['beta_per_dim']:g} D, start cosine "
            f"{summary['overlap']}; slope {summary['slope_measured']:.3f} vs "
            f"{summary['slope_predicted']:.3f} predicted"
        ),
        xaxis_title="dimension D",
        yaxis_title="log K* (natural log of the number of patterns)",
        yaxis_rangemode="tozero",
        height=420,
    )
    return fig
