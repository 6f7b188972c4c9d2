"""In-context learning of energy functions: 2-D points from random Gaussian mixtures.

The task of seeds/abstracts.md §3 and §6 (docs/attention_clustering.md): a context is a sequence
of points ``x_0, x_1, ...`` in R^2 drawn i.i.d. from one random mixture of ``K`` isotropic
Gaussians (means ``mu_k ~ N(0, mean_sd^2 I)``, common standard deviation ``component_sd``, equal
weights), a fresh mixture for every context. A model of the task maps the context to a scalar
energy per position, ``E(x_n | x_<n)``, whose Boltzmann density ``exp(-E)`` should approach the
Bayesian posterior predictive ``p(x | x_<n)`` as the context grows: the model learns the
distribution in context although its output (an energy) lives in a different space from its
input (points).

This module holds everything about the task apart from the training recipe:

- data: :func:`sample_mixtures`, :func:`sample_contexts`;
- the exact posterior predictive of the generating process, by Rao-Blackwellised collapsed
  Gibbs sampling over the component assignments (:func:`posterior_predictive`; with one
  component it is the closed-form conjugate Gaussian, :func:`gaussian_predictive`);
- the model, :class:`EnergyTransformer`: a small causal pre-LayerNorm transformer (no position
  embeddings: a context is a set) with a map from R^2 in (a small MLP, or linear as in the
  source) and one scalar out per position, saved as ``model.safetensors`` + ``config.json``
  (:func:`save`, :func:`load`);
- the contrastive energy loss and Langevin negatives of the source (:func:`energy_loss`,
  :func:`langevin_step`, :func:`langevin`), and sampling from ``exp(-E)`` (:func:`sample`);
- the measurement: :func:`grid_kl` from the true predictive to ``exp(-E)`` normalised on a grid,
  beside a uniform and a kernel-density (on the context) baseline (:func:`evaluate_grid`).

Example::

    >>> from probekit.tasks import energy
    >>> batch = energy.sample_contexts(4, 35, seed=0)
    >>> batch.points.shape, batch.means.shape
    (torch.Size([4, 35, 2]), torch.Size([4, 3, 2]))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from probekit.validation import (
    as_generator,
    check_int,
    check_positive_float,
    check_positive_int,
)

#: The source's data: 3 components, means ~ N(0, 5^2 I), component sd 0.33, up to 35 points.
DEFAULT_COMPONENTS = 3
DEFAULT_MEAN_SD = 5.0
DEFAULT_COMPONENT_SD = 0.33
DEFAULT_LENGTH = 35
#: The square the energy landscape is measured on, ``[-10, 10]^2`` as in the source.
DEFAULT_BOX = 10.0
FORMAT = "probekit-icl-energy"


# ----------------------------------------------------------------------------- data


class Contexts(NamedTuple):
    """A batch of contexts: ``points [B, T, 2]``, ``labels [B, T]`` (component of each point),
    ``means [B, K, 2]``, and the scalars of the generating process."""

    points: torch.Tensor
    labels: torch.Tensor
    means: torch.Tensor
    mean_sd: float
    component_sd: float


def sample_mixtures(
    batch: int,
    components: int = DEFAULT_COMPONENTS,
    mean_sd: float = DEFAULT_MEAN_SD,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Component means ``[batch, components, 2]``, each ``~ N(0, mean_sd^2 I)``."""
    batch = check_positive_int("batch", batch)
    components = check_positive_int("components", components)
    mean_sd = check_positive_float("mean_sd", mean_sd)
    gen = as_generator(seed)
    return mean_sd * torch.randn(batch, components, 2, generator=gen)


def sample_contexts(
    batch: int,
    length: int = DEFAULT_LENGTH,
    components: int = DEFAULT_COMPONENTS,
    mean_sd: float = DEFAULT_MEAN_SD,
    component_sd: float = DEFAULT_COMPONENT_SD,
    seed: int | torch.Generator | None = 0,
) -> Contexts:
    """``batch`` contexts of ``length`` points, each from its own random mixture (equal weights)."""
    length = check_positive_int("length", length)
    component_sd = check_positive_float("component_sd", component_sd)
    gen = as_generator(seed)
    means = sample_mixtures(batch, components, mean_sd, gen)
    labels = torch.randint(0, components, (batch, length), generator=gen)
    centre = torch.gather(means, 1, labels[..., None].expand(-1, -1, 2))
    points = centre + component_sd * torch.randn(batch, length, 2, generator=gen)
    return Contexts(points, labels, means, float(mean_sd), float(component_sd))


# ----------------------------------------------------------------------------- posterior predictive


def gaussian_predictive(
    context: torch.Tensor, grid: torch.Tensor, mean_sd: float, component_sd: float
) -> torch.Tensor:
    """Log density ``[..., G]`` of the one-component posterior predictive at ``grid [G, 2]``.

    Conjugate normal model: ``mu ~ N(0, s0^2 I)``, ``x | mu ~ N(mu, s^2 I)``; after ``n``
    points, ``mu | x ~ N(m, t^2 I)`` with ``t^2 = 1 / (1/s0^2 + n/s^2)``, ``m = t^2 sum(x)/s^2``,
    and ``x_new | x ~ N(m, (s^2 + t^2) I)``. ``context: [..., n, 2]`` (``n`` may be 0).
    """
    n = context.shape[-2]
    t2 = 1.0 / (1.0 / mean_sd**2 + n / component_sd**2)
    m = t2 * context.sum(-2) / component_sd**2  # [..., 2]
    var = component_sd**2 + t2
    d2 = ((grid - m[..., None, :]) ** 2).sum(-1)
    return -0.5 * d2 / var - math.log(2 * math.pi * var)


def _cluster_predictive(
    x: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor, s0: float, s: float
) -> torch.Tensor:
    """Log predictive of points ``x [..., G, 2]`` under each cluster given its sufficient
    statistics ``sums [..., K, 2]``, ``counts [..., K]`` -> ``[..., G, K]``."""
    t2 = 1.0 / (1.0 / s0**2 + counts / s**2)  # [..., K]
    m = t2[..., None] * sums / s**2  # [..., K, 2]
    var = s**2 + t2  # [..., K]
    d2 = ((x[..., :, None, :] - m[..., None, :, :]) ** 2).sum(-1)  # [..., G, K]
    return -0.5 * d2 / var[..., None, :] - torch.log(2 * math.pi * var)[..., None, :]


@torch.no_grad()
def posterior_predictive(
    context: torch.Tensor,
    grid: torch.Tensor,
    components: int = DEFAULT_COMPONENTS,
    mean_sd: float = DEFAULT_MEAN_SD,
    component_sd: float = DEFAULT_COMPONENT_SD,
    labels: torch.Tensor | None = None,
    chains: int = 16,
    sweeps: int = 12,
    burn_in: int = 4,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Log density ``[B, G]`` of the Bayesian posterior predictive ``p(x | context)`` at ``grid``.

    The generating process (equal-weight mixture of ``components`` isotropic Gaussians with
    means ``~ N(0, mean_sd^2 I)`` and sd ``component_sd``) is conjugate given the assignments,
    so ``p(x | D) = E_{z | D}[ (1/K) sum_k N(x; m_k(z), (s^2 + t_k^2(z)) I) ]``; the expectation
    over assignments ``z`` is taken by collapsed Gibbs sampling (``chains`` chains, ``sweeps``
    sweeps, the first ``burn_in`` dropped), Rao-Blackwellised (each kept state contributes its
    exact conditional predictive). Chains start from ``labels`` ``[B, n]`` when given (the true
    assignments: a high-probability state, so few sweeps suffice) and at random otherwise.

    ``context: [B, n, 2]`` (``n`` may be 0: the prior predictive), ``grid: [G, 2]``.
    """
    b, n, _ = context.shape
    k, s0, s = components, float(mean_sd), float(component_sd)
    gen = as_generator(seed)
    if n == 0:
        zeros = context.new_zeros(b, k, 2)
        cnt = context.new_zeros(b, k)
        lp = _cluster_predictive(grid.expand(b, -1, -1), zeros, cnt, s0, s)
        return torch.logsumexp(lp, -1) - math.log(k)
    if labels is None:
        z = torch.randint(0, k, (b, chains, n), generator=gen)
    else:
        z = labels[:, None, :].expand(b, chains, n).clone()
    x = context[:, None].expand(b, chains, n, 2)
    onehot = F.one_hot(z, k).to(context.dtype)  # [B, C, n, K]
    sums = torch.einsum("bcnk,bcnd->bckd", onehot, x)
    counts = onehot.sum(2)
    total = None
    kept = 0
    for sweep in range(sweeps):
        for i in range(n):
            xi = x[:, :, i]  # [B, C, 2]
            old = onehot[:, :, i]  # [B, C, K]
            sums = sums - old[..., None] * xi[:, :, None]
            counts = counts - old
            lp = _cluster_predictive(xi[:, :, None], sums, counts, s0, s)[:, :, 0]  # [B, C, K]
            u = torch.rand(b, chains, 1, generator=gen)
            cdf = torch.softmax(lp, -1).cumsum(-1)
            new = (u > cdf).sum(-1).clamp(max=k - 1)
            onehot[:, :, i] = F.one_hot(new, k).to(context.dtype)
            sums = sums + onehot[:, :, i, :, None] * xi[:, :, None]
            counts = counts + onehot[:, :, i]
        if sweep >= burn_in:
            lp = _cluster_predictive(grid.expand(b, chains, -1, -1), sums, counts, s0, s)
            dens = torch.logsumexp(lp, -1) - math.log(k)  # [B, C, G]
            term = torch.logsumexp(dens, 1) - math.log(chains)
            total = term[None] if total is None else torch.cat([total, term[None]])
            kept += 1
    return torch.logsumexp(total, 0) - math.log(kept)


# ----------------------------------------------------------------------------- grid measurement


def box_grid(box: float = DEFAULT_BOX, points: int = 120) -> torch.Tensor:
    """Cell centres ``[points^2, 2]`` of a ``points x points`` grid on ``[-box, box]^2``
    (row-major: y slow, x fast)."""
    edge = torch.linspace(-box, box, points + 1)
    centre = 0.5 * (edge[1:] + edge[:-1])
    yy, xx = torch.meshgrid(centre, centre, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)


def grid_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` in nats of two densities given as unnormalised logs on one grid.

    ``log_p, log_q: [..., G]``; each is normalised over the grid's cells (equal cell areas, so
    the area cancels): ``KL = sum_g p_g (log p_g - log q_g)`` -> ``[...]``. With a fine grid over
    a box holding nearly all of both densities' mass this is the continuous KL.
    """
    lp = torch.log_softmax(log_p.double(), -1)
    lq = torch.log_softmax(log_q.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def kde_log_density(
    context: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor | float
) -> torch.Tensor:
    """Log density ``[B, G]`` of the Gaussian kernel density estimate on ``context [B, n, 2]``
    with bandwidth ``[B]`` (or one float) at ``grid [G, 2]``."""
    h = torch.as_tensor(bandwidth, dtype=context.dtype).reshape(-1, 1, 1)
    d2 = ((grid[None, :, None] - context[:, None]) ** 2).sum(-1)  # [B, G, n]
    n = context.shape[1]
    return (
        torch.logsumexp(-0.5 * d2 / h**2, -1)
        - math.log(n)
        - torch.log(2 * math.pi * h[..., 0] ** 2)
    )


def kde_bandwidth(context: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Per context ``[B]``: the bandwidth maximising the leave-one-out log-likelihood of the
    context under its own Gaussian KDE, from ``candidates`` (default 40 values, 0.05..5,
    log-spaced). ``context: [B, n, 2]`` with ``n >= 2``."""
    if candidates is None:
        candidates = torch.logspace(math.log10(0.05), math.log10(5.0), 40)
    n = context.shape[1]
    d2 = ((context[:, :, None] - context[:, None]) ** 2).sum(-1)  # [B, n, n]
    eye = torch.eye(n, dtype=torch.bool)
    h = candidates.to(context.dtype)[:, None, None, None]
    logk = (-0.5 * d2[None] / h**2).masked_fill(eye, -math.inf)
    ll = torch.logsumexp(logk, -1) - math.log(n - 1) - torch.log(2 * math.pi * h[..., 0] ** 2)
    return candidates[ll.sum(-1).argmax(0)]


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class EnergyConfig:
    """Sizes of :class:`EnergyTransformer`; ``input_scale`` multiplies points before the input
    map (points are O(5), the network prefers O(1)); ``embed_hidden`` > 0 makes the input map a
    one-hidden-layer GELU MLP of that width instead of the source's linear map (so the first
    attention layer can compare squared distances)."""

    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    d_mlp: int = 128
    input_scale: float = 0.2
    embed_hidden: int = 64


class _Block(nn.Module):
    def __init__(self, cfg: EnergyConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_mlp), nn.GELU(), nn.Linear(cfg.d_mlp, cfg.d_model)
        )

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        shape = (*x.shape[:-1], self.n_head, -1)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def context(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal self-attention over ``h [B, T, d]``; returns the new ``h`` and this layer's
        keys and values ``[B, T, heads, d_head]``."""
        q, k, v = self._heads(h)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        ).transpose(1, 2)
        h = h + self.proj(out.reshape(h.shape))
        return h + self.mlp(self.ln2(h)), k, v

    def points(
        self, g: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """Query points ``g [B, P, M, d]``: the point at slot ``p`` attends to the context's
        first ``visible[p]`` positions and to itself."""
        q, k, v = self._heads(g)  # [B, P, M, H, dh]
        scale = q.shape[-1] ** -0.5
        s_ctx = torch.einsum("bpmhe,bthe->bpmht", q, k_ctx) * scale
        t = torch.arange(k_ctx.shape[1])
        mask = t[None, :] < visible[:, None]  # [P, T]
        s_ctx = s_ctx.masked_fill(~mask[None, :, None, None, :], -math.inf)
        s_self = (q * k).sum(-1, keepdim=True) * scale
        a = torch.softmax(torch.cat([s_ctx, s_self], -1), -1)
        out = torch.einsum("bpmht,bthe->bpmhe", a[..., :-1], v_ctx) + a[..., -1:] * v
        g = g + self.proj(out.reshape(g.shape))
        return g + self.mlp(self.ln2(g))


class EnergyTransformer(nn.Module):
    """A causal transformer from a context of 2-D points to one scalar energy per position.

    ``forward(points [B, T, 2]) -> [B, T]``: ``E(x_t | x_<t)``, the output at position ``t`` of
    a causal pre-LayerNorm transformer (no position embeddings). :meth:`energy` evaluates the
    same function at other points in place of ``x_t`` without rerunning the context.
    """

    def __init__(self, cfg: EnergyConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or EnergyConfig()
        d, h = self.cfg.d_model, self.cfg.embed_hidden
        if h > 0:
            self.embed: nn.Module = nn.Sequential(nn.Linear(2, h), nn.GELU(), nn.Linear(h, d))
        else:
            self.embed = nn.Linear(2, d)
        self.blocks = nn.ModuleList(_Block(self.cfg) for _ in range(self.cfg.n_layer))
        self.ln_f = nn.LayerNorm(self.cfg.d_model)
        self.head = nn.Linear(self.cfg.d_model, 1)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x * self.cfg.input_scale)

    def encode(self, points: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer the context's keys and values ``[B, T, heads, d_head]`` (for :meth:`energy`)."""
        h = self._embed(points)
        cache = []
        for block in self.blocks:
            h, k, v = block.context(h)
            cache.append((k, v))
        return cache

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        h = self._embed(points)
        for block in self.blocks:
            h = block.context(h)[0]
        return self.head(self.ln_f(h))[..., 0]

    def energy(
        self,
        cache: list[tuple[torch.Tensor, torch.Tensor]],
        queries: torch.Tensor,
        visible: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Energies ``[B, P, M]`` of ``queries [B, P, M, 2]``; query slot ``p`` is conditioned
        on the first ``visible[p]`` context points (default ``visible = arange(P)``: slot ``t``
        replaces ``x_t``, so ``energy(encode(x), x[:, :, None])[..., 0] == forward(x)``)."""
        if visible is None:
            visible = torch.arange(queries.shape[1])
        g = self._embed(queries)
        for block, (k, v) in zip(self.blocks, cache):
            g = block.points(g, k, v, visible)
        return self.head(self.ln_f(g))[..., 0]

    def energy_given(self, context: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``E(q | context)`` for ``queries [B, M, 2]`` given all of ``context [B, n, 2]``
        (``n`` may be 0) -> ``[B, M]``."""
        b, n = context.shape[:2]
        if n == 0:
            dh = self.cfg.d_model // self.cfg.n_head
            empty = context.new_zeros(b, 0, self.cfg.n_head, dh)
            cache = [(empty, empty)] * self.cfg.n_layer
        else:
            cache = self.encode(context)
        return self.energy(cache, queries[:, None], torch.tensor([n]))[:, 0]


def save(model: EnergyTransformer, out_dir: str | os.PathLike) -> None:
    """Write ``model.safetensors`` and ``config.json`` (format ``probekit-icl-energy``)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    config = {"format": FORMAT, **asdict(model.cfg)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load(path: str | os.PathLike) -> EnergyTransformer:
    """Load an :class:`EnergyTransformer` directory written by :func:`save` (eval mode, CPU)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"path must be an icl-energy directory with config.json, got {path}")
    config = json.loads(cfg_path.read_text())
    if config.pop("format", None) != FORMAT:
        raise ValueError(f"{cfg_path} is not a {FORMAT!r} config")
    extra = config.pop("training", None)
    model = EnergyTransformer(EnergyConfig(**config))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    model.training_info = extra
    return model.eval()


# ----------------------------------------------------------------------------- loss and sampling


def energy_loss(
    e_real: torch.Tensor, e_neg: torch.Tensor, regularization: float = 1e-3
) -> torch.Tensor:
    """The source's contrastive energy loss, a scalar:
    ``mean(E_real) - mean(E_neg) + reg * (mean(E_real^2) + mean(E_neg^2))``.

    Lowers the energy of the data and raises that of the negatives; the square term keeps the
    energies bounded."""
    return (
        e_real.mean() - e_neg.mean() + regularization * (e_real.pow(2).mean() + e_neg.pow(2).mean())
    )


def langevin_step(
    x: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    noise_scale: float,
    clip: float | None,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One Langevin update ``x - (step_size / 2) clip(grad) + noise_scale * noise``; ``clip``
    clamps each gradient coordinate to ``[-clip, clip]`` (None: no clamp)."""
    if clip is not None:
        grad = grad.clamp(-clip, clip)
    return x - 0.5 * step_size * grad + noise_scale * noise


def langevin(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    steps: int = 15,
    step_size: float = 0.1,
    noise_scale: float | None = None,
    clip: float | None = 1.0,
    seed: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Run ``steps`` Langevin updates from ``x0`` on ``energy_fn(x) -> energies`` (summed for
    the gradient; each sample's energy depends on its own coordinates only). ``noise_scale``
    defaults to ``step_size`` (the source's ``x <- x - (s/2) grad E + s xi``). Returns the
    detached samples, the shape of ``x0``."""
    steps = check_int("steps", steps, low=0)
    step_size = check_positive_float("step_size", step_size)
    noise_scale = step_size if noise_scale is None else float(noise_scale)
    gen = as_generator(seed)
    x = x0.detach()
    for _ in range(steps):
        x = x.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        x = langevin_step(x.detach(), grad, step_size, noise_scale, clip, noise)
    return x.detach()


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def landscape(
    model: EnergyTransformer, context: torch.Tensor, grid: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """Energies ``[B, G]`` of ``grid [G, 2]`` given all of ``context [B, n, 2]``."""
    out = []
    for start in range(0, grid.shape[0], chunk):
        q = grid[start : start + chunk][None].expand(context.shape[0], -1, -1)
        out.append(model.energy_given(context, q))
    return torch.cat(out, -1)


def sample(
    model: EnergyTransformer,
    context: torch.Tensor,
    count: int = 500,
    steps: int = 300,
    step_size: float = 0.0225,
    clip: float | None = 50.0,
    box: float = DEFAULT_BOX,
    seed: int | torch.Generator | None = 0,
    near_context: float | None = None,
) -> torch.Tensor:
    """``count`` samples ``[count, 2]`` from ``exp(-E(x | context))`` by Langevin at temperature 1
    (``x <- x - (eps/2) clip(grad E) + sqrt(eps) xi``), started uniformly on the box, or, with
    ``near_context = r``, at uniformly chosen context points plus ``N(0, r^2 I)`` (as half of
    the training negatives start). ``context: [n, 2]``."""
    count = check_positive_int("count", count)
    gen = as_generator(seed)
    if near_context is not None and len(context) == 0:
        raise ValueError("near_context needs a non-empty context")
    with torch.no_grad():
        cache = model.encode(context[None]) if len(context) else None
    n = torch.tensor([len(context)])

    def energy_of(x: torch.Tensor) -> torch.Tensor:
        if cache is None:
            return model.energy_given(context[None], x[None])[0]
        return model.energy(cache, x[None, None], n)[0, 0]

    if near_context is None:
        start = (torch.rand(count, 2, generator=gen) * 2 - 1) * box
    else:
        pick = torch.randint(0, len(context), (count,), generator=gen)
        start = context[pick] + near_context * torch.randn(count, 2, generator=gen)
    return langevin(energy_of, start, steps, step_size, math.sqrt(step_size), clip=clip, seed=gen)


@torch.no_grad()
def evaluate_grid(
    model: EnergyTransformer,
    contexts: Contexts,
    lengths: list[int],
    grid_points: int = 120,
    box: float = DEFAULT_BOX,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per context length ``n`` in ``lengths``: the mean (and standard error) over contexts of
    ``KL(true posterior predictive || q)`` on the grid, for ``q`` = the model's ``exp(-E)``,
    a uniform density, and a Gaussian KDE on the ``n`` context points (bandwidth by
    leave-one-out likelihood; only for ``n >= 2``). Rows of dicts."""
    for n in lengths:
        check_int("lengths", n, low=0, high=contexts.points.shape[1])
    grid = box_grid(box, grid_points)
    rows = []
    for n in lengths:
        ctx = contexts.points[:, :n]
        log_p = posterior_predictive(
            ctx,
            grid,
            components,
            contexts.mean_sd,
            contexts.component_sd,
            labels=contexts.labels[:, :n],
            seed=seed,
        )
        kl_model = grid_kl(log_p, -landscape(model, ctx, grid))
        kl_uniform = grid_kl(log_p, torch.zeros_like(log_p))
        row = {
            "context_length": n,
            "kl_model": float(kl_model.mean()),
            "kl_model_se": float(kl_model.std() / math.sqrt(len(kl_model))),
            "kl_uniform": float(kl_uniform.mean()),
        }
        if n >= 2:
            kl_kde = grid_kl(log_p, kde_log_density(ctx, grid, kde_bandwidth(ctx)))
            row["kl_kde"] = float(kl_kde.mean())
            row["kl_kde_se"] = float(kl_kde.std() / math.sqrt(len(kl_kde)))
        else:
            row["kl_kde"] = math.nan
            row["kl_kde_se"] = math.nan
        rows.append(row)
    return rows
