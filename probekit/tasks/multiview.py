"""Multi-view data for self-supervised embeddings: Gaussian blobs seen through noisy "views".

What geometry does the MMCR objective give a learned embedding (seeds/abstracts.md §4, Schaeffer
et al. on Maximum Manifold Capacity Representations)? This module is the task behind the
shipped ``checkpoints/mmcr-mlp``: the data, the small encoder and a loader for the checkpoint.
The objective and the geometry formulas are in :mod:`probekit.stats.mmcr`; the analysis of
embeddings is :mod:`probekit.geometry` (``docs/embedding_geometry.md``).

Data. A fixed set of ``n_blobs`` centres ``c_j ~ N(0, spread^2 I)`` in ``R^d_in`` (seeded, part
of the task). An *item* is ``x = c_j + item_sigma * e`` for a uniformly drawn blob ``j``; each of
its ``views`` is an augmentation of ``x``: every coordinate is kept with probability
``1 - drop`` (zeroed otherwise) and Gaussian noise of standard deviation ``view_sigma`` is
added. Views of one item share ``x``; views of different items do not.

Encoder. :class:`MLPEncoder`: ``d_in -> hidden -> hidden -> dim`` with ReLU, no normalisation
inside (the objective unit-normalises each embedding, as the MMCR authors do).

Example::

    >>> from probekit.tasks import multiview
    >>> task = multiview.BlobTask()
    >>> views = task.sample(8, 4, seed=0)        # [items, views, d_in]
    >>> tuple(views.shape)
    (8, 4, 32)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from probekit.validation import as_generator, check_fraction, check_positive_int

# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BlobTask:
    """Gaussian blobs and their views (see the module docstring for the generative process)."""

    d_in: int = 32
    n_blobs: int = 16
    spread: float = 1.0
    item_sigma: float = 0.6
    view_sigma: float = 0.2
    drop: float = 0.1
    centre_seed: int = 1234

    def __post_init__(self) -> None:
        check_positive_int("d_in", self.d_in)
        check_positive_int("n_blobs", self.n_blobs)
        check_fraction("drop", self.drop, open_high=True)

    def centres(self) -> Tensor:
        """The blob centres ``[n_blobs, d_in]`` (fixed by ``centre_seed``)."""
        g = torch.Generator().manual_seed(self.centre_seed)
        return self.spread * torch.randn(self.n_blobs, self.d_in, generator=g)

    def sample(
        self, items: int, views: int, seed: int | torch.Generator = 0, centres: Tensor | None = None
    ) -> Tensor:
        """``views`` augmented views of ``items`` fresh items: ``[items, views, d_in]`` float32.

        All draws come from ``seed`` (an int or a ``torch.Generator``, which advances).
        """
        check_positive_int("items", items)
        check_positive_int("views", views)
        g = as_generator(seed)
        centres = self.centres() if centres is None else centres
        blob = torch.randint(self.n_blobs, (items,), generator=g)
        x = centres[blob] + self.item_sigma * torch.randn(items, self.d_in, generator=g)
        keep = torch.rand(items, views, self.d_in, generator=g) >= self.drop
        noise = self.view_sigma * torch.randn(items, views, self.d_in, generator=g)
        return x[:, None, :] * keep + noise


# ----------------------------------------------------------------------------- encoder


class MLPEncoder(nn.Module):
    """``d_in -> hidden -> hidden -> dim`` with ReLU: embeddings ``[..., dim]`` of ``[..., d_in]``."""

    def __init__(self, d_in: int = 32, hidden: int = 128, dim: int = 32) -> None:
        super().__init__()
        self.config = {"d_in": d_in, "hidden": hidden, "dim": dim}
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, dim),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def encoder(d_in: int, hidden: int, dim: int, seed: int) -> MLPEncoder:
    """A freshly initialised :class:`MLPEncoder` (init drawn from ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPEncoder(d_in, hidden, dim)


def load_encoder(path: str | os.PathLike, prefix: str = "") -> MLPEncoder:
    """An :class:`MLPEncoder` from an ``mmcr-mlp`` checkpoint directory, in eval mode.

    With no ``prefix``, the main model (``model.safetensors``). ``prefix="step{S}"`` gives the
    main model at training step ``S`` (``snapshots.safetensors``; the steps are in
    ``config.json["snapshot_steps"]``), ``prefix="N{items}-D{dim}"`` one model of the N x D
    sweep (``sweep.safetensors``; the pairs are in ``config.json["sweep"]``).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(f"path must be an mmcr-mlp checkpoint directory, got {str(path)!r}")
    config = json.loads((path / "config.json").read_text())
    if not prefix:
        state = load_file(path / "model.safetensors")
    else:
        name = "snapshots.safetensors" if prefix.startswith("step") else "sweep.safetensors"
        full = load_file(path / name)
        state = {k[len(prefix) + 1 :]: v for k, v in full.items() if k.startswith(prefix + ".")}
        if not state:
            raise ValueError(f"prefix {prefix!r} names no model in {path / name}")
    dim = state["net.4.weight"].shape[0]
    model = MLPEncoder(config["d_in"], config["hidden"], dim)
    model.load_state_dict(state)
    return model.eval()


def load_task(path: str | os.PathLike) -> BlobTask:
    """The :class:`BlobTask` a checkpoint was trained on (from ``config.json["task"]``)."""
    config = json.loads((Path(path) / "config.json").read_text())
    return BlobTask(**config["task"])


def task_config(task: BlobTask) -> dict[str, Any]:
    """The task as a JSON-ready dict (inverse of :func:`load_task`)."""
    return asdict(task)
