"""Train CTRNNs on the 20 cognitive tasks, with BIMT, plain L1, or no regulariser.

Which question this serves: does brain-inspired modular training (BIMT) make an RNN's
functional modules anatomical as well: wired together and placed together? The three shipped
checkpoints ``cog-rnn-bimt``, ``cog-rnn-l1`` and ``cog-rnn-plain`` differ only in the
regulariser; everything else (task mixture, architecture, optimiser, seed) is shared, so
:mod:`probekit.modularity` can compare them.

BIMT as Liu, Khona, Fiete & Tegmark ("Growing brains", 2023) apply it to an RNN (the method of
Liu, Gan & Tegmark 2023): every hidden unit sits on a 2-D grid position ``p_i``; the connection
cost of the recurrent weights is

    l_cc = sum_ij |W_ij| * (A * d_ij + l0),   d_ij = ||p_i - p_j||,  A = 1, l0 = 0.2,

(:func:`probekit.stats.modularity.connection_cost`; positions from
:func:`~probekit.stats.modularity.grid_positions`), added to the task loss as ``lambda * l_cc``
with BIMT's schedule: ``lam_low`` over the first quarter of training, ``lam_high`` (10x) over
the middle half, ``lam_low`` again over the last quarter (:func:`lambda_schedule`). Every
``swap_every`` steps (200) the ``swap_k`` units (10) with the largest total ``|w|`` (in + out,
recurrent) are visited in turn; each trades positions with the unit whose position lowers
``l_cc`` most (if any does). A swap moves positions, not weights, so the network computes the
same function before and after it. The L1 baseline adds ``lambda * sum_ij |W_ij|`` on the same
schedule, its strength set for a sparsity comparable to BIMT's (the cards record sum ``|W|``
and the share of it in the top 10% of connections for both); the plain baseline adds nothing.

Training (all three): ``dt`` = 100 ms and ``tau`` = 100 ms (neurogym's setting; the tasks'
epochs are defined in ms and converted with the recipe's dt, which the checkpoint's config
records), batches mixing all 20 tasks, Adam with a cosine-decaying learning rate and gradient
clipping, softplus units with a small diagonal recurrent initialisation.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from probekit.models.rnn import HookedRNN, RNNConfig
from probekit.stats.modularity import (
    connection_cost,
    distance_matrix,
    grid_positions,
    top_fraction,
    wiring_length,
)
from probekit.tasks import cognitive
from probekit.tasks.cognitive import ctrnn_forward, evaluate, masked_mse
from probekit.validation import check_choice, check_positive_int

Regularizer = Literal["bimt", "l1", "none"]
REGULARIZERS = ("bimt", "l1", "none")


# ----------------------------------------------------------------------------- BIMT geometry


def swap_gains(strength: Tensor, dist: Tensor, unit: int) -> Tensor:
    """``[n]``: change of ``sum_ij S_ij d_ij`` if ``unit`` traded positions with each unit.

    ``strength`` is the symmetric ``|W| + |W|^T`` ``[n, n]``, ``dist`` the current distances.
    Swapping ``i`` and ``j`` moves ``i``'s edges to ``p_j`` and ``j``'s to ``p_i``; the edge
    ``i-j`` keeps its length. Negative entries lower the cost; the entry for ``unit`` is 0.
    """
    i = unit
    s_i, d_i = strength[i], dist[i]
    a = dist @ s_i  # sum_k S_ik d(p_j, p_k)
    b = (s_i * d_i).sum()  # sum_k S_ik d(p_i, p_k)
    c = strength @ d_i  # sum_k S_jk d(p_i, p_k)
    e = (strength * dist).sum(1)  # sum_k S_jk d(p_j, p_k)
    diag = strength.diagonal()
    gain = a - b + c - e - d_i * (diag[i] + diag - 2 * s_i)
    gain[i] = 0.0
    return gain


def bimt_swap(weights: Tensor, positions: Tensor, k: int) -> tuple[Tensor, int]:
    """One round of BIMT swaps: the ``k`` units with the largest ``|w|`` in + out each move to
    the position that lowers the connection cost most. Returns (new positions, swaps made)."""
    w = weights.detach().abs().double()
    strength = w + w.T
    positions = positions.clone()
    order = torch.argsort(strength.sum(1), descending=True)[:k]
    swaps = 0
    for unit in order.tolist():
        gain = swap_gains(strength, distance_matrix(positions), unit)
        j = int(torch.argmin(gain))
        if gain[j] < -1e-12:
            positions[[unit, j]] = positions[[j, unit]]
            swaps += 1
    return positions, swaps


def lambda_schedule(
    step: int, steps: int, low: float, high: float, shape: str = "loglinear"
) -> float:
    """The regularisation strength at ``step`` of ``steps``.

    ``"steps"`` (BIMT's schedule): ``low`` over the first quarter, ``high`` over the middle
    half, ``low`` again over the last quarter. ``"loglinear"``: log-linear rise ``low -> high``
    over the first half, back to ``low`` over the second.
    """
    check_choice("shape", shape, ("steps", "loglinear"))
    if shape == "steps":
        return high if steps // 4 <= step < steps - steps // 4 else low
    if steps <= 1 or low <= 0:
        return high if low <= 0 else low
    frac = 1.0 - abs(2.0 * step / (steps - 1) - 1.0)
    return low * (high / low) ** frac


# ----------------------------------------------------------------------------- training


@dataclass
class RNNTrainResult:
    """What :func:`train_cognitive_rnn` did: losses, evaluations, BIMT swaps, wall time."""

    losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    swaps: int = 0
    seconds: float = 0.0
    positions: Tensor | None = None


def train_cognitive_rnn(
    model: HookedRNN,
    *,
    steps: int,
    regularizer: Regularizer = "none",
    tasks: Sequence[str] = cognitive.TASKS,
    per_task: int = 16,
    lr: float = 1e-3,
    lr_final: float = 1.0,
    clip: float | None = None,
    lam_low: float = 1e-5,
    lam_high: float = 1e-4,
    schedule: str = "loglinear",
    A: float = 1.0,
    l0: float = 0.2,
    swap_every: int = 200,
    swap_k: int = 16,
    positions: Tensor | None = None,
    noise: float = 0.05,
    seed: int = 0,
    eval_every: int = 0,
    eval_fn: Callable[[HookedRNN], dict[str, float]] | None = None,
    progress: bool = True,
) -> RNNTrainResult:
    """Train ``model`` (a CTRNN with a 17-unit readout) on a mixture of cognitive tasks.

    Each step draws ``per_task`` fresh trials of every task in ``tasks`` (one mixed batch from
    one generator seeded with ``seed``, at the model's ``dt``), runs the model through its
    differentiable per-step loop, and takes an Adam step on :func:`masked_mse` plus the
    regulariser (module docstring), the gradient norm clipped to ``clip`` (None: no clipping),
    the learning rate decaying from ``lr`` to ``lr * lr_final`` along a half cosine.
    Deterministic for a seed on the CPU at a fixed thread count.

    Returns:
        :class:`RNNTrainResult`; for BIMT its ``positions [H, 2]`` are the final position map.
    """
    check_choice("regularizer", regularizer, REGULARIZERS)
    if model.output_size != cognitive.N_OUTPUT or model.input_size != cognitive.N_INPUT:
        raise ValueError(
            f"model must map {cognitive.N_INPUT} inputs to {cognitive.N_OUTPUT} outputs, got "
            f"{model.input_size} -> {model.output_size}"
        )
    check_positive_int("steps", steps)
    check_positive_int("per_task", per_task)
    if not 0 < lr_final <= 1:
        raise ValueError(f"lr_final must be a fraction in (0, 1], got {lr_final}")
    dt = cognitive.model_dt(model)
    n = model.hidden_size
    if positions is None:
        positions = grid_positions(n)
    positions = positions.double().clone()
    torch.manual_seed(seed)  # nothing in the loop should draw from it; belt and braces
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def lr_factor(step: int) -> float:
        return lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * step / steps))

    result = RNNTrainResult()
    dist = distance_matrix(positions).to(model.dtype)
    start = time.perf_counter()
    last_print = start
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step)
        trials = cognitive.mixed(tasks, per_task, seed=gen, noise=noise, dtype=model.dtype, dt=dt)
        y = ctrnn_forward(model, trials.inputs)
        loss = masked_mse(y, trials)
        total = loss
        lam = lambda_schedule(step, steps, lam_low, lam_high, schedule)
        if regularizer == "bimt":
            total = total + lam * (model.weight_hh.abs() * (A * dist + l0)).sum()
        elif regularizer == "l1":
            total = total + lam * model.weight_hh.abs().sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        result.losses.append(float(loss.detach()))
        if regularizer == "bimt" and swap_every and (step + 1) % swap_every == 0:
            positions, swaps = bimt_swap(model.weight_hh, positions, swap_k)
            result.swaps += swaps
            dist = distance_matrix(positions).to(model.dtype)
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0:
            model.eval()
            result.evals.append((step + 1, eval_fn(model)))
            model.train()
        now = time.perf_counter()
        if progress and (now - last_print > 30 or step == steps - 1):
            last_print = now
            recent = sum(result.losses[-50:]) / len(result.losses[-50:])
            msg = f"[{regularizer}] step {step + 1}/{steps} loss {recent:.4f} lam {lam:.2e}"
            if result.evals:
                acc = result.evals[-1][1]
                msg += f" acc {sum(acc.values()) / len(acc):.3f} min {min(acc.values()):.2f}"
            print(msg + f" {now - start:.0f}s", flush=True)
    model.eval()
    result.seconds = time.perf_counter() - start
    result.positions = positions
    return result


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class CogRNNRecipe:
    """Everything that defines a shipped ``cog-rnn-*`` checkpoint.

    Time: ``dt`` ms per step (the tasks' epochs, defined in ms, are converted with it; the
    checkpoint's config records it), ``tau`` the units' time constant. Initialisation:
    ``W_rec = w_rec_diag * I`` (a small diagonal, no cross-talk at the start), ``W_in`` normal
    with std ``w_in_std`` (default ``1 / sqrt(53)``), everything else torch's uniform default.
    Optimiser: Adam, ``lr`` decaying along a half cosine to ``lr * lr_final``, gradient norm
    clipped to ``clip``. Regulariser strength: ``lam_low`` -> ``lam_high`` -> ``lam_low`` on
    ``schedule`` (BIMT's quarters by default).
    """

    regularizer: str = "none"
    hidden_size: int = 128
    grid_columns: int = 16
    nonlinearity: str = "softplus"
    dt: float = cognitive.DT
    tau: float = 100.0
    w_rec_diag: float | None = 0.5
    w_in_std: float | None = 1.0 / math.sqrt(cognitive.N_INPUT)
    steps: int = 12000
    per_task: int = 8
    lr: float = 5e-3
    lr_final: float = 0.05
    clip: float | None = 1.0
    lam_low: float = 1e-5
    lam_high: float = 1e-4
    schedule: str = "steps"
    A: float = 1.0
    l0: float = 0.2
    swap_every: int = 200
    swap_k: int = 10
    noise: float = 0.05
    eval_every: int = 1000
    eval_trials: int = 64
    final_eval_trials: int = 256


#: the shipped recipes (see each card); the regularisers' strengths were chosen so that the
#: regularised networks stay within 5 points of the plain one's mean accuracy
SHIPPED: dict[str, CogRNNRecipe] = {
    "none": CogRNNRecipe(regularizer="none", lam_low=0.0, lam_high=0.0),
    "bimt": CogRNNRecipe(regularizer="bimt", lam_low=5e-6, lam_high=5e-5),
    "l1": CogRNNRecipe(regularizer="l1", lam_low=2e-6, lam_high=2e-5),
}


def cog_rnn_model(recipe: CogRNNRecipe, seed: int) -> HookedRNN:
    """A freshly initialised CTRNN for the recipe (yang2019 convention, 53 -> H -> 17)."""
    cfg = RNNConfig(
        kind="ctrnn",
        input_size=cognitive.N_INPUT,
        hidden_size=recipe.hidden_size,
        output_size=cognitive.N_OUTPUT,
        nonlinearity=recipe.nonlinearity,
        dt=recipe.dt,
        tau=recipe.tau,
        convention="yang2019",
        extra={
            "task": "probekit.tasks.cognitive",
            "regularizer": recipe.regularizer,
            "dt_unit": "ms",
        },
    )
    model = HookedRNN(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        if recipe.w_rec_diag is not None:
            model.weight_hh.copy_(recipe.w_rec_diag * torch.eye(recipe.hidden_size))
        if recipe.w_in_std is not None:
            w = torch.randn(model.weight_ih.shape, generator=gen) * recipe.w_in_std
            model.weight_ih.copy_(w)
    return model


def _machine() -> str:
    return (
        f"{platform.machine()} {platform.processor() or ''} CPU, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s)"
    ).replace("  ", " ")


_DESCRIPTIONS = {
    "bimt": "BIMT: distance-weighted L1 connection cost on the recurrent weights plus periodic "
    "position swaps (units on a 2-D grid)",
    "l1": "plain L1 on the recurrent weights, same lambda schedule shape as BIMT",
    "none": "no regulariser",
}


def _card(name: str, recipe: CogRNNRecipe, seed: int, metrics: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {cognitive.TASK_NAMES[t]} | `{t}` | {metrics['accuracy'][t]:.3f} |"
        for t in cognitive.TASKS
    )
    evals = "\n".join(
        f"| {step} | {sum(acc.values()) / len(acc):.3f} | {min(acc.values()):.3f} |"
        for step, acc in metrics["evals"]
    )
    curve = "\n".join(f"| {s} | {v:.4f} |" for s, v in metrics["loss_curve"])
    r = recipe
    bimt = ""
    if r.regularizer == "bimt":
        bimt = (
            f"\nThe final unit positions are stored as the extra tensor `positions` "
            f"[{r.hidden_size}, 2] (`model.positions` after `pk.load`); {metrics['swaps']} swaps "
            f"were made in {metrics['steps'] // r.swap_every} rounds (every {r.swap_every} "
            f"steps, the top {r.swap_k} units by |w| in + out). Connection cost l_cc of the final "
            f"weights at the final positions: {metrics['connection_cost']:.2f} (at the initial "
            f"grid order: {metrics['connection_cost_initial_positions']:.2f}).\n"
        )
    lam = (
        "none"
        if r.regularizer == "none"
        else f"{r.lam_low:g} -> {r.lam_high:g} -> {r.lam_low:g} ({r.schedule} schedule: the "
        "high value over the middle half of training)"
    )
    s = metrics["sparsity"]
    return f"""# {name}

A continuous-time RNN ({r.hidden_size} {r.nonlinearity} units, dt = {r.dt:g} ms, tau =
{r.tau:g} ms) trained on all 20 cognitive tasks of Yang et al. 2019
(`probekit.tasks.cognitive`) with **{_DESCRIPTIONS[r.regularizer]}**. One of three checkpoints
(`cog-rnn-bimt`, `cog-rnn-l1`, `cog-rnn-plain`) that share everything but the regulariser,
shipped for the modularity study (`analyses/rnn_modularity.py`, `probekit.modularity`).
{bimt}
## Performance

Mean accuracy over the 20 tasks: **{metrics["mean_accuracy"]:.3f}** (worst task
{metrics["min_accuracy"]:.3f}); {metrics["n_tasks_at_80"]} of 20 tasks at >= 0.80. Measured on
{r.final_eval_trials} fresh trials per task (seed 12345, input noise {r.noise}, the model's dt)
with the tasks' own performance function (`probekit.tasks.cognitive.performance`): a trial is
correct when the fixation output stays above 0.5 until the go cue and the final response is
within pi/10 of the target (or fixation is kept when that is the answer).

| task | key | accuracy |
|---|---|---|
{rows}

## Recurrent weights

| measure | value |
|---|---|
| sum \\|W_rec\\| | {s["sum_abs"]:.2f} |
| share of sum \\|W_rec\\| in the top 10% of connections | {s["top10_fraction"]:.3f} |
| connections with \\|w\\| < 1e-3 (fraction) | {s["near_zero_fraction"]:.3f} |
| wiring length sum \\|w\\| d / sum \\|w\\| ({s["wiring_positions"]}) | {s["wiring_length"]:.3f} |

## Training curve

Mean / worst task accuracy during training ({r.eval_trials} trials per task):

| step | mean | worst |
|---|---|---|
{evals}

Training loss (masked MSE, mean over windows):

| up to step | loss |
|---|---|
{curve}

## Architecture

`HookedRNN` kind `ctrnn`, convention `yang2019`: `h_t = (1 - a) h_(t-1) + a f(W_in u_t +
W_rec h_(t-1) + b)`, a = dt / tau = {r.dt:g} / {r.tau:g}, f = {r.nonlinearity}; inputs 53
(fixation, two rings of 16, 20 rule units), readout 17 (fixation, ring of 16);
{metrics["n_parameters"]:,} parameters (float32). No recurrent mask, no Dale's law.
Initialisation: W_rec = {r.w_rec_diag} * I, W_in ~ N(0, {r.w_in_std:.3f}^2).

## Recipe

```json
{json.dumps(metrics["settings"], indent=2)}
```

- each step: {r.per_task} fresh trials of each of the 20 tasks (one mixed batch of
  {20 * r.per_task}, padded to the longest task), Adam lr {r.lr:g} decaying along a half cosine
  to {r.lr * r.lr_final:g}, gradient norm clipped to {r.clip}, {metrics["steps"]} steps
- regulariser strength lambda: {lam}; A = {r.A:g}, l0 = {r.l0:g}
- seed {seed} (init, trials); wall-clock training time **{metrics["train_seconds"]:.0f} s** on
  {metrics["machine"]} (the machine was shared with other jobs)
- deterministic: the same seed on the same machine and thread count gives the same weights

Rebuild with `probekit train {name}` or `probekit.train.RECIPES["{name}"](out_dir)`.

## Files

- `config.json`, `model.safetensors` (probekit RNN format; sha256 `{metrics["model_sha256"]}`)
- `metrics.json`: the numbers above
"""


def weight_sparsity(weights: Tensor, positions: Tensor, where: str) -> dict[str, Any]:
    """Sparsity numbers of ``weights [H, H]`` for the cards: ``sum_abs``, ``top10_fraction``,
    ``near_zero_fraction`` and the wiring length on ``positions`` (``where`` names them)."""
    w = weights.detach()
    return {
        "sum_abs": float(w.abs().sum()),
        "top10_fraction": float(top_fraction(w, 0.1)),
        "near_zero_fraction": float((w.abs() < 1e-3).double().mean()),
        "wiring_length": float(wiring_length(w, positions)),
        "wiring_positions": where,
    }


def build_cog_rnn(
    name: str,
    out_dir: str | os.PathLike,
    regularizer: Regularizer,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: CogRNNRecipe | None = None,
) -> dict[str, Any]:
    """Train one ``cog-rnn-*`` checkpoint and write it to ``out_dir`` atomically."""
    from probekit.train.recipes import atomic_directory, sha256_file

    torch.set_num_threads(1)  # deterministic, and one core of a shared machine
    recipe = recipe or SHIPPED[regularizer]
    if recipe.regularizer != regularizer:
        recipe = CogRNNRecipe(**(asdict(recipe) | {"regularizer": regularizer}))
    steps = recipe.steps if steps is None else steps
    model = cog_rnn_model(recipe, seed)
    positions0 = grid_positions(recipe.hidden_size, recipe.grid_columns)

    def eval_fn(m: HookedRNN) -> dict[str, float]:
        return evaluate(m, n_trials=recipe.eval_trials, noise=recipe.noise)

    result = train_cognitive_rnn(
        model,
        steps=steps,
        regularizer=regularizer,
        per_task=recipe.per_task,
        lr=recipe.lr,
        lr_final=recipe.lr_final,
        clip=recipe.clip,
        lam_low=recipe.lam_low,
        lam_high=recipe.lam_high,
        schedule=recipe.schedule,
        A=recipe.A,
        l0=recipe.l0,
        swap_every=recipe.swap_every,
        swap_k=recipe.swap_k,
        positions=positions0,
        noise=recipe.noise,
        seed=seed,
        eval_every=recipe.eval_every,
        eval_fn=eval_fn,
        progress=progress,
    )
    acc = evaluate(model, n_trials=recipe.final_eval_trials, noise=recipe.noise)
    window = max(1, steps // 10)
    curve = [
        [
            min(i + window, steps),
            sum(result.losses[i : i + window]) / len(result.losses[i : i + window]),
        ]
        for i in range(0, steps, window)
    ]
    assert result.positions is not None
    placed = regularizer == "bimt"
    final_positions = result.positions if placed else positions0
    metrics: dict[str, Any] = {
        "recipe": name,
        "regularizer": regularizer,
        "accuracy": acc,
        "mean_accuracy": sum(acc.values()) / len(acc),
        "min_accuracy": min(acc.values()),
        "n_tasks_at_80": sum(v >= 0.8 for v in acc.values()),
        "steps": steps,
        "seed": seed,
        "settings": asdict(recipe) | {"steps": steps},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(result.seconds, 1),
        "machine": _machine(),
        "final_loss": result.losses[-1],
        "loss_curve": curve,
        "evals": [[step, values] for step, values in result.evals],
        "sparsity": weight_sparsity(
            model.weight_hh,
            final_positions,
            "final BIMT positions" if placed else "initial grid, unit order",
        ),
    }
    if placed:
        model.add_extra_tensor("positions", result.positions.to(model.dtype))
        model.cfg.extra["positions"] = (
            f"BIMT unit positions [{recipe.hidden_size}, 2] (grid of {recipe.grid_columns} "
            "columns, spacing 1/(columns-1))"
        )
        metrics["swaps"] = result.swaps
        w = model.weight_hh.detach()
        metrics["connection_cost"] = float(
            connection_cost(w, result.positions, recipe.A, recipe.l0)
        )
        metrics["connection_cost_initial_positions"] = float(
            connection_cost(w, positions0, recipe.A, recipe.l0)
        )
    with atomic_directory(out_dir) as tmp:
        model.save(tmp)
        metrics["model_sha256"] = sha256_file(Path(tmp) / "model.safetensors")
        (Path(tmp) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (Path(tmp) / "card.md").write_text(_card(name, recipe, seed, metrics))
    return metrics


def build_cog_rnn_bimt(
    out_dir: str | os.PathLike, steps: int | None = None, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """The ``cog-rnn-bimt`` checkpoint: CTRNN on the 20 tasks trained with BIMT."""
    return build_cog_rnn("cog-rnn-bimt", out_dir, "bimt", steps, seed, progress)


def build_cog_rnn_l1(
    out_dir: str | os.PathLike, steps: int | None = None, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """The ``cog-rnn-l1`` checkpoint: the same CTRNN with plain L1 at matched sparsity."""
    return build_cog_rnn("cog-rnn-l1", out_dir, "l1", steps, seed, progress)


def build_cog_rnn_plain(
    out_dir: str | os.PathLike, steps: int | None = None, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """The ``cog-rnn-plain`` checkpoint: the same CTRNN without a regulariser."""
    return build_cog_rnn("cog-rnn-plain", out_dir, "none", steps, seed, progress)
