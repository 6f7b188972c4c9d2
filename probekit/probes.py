"""What does each layer's representation encode? Per-layer linear probes with held-out accuracy.

The probing method of docs/probes.md (compositional capabilities: which layers carry the
current step's output and the task token), shared by every analysis
that asks "can this label be read linearly off this activation?". :func:`linear` fits, for each
cached hook (and each label), a multinomial logistic regression (scikit-learn,
``LogisticRegression`` with lbfgs on standardised features) on a training split and reports its
accuracy on held-out *items*: all positions of one sequence go to the same side, so a probe is
never tested on a sequence whose other positions it was trained on.

Example::

    >>> store = pk.cache(model, tokens, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    >>> result = pk.probes.linear(store, {"next": labels_next})   # labels [n_items, pos]
    >>> result.frame[["hook", "label", "test_accuracy", "chance"]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probekit.report.page import Rendered

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["ProbeResult", "linear", "split_items"]


@dataclass
class ProbeResult(Rendered):
    """One row per (hook, label).

    ``frame`` columns: ``hook``, ``layer`` (the hook's index in the order given), ``label``,
    ``train_accuracy``, ``test_accuracy``, ``chance`` (the held-out accuracy of always guessing
    the most frequent training class), ``n_classes``, ``n_train``, ``n_test``, ``converged``.
    ``summary``: ``best`` (per label, the hook with the highest held-out accuracy and that
    accuracy), ``n_items``, ``test_fraction``.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Linear probes per layer"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.probes import probe_figures

        return probe_figures(self.frame)


def split_items(n_items: int, test_fraction: float, seed: int) -> np.ndarray:
    """Bool ``[n_items]``: True for the held-out items (``round(test_fraction * n)``, at least
    one and at most ``n - 1``), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n_test = min(max(round(test_fraction * n_items), 1), n_items - 1)
    test = np.zeros(n_items, dtype=bool)
    test[rng.choice(n_items, size=n_test, replace=False)] = True
    return test


def _activation_dict(activations: Any, names: Sequence[str] | None) -> dict[str, Any]:
    from probekit.activations import ActivationStore

    if isinstance(activations, ActivationStore):
        available = activations.names
        source: Any = activations
    elif isinstance(activations, torch.Tensor | np.ndarray):
        available = ["activations"]
        source = {"activations": activations}
    elif isinstance(activations, Mapping):
        available = list(activations)
        source = activations
    else:
        raise ValueError(
            "activations must be an ActivationStore, a {hook: tensor} mapping or one tensor "
            f"[n_items, ..., d], got {type(activations).__name__}"
        )
    if names is None:
        names = available
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"names not in activations: {missing}; available: {available}")
    if not names:
        raise ValueError("activations hold no hook to probe")
    return {n: source[n] for n in names}


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled by the training set's mean and standard deviation (a constant feature
    keeps scale 1), as scikit-learn's ``StandardScaler``."""
    train = train.astype(np.float64)
    mean = train.mean(0)
    sd = train.std(0)
    sd[sd == 0] = 1.0
    return (train - mean) / sd, (test.astype(np.float64) - mean) / sd


def _fit_sklearn(
    x: np.ndarray, y: np.ndarray, C: float, max_iter: int
) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(x, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return clf.predict, converged


def _fit_torch(
    x: np.ndarray, y: np.ndarray, C: float, max_iter: int, tol: float = 1e-5
) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    """Multinomial logistic regression, ``C * sum CE + ||W||^2 / 2`` (intercept free; minimised
    divided by ``C n``), by full-batch L-BFGS in float64 to a gradient tolerance of ``tol``
    (scikit-learn's default is 1e-4 on the same scaled objective). Returns ``(predict,
    converged)``."""
    classes, index = np.unique(y, return_inverse=True)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(index.astype(np.int64))
    w = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    n = len(yt)

    def closure() -> torch.Tensor:
        # the objective over n (scikit-learn's scaling), so the tolerance is per sample
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt)
        loss = loss + w.pow(2).sum() / (2 * C * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    iterations = opt.state[w]["n_iter"]
    converged = iterations < max_iter
    weight, bias = w.detach(), b.detach()

    def predict(data: np.ndarray) -> np.ndarray:
        scores = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float64)) @ weight + bias
        return classes[scores.argmax(1).numpy()]

    return predict, converged


def linear(
    activations: Any,
    labels: Any,
    *,
    names: Sequence[str] | None = None,
    test_fraction: float = 0.3,
    max_train: int | None = 4000,
    max_iter: int = 300,
    C: float = 1.0,
    seed: int = 0,
    solver: str = "torch",
) -> ProbeResult:
    """Fit a multinomial logistic-regression probe per hook (and per label); score held out.

    Args:
        activations: an :class:`~probekit.ActivationStore`, a ``{hook: tensor}`` mapping or one
            tensor; each ``[n_items, *positions, d]`` (e.g. ``[n, pos, d_model]``).
        labels: integer class labels ``[n_items, *positions]`` matching the activations'
            leading dims, or a ``{name: labels}`` mapping of several; entries ``< 0`` are not
            used (positions where the label is undefined).
        names: hooks to probe (default every name in ``activations``).
        test_fraction: share of *items* (first dimension) held out.
        max_train: cap on training rows per probe (a seeded subsample; None keeps all). lbfgs
            on thousands of rows x 128 features and 50 classes costs seconds per probe.
        max_iter: lbfgs iterations; ``converged`` in the frame says whether it stopped early.
        C: inverse L2 strength: the probe minimises ``C * sum_i CE_i + ||W||^2 / 2`` (the
            intercept unpenalised), scikit-learn's ``LogisticRegression`` objective.
        seed: the item split and the subsample.
        solver: ``"torch"`` (default: full-batch L-BFGS with a strong-Wolfe line search in
            float64, to a gradient tolerance of 1e-5; tens of times faster than scikit-learn
            here) or ``"sklearn"`` (``LogisticRegression(C, max_iter)``, lbfgs). The objective
            is strictly convex, so both reach the same probe up to their tolerances.

    Returns:
        :class:`ProbeResult`.
    """
    import pandas as pd

    if solver not in ("torch", "sklearn"):
        raise ValueError(f"solver must be 'torch' or 'sklearn', got {solver!r}")
    acts = _activation_dict(activations, names)
    label_sets = dict(labels) if isinstance(labels, Mapping) else {"label": labels}
    if not label_sets:
        raise ValueError("labels must hold at least one label tensor")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if max_train is not None and (not isinstance(max_train, int) or max_train < 2):
        raise ValueError(f"max_train must be an integer >= 2 or None, got {max_train!r}")
    label_arrays = {}
    for name, y in label_sets.items():
        y = _as_numpy(y)
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels[{name!r}] must hold integer classes, got dtype {y.dtype}")
        label_arrays[name] = y
    n_items = None
    for hook, x in acts.items():
        shape = tuple(x.shape)
        for name, y in label_arrays.items():
            if shape[:-1] != y.shape:
                raise ValueError(
                    f"labels[{name!r}] must be [n_items, *positions] = {list(shape[:-1])} to "
                    f"match activations[{hook!r}] {list(shape)}, got {list(y.shape)}"
                )
        n_items = shape[0]
    if n_items is None or n_items < 2:
        raise ValueError("activations must hold at least 2 items to hold some out")
    test_items = split_items(n_items, test_fraction, seed)
    rng = np.random.default_rng(seed + 1)

    rows = []
    for layer, (hook, x) in enumerate(acts.items()):
        x = _as_numpy(x).astype(np.float32, copy=False)
        x = x.reshape(-1, x.shape[-1])
        item = np.repeat(np.arange(n_items), x.shape[0] // n_items)
        for name, y in label_arrays.items():
            y = y.reshape(-1)
            defined = y >= 0
            train = np.flatnonzero(defined & ~test_items[item])
            test = np.flatnonzero(defined & test_items[item])
            if len(train) == 0 or len(test) == 0:
                raise ValueError(f"labels[{name!r}]: no defined label on one side of the split")
            if max_train is not None and len(train) > max_train:
                train = np.sort(rng.choice(train, size=max_train, replace=False))
            classes, counts = np.unique(y[train], return_counts=True)
            majority = classes[counts.argmax()]
            xtr, xte = _standardise(x[train], x[test])
            if len(classes) == 1:
                train_acc, test_acc = 1.0, float((y[test] == majority).mean())
                converged = True
            else:
                fit = _fit_torch if solver == "torch" else _fit_sklearn
                predict, converged = fit(xtr, y[train], C, max_iter)
                train_acc = float((predict(xtr) == y[train]).mean())
                test_acc = float((predict(xte) == y[test]).mean())
            rows.append(
                {
                    "hook": hook,
                    "layer": layer,
                    "label": name,
                    "train_accuracy": train_acc,
                    "test_accuracy": test_acc,
                    "chance": float((y[test] == majority).mean()),
                    "n_classes": int(len(classes)),
                    "n_train": int(len(train)),
                    "n_test": int(len(test)),
                    "converged": converged,
                }
            )
    frame = pd.DataFrame(rows)
    best = {}
    for name, group in frame.groupby("label", sort=False):
        top = group.loc[group["test_accuracy"].idxmax()]
        best[name] = {"hook": top["hook"], "test_accuracy": float(top["test_accuracy"])}
    summary = {"best": best, "n_items": int(n_items), "test_fraction": test_fraction}
    return ProbeResult(frame=frame, summary=summary)
