"""Functional and anatomical modularity of RNN units.

Which question this answers: do the units of an RNN trained on many tasks form functional
modules (groups of units that serve the same tasks), and are those modules also anatomical,
i.e. wired together and placed together? Sources: Yang et al. 2019 (Nature Neuroscience
22:297), task-variance clustering; Liu, Gan & Tegmark 2023 (Entropy 26:41), brain-inspired
modular training (BIMT); Liu, Khona, Fiete & Tegmark 2023 ("Growing brains",
arXiv:2310.07711), BIMT on these tasks. The method in ``docs/modularity.md``.

- :func:`task_variance` ``(model or store, tasks) -> [units, tasks]``: the variance of each
  unit's activity across trials at each time step, averaged over the steps after the
  fixation-only epoch (:func:`trial_variance` is the formula on one task's activity). From a
  live model, or from an activation store of the same trials
  (:func:`probekit.tasks.cognitive.variance_data` builds them with their ``task_id`` and
  ``step_mask`` extras).
- :func:`cluster`: drop inactive units (summed variance below ``1e-3``), normalise each unit's
  row (by its max or its sum), run k-means (scikit-learn's ``KMeans``, k-means++, ``n_init =
  20``) for every k in ``k_range``, keep the k with the highest silhouette (scikit-learn's
  ``silhouette_score``), order clusters by their preferred task; figures: the units x tasks
  heatmap sorted by cluster, silhouette against k, t-SNE and UMAP maps of the units.
- :func:`anatomical`: Newman modularity ``Q`` (:func:`newman_modularity`) of the symmetrised
  ``|W_rec|`` with a zero diagonal under the functional labels, the fraction of ``|W_rec|``
  within clusters (:func:`within_fraction`), the mean within-cluster distance between unit
  positions (:func:`locality`), each against a null of shuffled labels (z-score, p-value).
- :func:`lesion`: silence each cluster inside the recurrence (its units' hidden state set to 0 at
  every step) and measure the drop of each task's performance: clusters x tasks.

The formulas are in :mod:`probekit.stats.modularity`, the figures in
:mod:`probekit.report.figures.modularity`.

Example::

    >>> import probekit as pk
    >>> model = pk.load("checkpoints/cog-rnn-bimt")                        # doctest: +SKIP
    >>> tv = pk.modularity.task_variance(model, n_trials=64)               # doctest: +SKIP
    >>> from probekit.tasks import cognitive
    >>> data = cognitive.variance_data(n_trials=64)                        # doctest: +SKIP
    >>> store = pk.cache(model, data["inputs"], "hook_hidden", dtype=None,
    ...                  extras=data["extras"], out="acts/")               # doctest: +SKIP
    >>> tv = pk.modularity.task_variance(store)  # the same numbers         # doctest: +SKIP
    >>> clusters = pk.modularity.cluster(tv)                               # doctest: +SKIP
    >>> anat = pk.modularity.anatomical(model.W_rec, clusters.labels,
    ...                                 positions=model.positions)        # doctest: +SKIP
    >>> anat.summary["Q"], anat.summary["Q_z"]                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probekit.report.page import Rendered
from probekit.stats.modularity import (
    between_distance,
    grid_positions,
    locality,
    newman_modularity,
    symmetric_graph,
    top_fraction,
    trial_variance,
    wiring_length,
    within_fraction,
)
from probekit.validation import check_choice, check_int, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from probekit.activations import ActivationStore
    from probekit.models.rnn import HookedRNN

__all__ = [
    "AnatomicalResult",
    "ClusterResult",
    "LesionResult",
    "TaskVariance",
    "anatomical",
    "between_distance",
    "cluster",
    "grid_positions",
    "lesion",
    "locality",
    "newman_modularity",
    "task_variance",
    "top_fraction",
    "trial_variance",
    "wiring_length",
    "within_fraction",
]

INACTIVE_THRESHOLD = 1e-3


def _task_labels(tasks: Sequence[str]) -> list[str]:
    from probekit.tasks.cognitive import TASK_NAMES

    return [TASK_NAMES.get(t, t) for t in tasks]


# ----------------------------------------------------------------------------- task variance


@dataclass
class TaskVariance(Rendered):
    """Task variance of every unit: ``values [units, tasks]`` (also ``np.asarray(result)``)."""

    values: np.ndarray
    tasks: list[str]
    hook: str = "hook_hidden"
    n_trials: int = 0
    title: str = "Task variance"
    description: str = (
        "Variance of each unit's activity across trials at each time step, averaged over the "
        "steps after the fixation-only epoch (Yang et al. 2019)."
    )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    @property
    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.values, columns=self.tasks)
        frame.insert(0, "unit", np.arange(len(frame)))
        return frame

    @property
    def summary(self) -> dict[str, Any]:
        total = self.values.sum(1)
        return {
            "n_units": int(self.values.shape[0]),
            "n_tasks": int(self.values.shape[1]),
            "n_active": int((total >= INACTIVE_THRESHOLD).sum()),
            "n_trials": self.n_trials,
        }

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.modularity import task_variance_heatmap

        return [task_variance_heatmap(self.values, _task_labels(self.tasks))]


def task_variance(
    model: HookedRNN | ActivationStore | str | os.PathLike,
    tasks: Sequence[str] | None = None,
    *,
    n_trials: int = 128,
    seed: int = 0,
    noise: float = 0.0,
    hook: str = "hook_hidden",
) -> TaskVariance:
    """Task variance ``[units, tasks]`` of a model trained on :mod:`probekit.tasks.cognitive`.

    For each task, ``n_trials`` trials with fixed epoch timing (so that every step compares
    like epochs across trials; :func:`probekit.tasks.cognitive.variance_trial_sets`); the
    variance across trials of ``hook`` (default the hidden state) at each step from the first
    stimulus on, averaged over those steps, is the unit's variance for that task
    (:func:`trial_variance`).

    Args:
        model: a ``HookedRNN`` with 53 inputs (the cognitive-task encoding), run here; or an
            :class:`~probekit.activations.ActivationStore` (or its directory) holding ``hook``
            ``[N, T, units]`` for such trials with the extras ``task_id [N]`` and
            ``step_mask [N, T]`` (:func:`probekit.tasks.cognitive.variance_data`). From a
            store, ``n_trials``, ``seed`` and ``noise`` are those the store was built with and
            the arguments are ignored; cache with ``dtype=None`` for the live model's numbers.
        tasks: task keys (default all 20; from a store, all it holds, in its order).
        n_trials: trials per task (>= 2).
        seed: seed of the trials.
        noise: input noise std (default 0: variance from the stimuli alone).
        hook: a per-step hook point of the model.
    """
    if isinstance(model, (str, os.PathLike)) or _is_store(model):
        return _task_variance_from_store(model, tasks, hook)
    from probekit.tasks import cognitive

    check_int("n_trials", n_trials, low=2)
    if getattr(model, "input_size", None) != cognitive.N_INPUT:
        raise ValueError(
            f"model must take the {cognitive.N_INPUT} cognitive-task inputs, got "
            f"input_size={getattr(model, 'input_size', None)}"
        )
    check_choice("hook", hook, model.step_hook_names)
    names, columns = [], []
    sets = cognitive.variance_trial_sets(
        tasks, n_trials, seed, noise, dtype=model.dtype, dt=cognitive.model_dt(model)
    )
    with torch.no_grad():
        for task, trials in sets:
            _, cache = model.run_with_cache(trials.inputs, names_filter=hook)
            steps = cognitive.variance_steps(trials)
            columns.append(trial_variance(cache[hook][:, steps.to(cache[hook].device)]))
            names.append(task)
    values = torch.stack(columns, dim=1).cpu().numpy()
    return TaskVariance(values=values, tasks=names, hook=hook, n_trials=n_trials)


def _is_store(obj: Any) -> bool:
    from probekit.activations import ActivationStore

    return isinstance(obj, ActivationStore)


def _task_variance_from_store(
    store: ActivationStore | str | os.PathLike, tasks: Sequence[str] | None, hook: str
) -> TaskVariance:
    """Task variance from cached activations of :func:`~probekit.tasks.cognitive.variance_data`
    trials: per task id, the variance across its items at each masked step."""
    from probekit.activations import ActivationStore
    from probekit.tasks import cognitive

    if not isinstance(store, ActivationStore):
        store = ActivationStore.open(store)
    for name in (hook, "task_id", "step_mask"):
        if name not in store:
            raise ValueError(
                f"store must hold {name!r} (cache hook_hidden with the extras of "
                "probekit.tasks.cognitive.variance_data); it holds "
                f"{store.names + store.extras}"
            )
    task_id = store["task_id"].long().flatten()
    step_mask = store["step_mask"].bool()
    present = list(dict.fromkeys(task_id.tolist()))  # task ids in the store's order
    known = [cognitive.TASKS[i] for i in present]
    if tasks is None:
        tasks = known
    else:
        tasks = list(tasks)
        missing = [t for t in tasks if t not in known]
        if missing:
            raise ValueError(f"tasks {missing} are not in the store; it holds {known}")
    acts = store[hook]
    columns, counts = [], []
    for task in tasks:
        rows = torch.nonzero(task_id == cognitive.TASKS.index(task)).flatten()
        steps = step_mask[rows[0]]
        if not bool((step_mask[rows] == steps).all()):
            raise ValueError(f"the items of task {task!r} must share their step_mask")
        if len(rows) < 2:
            raise ValueError(f"task {task!r} needs at least 2 trials in the store, got 1")
        columns.append(trial_variance(acts[rows][:, steps]))
        counts.append(len(rows))
    values = torch.stack(columns, dim=1).numpy()
    return TaskVariance(values=values, tasks=tasks, hook=hook, n_trials=min(counts))


# ----------------------------------------------------------------------------- clustering


def _normalized(values: np.ndarray, normalize: str) -> np.ndarray:
    if normalize == "max":
        scale = values.max(1, keepdims=True)
    elif normalize == "sum":
        scale = values.sum(1, keepdims=True)
    else:
        raise ValueError(f"normalize must be 'max' or 'sum', got {normalize!r}")
    return values / np.where(scale > 0, scale, 1.0)


@dataclass
class ClusterResult(Rendered):
    """Functional clusters of units from their task variance.

    Attributes:
        labels: ``[units]`` int, cluster id ``0..k-1`` (ordered by preferred task), ``-1`` for
            inactive units.
        k: the chosen number of clusters.
        silhouette: its silhouette score.
        silhouettes: ``{k: score}`` for every k tried.
        normalized: ``[active units, tasks]`` the normalised task variance that was clustered.
        active: ``[units]`` bool.
        tasks: task names (columns).
        preferred_task: ``[k]`` index of each cluster's preferred task.
    """

    labels: np.ndarray
    k: int
    silhouette: float
    silhouettes: dict[int, float]
    normalized: np.ndarray
    active: np.ndarray
    tasks: list[str]
    preferred_task: np.ndarray
    normalize: str = "max"
    seed: int = 0
    embeddings: Sequence[str] = ("tsne", "umap")
    title: str = "Functional clusters of units"
    description: str = (
        "Units clustered by their normalised task variance (k-means, k chosen by silhouette); "
        "inactive units (summed task variance < 1e-3) are left out."
    )
    _maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def frame(self) -> pd.DataFrame:
        active_labels = self.labels[self.active]
        preferred = np.full(len(self.labels), -1)
        preferred[self.active] = self.normalized.argmax(1)
        return pd.DataFrame(
            {
                "unit": np.arange(len(self.labels)),
                "cluster": self.labels,
                "active": self.active,
                "preferred_task": [self.tasks[p] if p >= 0 else "" for p in preferred],
            }
        ).assign(cluster_size=lambda f: f["cluster"].map(pd.Series(active_labels).value_counts()))

    @property
    def summary(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "silhouette": self.silhouette,
            "n_units": int(len(self.labels)),
            "n_active": int(self.active.sum()),
            "cluster_sizes": np.bincount(self.labels[self.active], minlength=self.k).tolist(),
            "cluster_preferred_task": [self.tasks[p] for p in self.preferred_task],
        }

    def embedding(self, method: str) -> np.ndarray:
        """``[active units, 2]`` t-SNE (``"tsne"``) or UMAP (``"umap"``) map of the normalised
        task variance (computed once, seeded)."""
        if method not in self._maps:
            x = self.normalized
            n = len(x)
            if method == "tsne":
                from sklearn.manifold import TSNE
                from threadpoolctl import threadpool_limits

                perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
                # one thread: on a shared small CPU OpenMP's spinning threads cost 10x
                with threadpool_limits(1):
                    self._maps[method] = TSNE(
                        2, perplexity=perplexity, init="pca", random_state=self.seed
                    ).fit_transform(x)
            elif method == "umap":
                import umap

                self._maps[method] = umap.UMAP(
                    n_neighbors=min(15, n - 1), random_state=self.seed, n_jobs=1
                ).fit_transform(x)
            else:
                raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
        return self._maps[method]

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.modularity import cluster_figures

        return cluster_figures(
            self.normalized,
            self.labels,
            self.active,
            self.k,
            self.silhouettes,
            _task_labels(self.tasks),
            self.preferred_task,
            self.normalize,
            {method: self.embedding(method) for method in self.embeddings},
        )


def _kmeans_silhouettes(
    x: np.ndarray, ks: Sequence[int], n_init: int, seed: int
) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """k-means labels and mean silhouette of ``x [n, d]`` for each k (scikit-learn's ``KMeans``
    with k-means++ and ``n_init`` restarts, ``silhouette_score``, Euclidean), on one thread."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    silhouettes: dict[int, float] = {}
    fits: dict[int, np.ndarray] = {}
    # one thread: on a shared small CPU OpenMP's spinning threads cost more than they give
    with threadpool_limits(1):
        for k in ks:
            fit = KMeans(k, n_init=n_init, random_state=seed).fit(x).labels_
            # relabel to 0..m-1 in case a cluster came out empty
            _, fit = np.unique(fit, return_inverse=True)
            if fit.max() < 1:
                continue
            silhouettes[k] = float(silhouette_score(x, fit))
            fits[k] = fit.astype(np.int64)
    return silhouettes, fits


def cluster(
    task_variance: TaskVariance | np.ndarray | Tensor,
    k_range: Sequence[int] = range(2, 30),
    normalize: str = "max",
    seed: int = 0,
    *,
    n_init: int = 20,
    tasks: Sequence[str] | None = None,
    embeddings: Sequence[str] = ("tsne", "umap"),
) -> ClusterResult:
    """Cluster units by their task variance ``[units, tasks]`` (see the module docstring).

    Args:
        task_variance: a :class:`TaskVariance` or an array ``[units, tasks]``.
        k_range: numbers of clusters to try; values above ``active units - 1`` are skipped.
        normalize: ``"max"`` or ``"sum"``: what each unit's row is divided by.
        seed: k-means (``random_state``) and embedding seed.
        n_init: k-means restarts per k (the best inertia is kept).
        tasks: column names (default those of a :class:`TaskVariance`, else ``task0..``).
        embeddings: which 2-D maps :meth:`ClusterResult.figures` draws (``"tsne"``, ``"umap"``).

    Returns:
        :class:`ClusterResult` with ``labels [units]`` (-1 for inactive units).
    """
    if isinstance(task_variance, TaskVariance):
        tasks = task_variance.tasks if tasks is None else tasks
        values = task_variance.values
    else:
        values = (
            task_variance.detach().cpu().numpy()
            if isinstance(task_variance, Tensor)
            else np.asarray(task_variance)
        )
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"task_variance must be [units, tasks], got shape {values.shape}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("task_variance must be finite and non-negative")
    tasks = [f"task{i}" for i in range(values.shape[1])] if tasks is None else list(tasks)
    if len(tasks) != values.shape[1]:
        raise ValueError(f"tasks must name {values.shape[1]} columns, got {len(tasks)}")
    for method in embeddings:
        if method not in ("tsne", "umap"):
            raise ValueError(f"embeddings must hold 'tsne' / 'umap', got {method!r}")
    active = values.sum(1) >= INACTIVE_THRESHOLD
    x = _normalized(values[active], normalize)
    if len(x) < 3:
        raise ValueError(
            f"task_variance has {len(x)} active unit(s) (summed task variance >= "
            f"{INACTIVE_THRESHOLD}); clustering needs at least 3: is the network silent on "
            "these tasks?"
        )
    ks = [int(k) for k in k_range if 2 <= int(k) <= len(x) - 1]
    if not ks:
        raise ValueError(
            f"k_range must contain a k in 2..{len(x) - 1} ({len(x)} active units), got "
            f"{list(k_range)}"
        )
    silhouettes, fits = _kmeans_silhouettes(x, ks, check_positive_int("n_init", n_init), seed)
    if not silhouettes:
        raise ValueError("no k in k_range gave two or more distinct clusters")
    best = max(silhouettes, key=lambda k: (silhouettes[k], -k))
    raw = fits[best]
    n_found = int(raw.max()) + 1
    # order clusters by their preferred task (argmax of the mean profile), then by its value
    means = np.stack([x[raw == c].mean(0) for c in range(n_found)])
    pref = means.argmax(1)
    order = np.lexsort((-means.max(1), pref))
    rank = np.empty(n_found, dtype=np.int64)
    rank[order] = np.arange(n_found)
    labels = np.full(len(values), -1, dtype=np.int64)
    labels[active] = rank[raw]
    return ClusterResult(
        labels=labels,
        k=n_found,
        silhouette=silhouettes[best],
        silhouettes=silhouettes,
        normalized=x,
        active=active,
        tasks=tasks,
        preferred_task=pref[order],
        normalize=normalize,
        seed=seed,
        embeddings=tuple(embeddings),
    )


# ----------------------------------------------------------------------------- anatomy


@dataclass
class AnatomicalResult(Rendered):
    """Anatomical modularity of the functional clusters, each metric against a label-shuffle
    null. ``summary`` holds ``Q``, ``within_fraction``, ``locality`` (with positions) and for
    each ``<metric>_null_mean``, ``<metric>_null_std``, ``<metric>_z``, ``<metric>_p``; with
    positions also ``locality_across`` (mean distance between units of different clusters) and
    ``wiring_length`` (``sum |w| d / sum |w|`` over the kept units), which have no null."""

    observed: dict[str, float]
    null: dict[str, np.ndarray]
    adjacency: np.ndarray
    labels: np.ndarray
    units: np.ndarray
    positions: np.ndarray | None
    n_null: int
    geometry: dict[str, float] = field(default_factory=dict)
    title: str = "Anatomical modularity of the functional clusters"
    description: str = (
        "Newman Q of the symmetrised |W_rec| (zero diagonal) under the functional labels, the "
        "fraction of |W_rec| within clusters and the mean within-cluster distance between unit "
        "positions, each against shuffled labels. Higher Q and within fraction, lower locality "
        "mean more anatomical modularity; p is one-sided in that direction."
    )

    _LOWER_IS_MODULAR = ("locality",)

    @property
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_units": int(len(self.units)), "n_null": self.n_null}
        for name, value in self.observed.items():
            null = self.null[name]
            mean, std = float(null.mean()), float(null.std())
            if name in self._LOWER_IS_MODULAR:
                z = (mean - value) / std if std > 0 else float("nan")
                extreme = int((null <= value).sum())
            else:
                z = (value - mean) / std if std > 0 else float("nan")
                extreme = int((null >= value).sum())
            out |= {
                name: value,
                f"{name}_null_mean": mean,
                f"{name}_null_std": std,
                f"{name}_z": z,
                f"{name}_p": (1 + extreme) / (1 + self.n_null),
            }
        return out | self.geometry

    @property
    def frame(self) -> pd.DataFrame:
        s = self.summary
        return pd.DataFrame(
            [
                {
                    "metric": name,
                    "observed": s[name],
                    "null_mean": s[f"{name}_null_mean"],
                    "null_std": s[f"{name}_null_std"],
                    "z": s[f"{name}_z"],
                    "p": s[f"{name}_p"],
                }
                for name in self.observed
            ]
        )

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.modularity import anatomical_figures

        return anatomical_figures(
            self.adjacency, self.labels, self.units, self.observed, self.null, self.positions
        )


def anatomical(
    weights: Tensor | np.ndarray,
    labels: Sequence[int] | np.ndarray | Tensor,
    positions: Tensor | np.ndarray | None = None,
    n_null: int = 100,
    seed: int = 0,
) -> AnatomicalResult:
    """Anatomical modularity of a functional partition of recurrent units.

    Units labelled ``-1`` (inactive) are left out of every metric.

    Args:
        weights: recurrent weights ``[units, units]`` (e.g. ``model.W_rec``).
        labels: ``[units]`` cluster ids (``-1``: left out).
        positions: optional ``[units, d]`` unit positions (e.g. BIMT's ``model.positions``).
        n_null: label shuffles in the null (a permutation of the kept units' labels each).
        seed: seed of the shuffles.

    Returns:
        :class:`AnatomicalResult`; ``.summary`` has ``Q``, ``within_fraction``, ``locality``
        and for each the null mean / std, z-score and one-sided p-value.
    """
    w = torch.as_tensor(
        np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights)
    )
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weights must be square [units, units], got {tuple(w.shape)}")
    lab = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels))
    if lab.ndim != 1 or len(lab) != w.shape[0]:
        raise ValueError(f"labels must be [units] = [{w.shape[0]}], got {tuple(lab.shape)}")
    keep = lab >= 0
    if int(keep.sum()) < 2:
        raise ValueError("labels must assign at least two units to clusters (>= 0)")
    check_positive_int("n_null", n_null)
    units = torch.nonzero(keep).flatten()
    w = w.double()[units][:, units]
    # relabel to 0..k-1 so one-hot widths are tight
    _, lab = torch.unique(lab[units].long(), return_inverse=True)
    pos = None
    if positions is not None:
        pos = torch.as_tensor(
            np.asarray(positions.detach().cpu() if isinstance(positions, Tensor) else positions)
        ).double()
        if pos.ndim != 2 or pos.shape[0] != len(keep):
            raise ValueError(
                f"positions must be [units, d] with units = {len(keep)}, got {tuple(pos.shape)}"
            )
        pos = pos[units]
    adjacency = symmetric_graph(w)
    gen = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([lab[torch.randperm(len(lab), generator=gen)] for _ in range(n_null)])
    observed = {
        "Q": float(newman_modularity(adjacency, lab)),
        "within_fraction": float(within_fraction(w, lab)),
    }
    null = {
        "Q": newman_modularity(adjacency, shuffled).numpy(),
        "within_fraction": within_fraction(w, shuffled).numpy(),
    }
    geometry: dict[str, float] = {}
    if pos is not None:
        observed["locality"] = float(locality(pos, lab))
        null["locality"] = locality(pos, shuffled).numpy()
        geometry = {
            "locality_across": float(between_distance(pos, lab)),
            "wiring_length": float(wiring_length(w, pos)),
        }
    return AnatomicalResult(
        observed=observed,
        null=null,
        adjacency=adjacency.numpy(),
        labels=lab.numpy(),
        units=units.numpy(),
        positions=None if pos is None else pos.numpy(),
        n_null=n_null,
        geometry=geometry,
    )


# ----------------------------------------------------------------------------- lesions


@dataclass
class LesionResult(Rendered):
    """Performance after silencing each cluster: ``drop [clusters, tasks]`` = intact accuracy
    minus lesioned accuracy."""

    baseline: np.ndarray  # [tasks]
    lesioned: np.ndarray  # [clusters, tasks]
    clusters: list[int]
    tasks: list[str]
    cluster_sizes: list[int]
    title: str = "Cluster lesions"
    description: str = (
        "Each functional cluster silenced inside the recurrence (its units' hidden state set to "
        "0 at every step); the drop of each task's accuracy from the intact network."
    )

    @property
    def drop(self) -> np.ndarray:
        return self.baseline[None, :] - self.lesioned

    @property
    def frame(self) -> pd.DataFrame:
        rows = []
        for i, c in enumerate(self.clusters):
            for j, t in enumerate(self.tasks):
                rows.append(
                    {
                        "cluster": c,
                        "cluster_size": self.cluster_sizes[i],
                        "task": t,
                        "baseline": float(self.baseline[j]),
                        "lesioned": float(self.lesioned[i, j]),
                        "drop": float(self.drop[i, j]),
                    }
                )
        return pd.DataFrame(rows)

    @property
    def summary(self) -> dict[str, Any]:
        drop = self.drop
        return {
            "baseline_mean_accuracy": float(self.baseline.mean()),
            "max_drop": float(drop.max()) if drop.size else 0.0,
            "mean_drop": float(drop.mean()) if drop.size else 0.0,
            # how specific lesions are: mean over clusters of (largest drop - mean drop)
            "mean_specificity": float((drop.max(1) - drop.mean(1)).mean()) if drop.size else 0.0,
        }

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.modularity import lesion_heatmap

        return [
            lesion_heatmap(self.drop, _task_labels(self.tasks), self.clusters, self.cluster_sizes)
        ]


def lesion(
    model: HookedRNN,
    tasks: Sequence[str] | None,
    labels: Sequence[int] | np.ndarray | Tensor,
    *,
    n_trials: int = 128,
    seed: int = 0,
    noise: float = 0.05,
) -> LesionResult:
    """Silence each cluster and measure every task's accuracy (clusters x tasks).

    All lesions of one task run as one batch: the trials are repeated once per condition
    (intact + one per cluster) and a ``hook_hidden`` hook multiplies each copy's hidden state by
    its condition's unit mask at every step, so a silenced unit stays at 0 and feeds nothing
    into later steps.

    Args:
        model: a ``HookedRNN`` with the cognitive-task inputs and readout.
        tasks: task keys (None: all 20).
        labels: ``[units]`` cluster ids (``-1``: never silenced).
        n_trials: trials per task (the same trials in every condition).
        seed: seed of the trials.
        noise: input noise std.
    """
    from probekit.tasks import cognitive

    tasks = list(cognitive.TASKS if tasks is None else tasks)
    lab = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).astype(np.int64)
    h = model.hidden_size
    if lab.shape != (h,):
        raise ValueError(f"labels must be [units] = [{h}], got {lab.shape}")
    if getattr(model, "output_size", None) != cognitive.N_OUTPUT:
        raise ValueError(
            f"model must have the {cognitive.N_OUTPUT}-unit cognitive readout, got "
            f"output_size={getattr(model, 'output_size', None)}"
        )
    clusters = sorted(int(c) for c in np.unique(lab) if c >= 0)
    masks = torch.ones(len(clusters) + 1, h, dtype=model.dtype, device=model.device)
    for i, c in enumerate(clusters):
        masks[i + 1, torch.as_tensor(lab == c)] = 0.0
    n_cond = len(masks)
    gen = torch.Generator().manual_seed(seed)
    acc = np.zeros((n_cond, len(tasks)))
    for j, task in enumerate(tasks):
        trials = cognitive.generate(
            task, n_trials, seed=gen, noise=noise, dtype=model.dtype, dt=cognitive.model_dt(model)
        )
        x = trials.inputs.repeat(n_cond, 1, 1)
        unit_mask = masks.repeat_interleave(n_trials, dim=0)  # [n_cond * n_trials, H]

        def silence(state: Tensor, hook: Any, unit_mask: Tensor = unit_mask) -> Tensor:
            return state * unit_mask

        with torch.no_grad():
            y = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", silence)])
        ok = cognitive.performance(y.cpu(), _repeat_trials(trials, n_cond))
        acc[:, j] = ok.view(n_cond, n_trials).double().mean(1).numpy()
    return LesionResult(
        baseline=acc[0],
        lesioned=acc[1:],
        clusters=clusters,
        tasks=tasks,
        cluster_sizes=[int((lab == c).sum()) for c in clusters],
    )


def _repeat_trials(trials: Any, n: int) -> Any:
    from probekit.tasks.cognitive import Trials

    return Trials(
        task=trials.task,
        inputs=trials.inputs.repeat(n, 1, 1),
        targets=trials.targets.repeat(n, 1, 1),
        mask=trials.mask.repeat(n, 1, 1),
        go=trials.go.repeat(n),
        stim_on=trials.stim_on.repeat(n),
        direction=trials.direction.repeat(n),
        task_index=trials.task_index.repeat(n),
        dt=trials.dt,
    )
