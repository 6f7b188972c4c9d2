"""Figures of :mod:`probekit.stepwise`: one builder per measurement ``kind``."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go


def evaluate(result: Any) -> list[go.Figure]:
    """Outcome of every generation, by true path length of its pair (stacked fractions)."""
    frame = result.frame.assign(true_length=result.frame["shortest"])
    fig = go.Figure(layout={"height": 380, "barmode": "stack"})
    counts = frame.groupby(["true_length", "failure"]).size().unstack(fill_value=0)
    totals = counts.sum(axis=1)
    for kind in ("correct", "misstep", "planning", "unterminated"):
        if kind in counts:
            fig.add_trace(go.Bar(x=counts.index, y=counts[kind] / totals, name=kind))
    fig.update_layout(
        title="outcome of the generated paths by shortest path length of the pair",
        xaxis_title="shortest path length of the pair (edges)",
        yaxis_title="fraction of generations",
        yaxis_range=[0, 1],
        legend_title="outcome",
    )
    return [fig]


def diversity(result: Any) -> list[go.Figure]:
    """Mean accuracy and coverage of the true paths against sampling temperature."""
    means = result.frame.groupby("temperature")[["accuracy", "coverage"]].mean()
    fig = go.Figure(layout={"height": 380})
    fig.add_trace(
        go.Scatter(
            x=means.index,
            y=means["accuracy"],
            mode="lines+markers",
            name="accuracy (fraction of samples correct)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=means.index,
            y=means["coverage"],
            mode="lines+markers",
            name="unique correct paths / true path count",
        )
    )
    fig.update_layout(
        title="diversity-accuracy trade-off",
        xaxis_title="sampling temperature",
        yaxis_title="fraction",
        yaxis_range=[0, 1.02],
        legend_title="measure",
    )
    return [fig]


def simplicity(result: Any) -> list[go.Figure]:
    """Histogram of generated minus uniformly drawn true path length."""
    fig = go.Figure(layout={"height": 360})
    fig.add_trace(go.Histogram(x=result.frame["minus_uniform"], name="generated - uniform true"))
    fig.add_trace(go.Histogram(x=result.frame["minus_shortest"], name="generated - shortest"))
    fig.update_layout(
        title="path length of correct generations relative to true paths",
        xaxis_title="length difference (edges)",
        yaxis_title="generations (count)",
        barmode="overlay",
        legend_title="difference",
    )
    fig.update_traces(opacity=0.6)
    return [fig]


def gap(result: Any) -> list[go.Figure]:
    """Path-exists accuracy of the stepwise and direct models by pair length."""
    frame = result.frame
    fig = go.Figure(layout={"height": 400})
    for connected, dash in ((True, "solid"), (False, "dot")):
        part = frame[frame["connected"] == connected]
        label = "connected" if connected else "unconnected"
        for col, name in (("stepwise_accuracy", "stepwise"), ("direct_accuracy", "direct")):
            fig.add_trace(
                go.Scatter(
                    x=part["length"],
                    y=part[col],
                    mode="lines+markers",
                    line={"dash": dash},
                    name=f"{name}, {label} pairs",
                )
            )
    _accuracy_layout(
        fig,
        result.summary.get("max_train_length"),
        "training cap",
        "path-exists accuracy: answering after the path (stepwise) vs at once (direct)",
        "pair length: longest path or walk (edges)",
        "model, pairs",
    )
    return [fig]


def _accuracy_layout(
    fig: go.Figure, cap: Any, cap_label: str, title: str, xaxis_title: str, legend: str
) -> None:
    """An accuracy-against-length figure: the training range's edge dashed, accuracy 0..1."""
    if cap is not None:
        fig.add_vline(x=cap + 0.5, line_dash="dash", annotation_text=cap_label)
    fig.update_layout(
        title=title,
        xaxis_title=xaxis_title,
        yaxis_title="accuracy (fraction right)",
        yaxis_range=[0, 1.02],
        legend_title=legend,
    )


def failures(result: Any) -> list[go.Figure]:
    """Failure rates against training step."""
    frame = result.frame
    fig = go.Figure(layout={"height": 380})
    for col, name in (
        ("misstep_rate", "missteps (a non-edge step)"),
        ("planning_failure_rate", "planning failures (valid walk, wrong end)"),
        ("accuracy", "accuracy"),
    ):
        fig.add_trace(go.Scatter(x=frame["step"], y=frame[col], mode="lines+markers", name=name))
    fig.update_layout(
        title="failure split over training",
        xaxis_title="training step",
        yaxis_title="fraction of greedy paths",
        yaxis_range=[0, 1.02],
        legend_title="rate",
    )
    return [fig]


def mechanism(result: Any) -> list[go.Figure]:
    """Attention to the goal and to the current node, per layer and head."""
    frame = result.frame
    if frame.empty:
        return []
    labels = [f"L{r.layer}H{r.head}" for r in frame.itertuples()]
    fig = go.Figure(layout={"height": 380, "barmode": "group"})
    fig.add_trace(go.Bar(x=labels, y=frame["goal_attention"], name="to the goal token"))
    fig.add_trace(go.Bar(x=labels, y=frame["current_attention"], name="to the current node"))
    fig.add_trace(go.Scatter(x=labels, y=frame["uniform"], mode="lines", name="uniform attention"))
    fig.update_layout(
        title="attention of the position that chooses the next node",
        xaxis_title="layer and head",
        yaxis_title="mean attention weight (probability)",
        yaxis_range=[0, 1],
        legend_title="attention",
    )
    return [fig]


def incontext(result: Any) -> list[go.Figure]:
    """Accuracy against the number of chained motifs in context."""
    frame = result.frame
    fig = go.Figure(layout={"height": 360})
    fig.add_trace(
        go.Scatter(x=frame["motifs"], y=frame["accuracy"], mode="lines+markers", name="whole path")
    )
    fig.add_trace(
        go.Scatter(
            x=frame["motifs"],
            y=frame["first_step_accuracy"],
            mode="lines+markers",
            name="first step",
        )
    )
    _accuracy_layout(
        fig,
        result.summary.get("max_train_motifs"),
        "training range",
        "composing motifs given in context",
        "motifs chained in the context",
        "measure",
    )
    return [fig]


def primacy(result: Any) -> list[go.Figure]:
    """Which rival motif the model follows."""
    counts = result.frame["followed"].value_counts()
    order = [k for k in ("first", "second", "other") if k in counts]
    fig = go.Figure(layout={"height": 340})
    fig.add_trace(go.Bar(x=order, y=[int(counts[k]) for k in order], name="contexts"))
    fig.update_layout(
        title="conflicting exemplars: the motif the model's first step follows",
        xaxis_title="motif followed (in order of appearance in the context)",
        yaxis_title="contexts (count)",
        legend_title="",
    )
    return [fig]
