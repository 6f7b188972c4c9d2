"""The ``grid-rnn`` recipe: a path-integrating RNN trained on place-cell targets (Sorscher-style).

Do grid cells, and grid modules, emerge in a small recurrent network trained on the CPU to keep
track of its position from its velocity (seeds/abstracts.md §9)? This recipe trains the network
that question is asked of, and measures the answer on its card:

- task (:mod:`probekit.tasks.navigation`): random walks in a 2.2 x 2.2 box, input the
  displacement of each step, target the difference-of-Gaussians place code of the position
  after it, over ``n_place`` place cells;
- model: a :class:`probekit.models.HookedRNN` of kind ``"rnn"`` with ReLU units (non-negative
  activity, which Sorscher et al. found necessary for hexagonal patterns), a linear readout to
  the place cells, and an initial state ``h0 = encoder @ (n_place * place_code(start))`` (the
  code scaled to mean 1 per cell); the encoder
  ``[hidden, n_place]`` and the place-cell centres ``[n_place, 2]`` are stored in the checkpoint
  as extra tensors ``encoder`` and ``place_centers`` (:func:`initial_state` rebuilds ``h0``);
- loss: softmax cross-entropy of the readout against the place code, plus
  ``weight_decay * sum(W_hh^2)`` (Sorscher et al.), Adam;
- evaluation: loss and position-decoding error on fresh trajectories, and the grid scores of the
  hidden units (:mod:`probekit.grid`) against the same network untrained and a shuffle null.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from probekit.models.rnn import HookedRNN, RNNConfig
from probekit.tasks import navigation


@dataclass(frozen=True)
class GridRNNRecipe:
    """Every setting of the ``grid-rnn`` run (sizes, task, optimiser, evaluation)."""

    hidden: int = 256
    n_place: int = 512
    place_sigma: float = 0.12
    place_surround: float = 2.0
    place_seed: int = 1234
    box: tuple[float, float] = navigation.DEFAULT_BOX
    seq_len: int = 20
    batch_size: int = 100
    steps: int = 6000
    lr: float = 1e-3
    lr_final_factor: float = 0.1
    weight_decay: float = 1e-4
    eval_trajectories: int = 4000
    eval_seed: int = 987654
    bins: int = 20
    shuffle_seed: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


def grid_rnn_model(recipe: GridRNNRecipe, seed: int) -> tuple[HookedRNN, torch.nn.Parameter]:
    """The untrained network and its encoder ``[hidden, n_place]`` (initial-state map), seeded."""
    cfg = RNNConfig(
        kind="rnn",
        input_size=2,
        hidden_size=recipe.hidden,
        output_size=recipe.n_place,
        nonlinearity="relu",
        bias=False,
        extra={"task": "probekit.tasks.navigation path integration (grid-rnn recipe)"},
    )
    model = HookedRNN(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    k = 1.0 / math.sqrt(recipe.n_place)
    encoder = torch.nn.Parameter(
        torch.empty(recipe.hidden, recipe.n_place).uniform_(-k, k, generator=gen)
    )
    return model, encoder


def initial_state(model: HookedRNN, start: torch.Tensor, **code_kwargs: Any) -> torch.Tensor:
    """``h0 [batch, hidden]`` of a saved grid-rnn for start positions ``[batch, 2]``.

    Uses the checkpoint's ``encoder`` and ``place_centers`` extra tensors and its place-code
    settings (``model.cfg.extra``); ``code_kwargs`` override ``sigma`` / ``surround``.
    """
    extra = model.cfg.extra
    kwargs = {"sigma": extra.get("place_sigma", 0.12), "surround": extra.get("place_surround", 2.0)}
    kwargs.update(code_kwargs)
    centers = model.place_centers
    code = len(centers) * navigation.place_code(start.to(centers), centers, **kwargs)
    return code.to(model.dtype) @ model.encoder.T.to(model.dtype)


def _loss(
    model: HookedRNN,
    encoder: torch.Tensor,
    centers: torch.Tensor,
    traj: navigation.Trajectories,
    recipe: GridRNNRecipe,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, logits ``[batch, time, n_place]``) of one batch of trajectories."""
    code_kw = {"sigma": recipe.place_sigma, "surround": recipe.place_surround}
    h0 = (recipe.n_place * navigation.place_code(traj.start, centers, **code_kw)) @ encoder.T
    logits = model(traj.velocity, h0)
    target = navigation.place_code(traj.positions, centers, **code_kw)
    ce = -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    return ce, logits


def train_grid_rnn(
    recipe: GridRNNRecipe,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    log_every: int = 100,
) -> dict[str, Any]:
    """Train the network; returns ``{"model", "encoder", "centers", "losses", "seconds"}``.

    Deterministic on the CPU for a given seed and thread count: the trajectories of step ``s``
    come from one ``torch.Generator`` seeded with ``seed``, Adam has no other randomness.
    """
    steps = recipe.steps if steps is None else steps
    model, encoder = grid_rnn_model(recipe, seed)
    centers = navigation.place_cell_centers(recipe.n_place, box=recipe.box, seed=recipe.place_seed)
    params = [encoder, *model.parameters()]
    opt = torch.optim.Adam(params, lr=recipe.lr)
    # exponential decay to lr_final_factor * lr over the run
    decay = recipe.lr_final_factor ** (1.0 / max(steps - 1, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        traj = navigation.trajectories(recipe.batch_size, recipe.seq_len, box=recipe.box, seed=gen)
        ce, _ = _loss(model, encoder, centers, traj, recipe)
        loss = ce + recipe.weight_decay * (model.weight_hh**2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(ce.detach()))
        if progress and (step % log_every == 0 or step == steps - 1):
            recent = losses[-log_every:]
            print(
                f"step {step}/{steps} ce {sum(recent) / len(recent):.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    model.eval()
    return {
        "model": model,
        "encoder": encoder.detach(),
        "centers": centers,
        "losses": losses,
        "seconds": time.perf_counter() - t0,
    }


def attach_task_tensors(
    model: HookedRNN, encoder: torch.Tensor, centers: torch.Tensor, recipe: GridRNNRecipe
) -> HookedRNN:
    """Store encoder, place-cell centres and the place-code settings in the model (for saving)."""
    model.add_extra_tensor("encoder", encoder.detach().clone())
    model.add_extra_tensor("place_centers", centers.detach().clone())
    model.cfg.extra.update(
        {
            "place_sigma": recipe.place_sigma,
            "place_surround": recipe.place_surround,
            "box": list(recipe.box),
            "seq_len": recipe.seq_len,
            "input": "velocity [vx, vy] (box units per second), dt 0.02 s",
            "h0": "encoder @ (n_place * place_code(start))",
        }
    )
    return model


def _save_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _jsonable_recipe(recipe: GridRNNRecipe) -> dict[str, Any]:
    out = asdict(recipe)
    out["box"] = list(recipe.box)
    return out


__all__ = [
    "GridRNNRecipe",
    "attach_task_tensors",
    "grid_rnn_model",
    "initial_state",
    "train_grid_rnn",
]

_ = os  # build_grid_rnn (below, with the evaluation) writes through atomic_directory
