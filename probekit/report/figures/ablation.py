"""Figures of :mod:`probekit.ablation`'s sweep."""

from __future__ import annotations

from typing import Any

import pandas as pd


def sweep_figures(frame: pd.DataFrame, summary: dict[str, Any]) -> list[Any]:
    """A layer x head heatmap of ``delta`` (head-level sweeps) and per-layer bars."""
    import plotly.graph_objects as go

    s = summary
    metric = s["metric"]
    figs = []
    if s["level"] in ("head", "units") and frame["head"].notna().any():
        table = frame.pivot(index="layer", columns="head", values="delta")
        figs.append(
            go.Figure(
                go.Heatmap(
                    z=table.to_numpy(),
                    x=[str(h) for h in table.columns],
                    y=[str(layer) for layer in table.index],
                    colorscale="RdBu",
                    zmid=0.0,
                    colorbar={"title": f"delta {metric}"},
                    hovertemplate="layer %{y} head %{x}: delta %{z:.4f}<extra></extra>",
                ),
                layout={
                    "title": f"{s['method']}-ablating each head: change in {metric} "
                    f"(clean {s['clean']:.4f})",
                    "xaxis_title": "head" if s["level"] == "head" else "unit group",
                    "yaxis_title": "layer",
                    "height": 420,
                },
            )
        )
        per_layer = frame.groupby("layer")["delta"]
        bars = [
            go.Bar(x=per_layer.mean().index.astype(str), y=per_layer.mean(), name="mean"),
            go.Bar(
                x=per_layer.min().index.astype(str),
                y=per_layer.min() if s["higher_is_better"] else per_layer.max(),
                name="worst head",
            ),
        ]
        title = f"change in {metric} per layer, over its heads"
    else:
        bars = [go.Bar(x=frame["layer"].astype(str), y=frame["delta"], name="delta")]
        title = f"{s['method']}-ablating each {s['component']} layer: change in {metric}"
    figs.append(
        go.Figure(
            bars,
            layout={
                "title": f"{title} (clean {s['clean']:.4f})",
                "xaxis_title": "layer",
                "yaxis_title": f"delta {metric}",
                "barmode": "group",
                "height": 380,
            },
        )
    )
    return figs
