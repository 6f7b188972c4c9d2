"""Figures of :mod:`probekit.probes`."""

from __future__ import annotations

from typing import Any

import pandas as pd


def probe_figures(frame: pd.DataFrame) -> list[Any]:
    """Held-out accuracy per hook, one line per label, with each label's chance level."""
    import plotly.graph_objects as go

    fig = go.Figure(layout={"title": "held-out probe accuracy per layer", "height": 420})
    for label, rows in frame.groupby("label", sort=False):
        fig.add_trace(
            go.Scatter(x=rows["hook"], y=rows["test_accuracy"], mode="lines+markers", name=label)
        )
        fig.add_trace(
            go.Scatter(
                x=rows["hook"],
                y=rows["chance"],
                mode="lines",
                line={"dash": "dot"},
                name=f"{label} (chance)",
            )
        )
    fig.update_layout(xaxis_title="hook", yaxis_title="accuracy", yaxis_range=[0, 1.02])
    return [fig]
