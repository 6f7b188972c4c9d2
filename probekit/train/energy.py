"""Recipe ``icl-energy``: a causal transformer that learns energy functions in context.

The experiment of seeds/abstracts.md §3 (docs/attention_clustering.md), scaled to the CPU. Each
training context is 35 points from a fresh random mixture of 3 Gaussians in R^2
(:mod:`probekit.tasks.energy`); the model gives one energy per position, ``E(x_t | x_<t)``, and is
trained with the source's contrastive loss ``mean(E_real) - mean(E_neg) + 1e-3 (E_real^2 +
E_neg^2)`` against negatives drawn by 15 Langevin steps from the model's own energy at the same
position. Changes from the source (each for the CPU budget or for ``exp(-E)`` to be the
density the sampler targets), recorded in the card:

- the model is 2 layers, d 64, 4 heads (the source: 6, 128, 8), no position embeddings, and its
  input map is a small MLP instead of a linear map;
- Langevin at temperature 1, ``x <- x - (eps/2) clip(grad E) + sqrt(eps) xi`` (the source's
  ``s/2`` drift with ``s`` noise samples ``exp(-E/s)``);
- negatives at ``neg_positions`` random positions per context, half of them starting uniform on
  the box and half at a context point ``x_j`` (``j < t``) plus Gaussian noise, so that the short
  chains reach the wells and shape them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from probekit.tasks import energy as task
from probekit.train.recipes import _machine, atomic_directory, sha256_file


@dataclass(frozen=True)
class ICLEnergyRecipe:
    """Everything that defines the ``icl-energy`` checkpoint."""

    length: int = task.DEFAULT_LENGTH
    components: int = task.DEFAULT_COMPONENTS
    mean_sd: float = task.DEFAULT_MEAN_SD
    component_sd: float = task.DEFAULT_COMPONENT_SD
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    d_mlp: int = 128
    embed_hidden: int = 64
    steps: int = 700
    batch_size: int = 32
    neg_positions: int = 8
    lr: float = 2e-3
    warmup: int = 100
    regularization: float = 1e-3
    langevin_steps: int = 15
    langevin_eps: float = 0.0225
    langevin_clip: float = 50.0
    init_box: float = 11.0
    init_near_data: float = 0.5
    init_noise: float = 1.0
    eval_contexts: int = 16
    eval_grid: int = 120
    eval_lengths: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 34)


def icl_energy_model(recipe: ICLEnergyRecipe, seed: int) -> task.EnergyTransformer:
    """A freshly initialised :class:`~probekit.tasks.energy.EnergyTransformer` for the recipe."""
    cfg = task.EnergyConfig(
        n_layer=recipe.n_layer,
        d_model=recipe.d_model,
        n_head=recipe.n_head,
        d_mlp=recipe.d_mlp,
        embed_hidden=recipe.embed_hidden,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.EnergyTransformer(cfg)


def negative_starts(
    points: torch.Tensor, slots: torch.Tensor, recipe: ICLEnergyRecipe, gen: torch.Generator
) -> torch.Tensor:
    """Langevin starting points ``[B, P, 1, 2]`` for the negative slots ``slots [P]`` (positions):
    uniform on ``[-init_box, init_box]^2``, or (share ``init_near_data``, positions ``t >= 1``) a
    uniformly chosen earlier context point plus ``N(0, init_noise^2 I)``."""
    b, p = points.shape[0], slots.shape[0]
    uniform = (torch.rand(b, p, 2, generator=gen) * 2 - 1) * recipe.init_box
    pick = (torch.rand(b, p, generator=gen) * slots.clamp_min(1)).long()  # j < t
    near = torch.gather(points, 1, pick[..., None].expand(-1, -1, 2))
    near = near + recipe.init_noise * torch.randn(b, p, 2, generator=gen)
    use_near = (torch.rand(b, p, generator=gen) < recipe.init_near_data) & (slots >= 1)
    return torch.where(use_near[..., None], near, uniform)[:, :, None]


def train_step(
    model: task.EnergyTransformer, recipe: ICLEnergyRecipe, gen: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch: sample contexts, draw Langevin negatives, return the loss and its parts."""
    batch = task.sample_contexts(
        recipe.batch_size,
        recipe.length,
        recipe.components,
        recipe.mean_sd,
        recipe.component_sd,
        seed=gen,
    )
    x = batch.points
    slots = torch.randperm(recipe.length, generator=gen)[: recipe.neg_positions].sort().values
    with torch.no_grad():
        cache = model.encode(x)
    start = negative_starts(x, slots, recipe, gen)
    neg = task.langevin(
        lambda q: model.energy(cache, q, slots),
        start,
        steps=recipe.langevin_steps,
        step_size=recipe.langevin_eps,
        noise_scale=math.sqrt(recipe.langevin_eps),
        clip=recipe.langevin_clip,
        seed=gen,
    )
    e_real = model(x)
    e_neg = model.energy(model.encode(x), neg, slots)
    loss = task.energy_loss(e_real, e_neg, recipe.regularization)
    return loss, {"e_real": float(e_real.detach().mean()), "e_neg": float(e_neg.detach().mean())}


def _card(recipe: ICLEnergyRecipe, metrics: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['context_length']} | {r['kl_model']:.3f} ± {r['kl_model_se']:.3f} | "
        f"{r['kl_uniform']:.3f} | "
        + ("-" if math.isnan(r["kl_kde"]) else f"{r['kl_kde']:.3f} ± {r['kl_kde_se']:.3f}")
        + " |"
        for r in metrics["grid_kl"]
    )
    curve = "\n".join(f"| {s} | {v:.4f} |" for s, v in metrics["loss_curve"])
    r = recipe
    return f"""# icl-energy

A small causal transformer that maps a context of 2-D points to one scalar energy per
position, `E(x_t | x_<t)`, trained so that `exp(-E)` follows the distribution the context was
drawn from: in-context learning of energy functions (docs/attention_clustering.md).

## The task (`probekit.tasks.energy`)

Each context holds {r.length} points from its own random mixture of {r.components} isotropic
Gaussians in R^2 with equal weights, means ~ N(0, {r.mean_sd}^2 I), component sd
{r.component_sd}. A fresh mixture is drawn for every context, so the mixture can only be
learned in context.

## Results

KL (nats) from the exact Bayesian posterior predictive `p(x | x_<n)` (collapsed Gibbs over the
assignments) to each density, normalised on a {metrics["grid_points"]}x{metrics["grid_points"]}
grid over [-{task.DEFAULT_BOX:g}, {task.DEFAULT_BOX:g}]^2, mean ± s.e. over
{r.eval_contexts} held-out contexts (seed 12345): the model's `exp(-E)`, a uniform density, and
a Gaussian KDE on the `n` context points (bandwidth by leave-one-out likelihood).

| context length n | model exp(-E) | uniform | KDE on context |
|---|---|---|---|
{rows}

## Recipe

- model: {r.n_layer} layers, d_model {r.d_model}, {r.n_head} heads, MLP {r.d_mlp}, pre-LayerNorm,
  no position embeddings, input map MLP 2 -> {r.embed_hidden} -> {r.d_model} (the source: 6
  layers, d 128, 8 heads, linear input map), {metrics["n_parameters"]:,} parameters
- loss: mean(E_real) - mean(E_neg) + {r.regularization} (mean E_real^2 + mean E_neg^2)
- negatives: {r.langevin_steps} Langevin steps `x <- x - (eps/2) clip(grad E, {r.langevin_clip}) +
  sqrt(eps) xi`, eps {r.langevin_eps} (temperature 1), at {r.neg_positions} random positions per
  context; starts: {1 - r.init_near_data:.0%} uniform on [-{r.init_box}, {r.init_box}]^2,
  {r.init_near_data:.0%} at an earlier context point + N(0, {r.init_noise}^2 I)
- AdamW lr {r.lr} ({r.warmup} warmup steps, cosine decay), gradient norm clipped at 1,
  batch {r.batch_size} contexts, {metrics["steps"]} steps, seed {metrics["seed"]}
- wall-clock training time {metrics["train_seconds"]:.0f} s on {metrics["machine"]}

Training loss (mean over windows):

| up to step | loss |
|---|---|
{curve}

Rebuild with `probekit train icl-energy` (or `probekit.train.RECIPES["icl-energy"](out_dir)`).

## Files

- `model.safetensors` sha256 `{metrics["model_sha256"]}`, `config.json` (format
  `probekit-icl-energy`); load with `probekit.tasks.energy.load(path)`
- `metrics.json`: the numbers above
"""


def build_icl_energy(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: ICLEnergyRecipe | None = None,
) -> dict[str, Any]:
    """Train the ``icl-energy`` checkpoint and write it to ``out_dir`` atomically.

    Returns the metrics written to ``metrics.json`` (grid KL per context length against the
    uniform and KDE baselines, loss curve, timing, sha256 of the weights)."""
    from probekit.train.causal_lm import cosine_lr_factor

    recipe = recipe or ICLEnergyRecipe()
    steps = recipe.steps if steps is None else int(steps)
    warmup = min(recipe.warmup, max(steps // 10, 1))
    model = icl_energy_model(recipe, seed)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
        lr=recipe.lr,
    )
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = recipe.lr * cosine_lr_factor(step, steps, warmup)
        loss, parts = train_step(model, recipe, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (step % 100 == 0 or step == steps - 1):
            print(
                f"step {step:5d} loss {losses[-1]:8.3f} E_real {parts['e_real']:7.2f} "
                f"E_neg {parts['e_neg']:7.2f} {time.time() - t0:6.0f} s",
                flush=True,
            )
    seconds = time.time() - t0
    model.eval()
    grid_points = recipe.eval_grid
    held_out = task.sample_contexts(recipe.eval_contexts, recipe.length, seed=12345)
    grid_rows = task.evaluate_grid(
        model, held_out, list(recipe.eval_lengths), grid_points=grid_points
    )
    n = len(losses)
    bounds = [round(i * n / 10) for i in range(11)]
    curve = [
        [hi, sum(losses[lo:hi]) / (hi - lo)] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo
    ]
    metrics: dict[str, Any] = {
        "recipe": "icl-energy",
        "steps": steps,
        "seed": seed,
        "settings": asdict(recipe) | {"steps": steps},
        "train_seconds": round(seconds, 1),
        "machine": _machine(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": losses[-1],
        "loss_curve": curve,
        "grid_points": grid_points,
        "grid_kl": grid_rows,
    }
    with atomic_directory(out_dir) as tmp:
        task.save(model, tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "card.md").write_text(_card(recipe, metrics))
    return metrics
