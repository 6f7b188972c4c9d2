"""Stepwise inference on graph navigation: paths, the gap to a direct model, and temperature.

Run from the repository root: ``python examples/graph_navigation.py`` (see
``docs/graph_navigation.md``).
"""

from __future__ import annotations

from pathlib import Path

import probekit as pk
from probekit.tasks import graph_navigation as gn

ROOT = Path(__file__).resolve().parent.parent
STEPWISE = ROOT / "checkpoints" / "graphnav-stepwise"
DIRECT = ROOT / "checkpoints" / "graphnav-direct"

graph = gn.load_graph(STEPWISE)  # networkx.DiGraph, int nodes with a "level"
pairs = gn.heldout_pairs(STEPWISE)  # held-out connected (start, goal) pairs

# 1. Greedy paths: one row per (pair, sample); accuracy = every step an edge and ends at the goal.
result = pk.stepwise.evaluate(str(STEPWISE), graph, pairs)
print(result.frame[["start", "goal", "path", "valid", "reached_goal", "correct"]].head())
print("held-out path accuracy", round(result.summary["accuracy"], 3))

# 2. The path-exists question: answering after the path vs at once.
split = gn.load_split(STEPWISE)
gap = pk.stepwise.stepwise_gap(
    str(STEPWISE), str(DIRECT), graph, split.heldout_connected, split.heldout_unconnected, 3
)
print({k: round(v, 3) for k, v in gap.summary.items() if k.endswith("accuracy")})

# 3. Temperature: more distinct correct paths, then fewer correct ones (the two held-out pairs
#    with the most paths).
counts = gn.path_counts(graph)
many = sorted(pairs, key=lambda p: -counts[p])[:2]
div = pk.stepwise.diversity(str(STEPWISE), graph, many, (0.0, 1.0, 3.0), samples=50)
print(div.frame[["start", "goal", "temperature", "accuracy", "unique_correct", "n_paths"]])
