"""The ``grid-ssl`` recipe: grid cells from the source's self-supervised framework, on the CPU.

Do several grid modules emerge in a recurrent network trained with no position target at all,
only with the self-supervised framework of Schaeffer, Khona, Ma, Eyzaguirre, Koyejo and Fiete
(NeurIPS 2023; ``docs/grid.md``)? This recipe trains that network at a CPU scale, with the
ablation the source reports (no capacity term: one module) and the untrained network as
controls, and measures all three with the same detector:

- data (:func:`probekit.tasks.navigation.ssl_batch`): per step one sequence of ``seq_len``
  velocities, each component uniform in ``+-max_speed`` m per step, and ``permutations``
  random orderings of it (same start and end, many crossings);
- model (:func:`probekit.tasks.navigation.ssl_grid_network`): ``g_t = normalise(ReLU(W(v_t)
  g_{t-1}))``, ``W`` an MLP from the velocity to ``N x N``, learned ``g_0``, no readout;
- losses (:func:`probekit.tasks.navigation.ssl_losses`): separation, path invariance, capacity,
  conformal isometry, weights 1, 1.0, 0.5 and 1 (the source's: 1, 0.1, 0.5; the invariance
  weight is raised because at this budget the source's never made the code path-invariant);
  ``sigma_x`` 0.05 m, ``sigma_g`` 0.4; AdamW with gradient-norm clipping at 0.1 (the source's),
  a larger learning rate than the source's 2e-5 because the CPU budget allows ~10^3 steps, not
  ~10^6;
- evaluation: rate maps of every unit over the training arena (2 x 2 m, 40 x 40 bins) from
  fresh velocity sequences, grid scores, modules, spacing and orientation
  (:mod:`probekit.stats.grid`), and the same in a 2x arena (4 x 4 m, sequences 4x longer).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from probekit.tasks import navigation


@dataclass(frozen=True)
class GridSSLRecipe:
    """Every setting of the ``grid-ssl`` run (sizes, data, losses, optimiser, evaluation)."""

    hidden: int = 128
    mlp_hidden: tuple[int, ...] = (64, 64)
    output_init_scale: float = 0.1
    seq_len: int = navigation.SSL_STEPS
    permutations: int = 32
    max_speed: float = navigation.SSL_MAX_SPEED
    sigma_x: float = navigation.SSL_SIGMA_X
    sigma_g: float = navigation.SSL_SIGMA_G
    separation_weight: float = 1.0
    invariance_weight: float = 1.0
    #: If set, the invariance weight goes from ``invariance_weight`` to this value
    #: geometrically over the steps after ``anneal_start`` (None: constant).
    invariance_weight_final: float | None = None
    anneal_start: int = 0
    capacity_weight: float = 0.5
    conformal_weight: float = 1.0
    steps: int = 1100
    lr: float = 1e-3
    lr_final_factor: float = 0.1
    weight_decay: float = 0.0
    clip: float = 0.1
    box: tuple[float, float] = (2.0, 2.0)
    bins: int = 40
    eval_trajectories: int = 2000
    eval_seed: int = 987654
    shuffle_seed: int = 5
    ablation_steps: int = 400

    def invariance_at(self, step: int, steps: int) -> float:
        """The invariance weight at ``step`` of a ``steps``-step run (see
        ``invariance_weight_final``)."""
        final = self.invariance_weight_final
        if final is None or step <= self.anneal_start or steps - 1 <= self.anneal_start:
            return self.invariance_weight
        frac = min(1.0, (step - self.anneal_start) / (steps - 1 - self.anneal_start))
        return self.invariance_weight * (final / self.invariance_weight) ** frac

    def weights(self, step: int = 0, steps: int = 1) -> dict[str, float]:
        return {
            "separation": self.separation_weight,
            "invariance": self.invariance_at(step, steps),
            "capacity": self.capacity_weight,
            "conformal": self.conformal_weight,
        }


def grid_ssl_model(recipe: GridSSLRecipe, seed: int) -> Any:
    """The untrained network of the recipe (init drawn from ``seed``), task settings in
    ``cfg.extra`` so that ``probekit.tasks.navigation.rollout`` can run it again."""
    return navigation.ssl_grid_network(
        recipe.hidden,
        recipe.mlp_hidden,
        seed=seed,
        output_init_scale=recipe.output_init_scale,
        box=list(recipe.box),
        seq_len=recipe.seq_len,
        max_speed=recipe.max_speed,
        bins=recipe.bins,
    )


def train_grid_ssl(
    recipe: GridSSLRecipe,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
    log_every: int = 50,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the network; returns ``{"model", "losses" (per term, per step), "seconds"}``.

    Deterministic on the CPU for a given seed and thread count: the batches come from one
    ``torch.Generator`` seeded with ``seed`` (on the CPU, then moved to ``device``).
    """
    steps = recipe.steps if steps is None else steps
    model = grid_ssl_model(recipe, seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    decay = recipe.lr_final_factor ** (1.0 / max(steps - 1, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    gen = torch.Generator().manual_seed(seed)
    losses: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = navigation.ssl_batch(
            recipe.permutations, recipe.seq_len, max_speed=recipe.max_speed, seed=gen
        )
        batch = navigation.SSLBatch(*(x.to(device) for x in batch))
        terms = navigation.ssl_losses(
            model,
            batch,
            sigma_x=recipe.sigma_x,
            sigma_g=recipe.sigma_g,
            weights=recipe.weights(step, steps),
        )
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        opt.step()
        sched.step()
        for k, v in terms.items():
            losses.setdefault(k, []).append(float(v.detach()))
        if progress and (step % log_every == 0 or step == steps - 1):
            recent = {k: sum(v[-log_every:]) / len(v[-log_every:]) for k, v in losses.items()}
            print(
                f"step {step}/{steps} "
                + " ".join(f"{k} {v:.4f}" for k, v in recent.items())
                + f" ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    model.eval()
    return {"model": model.cpu(), "losses": losses, "seconds": time.perf_counter() - t0}


def evaluate_grid_ssl(
    model: Any,
    n_trajectories: int = 2000,
    seed: int = 987654,
    bins: int = 40,
    n_shuffles: int = 1,
    shuffle_seed: int = 5,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Grid analysis of an ssl-grid network on fresh velocity sequences of its task.

    ``scale`` > 1 asks how the code generalises to a larger arena: sequences ``scale**2`` times
    longer (the walk's spread grows as the square root of its length) and rate maps over a box
    ``scale`` times wider, at the same bin size. Returns ``{"metrics", "modules"}``.
    """
    from probekit.stats import grid

    box = tuple(scale * b for b in model.cfg.extra.get("box", (2.0, 2.0)))
    seq_len = round(model.cfg.extra.get("seq_len", navigation.SSL_STEPS) * scale**2)
    out = navigation.rollout(model, n_trajectories, seed, seq_len=seq_len)
    hidden, pos = out["hidden"], out["positions"]
    extent = navigation.extent_of(box)
    n_bins = round(bins * scale)
    maps = grid.ratemaps(hidden, pos, bins=n_bins, extent=extent)
    null = grid.shuffle_null(
        hidden, pos, bins=n_bins, extent=extent, n_shuffles=n_shuffles, seed=shuffle_seed
    )
    found = module_table_or_single(maps, extent=extent, null_scores=null, unit="m")
    return {"metrics": module_metrics(found, maps), "modules": found}


def module_table_or_single(maps: np.ndarray, **options: Any) -> dict[str, Any]:
    """:func:`probekit.stats.grid.module_table`, also when exactly one unit is a grid cell.

    ``module_table`` fits a Gaussian mixture to the grid cells, which needs two; with one it
    raises. One cell is no module (a module needs ``min_units`` >= 3), so the table is made with
    no unit regular (no clustering) and the one cell marked as a grid cell again.
    """
    from probekit.stats import grid

    try:
        return grid.module_table(maps, **options)
    except ValueError as err:
        if "minimum of 2 is required" not in str(err):
            raise
    found = grid.module_table(maps, **(options | {"max_orientation_sd": -1.0}))
    f = found["frame"]
    f["regular"] = (
        (f["n_peaks"] == 6) & (f["spacing_sd"] <= 0.1 * f["spacing"]) & (f["orientation_sd"] <= 6.0)
    )
    f["is_grid"] = f["score_pass"] & f["regular"]
    found["summary"]["n_grid"] = int(f["is_grid"].sum())
    return found


def module_metrics(found: dict[str, Any], maps: np.ndarray) -> dict[str, Any]:
    """The card's numbers from :func:`probekit.stats.grid.module_table`'s output."""
    frame, summary = found["frame"], found["summary"]
    s60 = frame["score60"].to_numpy()
    finite = s60[np.isfinite(s60)]
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    q = np.quantile(finite, qs) if len(finite) else [float("nan")] * len(qs)
    grid_cells = frame[frame["is_grid"]]
    return {
        "n_units": int(len(frame)),
        "n_silent_units": int(np.isnan(s60).sum()),
        "visited_bins_fraction": float(np.isfinite(maps[0]).mean()),
        "score60_quantiles": {str(k): float(v) for k, v in zip(qs, q)},
        "score60_max": float(finite.max()) if len(finite) else float("nan"),
        "null_score60_p95": summary["null_p95"],
        "n_score_above_0.3": summary["n_score_pass"],
        "n_grid_cells": summary["n_grid"],
        "n_modules": summary["n_modules"],
        "module_sizes": summary["module_sizes"],
        "module_spacings": summary["spacings"],
        "module_spacing_sds": summary["spacing_sds"],
        "module_orientations": summary["orientations"],
        "module_orientation_sds": summary["orientation_sds"],
        "spacing_ratios": summary["spacing_ratios"],
        "grid_cell_spacings": sorted(round(float(x), 4) for x in grid_cells["spacing"]),
        "score_pass_spacings": sorted(
            round(float(x), 4) for x in frame.loc[frame["score_pass"], "spacing"].dropna()
        ),
    }


def aim_reached(trained: dict[str, Any], ablation: dict[str, Any]) -> dict[str, Any]:
    """The issue's aim, checked: >= 2 modules of >= 8 grid cells, every adjacent spacing ratio
    of those modules in [1.3, 2.0], and the ablation (no capacity term) in at most one module."""
    big = [s for s, n in zip(trained["module_spacings"], trained["module_sizes"]) if n >= 8]
    ratios = [b / a for a, b in zip(big[:-1], big[1:])]
    ablation_big = sum(n >= 8 for n in ablation["module_sizes"])
    return {
        "modules_of_8_or_more": len(big),
        "their_spacing_ratios": ratios,
        "ablation_modules_of_8_or_more": int(ablation_big),
        "reached": bool(
            len(big) >= 2 and all(1.3 <= r <= 2.0 for r in ratios) and ablation_big <= 1
        ),
    }


def _curve(losses: dict[str, list[float]], points: int = 10) -> dict[str, list[list[float]]]:
    n = len(losses["total"])
    bounds = [round(i * n / points) for i in range(points + 1)]
    return {
        k: [[hi, sum(v[lo:hi]) / (hi - lo)] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        for k, v in losses.items()
    }


def _fmt(values: list[float], digits: int = 3) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]" if values else "-"


def _network_row(name: str, e: dict[str, Any]) -> str:
    q = e["score60_quantiles"]
    return (
        f"| {name} | {q['0.5']:.3f} | {q['0.95']:.3f} | {e['score60_max']:.3f} | "
        f"{e['null_score60_p95']:.3f} | {e['n_score_above_0.3']} | {e['n_grid_cells']} | "
        f"{e['n_modules']} | {e['module_sizes']} | {_fmt(e['module_spacings'])} | "
        f"{_fmt(e['module_orientations'], 1)} | {_fmt(e['spacing_ratios'], 2)} |"
    )


def _verdict(m: dict[str, Any]) -> str:
    t, a, u = m["trained"], m["no_capacity"], m["untrained"]
    aim = m["aim"]
    head = (
        f"{t['n_grid_cells']} grid cells in {t['n_modules']} module(s) "
        f"(spacings {_fmt(t['module_spacings'], 2)} m, sizes {t['module_sizes']}); "
        f"without the capacity term {a['n_grid_cells']} in {a['n_modules']}; untrained "
        f"{u['n_grid_cells']} in {u['n_modules']}"
    )
    if aim["reached"]:
        return f"the aim is reached: {head}."
    return f"the aim (>= 2 modules of >= 8 cells, ratios 1.3-2.0) is not reached: {head}."


def _card(recipe: GridSSLRecipe, seed: int, m: dict[str, Any]) -> str:
    r = recipe
    t, t2, a, u = m["trained"], m["trained_2x"], m["no_capacity"], m["untrained"]
    terms = ["separation", "invariance", "capacity", "conformal", "total"]
    curve = m["loss_curve"]
    rows = "\n".join(
        f"| {curve['total'][i][0]} | " + " | ".join(f"{curve[k][i][1]:.4f}" for k in terms) + " |"
        for i in range(len(curve["total"]))
    )
    abl = m["ablation_loss_curve"]
    abl_last = " | ".join(f"{abl[k][-1][1]:.4f}" for k in terms)
    aim = m["aim"]
    return f"""# grid-ssl

A recurrent network trained with the self-supervised framework of Schaeffer, Khona, Ma,
Eyzaguirre, Koyejo and Fiete (NeurIPS 2023): no position target and no readout, only losses on
its states along permuted velocity sequences. Shipped so that `pk.grid` and the `grid_modules`
study can compare it with the supervised `grid-rnn` using the same detector.
**Verdict: {m["verdict"]}**

## Data (`probekit.tasks.navigation.ssl_batch`)

Per step one sequence of {r.seq_len} velocities, each component uniform in +-{r.max_speed} m per
step, and {r.permutations} random permutations of it (the source: 130), all starting at the
origin and ending at the same point.

## Model (`probekit.models.ssl_grid.HookedSSLGrid`)

`g_t = normalise(ReLU(W(v_t) g_(t-1)))`, {r.hidden} units; `W(v)` a 3-layer MLP 2 ->
{" -> ".join(str(w) for w in r.mlp_hidden)} -> {r.hidden}x{r.hidden} (ReLU between layers; identity
added to the last bias at initialisation); learned `g_0 = normalise(ReLU(g0))`; no readout.
`W(v)` is computed once per distinct velocity and gathered by the permutations. Initial last
MLP layer scaled by {r.output_init_scale} (so `W(v)` starts near the identity).
{m["n_parameters"]:,} parameters. Hooks: `hook_input`, `hook_pre`, `hook_hidden` (per step,
`[batch, time, {r.hidden}]` in a cache), `hook_output`.

## Training

Losses over all pairs of the {r.permutations * r.seq_len} states of a batch
(`probekit.tasks.navigation.ssl_losses`): separation (mean over pairs farther than sigma_x =
{r.sigma_x} m of exp(-|g_i - g_j|^2 / 2 sigma_g^2), sigma_g = {r.sigma_g}), path invariance (mean
over pairs nearer than sigma_x of |g_i - g_j|^2), capacity (-|mean g|^2), conformal isometry
(variance of |g_t - g_(t-1)| / |v_t|, steps longer than 0.02 m); weights separation
{r.separation_weight}, invariance {r.invariance_weight}, capacity {r.capacity_weight}, conformal
{r.conformal_weight}. The source's weights are 1, 0.1, 0.5 (conformal: not published); the
invariance weight here is 1.0 because with 0.1 a CPU-length run never became path-invariant (its
invariance loss rose to ~0.45 and its maps stayed noise around the start; `docs/grid.md`). The
source sums over pairs; the means here keep the weights independent of the batch size.
AdamW (weight decay {r.weight_decay}), lr {r.lr} decaying exponentially to
{r.lr * r.lr_final_factor:g}, gradient norm clipped at {r.clip} (the source's); {m["steps"]}
steps, seed {seed}. Wall time {m["train_seconds"]:.0f} s on {m["machine"]} (shared with other
jobs). The source trains with lr 2e-5 for about 2e6 steps of 130 permutations on a GPU; this is
~10^3 times less computation. Deterministic: the same seed, machine and thread count give the
same weights.

| up to step | separation | invariance | capacity | conformal | total |
|---|---|---|---|---|---|
{rows}

Ablation `no_capacity`: the same recipe with the capacity weight 0, {m["ablation_steps"]} steps
(shorter than the main run, to fit the CPU budget; {m["ablation_seconds"]:.0f} s); last losses
| {abl_last} | (same columns).

## Results

Rate maps: {r.eval_trajectories} fresh velocity sequences of {r.seq_len} steps from the origin
(seed {r.eval_seed}), {r.bins} x {r.bins} bins over the {r.box[0]} x {r.box[1]} m arena (visited
bins: {t["visited_bins_fraction"]:.0%}); the 2x arena: sequences 4x longer, rate maps over
{2 * r.box[0]} x {2 * r.box[1]} m at the same bin size. Grid score: `pk.grid.score` (Banino
score60); grid cell: score60 > 0.3 and a regular six-peak ring; modules: `pk.grid.modules`
(Gaussian mixture on log spacing and orientation, >= 3 cells). Null: each unit's activity
circularly shifted in time.

| network | median score60 | q95 | max | null p95 | score60 > 0.3 | grid cells | modules | sizes | spacings (m) | orientations (deg) | spacing ratios |
|---|---|---|---|---|---|---|---|---|---|---|---|
{_network_row("trained", t)}
{_network_row("trained, 2x arena", t2)}
{_network_row("no capacity term", a)}
{_network_row("untrained (same init)", u)}

Spacings of the grid cells (trained): {_fmt(t["grid_cell_spacings"], 2)};
of every unit passing the score alone: {_fmt(t["score_pass_spacings"], 2)}.

Aim of the issue (>= 2 modules of >= 8 grid cells, adjacent spacing ratios 1.3-2.0, the ablation
in one module): modules of >= 8 cells {aim["modules_of_8_or_more"]}, their ratios
{_fmt(aim["their_spacing_ratios"], 2)}, ablation modules of >= 8 cells
{aim["ablation_modules_of_8_or_more"]}: **{"reached" if aim["reached"] else "not reached"}**.

## A GPU run

The source's scale needs a GPU: `probekit train grid-ssl --device cuda --steps 100000` (same
recipe, more steps; the batch size and learning rate are the recipe's fields).

## Rebuild

```
probekit train grid-ssl
```

or `probekit.train.RECIPES["grid-ssl"](out_dir)`. Files: `config.json`, `model.safetensors`
(sha256 `{m["model_sha256"]}`), `metrics.json` (everything above), `card.md`.
"""


def build_grid_ssl(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: GridSSLRecipe | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train ``grid-ssl``, its no-capacity ablation, evaluate them and the untrained network,
    and write the checkpoint (the trained network) with its card to ``out_dir`` atomically.

    ``steps`` overrides the main run's step count (the ablation keeps ``recipe.ablation_steps``
    unless that is longer). Returns the metrics written to ``metrics.json``.
    """
    from probekit.train.recipes import _machine, atomic_directory, sha256_file

    recipe = recipe or GridSSLRecipe()
    steps = recipe.steps if steps is None else steps
    trained = train_grid_ssl(recipe, seed=seed, steps=steps, progress=progress, device=device)
    ablation_recipe = replace(recipe, capacity_weight=0.0)
    ablation_steps = min(recipe.ablation_steps, steps)
    if progress:
        print("ablation: capacity weight 0", flush=True)
    ablation = train_grid_ssl(
        ablation_recipe, seed=seed, steps=ablation_steps, progress=progress, device=device
    )
    model = trained["model"]
    kw = {
        "n_trajectories": recipe.eval_trajectories,
        "seed": recipe.eval_seed,
        "bins": recipe.bins,
        "shuffle_seed": recipe.shuffle_seed,
    }
    if progress:
        print("evaluating", flush=True)
    metrics: dict[str, Any] = {
        "recipe": "grid-ssl",
        "seed": seed,
        "steps": steps,
        "ablation_steps": ablation_steps,
        "settings": asdict(recipe) | {"steps": steps, "box": list(recipe.box)},
        "train_seconds": round(trained["seconds"], 1),
        "ablation_seconds": round(ablation["seconds"], 1),
        "machine": _machine(),
        "device": device,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "loss_curve": _curve(trained["losses"]),
        "ablation_loss_curve": _curve(ablation["losses"]),
        "trained": evaluate_grid_ssl(model, **kw)["metrics"],
        "trained_2x": evaluate_grid_ssl(model, scale=2.0, **kw)["metrics"],
        "no_capacity": evaluate_grid_ssl(ablation["model"], **kw)["metrics"],
        "untrained": evaluate_grid_ssl(grid_ssl_model(recipe, seed), **kw)["metrics"],
    }
    metrics["aim"] = aim_reached(metrics["trained"], metrics["no_capacity"])
    metrics["verdict"] = _verdict(metrics)
    with atomic_directory(out_dir) as tmp:
        model.save(tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2) + "\n")
        (tmp / "card.md").write_text(_card(recipe, seed, metrics))
    return metrics


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = [
    "GridSSLRecipe",
    "aim_reached",
    "build_grid_ssl",
    "evaluate_grid_ssl",
    "grid_ssl_model",
    "train_grid_ssl",
]
