"""Stepwise inference on graph navigation: does writing the path out help, and how is it chosen?

The metrics of the graph-navigation study (Khona et al. 2024, "Towards an understanding of
stepwise inference in transformers: a synthetic graph navigation model"; see
``docs/graph_navigation.md``) for any causal language model over the tokens of
:mod:`probekit.tasks.graph_navigation` (prompt ``goal start``, then the path, then an answer):

- :func:`evaluate`: one row per (pair, sample): the generated path, whether every step is an
  edge (``valid``), whether it ends at the goal and stops (``reached_goal``), both
  (``correct``); the failure kind (``misstep`` = a non-edge step, ``planning`` = a valid walk
  that misses the goal); ``summary["accuracy"]``.
- :func:`diversity`: unique correct paths among ``samples`` draws vs the true path count, and
  accuracy, across sampling temperatures.
- :func:`simplicity_bias`: generated path length minus a uniformly drawn true path length and
  minus the shortest path length.
- :func:`stepwise_gap`: accuracy on the path-exists question of a stepwise model (its answer
  after its own path) minus that of a direct model, by pair length against the training cap.
- :func:`failure_split`: missteps vs planning failures across training snapshots.
- :func:`mechanism`: attention of the last position to the goal and the current-node tokens,
  per layer and head, and how often the model's next node is a successor nearest the goal.
- :func:`primacy` and :func:`incontext_accuracy`: in-context exemplars (motifs chained in the
  context): accuracy against the number of motifs, and with two conflicting motifs, how often
  the model follows the one shown first.

Every function returns a :class:`StepwiseResult` (``.frame``, ``.summary``, ``.figures()``).

Example::

    >>> import probekit as pk
    >>> from probekit.tasks import graph_navigation as gn
    >>> graph = gn.load_graph("checkpoints/graphnav-stepwise")
    >>> pairs = gn.heldout_pairs("checkpoints/graphnav-stepwise")
    >>> result = pk.stepwise.evaluate("checkpoints/graphnav-stepwise", graph, pairs)
    >>> result.summary["accuracy"]
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from probekit.report.page import Rendered
from probekit.tasks import graph_navigation as gn
from probekit.validation import as_generator, check_int, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx
    import plotly.graph_objects as go

__all__ = [
    "StepwiseResult",
    "diversity",
    "evaluate",
    "failure_split",
    "incontext_accuracy",
    "mechanism",
    "primacy",
    "simplicity_bias",
    "stepwise_gap",
]


@dataclass
class StepwiseResult(Rendered):
    """A table, headline numbers and the figures of one stepwise-inference measurement.

    ``kind`` names the measurement (``"evaluate"``, ``"diversity"``, ...); it picks the figure
    builder in :mod:`probekit.report.figures.stepwise`.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    kind: str
    title: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures import stepwise as figs

        return getattr(figs, self.kind)(self)


# ----------------------------------------------------------------------------- inputs


def _as_model(model: Any) -> Any:
    """A model to run: a checkpoint path becomes its runner (``probekit.models.runner``);
    anything else is used as is (a ``pk.load`` result, a Hugging Face causal LM, a runner, or
    any module with ``model(tokens) -> logits``)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.path.realpath(model)
        weights = os.path.join(path, "model.safetensors")
        stamp = os.stat(weights).st_mtime_ns if os.path.exists(weights) else 0
        return _runner_of_path(path, stamp)
    if not callable(model) and not hasattr(model, "generate"):
        raise ValueError(f"model must be a causal LM or a checkpoint path, got {type(model)}")
    return model


@functools.lru_cache(maxsize=8)
def _runner_of_path(path: str, stamp: int) -> Any:
    """The runner of a checkpoint directory, kept for the next call on the same unchanged
    weights (``stamp``: their modification time), so a study calling several functions on one
    checkpoint loads it once."""
    from probekit.models.runner import runner

    return runner(path)


def _check_pairs(graph: nx.DiGraph, pairs: Any, connected: bool = True) -> np.ndarray:
    n = graph.number_of_nodes()
    arr = np.asarray(list(pairs) if not isinstance(pairs, np.ndarray) else pairs, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise ValueError(
            f"pairs must be a non-empty [m, 2] list of (start, goal) node ids, got shape "
            f"{arr.shape}"
        )
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"pairs must hold node ids of the graph (0..{n - 1})")
    if connected:
        counts = gn.path_counts(graph)[arr[:, 0], arr[:, 1]]
        if (counts == 0).any():
            bad = tuple(arr[np.argmax(counts == 0)])
            raise ValueError(f"pairs must be connected in graph; {bad} has no path")
    return arr


def _check_temperature(value: Any, name: str = "temperature") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- formulas


def failure_kind(valid: np.ndarray, reached_goal: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """Per generation: ``"correct"`` (valid and at the goal), ``"misstep"`` (some step is not
    an edge), ``"planning"`` (every step an edge, but the walk stopped away from the goal), or
    ``"unterminated"`` (valid, but still going when the step budget ran out). ``[m]`` strings."""
    valid, reached, term = (np.asarray(x, bool) for x in (valid, reached_goal, terminated))
    return np.where(
        ~valid,
        "misstep",
        np.where(reached, "correct", np.where(term, "planning", "unterminated")),
    )


def unique_correct_paths(paths: Sequence[Sequence[int]], correct: Sequence[bool]) -> int:
    """Number of distinct paths among the correct generations."""
    return len({tuple(p) for p, c in zip(paths, correct, strict=True) if c})


def nearest_successors(
    graph_adjacency: np.ndarray, dist: np.ndarray, current: int, goal: int
) -> np.ndarray:
    """The successors of ``current`` at the least directed distance to ``goal`` (the "nearest
    to the goal" rule's choice set); empty when no successor reaches the goal.
    ``graph_adjacency [n, n]`` bool, ``dist [n, n]`` shortest path lengths (inf = none)."""
    succ = np.nonzero(graph_adjacency[current])[0]
    if not len(succ):
        return succ
    d = dist[succ, goal]
    if not np.isfinite(d).any():
        return succ[:0]
    return succ[d == d.min()]


# ----------------------------------------------------------------------------- evaluate


def evaluate(
    model: Any,
    graph: nx.DiGraph,
    pairs: Any,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int | torch.Generator = 0,
    steps: int | None = None,
    batch_size: int = 4096,
) -> StepwiseResult:
    """Let ``model`` write a path for each connected ``(start, goal)`` in ``pairs`` and score it.

    ``model``: a ``pk.load`` result, a Hugging Face causal LM, any ``model(tokens) -> logits``
    module, or a checkpoint path. The prompt is ``goal start``; ``samples`` continuations per pair
    are drawn at ``temperature`` (0 = greedy; then every sample is the same) with a generator
    seeded by ``seed``, at most ``steps`` tokens each (default: the longest sequence of the
    graph's task, minus the prompt, plus one).

    ``frame``: one row per (pair, sample) with ``pair``, ``sample``, ``start``, ``goal``,
    ``path`` (node ints, start first), ``answer`` (the token after the path), ``valid`` (every
    step an edge), ``reached_goal`` (ends at the goal and stops), ``correct`` (both),
    ``first_misstep`` (-1 if none), ``failure`` (:func:`failure_kind`), ``length`` (edges),
    ``n_paths`` (true count), ``shortest`` (shortest path length). ``summary``: ``accuracy``,
    ``valid_rate``, ``reached_goal_rate``, ``misstep_rate``, ``planning_failure_rate``,
    ``unterminated_rate``, ``n_pairs``, ``samples``, ``temperature``.
    """
    pairs = _check_pairs(graph, pairs)
    temperature = _check_temperature(temperature)
    samples = check_positive_int("samples", samples)
    gen = as_generator(seed, "seed")
    model = _as_model(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        r = gn.rollout(model, graph, pairs, temperature, samples, gen, steps, batch_size)
    finally:
        if was_training:
            model.train()
    counts = gn.path_counts(graph)
    dist = gn.distances(graph)
    rows = r["pairs"]
    kinds = failure_kind(r["valid"], r["reached_goal"], r["terminated"])
    frame = pd.DataFrame(
        {
            "pair": np.repeat(np.arange(len(pairs)), samples),
            "sample": r["sample"],
            "start": rows[:, 0],
            "goal": rows[:, 1],
            "path": r["paths"],
            "answer": r["answers"],
            "valid": r["valid"],
            "reached_goal": r["reached_goal"],
            "correct": r["correct"],
            "first_misstep": r["first_misstep"],
            "failure": kinds,
            "length": [len(p) - 1 for p in r["paths"]],
            "n_paths": counts[rows[:, 0], rows[:, 1]],
            "shortest": dist[rows[:, 0], rows[:, 1]].astype(np.int64),
        }
    )
    summary = {
        "accuracy": float(frame["correct"].mean()),
        "valid_rate": float(frame["valid"].mean()),
        "reached_goal_rate": float(frame["reached_goal"].mean()),
        "misstep_rate": float((kinds == "misstep").mean()),
        "planning_failure_rate": float((kinds == "planning").mean()),
        "unterminated_rate": float((kinds == "unterminated").mean()),
        "n_pairs": len(pairs),
        "samples": samples,
        "temperature": temperature,
    }
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="evaluate",
        title="Paths written by the model",
        description=(
            f"{len(pairs)} (start, goal) pairs x {samples} samples at temperature {temperature:g}: "
            f"accuracy {summary['accuracy']:.3f} (every step an edge and the path ends at the "
            f"goal), missteps {summary['misstep_rate']:.3f}, planning failures "
            f"{summary['planning_failure_rate']:.3f}."
        ),
    )


# ----------------------------------------------------------------------------- diversity


def diversity(
    model: Any,
    graph: nx.DiGraph,
    pairs: Any,
    temperatures: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    samples: int = 200,
    seed: int = 0,
    batch_size: int = 4096,
) -> StepwiseResult:
    """Diversity against accuracy across sampling temperatures.

    For each pair and temperature, ``samples`` paths are drawn. ``frame``: one row per (pair,
    temperature) with ``accuracy`` (fraction correct), ``unique_correct`` (distinct correct
    paths), ``n_paths`` (true count), ``coverage = unique_correct / min(n_paths, samples)``.
    ``summary``: per temperature the mean accuracy and coverage (``by_temperature``), the
    temperature with the most unique correct paths (``peak_temperature``) and whether that peak
    lies strictly inside the range (``peak_is_intermediate``).
    """
    pairs = _check_pairs(graph, pairs)
    samples = check_positive_int("samples", samples)
    temps = [_check_temperature(t, "temperatures") for t in temperatures]
    if not temps:
        raise ValueError("temperatures must name at least one temperature")
    model = _as_model(model)
    rows = []
    for i, t in enumerate(temps):
        res = evaluate(model, graph, pairs, t, samples, seed + i, batch_size=batch_size)
        for p, part in res.frame.groupby("pair"):
            n_paths = int(part["n_paths"].iloc[0])
            unique = unique_correct_paths(part["path"].tolist(), part["correct"].tolist())
            rows.append(
                {
                    "pair": int(p),
                    "start": int(part["start"].iloc[0]),
                    "goal": int(part["goal"].iloc[0]),
                    "temperature": t,
                    "accuracy": float(part["correct"].mean()),
                    "unique_correct": unique,
                    "n_paths": n_paths,
                    "coverage": unique / min(n_paths, samples),
                }
            )
    frame = pd.DataFrame(rows)
    means = frame.groupby("temperature")[["accuracy", "unique_correct", "coverage"]].mean()
    peak = float(means["unique_correct"].idxmax())
    summary = {
        "by_temperature": {
            f"{t:g}": {k: float(means.loc[t, k]) for k in means.columns} for t in means.index
        },
        "peak_temperature": peak,
        "peak_is_intermediate": bool(min(temps) < peak < max(temps)),
        "samples": samples,
        "n_pairs": len(pairs),
    }
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="diversity",
        title="Diversity vs accuracy across sampling temperatures",
        description=(
            f"{len(pairs)} pairs x {samples} samples per temperature. Unique correct paths "
            f"peak at temperature {peak:g}; accuracy falls from "
            f"{means['accuracy'].iloc[0]:.3f} (T={means.index[0]:g}) to "
            f"{means['accuracy'].iloc[-1]:.3f} (T={means.index[-1]:g})."
        ),
    )


# ----------------------------------------------------------------------------- simplicity bias


def simplicity_bias(
    result: StepwiseResult, graph: nx.DiGraph, seed: int | torch.Generator = 0
) -> StepwiseResult:
    """Are the model's correct paths shorter than paths drawn uniformly from the graph?

    ``result``: an :func:`evaluate` result. For each correct generation, a true path for the
    same pair is drawn uniformly (:func:`probekit.tasks.graph_navigation.sample_paths`);
    ``frame`` adds ``true_length``, ``minus_uniform = length - true_length`` and ``minus_shortest
    = length - shortest``. ``summary``: their means, the fraction of generations shorter than
    the drawn path, and ``n`` (correct generations). A negative ``mean_minus_uniform`` is a
    simplicity bias (in a layered DAG every path of a pair has the same length, so it is 0 there
    by construction).
    """
    if not isinstance(result, StepwiseResult) or result.kind != "evaluate":
        raise ValueError("result must be a pk.stepwise.evaluate result")
    frame = result.frame[result.frame["correct"]].copy()
    if frame.empty:
        raise ValueError("result has no correct generation to compare with true paths")
    true = gn.sample_paths(graph, frame[["start", "goal"]].to_numpy(), as_generator(seed))
    frame["true_length"] = [len(p) - 1 for p in true]
    frame["minus_uniform"] = frame["length"] - frame["true_length"]
    frame["minus_shortest"] = frame["length"] - frame["shortest"]
    summary = {
        "mean_minus_uniform": float(frame["minus_uniform"].mean()),
        "mean_minus_shortest": float(frame["minus_shortest"].mean()),
        "fraction_shorter_than_uniform": float((frame["minus_uniform"] < 0).mean()),
        "fraction_longer_than_uniform": float((frame["minus_uniform"] > 0).mean()),
        "fraction_shortest": float((frame["minus_shortest"] == 0).mean()),
        "n": len(frame),
    }
    return StepwiseResult(
        frame=frame[
            ["pair", "sample", "start", "goal", "length", "true_length", "shortest"]
            + ["minus_uniform", "minus_shortest"]
        ].reset_index(drop=True),
        summary=summary,
        kind="simplicity",
        title="Simplicity bias: generated vs true path lengths",
        description=(
            f"{len(frame)} correct generations: length minus a uniformly drawn true path "
            f"{summary['mean_minus_uniform']:+.3f} edges on average, minus the shortest path "
            f"{summary['mean_minus_shortest']:+.3f}."
        ),
    )


# ----------------------------------------------------------------------------- stepwise gap


def _answers(model: Any, graph: nx.DiGraph, pairs: np.ndarray, direct: bool, batch_size: int):
    steps = 1 if direct else None
    r = gn.rollout(model, graph, pairs, 0.0, 1, 0, steps, batch_size)
    return r


def stepwise_gap(
    stepwise_model: Any,
    direct_model: Any,
    graph: nx.DiGraph,
    connected_pairs: Any,
    unconnected_pairs: Any = (),
    max_train_length: int | None = None,
    batch_size: int = 4096,
) -> StepwiseResult:
    """Accuracy on the path-exists question: a stepwise model answering after its own path vs
    a direct model answering at once, by pair length (greedy decoding).

    A stepwise answer to a connected pair is right when the path is correct and followed by
    ``<yes>``; to an unconnected pair when it ends in ``<no>``. A direct answer is right when
    the first token is the right one of ``<yes>`` / ``<no>``. ``frame``: one row per (length,
    connected) with both accuracies and ``gap = stepwise - direct``. ``summary``: balanced
    accuracies (mean over connected and unconnected) of both models and their gap, overall and
    within / beyond ``max_train_length`` (the longest path seen in training); and
    ``*_length_balanced_accuracy``: balanced within each pair length, averaged over the lengths
    with both kinds of pair (0.5 for a model that answers from the length alone).
    """
    conn = _check_pairs(graph, connected_pairs)
    un = (
        np.empty((0, 2), np.int64)
        if len(unconnected_pairs) == 0
        else _check_pairs(graph, unconnected_pairs, connected=False)
    )
    if max_train_length is not None:
        check_int("max_train_length", max_train_length, low=1)
    pairs = np.concatenate([conn, un])
    truth = np.r_[np.ones(len(conn), bool), np.zeros(len(un), bool)]
    step = _answers(_as_model(stepwise_model), graph, pairs, False, batch_size)
    direct = _answers(_as_model(direct_model), graph, pairs, True, batch_size)
    step_right = gn.answer_correct(truth, step["answers"], step["correct"])
    direct_right = gn.answer_correct(truth, direct["answers"], np.ones(len(pairs), bool))
    lengths = gn.pair_lengths(graph, pairs)
    rows = []
    for k in sorted(set(lengths.tolist())):
        for c in (True, False):
            sel = (lengths == k) & (truth == c)
            if sel.any():
                rows.append(
                    {
                        "length": k,
                        "connected": c,
                        "n": int(sel.sum()),
                        "stepwise_accuracy": float(step_right[sel].mean()),
                        "direct_accuracy": float(direct_right[sel].mean()),
                        "beyond_cap": bool(max_train_length is not None and k > max_train_length),
                    }
                )
    frame = pd.DataFrame(rows)
    frame["gap"] = frame["stepwise_accuracy"] - frame["direct_accuracy"]

    def balanced(right: np.ndarray, sel: np.ndarray) -> float | None:
        parts = [right[sel & truth].mean()] if (sel & truth).any() else []
        parts += [right[sel & ~truth].mean()] if (sel & ~truth).any() else []
        return float(np.mean(parts)) if parts else None

    everything = np.ones(len(pairs), bool)
    summary: dict[str, Any] = {
        "stepwise_accuracy": balanced(step_right, everything),
        "direct_accuracy": balanced(direct_right, everything),
    }
    summary["gap"] = summary["stepwise_accuracy"] - summary["direct_accuracy"]
    # balanced within each length, then averaged over the lengths that have both kinds of
    # pair: a model answering from the length alone (long pairs are nearly always connected
    # in a dense layered DAG) scores 0.5 here
    both = [
        k
        for k in set(lengths.tolist())
        if (truth[lengths == k]).any() and (~truth[lengths == k]).any()
    ]
    if both:
        for key, right in (("stepwise", step_right), ("direct", direct_right)):
            summary[f"{key}_length_balanced_accuracy"] = float(
                np.mean([balanced(right, lengths == k) for k in both])
            )
        summary["length_balanced_gap"] = (
            summary["stepwise_length_balanced_accuracy"]
            - summary["direct_length_balanced_accuracy"]
        )
        summary["lengths_with_both"] = sorted(both)
    if max_train_length is not None:
        for name, sel in (
            ("within_cap", lengths <= max_train_length),
            ("beyond_cap", lengths > max_train_length),
        ):
            s, d = balanced(step_right, sel), balanced(direct_right, sel)
            summary[f"stepwise_accuracy_{name}"] = s
            summary[f"direct_accuracy_{name}"] = d
            summary[f"gap_{name}"] = None if s is None or d is None else s - d
        summary["max_train_length"] = max_train_length
    summary["n_connected"], summary["n_unconnected"] = len(conn), len(un)
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="gap",
        title="The stepwise gap: answering after the path vs at once",
        description=(
            f"Balanced accuracy on the path-exists question over {len(conn)} connected and "
            f"{len(un)} unconnected pairs: stepwise {summary['stepwise_accuracy']:.3f}, direct "
            f"{summary['direct_accuracy']:.3f} (gap {summary['gap']:+.3f})."
        ),
    )


# ----------------------------------------------------------------------------- failure split


def failure_split(
    snapshots: Mapping[int, Any] | Sequence[tuple[int, Any]],
    graph: nx.DiGraph,
    pairs: Any,
    batch_size: int = 4096,
) -> StepwiseResult:
    """Missteps vs planning failures over training: :func:`evaluate` (greedy) on each snapshot.

    ``snapshots``: training step -> model (or checkpoint path). ``frame``: one row per step
    with ``accuracy``, ``misstep_rate``, ``planning_failure_rate``, ``unterminated_rate``.
    ``summary``: the first step at which each failure rate falls below 5% (None if never), and
    ``missteps_resolved_first`` (missteps reach it no later than planning failures do).
    """
    items = sorted(dict(snapshots).items())
    if not items:
        raise ValueError("snapshots must map at least one training step to a model")
    pairs = _check_pairs(graph, pairs)
    rows = []
    for step, model in items:
        check_int("snapshot step", step, low=0)
        s = evaluate(model, graph, pairs, batch_size=batch_size).summary
        rows.append(
            {
                "step": step,
                "accuracy": s["accuracy"],
                "misstep_rate": s["misstep_rate"],
                "planning_failure_rate": s["planning_failure_rate"],
                "unterminated_rate": s["unterminated_rate"],
            }
        )
    frame = pd.DataFrame(rows)

    def first_below(col: str, level: float = 0.05) -> int | None:
        hit = frame[frame[col] < level]
        return None if hit.empty else int(hit["step"].iloc[0])

    m, p = first_below("misstep_rate"), first_below("planning_failure_rate")
    summary = {
        "misstep_below_5pct_at": m,
        "planning_below_5pct_at": p,
        "missteps_resolved_first": bool(m is not None and (p is None or m <= p)),
        "misstep_auc": float(frame["misstep_rate"].mean()),
        "planning_auc": float(frame["planning_failure_rate"].mean()),
    }
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="failures",
        title="Failure split over training: missteps vs planning failures",
        description=(
            f"Greedy paths on {len(pairs)} pairs at {len(items)} training steps; missteps fall "
            f"below 5% at step {m}, planning failures at step {p}."
        ),
    )


# ----------------------------------------------------------------------------- mechanism


def _attention_patterns(model: Any, tokens: torch.Tensor) -> torch.Tensor | None:
    """``[layers, batch, heads, query, key]`` attention probabilities of ``model`` on
    ``tokens [batch, T]``: the hook points ``blocks.L.attn.hook_pattern`` read through the
    runner; None for a model the runner does not take or without those hooks."""
    run = gn._runner_or_none(model)
    if run is None or run.family != "transformer":
        return None
    names = sorted(
        (
            n
            for n in run.hook_names()
            if n.startswith("blocks.") and n.endswith("attn.hook_pattern")
        ),
        key=lambda n: int(n.split(".")[1]),
    )
    if not names:
        return None
    acts = run.activations(tokens, names)
    return torch.stack([acts[n].float().cpu() for n in names])


@torch.no_grad()
def mechanism(model: Any, graph: nx.DiGraph, pairs: Any, batch_size: int = 1024) -> StepwiseResult:
    """Where the model looks and what rule its choices follow, on its own greedy paths.

    Attention: for every generated step (query = the position of the current node, whose
    logits choose the next node), the attention weight on the goal token (position 0) and on
    the current node itself; ``frame`` has one row per (layer, head) with the means
    ``goal_attention``, ``current_attention`` and ``uniform`` (the mean of ``1 / (t + 1)``, the
    weight of a uniform pattern). Rule: at each step the model moved from ``v`` to ``w`` on a
    connected pair, the "nearest to the goal" rule picks the successors of ``v`` with the least
    distance to the goal (:func:`nearest_successors`); ``summary["rule_agreement"]`` is the
    fraction of steps with ``w`` among them, ``rule_chance`` that of a uniformly random
    successor, and ``max_goal_attention`` / ``max_current_attention`` the heads that look most.
    """
    pairs = _check_pairs(graph, pairs)
    model = _as_model(model)
    n = graph.number_of_nodes()
    res = evaluate(model, graph, pairs, batch_size=batch_size)
    a, dist = gn.adjacency(graph), gn.distances(graph)
    agree, chance = [], []
    for path, goal in zip(res.frame["path"], res.frame["goal"]):
        for v, w in zip(path[:-1], path[1:]):
            if v == goal:
                break
            rule = nearest_successors(a, dist, v, goal)
            succ = np.nonzero(a[v])[0]
            if len(rule):
                agree.append(w in rule)
                chance.append(len(rule) / len(succ))
    # attention on the generated sequences: prompt + path nodes (the current node at t)
    seqs = [[g, *p] for g, p in zip(res.frame["goal"], res.frame["path"])]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), gn.token_id(gn.PAD, n), dtype=torch.long)
    valid_q = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        # queries 1..len(s)-2 hold a current node whose next node was generated; the last
        # node (the goal or a dead end) is followed by the answer token, not a node
        valid_q[i, 1 : len(s) - 1] = True
    goal_w, cur_w, uni = None, None, None
    count = 0
    for chunk, mask in zip(tokens.split(batch_size), valid_q.split(batch_size)):
        pattern = _attention_patterns(model, chunk)  # [L, B, H, T, T]
        if pattern is None:
            break
        t_idx = torch.arange(chunk.shape[1])
        to_goal = pattern[..., :, 0]  # [L, B, H, T]
        to_self = pattern[..., t_idx, t_idx]  # [L, B, H, T]
        m = mask[None, :, None, :].float()
        g_sum = (to_goal * m).sum((1, 3))
        c_sum = (to_self * m).sum((1, 3))
        u_sum = float((mask.float() / (t_idx + 1).float()).sum())
        goal_w = g_sum if goal_w is None else goal_w + g_sum
        cur_w = c_sum if cur_w is None else cur_w + c_sum
        uni = u_sum if uni is None else uni + u_sum
        count += int(mask.sum())
    rows = []
    if count:
        for layer in range(goal_w.shape[0]):
            for head in range(goal_w.shape[1]):
                rows.append(
                    {
                        "layer": layer,
                        "head": head,
                        "goal_attention": float(goal_w[layer, head]) / count,
                        "current_attention": float(cur_w[layer, head]) / count,
                        "uniform": uni / count,
                    }
                )
    frame = pd.DataFrame(rows)
    summary: dict[str, Any] = {
        "rule_agreement": float(np.mean(agree)) if agree else None,
        "rule_chance": float(np.mean(chance)) if chance else None,
        "rule_steps": len(agree),
        "attention_queries": count,
        "accuracy": res.summary["accuracy"],
    }
    if not frame.empty:
        g_best = frame.loc[frame["goal_attention"].idxmax()]
        c_best = frame.loc[frame["current_attention"].idxmax()]
        summary["max_goal_attention"] = {
            "layer": int(g_best["layer"]),
            "head": int(g_best["head"]),
            "weight": float(g_best["goal_attention"]),
        }
        summary["max_current_attention"] = {
            "layer": int(c_best["layer"]),
            "head": int(c_best["head"]),
            "weight": float(c_best["current_attention"]),
        }
        summary["uniform_weight"] = float(frame["uniform"].iloc[0])
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="mechanism",
        title="Mechanism: attention to goal and current node; the nearest-to-goal rule",
        description=(
            f"On {len(pairs)} greedy paths: the next node is a successor nearest the goal at "
            f"{summary['rule_agreement'] or 0:.3f} of {len(agree)} steps (a random successor: "
            f"{summary['rule_chance'] or 0:.3f})."
        ),
    )


# ----------------------------------------------------------------------------- exemplars


def incontext_accuracy(
    model: Any,
    n_nodes: int,
    motifs: Sequence[int] = (1, 2, 3, 4, 5),
    n: int = 200,
    motif_length: int = 2,
    max_train_motifs: int | None = None,
    seed: int = 0,
) -> StepwiseResult:
    """Compositional generalisation with in-context exemplars: greedy path accuracy against the
    number of chained motifs shown (:func:`probekit.tasks.graph_navigation.incontext_sequences`).

    ``frame``: one row per motif count with ``accuracy`` (the whole chained path written, then
    ``<yes>``), ``first_step_accuracy`` and ``beyond_training`` (more motifs than
    ``max_train_motifs``). ``summary``: accuracy within and beyond the training range.
    """
    check_positive_int("n", n)
    model = _as_model(model)
    rows = []
    for k in motifs:
        check_int("motifs", k, low=1)
        batch = gn.incontext_sequences(n_nodes, n, k, motif_length, seed=seed + k)
        conts = gn.incontext_continuations(model, batch, k * motif_length + 1)
        right = gn.incontext_correct(conts, batch, n_nodes)
        first = [c[0] == p[1] for c, p in zip(conts, batch.paths)]
        rows.append(
            {
                "motifs": k,
                "path_edges": k * motif_length,
                "accuracy": float(np.mean(right)),
                "first_step_accuracy": float(np.mean(first)),
                "beyond_training": bool(max_train_motifs is not None and k > max_train_motifs),
                "n": n,
            }
        )
    frame = pd.DataFrame(rows)
    summary: dict[str, Any] = {"by_motifs": dict(zip(frame["motifs"], frame["accuracy"]))}
    summary["by_motifs"] = {int(k): float(v) for k, v in summary["by_motifs"].items()}
    if max_train_motifs is not None:
        inside = frame[~frame["beyond_training"]]
        beyond = frame[frame["beyond_training"]]
        summary["accuracy_within_training"] = (
            float(inside["accuracy"].mean()) if len(inside) else None
        )
        summary["accuracy_beyond_training"] = (
            float(beyond["accuracy"].mean()) if len(beyond) else None
        )
        summary["max_train_motifs"] = max_train_motifs
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="incontext",
        title="In-context exemplars: accuracy against the number of chained motifs",
        description=f"{n} sequences per motif count, greedy decoding.",
    )


def primacy(
    model: Any,
    n_nodes: int,
    n: int = 400,
    motifs: int = 2,
    motif_length: int = 2,
    seed: int = 0,
) -> StepwiseResult:
    """Primacy bias with conflicting exemplars.

    Each context holds two motifs that leave the start node for different nodes and rejoin
    (:func:`probekit.tasks.graph_navigation.incontext_sequences` with ``conflicting=True``);
    which of the two is shown first is a fair coin. The model's greedy first step is scored as
    ``first`` (the node of the motif shown first), ``second`` or ``other``. ``summary``:
    ``follows_first`` (fraction of first among first + second), ``follows_second``, ``other``,
    and ``binomial_p`` (two-sided test of follows_first = 0.5).
    """
    from scipy.stats import binomtest

    check_positive_int("n", n)
    model = _as_model(model)
    batch = gn.incontext_sequences(n_nodes, n, motifs, motif_length, conflicting=True, seed=seed)
    conts = gn.incontext_continuations(model, batch, 1)
    choice = np.array([c[0] for c in conts])
    first = choice == batch.first_choice.numpy()
    second = choice == batch.second_choice.numpy()
    frame = pd.DataFrame(
        {
            "first_choice": batch.first_choice.numpy(),
            "second_choice": batch.second_choice.numpy(),
            "model_choice": choice,
            "followed": np.where(first, "first", np.where(second, "second", "other")),
        }
    )
    decided = int(first.sum() + second.sum())
    follows_first = float(first.sum() / decided) if decided else None
    summary = {
        "follows_first": follows_first,
        "follows_second": float(second.sum() / decided) if decided else None,
        "other": float((~first & ~second).mean()),
        "binomial_p": float(binomtest(int(first.sum()), decided).pvalue) if decided else None,
        "n": n,
    }
    return StepwiseResult(
        frame=frame,
        summary=summary,
        kind="primacy",
        title="Primacy bias with conflicting exemplars",
        description=(
            f"{n} contexts with two rival motifs from the start node: the model follows the "
            f"one shown first in {follows_first if follows_first is not None else float('nan'):.3f} "
            "of the cases where it follows either."
        ),
    )
