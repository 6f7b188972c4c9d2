"""The ``grid-rnn`` recipe: a path-integrating RNN trained on place-cell targets (Sorscher-style).

Do grid cells, and grid modules, emerge in a small recurrent network trained on the CPU to keep
track of its position from its velocity (Sorscher et al. 2023)? This recipe trains the network
that question is asked of, and measures the answer on its card:

- task (:mod:`probekit.tasks.navigation`): random walks in a 2.2 x 2.2 box, input the
  displacement of each step, target the difference-of-Gaussians place code of the position
  after it, over ``n_place`` place cells;
- model: a :class:`probekit.models.HookedRNN` of kind ``"rnn"`` with ReLU units (non-negative
  activity, which Sorscher et al. found necessary for hexagonal patterns), a linear readout to
  the place cells, and an initial state ``h0 = encoder @ (n_place * place_code(start))`` (the
  code scaled to mean 1 per cell); the encoder
  ``[hidden, n_place]`` and the place-cell centres ``[n_place, 2]`` are stored in the checkpoint
  as extra tensors ``encoder`` and ``place_centers``
  (:func:`probekit.tasks.navigation.initial_state` rebuilds ``h0``);
- loss: softmax cross-entropy of the readout against the place code, plus
  ``weight_decay * sum(W_hh^2)`` (Sorscher et al.), Adam;
- evaluation: loss and position-decoding error on fresh trajectories, and the grid scores of the
  hidden units (:mod:`probekit.stats.grid`) against the same network untrained and a shuffle null.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from probekit.models.rnn import HookedRNN
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


def grid_rnn_model(recipe: GridRNNRecipe, seed: int) -> tuple[HookedRNN, torch.nn.Parameter]:
    """The untrained network and its encoder ``[hidden, n_place]`` (initial-state map), seeded
    (:func:`probekit.tasks.navigation.navigation_rnn`)."""
    return navigation.navigation_rnn(recipe.hidden, recipe.n_place, seed)


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
    """Store encoder, place-cell centres and the recipe's place-code settings in the model."""
    return navigation.attach_task_tensors(
        model,
        encoder,
        centers,
        place_sigma=recipe.place_sigma,
        place_surround=recipe.place_surround,
        box=recipe.box,
        seq_len=recipe.seq_len,
    )


def evaluate_grid_rnn(
    model: HookedRNN,
    n_trajectories: int = 4000,
    seed: int = 987654,
    bins: int = 20,
    n_shuffles: int = 2,
    shuffle_seed: int = 5,
) -> dict[str, Any]:
    """Loss, position decoding and grid analysis of a saved grid-rnn on fresh trajectories.

    Returns ``{"metrics": {...}, "modules": {...}, "rollout": {...}}`` (``modules``: the
    frame and summary of :func:`probekit.stats.grid.module_table`); metrics are the
    cross-entropy and its floor (the entropy of the targets), the decoding error (mean centre of
    the top-3 place cells, box units) against the error of always guessing the start position,
    and the grid-score distribution against a circular-shift null.
    """
    import numpy as np

    from probekit.stats import grid

    out = navigation.rollout(model, n_trajectories, seed)
    logits, target, pos = out["logits"], out["target"], out["positions"]
    ce = float(-(target * F.log_softmax(logits, -1)).sum(-1).mean())
    entropy = float(-(target * target.clamp_min(1e-30).log()).sum(-1).mean())
    decoded = navigation.decode_position(logits, model.place_centers)
    err = (decoded - pos).norm(dim=-1)
    start_err = (out["start"][:, None] - pos).norm(dim=-1)
    extent = navigation.extent_of(tuple(model.cfg.extra.get("box", navigation.DEFAULT_BOX)))
    hidden = out["hidden"]
    maps = grid.ratemaps(hidden, pos, bins=bins, extent=extent)
    null = grid.shuffle_null(
        hidden, pos, bins=bins, extent=extent, n_shuffles=n_shuffles, seed=shuffle_seed
    )
    found = grid.module_table(maps, extent=extent, null_scores=null)
    frame, summary = found["frame"], found["summary"]
    s60 = frame["score60"].to_numpy()
    finite = s60[np.isfinite(s60)]
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    metrics = {
        "eval_cross_entropy": ce,
        "eval_target_entropy": entropy,
        "decoding_error_mean": float(err.mean()),
        "decoding_error_median": float(err.median()),
        "decoding_error_last_step": float(err[:, -1].mean()),
        "start_guess_error_mean": float(start_err.mean()),
        "n_units": int(hidden.shape[-1]),
        "n_silent_units": int(frame["score60"].isna().sum()),
        "score60_quantiles": dict(
            zip([str(q) for q in quantiles], [float(v) for v in _quantiles(finite, quantiles)])
        ),
        "score60_max": float(finite.max()) if len(finite) else float("nan"),
        "null_score60_p95": summary["null_p95"],
        "n_score_above_0.3": summary["n_score_pass"],
        "n_above_null_p95": int((finite > summary["null_p95"]).sum()),
        "n_grid_cells": summary["n_grid"],
        "n_modules": summary["n_modules"],
        "module_spacings": summary["spacings"],
        "module_orientations": summary["orientations"],
        "module_orientation_sds": summary["orientation_sds"],
        "module_sizes": summary["module_sizes"],
        "eval_trajectories": n_trajectories,
        "eval_seed": seed,
        "bins": bins,
    }
    return {"metrics": metrics, "modules": found, "rollout": out}


def _quantiles(values: Any, qs: list[float]) -> list[float]:
    import numpy as np

    if len(values) == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.quantile(values, qs)]


def _card(recipe: GridRNNRecipe, seed: int, m: dict[str, Any]) -> str:
    t, u = m["trained"], m["untrained"]
    q = ["0.05", "0.25", "0.5", "0.75", "0.95"]

    def qrow(name: str, e: dict[str, Any]) -> str:
        vals = " | ".join(f"{e['score60_quantiles'][k]:.3f}" for k in q)
        return (
            f"| {name} | {vals} | {e['score60_max']:.3f} | {e['n_score_above_0.3']} | "
            f"{e['n_above_null_p95']} | {e['n_grid_cells']} | {e['n_modules']} |"
        )

    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in m["loss_curve"])
    emerged = m["verdict"]
    r = recipe
    return f"""# grid-rnn

A path-integrating recurrent network in the style of Sorscher et al. (Sorscher et al. 2023, Neuron 111:121),
trained here on the CPU, shipped so that `pk.grid` and the `grid_modules` study have a real
navigation network to analyse. **Verdict: {emerged}**

## Task (`probekit.tasks.navigation`)

Random walks in a {r.box[0]} x {r.box[1]} box (m) centred on the origin: Rayleigh speeds (scale
{navigation.DEFAULT_SPEED_SCALE:.3f} m/s), Gaussian turning (sd {navigation.DEFAULT_TURN_SD} rad/s),
dt {navigation.DEFAULT_DT} s, wall avoidance within {navigation.DEFAULT_BORDER} m; {r.seq_len} steps per
trajectory. Input: velocity `[vx, vy]` (m/s). Target: the difference-of-Gaussians place code of
the position after each step over {r.n_place} place cells (centres uniform, seed {r.place_seed}; width
{r.place_sigma} m, surround x{r.place_surround}; shifted non-negative and normalised).

## Model

`HookedRNN` kind `rnn`, ReLU, {r.hidden} hidden units, no bias, linear readout to the
{r.n_place} place cells. Initial state `h0 = encoder @ ({r.n_place} * place_code(start))`; the
`encoder [{r.hidden}, {r.n_place}]` and `place_centers [{r.n_place}, 2]` are extra tensors in
`model.safetensors`; `probekit.tasks.navigation.initial_state(model, start)` rebuilds `h0`, and
`probekit.tasks.navigation.rollout(model, n, seed)` runs the model on fresh trajectories.
{m["n_parameters"]:,} parameters.

## Training

Softmax cross-entropy against the place code + {r.weight_decay} * sum(W_hh^2); Adam, lr {r.lr}
decaying exponentially to {r.lr * r.lr_final_factor:g}; {m["steps"]} steps of {r.batch_size} fresh
trajectories; seed {seed}. Wall time {m["train_seconds"]:.0f} s on {m["machine"]} (a 2-core
machine shared with other jobs). Deterministic: the same seed, machine and thread count give the
same weights. This is a small CPU budget next to Sorscher et al. (4096 units, ~10^5 steps).

| up to step | training cross-entropy |
|---|---|
{curve}

## Results (fresh trajectories: {t["eval_trajectories"]} x {r.seq_len} steps, seed {t["eval_seed"]})

| | trained | untrained (same init) |
|---|---|---|
| cross-entropy (nats) | {t["eval_cross_entropy"]:.4f} | {u["eval_cross_entropy"]:.4f} |
| floor: entropy of the targets | {t["eval_target_entropy"]:.4f} | |
| position-decoding error, mean (m) | {t["decoding_error_mean"]:.3f} | {u["decoding_error_mean"]:.3f} |
| ... median / at the last step (m) | {t["decoding_error_median"]:.3f} / {t["decoding_error_last_step"]:.3f} | {u["decoding_error_median"]:.3f} / {u["decoding_error_last_step"]:.3f} |
| error of guessing the start position (m) | {t["start_guess_error_mean"]:.3f} | |
| silent hidden units (constant rate map) | {t["n_silent_units"]} | {u["n_silent_units"]} |

Decoding: the mean centre of the 3 most active predicted place cells.

Grid scores of the {r.hidden} hidden units (rate maps {t["bins"]} x {t["bins"]} bins over the box;
`pk.grid.score`, Banino score60; null: each unit's activity circularly shifted in time, 2
shifts per unit):

| network | q05 | q25 | median | q75 | q95 | max | score60 > 0.3 | > null p95 | grid cells (score + regular ring) | modules |
|---|---|---|---|---|---|---|---|---|---|---|
{qrow("trained", t)}
{qrow("untrained", u)}

Null (trained network's shifted activity): 95th percentile score60 = {t["null_score60_p95"]:.3f}.
Modules (`pk.grid.modules`: grid cells clustered on log spacing and orientation mod 60,
components closer than 15 % in spacing and 12 deg in orientation merged):

| network | modules | spacings (m) | orientations (deg) | orientation sd (deg) | sizes |
|---|---|---|---|---|---|
| trained | {t["n_modules"]} | {[round(x, 3) for x in t["module_spacings"]]} | {[round(x, 1) for x in t["module_orientations"]]} | {[round(x, 1) for x in t["module_orientation_sds"]]} | {t["module_sizes"]} |
| untrained | {u["n_modules"]} | {[round(x, 3) for x in u["module_spacings"]]} | {[round(x, 1) for x in u["module_orientations"]]} | {[round(x, 1) for x in u["module_orientation_sds"]]} | {u["module_sizes"]} |

Reading: the untrained network's units are random projections of the band-pass (difference of
Gaussians) place code, so some of them already have periodic, grid-like maps; what training adds
is measured against that, not against zero.

## Rebuild

```
probekit train grid-rnn
```

or `probekit.train.RECIPES["grid-rnn"](out_dir)`. Files: `config.json`, `model.safetensors`
(sha256 `{m["model_sha256"]}`), `metrics.json` (everything above), `card.md`.
"""


def _verdict(t: dict[str, Any], u: dict[str, Any]) -> str:
    spacings = ", ".join(f"{x:.2f}" for x in t["module_spacings"])
    if t["n_modules"] >= 2:
        return (
            f"grid cells emerged ({t['n_grid_cells']} units; {u['n_grid_cells']} in the untrained "
            f"network) in {t['n_modules']} modules, spacings {spacings} m."
        )
    if t["n_grid_cells"] > u["n_grid_cells"] and t["n_grid_cells"] >= 3:
        tail = (
            f"all in one module (spacing {spacings} m, orientation spread sd "
            f"{t['module_orientation_sds'][0]:.0f} deg): no discrete modules of different spacing."
            if t["n_modules"] == 1
            else "but they form no module."
        )
        return (
            f"grid cells emerged: {t['n_grid_cells']} of {t['n_units']} units have score60 > 0.3 "
            f"and a regular six-peak ring ({u['n_grid_cells']} in the untrained network), {tail}"
        )
    return (
        f"no grid cells emerged beyond the untrained network: {t['n_grid_cells']} units pass the "
        f"score threshold with a regular six-peak ring ({u['n_grid_cells']} untrained), "
        f"{t['n_score_above_0.3']} pass score60 > 0.3 alone ({u['n_score_above_0.3']} "
        "untrained)."
    )


def finish_grid_rnn(
    out_dir: str | os.PathLike,
    trained: dict[str, Any],
    recipe: GridRNNRecipe,
    seed: int,
    steps: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained network (and its untrained twin) and write the checkpoint atomically."""
    from probekit.train.recipes import _machine, atomic_directory, sha256_file

    model = attach_task_tensors(trained["model"], trained["encoder"], trained["centers"], recipe)
    untrained, encoder0 = grid_rnn_model(recipe, seed)
    untrained = attach_task_tensors(untrained, encoder0, trained["centers"], recipe)
    kw = {
        "n_trajectories": recipe.eval_trajectories,
        "seed": recipe.eval_seed,
        "bins": recipe.bins,
        "shuffle_seed": recipe.shuffle_seed,
    }
    if progress:
        print("evaluating", flush=True)
    ev_t = evaluate_grid_rnn(model, **kw)["metrics"]
    ev_u = evaluate_grid_rnn(untrained, **kw)["metrics"]
    losses = trained["losses"]
    n = len(losses)
    bounds = [round(i * n / 10) for i in range(11)]
    curve = [
        [hi, sum(losses[lo:hi]) / (hi - lo)] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo
    ]
    metrics: dict[str, Any] = {
        "recipe": "grid-rnn",
        "seed": seed,
        "steps": steps,
        "settings": _jsonable_recipe(recipe) | {"steps": steps},
        "train_seconds": round(trained["seconds"], 1),
        "machine": _machine(),
        "n_parameters": sum(p.numel() for p in model.parameters()) + trained["encoder"].numel(),
        "final_train_cross_entropy": sum(losses[-100:]) / len(losses[-100:]),
        "loss_curve": curve,
        "trained": ev_t,
        "untrained": ev_u,
    }
    metrics["verdict"] = _verdict(ev_t, ev_u)
    with atomic_directory(out_dir) as tmp:
        model.save(tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        _save_json(tmp / "metrics.json", metrics)
        (tmp / "card.md").write_text(_card(recipe, seed, metrics))
    return metrics


def build_grid_rnn(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: GridRNNRecipe | None = None,
) -> dict[str, Any]:
    """Train the ``grid-rnn`` checkpoint, evaluate it and write it to ``out_dir`` atomically.

    ``steps`` overrides the recipe's step count (for quick tests). Returns the metrics written to
    ``metrics.json``.
    """
    recipe = recipe or GridRNNRecipe()
    steps = recipe.steps if steps is None else steps
    trained = train_grid_rnn(recipe, seed=seed, steps=steps, progress=progress)
    return finish_grid_rnn(out_dir, trained, recipe, seed, steps, progress=progress)


def _save_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _jsonable_recipe(recipe: GridRNNRecipe) -> dict[str, Any]:
    out = asdict(recipe)
    out["box"] = list(recipe.box)
    return out


__all__ = [
    "GridRNNRecipe",
    "attach_task_tensors",
    "build_grid_rnn",
    "evaluate_grid_rnn",
    "grid_rnn_model",
    "train_grid_rnn",
]
