"""Figures of :mod:`probekit.memorization`'s results (the maths lives in
:mod:`probekit.stats.memorization`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def audit_figures(frame: pd.DataFrame) -> list[Any]:
    """Score distributions, cross-entropy vs edit distance, and the most extractable sequences."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    f = frame
    scores = [c for c in ("ce", "min_k_prob", "min_k_pp", "zlib_ratio", "lev") if c in f]
    dist = make_subplots(rows=1, cols=len(scores), subplot_titles=scores)
    for j, col in enumerate(scores, start=1):
        dist.add_trace(go.Histogram(x=f[col], name=col, showlegend=False), row=1, col=j)
    dist.update_layout(title="Score distributions (one count per sequence)", height=320)
    units = {
        "ce": "cross-entropy (nats/token)",
        "min_k_prob": "Min-K% (log-prob)",
        "min_k_pp": "Min-K%++ (z-score)",
        "zlib_ratio": "zlib ratio (nats/byte)",
        "lev": "edit distance (tokens)",
    }
    for j, col in enumerate(scores, start=1):
        dist.update_xaxes(title_text=units[col], row=1, col=j)
        dist.update_yaxes(title_text="sequences", row=1, col=j)
    scatter = go.Figure(
        go.Scatter(
            x=f["ce"],
            y=f["lev"],
            mode="markers",
            customdata=np.stack([f.index.to_numpy(), f["match_len"]], axis=1),
            hovertemplate="row %{customdata[0]}<br>ce %{x:.3f}<br>lev %{y}"
            "<br>match_len %{customdata[1]}<extra></extra>",
            marker={"color": f["memorized"].astype(int), "colorscale": "Viridis"},
        )
    )
    scatter.update_layout(
        title="Cross-entropy vs edit distance of the greedy suffix",
        xaxis_title="mean token cross-entropy (nats)",
        yaxis_title="token Levenshtein distance to the true suffix",
    )
    top = f.sort_values(["lev", "ce"]).head(20)
    label_col = "text" if "text" in top else None
    labels = [str(v)[:60] for v in top[label_col]] if label_col else [str(i) for i in top.index]
    bars = go.Figure(
        go.Bar(
            x=top["lev"],
            y=[f"{i}: {lab}" for i, lab in zip(top.index, labels)],
            orientation="h",
        )
    )
    bars.update_layout(
        title="Most extractable sequences (lowest edit distance)",
        xaxis_title="token Levenshtein distance of the greedy suffix (tokens)",
        yaxis={"autorange": "reversed", "title": "sequence (row: text)"},
        height=max(300, 22 * len(top) + 120),
    )
    return [dist, scatter, bars]


def membership_figures(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[Any]:
    """ROC curves of every score, log-log."""
    import plotly.graph_objects as go

    fig = go.Figure()
    floor = 1e-4
    for name, (fpr, tpr) in curves.items():
        fig.add_trace(go.Scatter(x=np.maximum(fpr, floor), y=np.maximum(tpr, floor), name=name))
    fig.add_trace(
        go.Scatter(x=[floor, 1], y=[floor, 1], name="chance", line={"dash": "dot", "color": "gray"})
    )
    fig.update_layout(
        title="ROC, log-log (values below 1e-4 drawn at 1e-4)",
        xaxis={"type": "log", "title": "false positive rate"},
        yaxis={"type": "log", "title": "true positive rate"},
    )
    return [fig]


def scaling_figures(frame: pd.DataFrame, summary: dict[str, Any]) -> list[Any]:
    """Fraction memorized against repetitions, with the fitted slope."""
    import plotly.graph_objects as go

    f = frame
    s = summary
    fig = go.Figure(
        go.Scatter(
            x=f["repetitions"],
            y=f["fraction_memorized"],
            mode="markers+lines",
            name="observed",
            error_y={"type": "data", "array": f["stderr"]},
        )
    )
    if np.isfinite(s["slope"]):
        xs = np.geomspace(f["repetitions"].min(), f["repetitions"].max(), 50)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=s["intercept"] + s["slope"] * np.log2(xs),
                name=f"fit: {s['slope']:.3f} per doubling",
                line={"dash": "dash"},
            )
        )
    fig.update_layout(
        title="Fraction memorized vs repetitions",
        xaxis={"type": "log", "title": "repetitions in training"},
        yaxis={"title": "fraction memorized", "range": [-0.05, 1.05]},
    )
    return [fig]


def latent_figures(frame: pd.DataFrame, trajectories: pd.DataFrame) -> list[Any]:
    """Edit distance over checkpoints per label, and cross-entropy at first exposure."""
    import plotly.graph_objects as go

    t = trajectories
    traj = go.Figure()
    colors = {
        "memorized": "#d62728",
        "latent": "#9467bd",
        "control": "#1f77b4",
        "other": "#7f7f7f",
        "unseen": "#2ca02c",
    }
    for label, group in t.groupby("label"):
        med = group.groupby("step")["lev"].median()
        traj.add_trace(
            go.Scatter(
                x=med.index,
                y=med.values,
                name=f"{label} (median, n={group['sequence'].nunique()})",
                line={"color": colors.get(label, "#000"), "width": 3},
            )
        )
        for _seq, rows in list(group.groupby("sequence"))[:40]:
            traj.add_trace(
                go.Scatter(
                    x=rows["step"],
                    y=rows["lev"],
                    mode="lines",
                    line={"color": colors.get(label, "#000"), "width": 0.5},
                    opacity=0.35,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
    traj.update_layout(
        title="Edit distance of the greedy suffix over training checkpoints",
        xaxis_title="training step",
        yaxis_title="token Levenshtein distance",
    )
    hist = go.Figure()
    for label, group in frame.groupby("label"):
        hist.add_trace(go.Histogram(x=group["ce_first"], name=label, opacity=0.6))
    hist.update_layout(
        barmode="overlay",
        title="Cross-entropy at the checkpoint right after first exposure, by label",
        xaxis_title="mean token cross-entropy (nats)",
        yaxis_title="sequences",
    )
    return [traj, hist]


def perturbation_figures(frame: pd.DataFrame) -> list[Any]:
    """Edit distance without noise against the best over weight-noise draws."""
    import plotly.graph_objects as go

    f = frame
    fig = go.Figure(
        go.Scatter(
            x=f["lev"],
            y=f["min_lev"],
            mode="markers",
            customdata=np.stack([f.index.to_numpy(), f["best_draw"]], axis=1),
            hovertemplate="row %{customdata[0]}<br>lev %{x}<br>min lev %{y}"
            "<br>draw %{customdata[1]}<extra></extra>",
        )
    )
    top = float(max(f["lev"].max(), 1))
    fig.add_trace(
        go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot"}, name="y = x")
    )
    fig.update_layout(
        title="Edit distance without noise vs best over weight-noise draws",
        xaxis_title="lev (unperturbed)",
        yaxis_title="min lev over draws",
    )
    return [fig]
