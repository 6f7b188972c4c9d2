"""Figures of :mod:`probekit.attention`: per layer the vMF parameters of each head, then the
per-head reconstruction error, constant-kappa KL and mode counts."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def hypersphere_figures(result: Any) -> list[go.Figure]:
    """One figure per layer (kappa and log pi per head, as box plots), then one summary figure."""
    frame = result.frame
    figs = []
    rope = bool(frame["rope"].any())
    for layer, rows in frame.groupby("layer", sort=True):
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("concentration kappa_j", "log prior log pi_j"),
        )
        for h in rows["head"]:
            name = f"head {h}"
            fig.add_trace(
                go.Box(y=result.kappa[(layer, h)], name=name, legendgroup=name, showlegend=False),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Box(y=result.log_pi[(layer, h)], name=name, legendgroup=name, showlegend=False),
                row=1,
                col=2,
            )
        what = "(query, key) pairs" if rope else "keys"
        fig.update_layout(
            title=f"layer {layer}: vMF parameters per head, over {what} of the batch",
            height=380,
        )
        fig.update_xaxes(title_text="head", row=1, col=1)
        fig.update_xaxes(title_text="head", row=1, col=2)
        fig.update_yaxes(title_text="kappa (dimensionless)", row=1, col=1)
        fig.update_yaxes(title_text="log pi (nats)", row=1, col=2)
        figs.append(fig)

    labels = [f"L{r.layer}H{r.head}" for r in frame.itertuples()]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("KL(attention || constant-kappa surrogate)", "modes per head"),
    )
    fig.add_trace(
        go.Bar(x=labels, y=frame["kl_constant_kappa"], name="KL to constant-kappa surrogate"),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=labels, y=frame["modes_fixed_point"], name="modes: fixed-point iteration"),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Bar(x=labels, y=frame["modes_kmeans"], name="clusters: spherical k-means on keys"),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="layer / head", row=1, col=1)
    fig.update_xaxes(title_text="layer / head", row=1, col=2)
    fig.update_yaxes(title_text="KL (nats per query row)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="number of modes", rangemode="tozero", row=1, col=2)
    err = frame["reconstruction_error"].max()
    fig.update_layout(
        title=f"per head: surrogate KL and modes (max reconstruction error {err:.1e})",
        height=420,
        barmode="group",
    )
    figs.append(fig)
    return figs
