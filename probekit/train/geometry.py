"""The ``mmcr-mlp`` recipe: a small MLP trained with the MMCR loss on Gaussian-blob views.

Does the MMCR objective drive both alignment and uniformity of the embedding, and is its
pretraining loss non-monotonic in the number of items N and the embedding dimension D, worst
at N = D (seeds/abstracts.md §4, Schaeffer et al. 2024)? This recipe trains what those questions
are asked of, on the CPU in about a minute:

- task (:mod:`probekit.tasks.multiview`): items drawn from 16 Gaussian blobs in R^32, each seen
  through K noisy, coordinate-dropped views; a fresh batch every step;
- the main model: :class:`probekit.tasks.multiview.MLPEncoder` ``32 -> 64 -> 64 -> 32``, Adam
  on :func:`probekit.stats.mmcr.mmcr_loss` (lambda 0), with snapshots over training (alignment
  and uniformity are measured on them by ``analyses/embedding_geometry.py``);
- the sweep: one encoder per (batch size N, embedding dimension D) on a grid, trained the same
  way, to show the trained pretraining loss against N and D.

Files: ``model.safetensors`` (main model), ``snapshots.safetensors`` (main model at the steps in
``config.json["snapshot_steps"]``, keys ``"step{S}.net..."``), ``sweep.safetensors`` (keys
``"N{N}-D{D}.net..."``), ``config.json`` (sizes and task), ``card.md``, ``metrics.json``. Load
with :func:`probekit.tasks.multiview.load_encoder`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from probekit.stats import mmcr
from probekit.tasks import multiview
from probekit.train.causal_lm import cosine_lr_factor
from probekit.train.recipes import _machine, atomic_directory, sha256_file


@dataclass(frozen=True)
class MMCRMLPRecipe:
    """Every setting of the ``mmcr-mlp`` run: task, model, optimiser, sweep grid, evaluation."""

    hidden: int = 64
    dim: int = 32
    views: int = 4
    batch_items: int = 128
    steps: int = 1500
    lr: float = 2e-3
    warmup: int = 50
    snapshot_steps: tuple[int, ...] = (0, 10, 25, 50, 100, 200, 350, 500, 750, 1000, 1500)
    sweep_dims: tuple[int, ...] = (8, 16, 32, 64)
    sweep_items: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256)
    sweep_steps: int = 400
    eval_items: int = 512
    eval_seed: int = 987654
    sweep_eval_batches: int = 8


def _train(
    model: torch.nn.Module,
    task: multiview.BlobTask,
    items: int,
    views: int,
    steps: int,
    lr: float,
    warmup: int,
    seed: int,
    on_step: Any = None,
) -> list[float]:
    """Adam on the MMCR loss (lambda 0), a fresh batch of ``items`` x ``views`` each step."""
    generator = torch.Generator().manual_seed(seed)
    centres = task.centres()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr_factor(s, steps, min(warmup, steps - 1), 0.05)
    )
    losses = []
    if on_step is not None:
        on_step(0)
    for step in range(steps):
        x = task.sample(items, views, generator, centres)
        loss = mmcr.mmcr_loss(model(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1)
    return losses


@torch.no_grad()
def _geometry(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    z = model(x)
    m = mmcr.centroids(z)
    nuc = float(mmcr.nuclear_norm(m))
    bound = mmcr.capacity_bound(*m.shape)
    return {
        "nuclear_norm": nuc,
        "gap": 1 - nuc / bound,
        "alignment": float(mmcr.alignment(z)),
        "uniformity": float(mmcr.uniformity(z)),
        "effective_rank": float(mmcr.effective_rank(m)),
        "mean_centroid_norm": float(m.norm(dim=-1).mean()),
    }


def _card(r: MMCRMLPRecipe, seed: int, m: dict[str, Any]) -> str:
    curve = "\n".join(
        f"| {e['step']} | {e['gap']:.4f} | {e['alignment']:.4f} | {e['uniformity']:.3f} | "
        f"{e['effective_rank']:.1f} |"
        for e in m["evals"]
    )
    dims = list(r.sweep_dims)
    header = " | ".join(f"D={d}" for d in dims)
    rows = []
    for n in r.sweep_items:
        cells = [
            next(s for s in m["sweep"] if s["items"] == n and s["dim"] == d) for d in dims
        ]  # fmt: skip
        rows.append(f"| {n} | " + " | ".join(f"{c['gap']:.3f}" for c in cells) + " |")
    sweep_table = "\n".join(rows)
    return f"""# mmcr-mlp

Small MLP encoders trained with the MMCR loss (Yerxa et al. 2023) on Gaussian-blob "views", for
the embedding-geometry study (`analyses/embedding_geometry.py`, `docs/embedding_geometry.md`):
does MMCR drive alignment and uniformity, and is the trained pretraining loss worst at N = D?

## Task (`probekit.tasks.multiview.BlobTask`)

{m["task"]["n_blobs"]} blob centres in R^{m["task"]["d_in"]} (`N(0, I)`, seed
{m["task"]["centre_seed"]}); an item is a centre plus `N(0, {m["task"]["item_sigma"]}^2 I)`; each of
its {r.views} views keeps every coordinate with probability {1 - m["task"]["drop"]:.2f} and adds
`N(0, {m["task"]["view_sigma"]}^2 I)`. A fresh batch every step (no finite training set).

## Main model (`model.safetensors`)

`MLPEncoder` {m["task"]["d_in"]} -> {r.hidden} -> {r.hidden} -> {r.dim} (ReLU),
{m["n_parameters"]:,} parameters. Adam, lr {r.lr}, {r.warmup} warmup steps then cosine to 5 %,
{m["steps"]} steps of {r.batch_items} items x {r.views} views, MMCR loss with lambda 0, seed {seed}.
Wall-clock {m["train_seconds"]:.1f} s on {m["machine"]}.

Geometry on a fixed evaluation set ({r.eval_items} items x {r.views} views, seed {r.eval_seed});
the gap is `1 - ||M||_* / sqrt(N min(N, D))`:

| step | gap | alignment | uniformity (t=2) | effective rank |
|---|---|---|---|---|
{curve}

Snapshots of these steps are in `snapshots.safetensors`.

## Sweep (`sweep.safetensors`)

One encoder per batch size N and embedding dimension D ({r.sweep_steps} steps each, otherwise as
above; seed {seed}); the gap on fresh batches of N items (mean of {r.sweep_eval_batches}):

| N | {header} |
|---|{"---|" * len(dims)}
{sweep_table}

Sweep wall-clock {m["sweep_seconds"]:.1f} s.

## Rebuild

```
probekit train mmcr-mlp
```

Deterministic on the CPU (seeded init, seeded batches). Load a model with
`probekit.tasks.multiview.load_encoder("checkpoints/mmcr-mlp")` (or `prefix="N32-D32"` for a
sweep model). `model.safetensors` sha256 `{m["model_sha256"]}`.
"""


def build_mmcr_mlp(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: MMCRMLPRecipe | None = None,
) -> dict[str, Any]:
    """Train the ``mmcr-mlp`` main model and its N x D sweep; write them to ``out_dir``.

    ``steps`` overrides the main model's step count (and caps the sweep's, for quick tests).
    Returns the metrics written to ``metrics.json``.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    r = recipe or MMCRMLPRecipe()
    steps = r.steps if steps is None else steps
    sweep_steps = min(r.sweep_steps, steps)
    task = multiview.BlobTask()
    eval_x = task.sample(r.eval_items, r.views, r.eval_seed)
    torch.set_num_threads(1)

    model = multiview.encoder(task.d_in, r.hidden, r.dim, seed)
    snap_steps = sorted({s for s in r.snapshot_steps if s <= steps} | {steps})
    snapshots: dict[str, torch.Tensor] = {}
    evals: list[dict[str, Any]] = []
    bar = tqdm(total=steps, desc="train mmcr-mlp", disable=not progress, leave=False)

    def on_step(step: int) -> None:
        bar.update(1 if step else 0)
        if step in snap_steps:
            model.eval()
            evals.append({"step": step} | _geometry(model, eval_x))
            model.train()
            for k, v in model.state_dict().items():
                snapshots[f"step{step}.{k}"] = v.detach().clone()

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        losses = _train(model, task, r.batch_items, r.views, steps, r.lr, r.warmup, seed, on_step)
    train_seconds = time.perf_counter() - start
    bar.close()
    model.eval()

    sweep_state: dict[str, torch.Tensor] = {}
    sweep: list[dict[str, Any]] = []
    start = time.perf_counter()
    grid = [(n, d) for d in r.sweep_dims for n in r.sweep_items]
    for n, d in tqdm(grid, desc="sweep N x D", disable=not progress, leave=False):
        net = multiview.encoder(task.d_in, r.hidden, d, seed)
        with torch.random.fork_rng(devices=[]):
            sweep_losses = _train(net, task, n, r.views, sweep_steps, r.lr, r.warmup, seed)
        net.eval()
        g = torch.Generator().manual_seed(r.eval_seed + 1)
        gaps = [
            _geometry(net, task.sample(n, r.views, g))["gap"] for _ in range(r.sweep_eval_batches)
        ]
        init_net = multiview.encoder(task.d_in, r.hidden, d, seed).eval()
        g = torch.Generator().manual_seed(r.eval_seed + 1)
        init_gaps = [
            _geometry(init_net, task.sample(n, r.views, g))["gap"]
            for _ in range(r.sweep_eval_batches)
        ]
        sweep.append(
            {
                "items": n,
                "dim": d,
                "gap": sum(gaps) / len(gaps),
                "gap_at_init": sum(init_gaps) / len(init_gaps),
                "final_loss": sum(sweep_losses[-20:]) / len(sweep_losses[-20:]),
                "bound": mmcr.capacity_bound(n, d),
            }
        )
        for k, v in net.state_dict().items():
            sweep_state[f"N{n}-D{d}.{k}"] = v.detach().clone()
    sweep_seconds = time.perf_counter() - start

    config = {
        "kind": "mmcr-mlp",
        "d_in": task.d_in,
        "hidden": r.hidden,
        "dim": r.dim,
        "views": r.views,
        "task": multiview.task_config(task),
        "snapshot_steps": snap_steps,
        "sweep": [{"items": s["items"], "dim": s["dim"]} for s in sweep],
    }
    metrics: dict[str, Any] = {
        "recipe": "mmcr-mlp",
        "steps": steps,
        "sweep_steps": sweep_steps,
        "seed": seed,
        "settings": asdict(r) | {"steps": steps},
        "task": multiview.task_config(task),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 2),
        "sweep_seconds": round(sweep_seconds, 2),
        "machine": _machine(),
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "loss_curve": [[i + 1, losses[i]] for i in range(0, steps, max(steps // 20, 1))],
        "evals": evals,
        "sweep": sweep,
    }
    with atomic_directory(out_dir) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors"
        )
        save_file(snapshots, tmp / "snapshots.safetensors")
        save_file(sweep_state, tmp / "sweep.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "card.md").write_text(_card(r, seed, metrics))
    return metrics
