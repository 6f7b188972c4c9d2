"""Figures of :mod:`probekit.forced_choice`: perplexities, calibration, memorisation check."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _original_altered(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    b_is_original = frame["label"].to_numpy() == 1
    a, b = frame["ppl_a"].to_numpy(), frame["ppl_b"].to_numpy()
    return np.where(b_is_original, b, a), np.where(b_is_original, a, b)


def perplexity_scatter(frame: pd.DataFrame) -> Any:
    """Perplexity of the original against the altered version, per item (right = below the
    diagonal)."""
    import plotly.graph_objects as go

    original, altered = _original_altered(frame)
    correct = frame["correct"].to_numpy(bool)
    fig = go.Figure()
    for mask, name in ((correct, "correct (original lower)"), (~correct, "wrong or tie")):
        fig.add_scatter(
            x=altered[mask], y=original[mask], mode="markers", name=name,
            text=[f"item {i}" for i in frame["item"].to_numpy()[mask]], opacity=0.7,
        )  # fmt: skip
    lo = float(min(original.min(), altered.min()))
    hi = float(max(original.max(), altered.max()))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="equal perplexity",
                    line={"dash": "dash", "color": "gray"})  # fmt: skip
    fig.update_layout(
        title="Perplexity of the original vs the altered version (one point per item)",
        xaxis_title="perplexity, altered version (per token, log scale)",
        yaxis_title="perplexity, original version (per token, log scale)",
        xaxis_type="log",
        yaxis_type="log",
    )
    return fig


def calibration(table: pd.DataFrame, summary: dict[str, Any]) -> Any:
    """Accuracy per equal-count confidence bin with the linear fit and chance."""
    import plotly.graph_objects as go

    slope, intercept = summary["calibration_slope"], summary["calibration_intercept"]
    x = table["bin"].to_numpy(float)
    fig = go.Figure()
    fig.add_bar(
        x=x, y=table["accuracy"], name="accuracy per bin",
        customdata=table["mean_confidence"],
        hovertemplate="bin %{x}<br>accuracy %{y:.3f}<br>mean |dPPL| %{customdata:.3g}",
    )  # fmt: skip
    fig.add_scatter(x=x, y=slope * x + intercept, mode="lines",
                    name=f"linear fit (slope {slope:+.4f} per bin)")  # fmt: skip
    fig.add_scatter(x=[x.min(), x.max()], y=[0.5, 0.5], mode="lines", name="chance",
                    line={"dash": "dot", "color": "gray"})  # fmt: skip
    fig.update_layout(
        title="Calibration: accuracy by confidence |PPL_A - PPL_B| (equal-count bins)",
        xaxis_title="confidence bin (1 = least confident)",
        yaxis_title="accuracy (fraction correct)",
        yaxis_range=[0, 1.02],
    )
    return fig


def memorization(frame: pd.DataFrame) -> Any:
    """zlib entropy against log-perplexity of each original (the memorisation check)."""
    import plotly.graph_objects as go

    original, _ = _original_altered(frame)
    zlib_original = np.where(frame["label"] == 1, frame["zlib_b"], frame["zlib_a"]) * 8
    fig = go.Figure(
        go.Scatter(x=zlib_original, y=np.log(original), mode="markers", name="original abstracts")
    )
    fig.update_layout(
        title="Memorisation check: log-perplexity vs zlib entropy of each original",
        xaxis_title="zlib-compressed length (bits)",
        yaxis_title="log perplexity (nats per token)",
    )
    return fig
