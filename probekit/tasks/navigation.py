"""Path integration in a square box: random-walk trajectories, velocity inputs, place-cell targets.

Does a recurrent network that integrates its own velocity to keep track of where it is develop
grid cells, and in modules of different period (docs/grid.md)? This module generates the
data for that question, in the form used by Sorscher et al. (2019/2023) and Banino et al. (2018):

- :func:`trajectories`: smooth random walks of an animal-like agent in a box
  ``[-width/2, width/2] x [-height/2, height/2]``. Speeds are Rayleigh distributed, the heading
  turns by a Gaussian random angular velocity, and near a wall (closer than ``border``) an agent
  heading into it turns away until it runs parallel to the wall and slows to a quarter of its
  speed. The walls are soft, as in Sorscher et al.'s generator: a fast step begun just outside
  the border region can overshoot a wall by up to one step (a few cm; rate maps ignore samples
  outside their extent). The network's input at step ``t`` is the velocity ``velocity[:, t] = [vx, vy]`` (box
  units per second) and its target is the position *after* that step,
  ``positions[:, t] = start + dt * cumsum(velocity)[:, t]``.
- :func:`place_cell_centers` and :func:`place_code`: ``n`` place cells at uniform random centres;
  the code of a position is a normalised difference of Gaussians (a centre of width ``sigma``
  minus a surround of width ``surround * sigma``, each a softmax over cells, shifted to be
  non-negative and normalised to sum to 1). The targets are a probability distribution over
  place cells, so the network is trained with softmax cross-entropy.
- :func:`decode_position`: the position read back from a (predicted) place code as the mean
  centre of its ``k`` most active cells.
- the network of the task (``grid-rnn``): :func:`navigation_rnn` builds one untrained,
  :func:`attach_task_tensors` stores its encoder, place-cell centres and place-code settings in
  it, :func:`initial_state` rebuilds ``h0`` from start positions, :func:`rollout` runs it on
  fresh trajectories, :func:`rollout_data` gives its inputs, initial states and per-item
  extras (positions, start, target), and :func:`cache_rollout` writes the rollout's hidden
  states to an activation store with those extras, so ``pk.grid`` can work from the store.
- the self-supervised framework of Schaeffer et al. (NeurIPS 2023), no position target:
  :func:`ssl_batch` (one velocity sequence and random permutations of it: same start and end,
  many crossings), the losses :func:`ssl_separation_loss`, :func:`ssl_invariance_loss`,
  :func:`ssl_capacity_loss`, :func:`ssl_conformal_loss` (all in :func:`ssl_losses`) and the
  network :func:`ssl_grid_network` (:class:`probekit.models.ssl_grid.HookedSSLGrid`); the
  rollout functions above run it too (``grid-ssl``).

Example::

    >>> import torch
    >>> from probekit.tasks import navigation
    >>> traj = navigation.trajectories(4, 20, seed=0)
    >>> traj.velocity.shape, traj.positions.shape, traj.start.shape
    (torch.Size([4, 20, 2]), torch.Size([4, 20, 2]), torch.Size([4, 2]))
    >>> bool(torch.allclose(traj.start[:, None] + 0.02 * traj.velocity.cumsum(1), traj.positions))
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from probekit.validation import as_generator, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from probekit.activations import ActivationStore
    from probekit.models.rnn import HookedRNN

#: Defaults (Sorscher et al.): box side, step (s), border region, turning sd (rad/s), speed scale.
DEFAULT_BOX = (2.2, 2.2)
DEFAULT_DT = 0.02
DEFAULT_BORDER = 0.03
DEFAULT_TURN_SD = 11.52
DEFAULT_SPEED_SCALE = 0.13 * 2 * math.pi


class Trajectories(NamedTuple):
    """A batch of random walks.

    Attributes:
        velocity: ``[batch, time, 2]`` velocity of each step (box units per second), the
            network's input.
        positions: ``[batch, time, 2]`` position after each step, ``start + dt * cumsum(velocity)``.
        start: ``[batch, 2]`` position before the first step.
        heading: ``[batch, time]`` heading (radians) of each step's displacement.
    """

    velocity: torch.Tensor
    positions: torch.Tensor
    start: torch.Tensor
    heading: torch.Tensor


def _check_box(box: tuple[float, float]) -> tuple[float, float]:
    try:
        width, height = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be (width, height), got {box!r}") from None
    if not (width > 0 and height > 0):
        raise ValueError(f"box must have positive width and height, got {box!r}")
    return width, height


def extent_of(box: tuple[float, float] = DEFAULT_BOX) -> tuple[tuple[float, float], ...]:
    """The ``((x0, x1), (y0, y1))`` extent of a box centred on the origin."""
    width, height = _check_box(box)
    return ((-width / 2, width / 2), (-height / 2, height / 2))


def trajectories(
    n: int,
    steps: int,
    *,
    box: tuple[float, float] = DEFAULT_BOX,
    dt: float = DEFAULT_DT,
    border: float = DEFAULT_BORDER,
    turn_sd: float = DEFAULT_TURN_SD,
    speed_scale: float = DEFAULT_SPEED_SCALE,
    seed: int | torch.Generator = 0,
    dtype: torch.dtype = torch.float32,
) -> Trajectories:
    """``n`` random walks of ``steps`` steps in a ``box = (width, height)`` centred on the origin.

    Each step: the speed is drawn from a Rayleigh distribution of scale ``speed_scale`` (box units
    per second), the heading turns by ``dt * N(0, turn_sd)``; within ``border`` of a wall and
    heading into it (angle to the wall's normal below 90 degrees), the agent also turns so as to
    run parallel to the wall and moves at a quarter speed. Computed in float64, returned in
    ``dtype``. Deterministic for a given ``seed`` (an int or a ``torch.Generator``).
    """
    check_positive_int("n", n)
    check_positive_int("steps", steps)
    width, height = _check_box(box)
    for name, value in (("dt", dt), ("turn_sd", turn_sd), ("speed_scale", speed_scale)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if not border >= 0:
        raise ValueError(f"border must be >= 0, got {border!r}")
    gen = as_generator(seed)
    # The loop is hundreds of tiny ops; intra-op threads only add synchronisation (20x slower
    # on a busy 2-core machine). Elementwise results do not depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _walk(n, steps, width, height, dt, border, turn_sd, speed_scale, gen, dtype)
    finally:
        torch.set_num_threads(threads)


def _walk(
    n: int,
    steps: int,
    width: float,
    height: float,
    dt: float,
    border: float,
    turn_sd: float,
    speed_scale: float,
    gen: torch.Generator,
    dtype: torch.dtype,
) -> Trajectories:
    f64 = torch.float64
    half = torch.tensor([width / 2, height / 2], dtype=f64)
    pos = (torch.rand(n, 2, generator=gen, dtype=f64) * 2 - 1) * half
    head = torch.rand(n, generator=gen, dtype=f64) * 2 * math.pi
    turns = torch.randn(n, steps, generator=gen, dtype=f64) * turn_sd * dt
    # Rayleigh(scale) = scale * sqrt(-2 log U), U in (0, 1]
    speeds = speed_scale * torch.sqrt(
        -2 * torch.log1p(-torch.rand(n, steps, generator=gen, dtype=f64))
    )
    wall_normals = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=f64) * math.pi  # +x, +y, -x, -y walls
    start = pos.clone()
    vel = torch.empty(n, steps, 2, dtype=f64)
    headings = torch.empty(n, steps, dtype=f64)
    for t in range(steps):
        dists = torch.stack(
            [half[0] - pos[:, 0], half[1] - pos[:, 1], half[0] + pos[:, 0], half[1] + pos[:, 1]],
            dim=1,
        )
        d_wall, nearest = dists.min(dim=1)
        to_wall = torch.remainder(head - wall_normals[nearest] + math.pi, 2 * math.pi) - math.pi
        near = (d_wall < border) & (to_wall.abs() < math.pi / 2)
        turn = torch.where(near, torch.sign(to_wall) * (math.pi / 2 - to_wall.abs()), 0.0)
        speed = torch.where(near, 0.25 * speeds[:, t], speeds[:, t]) * dt
        head = head + turn
        step = speed[:, None] * torch.stack([torch.cos(head), torch.sin(head)], dim=1)
        vel[:, t] = step / dt
        headings[:, t] = head
        pos = pos + step
        head = head + turns[:, t]
    positions = start[:, None] + (vel * dt).cumsum(dim=1)
    headings = torch.remainder(headings + math.pi, 2 * math.pi) - math.pi
    return Trajectories(
        velocity=vel.to(dtype),
        positions=positions.to(dtype),
        start=start.to(dtype),
        heading=headings.to(dtype),
    )


def place_cell_centers(
    n: int, *, box: tuple[float, float] = DEFAULT_BOX, seed: int = 0
) -> torch.Tensor:
    """``[n, 2]`` place-cell centres drawn uniformly in the box (float32), seeded."""
    check_positive_int("n", n)
    width, height = _check_box(box)
    gen = as_generator(seed)
    unit = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1
    return (unit * torch.tensor([width / 2, height / 2], dtype=torch.float64)).float()


def place_code(
    positions: torch.Tensor,
    centers: torch.Tensor,
    *,
    sigma: float = 0.12,
    surround: float | None = 2.0,
) -> torch.Tensor:
    """Difference-of-Gaussians place-cell code of ``positions [..., 2]`` -> ``[..., n_cells]``.

    ``softmax(-d^2 / 2 sigma^2) - softmax(-d^2 / 2 (surround sigma)^2)`` over cells, shifted so
    its minimum over cells is 0 and divided by its sum (Sorscher et al.); ``surround=None`` gives
    the plain Gaussian softmax. Each output row is a probability distribution over place cells.
    """
    if positions.shape[-1] != 2:
        raise ValueError(f"positions must be [..., 2], got {tuple(positions.shape)}")
    if centers.ndim != 2 or centers.shape[-1] != 2:
        raise ValueError(f"centers must be [n_cells, 2], got {tuple(centers.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    d2 = ((positions[..., None, :] - centers.to(positions)) ** 2).sum(-1)
    code = torch.softmax(-d2 / (2 * sigma**2), dim=-1)
    if surround is not None:
        if not surround > 1:
            raise ValueError(f"surround must be > 1 (or None), got {surround!r}")
        code = code - torch.softmax(-d2 / (2 * (surround * sigma) ** 2), dim=-1)
        code = code - code.min(dim=-1, keepdim=True).values
        code = code / code.sum(dim=-1, keepdim=True)
    return code


def decode_position(code: torch.Tensor, centers: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Position ``[..., 2]`` read from a place code or logits ``[..., n_cells]``.

    The mean centre of the ``k`` most active cells (Sorscher et al.'s decoder).
    """
    if code.shape[-1] != centers.shape[0]:
        raise ValueError(
            f"code has {code.shape[-1]} cells in its last dimension, centers has {centers.shape[0]}"
        )
    idx = code.topk(k, dim=-1).indices
    return centers.to(code)[idx].mean(dim=-2)


# ----------------------------------------------------------------------------- the SSL framework
# Schaeffer, Khona, Ma, Eyzaguirre, Koyejo, Fiete (NeurIPS 2023): no position target; a batch is
# one velocity sequence and random permutations of it, and four losses on the network's states.

#: The source's settings: speed bound per component (m/step), sequence length, permutations,
#: loss scales and weights.
SSL_MAX_SPEED = 0.15
SSL_STEPS = 60
SSL_PERMUTATIONS = 130
SSL_SIGMA_X = 0.05
SSL_SIGMA_G = 0.4
SSL_MIN_SPEED = 0.02
SSL_ROLLOUT_PERMUTATIONS = 50
SSL_WEIGHTS = {"separation": 1.0, "invariance": 0.1, "capacity": 0.5, "conformal": 1.0}


class SSLBatch(NamedTuple):
    """One step's data of the self-supervised framework.

    Attributes:
        velocity: ``[T, 2]`` the one velocity sequence (m per step).
        order: ``[B, T]`` long, a permutation of ``0..T-1`` per row: step ``t`` of trajectory
            ``b`` moves by ``velocity[order[b, t]]``.
        positions: ``[B, T, 2]`` position after each step, ``start + cumsum(velocity[order])``;
            every row starts at ``start`` and ends at ``start + velocity.sum(0)``.
        start: ``[2]`` the common start position.
    """

    velocity: torch.Tensor
    order: torch.Tensor
    positions: torch.Tensor
    start: torch.Tensor


def ssl_velocities(
    n: int,
    steps: int = SSL_STEPS,
    *,
    max_speed: float = SSL_MAX_SPEED,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """``[n, steps, 2]`` velocities, each component uniform in ``[-max_speed, max_speed)``."""
    check_positive_int("n", n)
    check_positive_int("steps", steps)
    if not max_speed > 0:
        raise ValueError(f"max_speed must be positive, got {max_speed!r}")
    gen = as_generator(seed)
    return (torch.rand(n, steps, 2, generator=gen) * 2 - 1) * max_speed


def ssl_batch(
    n_permutations: int = SSL_PERMUTATIONS,
    steps: int = SSL_STEPS,
    *,
    max_speed: float = SSL_MAX_SPEED,
    start: tuple[float, float] = (0.0, 0.0),
    seed: int | torch.Generator = 0,
) -> SSLBatch:
    """One velocity sequence of ``steps`` steps and ``n_permutations`` random orderings of it.

    All trajectories start at ``start`` and end at the same point, and they cross often, so
    many pairs of states from different trajectories lie within ``sigma_x`` of each other: the
    path-invariance loss needs them. Vectorised: the orderings are ``argsort`` of uniform keys.
    """
    check_positive_int("n_permutations", n_permutations)
    gen = as_generator(seed)
    velocity = ssl_velocities(1, steps, max_speed=max_speed, seed=gen)[0]
    order = torch.rand(n_permutations, steps, generator=gen).argsort(dim=1)
    origin = torch.tensor(start, dtype=velocity.dtype)
    positions = origin + velocity[order].cumsum(dim=1)
    return SSLBatch(velocity=velocity, order=order, positions=positions, start=origin)


def ssl_pair_geometry(
    hidden: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(code_sq_dist [S, S], space_dist [S, S])`` over all states of a batch.

    ``hidden``: ``[S, N]`` or ``[B, T, N]``; ``positions``: ``[S, 2]`` or ``[B, T, 2]`` (the
    same leading shape). ``code_sq_dist[i, j] = ||g_i - g_j||^2`` (differentiable),
    ``space_dist[i, j] = ||x_i - x_j||`` (no gradient). The two pair losses share them.
    """
    if hidden.shape[:-1] != positions.shape[:-1] or positions.shape[-1] != 2:
        raise ValueError(
            f"hidden [..., N] and positions [..., 2] must share leading dims, got "
            f"{tuple(hidden.shape)} and {tuple(positions.shape)}"
        )
    g = hidden.reshape(-1, hidden.shape[-1])
    x = positions.reshape(-1, 2).to(g)
    sq = (g * g).sum(-1)
    code = (sq[:, None] + sq[None, :] - 2 * g @ g.T).clamp_min(0.0)
    with torch.no_grad():
        space = torch.cdist(x, x)
    return code, space


def ssl_separation_loss(
    code_sq_dist: torch.Tensor,
    space_dist: torch.Tensor,
    sigma_x: float = SSL_SIGMA_X,
    sigma_g: float = SSL_SIGMA_G,
) -> torch.Tensor:
    """Separation: states of places farther apart than ``sigma_x`` should differ.

    ``mean over pairs i != j with ||x_i - x_j|| > sigma_x of exp(-||g_i - g_j||^2 / 2 sigma_g^2)``
    from :func:`ssl_pair_geometry`'s ``[S, S]`` matrices. The source writes a sum; the mean over
    the pairs keeps the loss weights independent of the batch size. 0 when no pair is far.
    """
    far = space_dist > sigma_x  # never the diagonal (distance 0)
    terms = torch.exp(code_sq_dist * (-0.5 / sigma_g**2))
    return torch.where(far, terms, 0.0).sum() / far.sum().clamp_min(1)


def ssl_invariance_loss(
    code_sq_dist: torch.Tensor, space_dist: torch.Tensor, sigma_x: float = SSL_SIGMA_X
) -> torch.Tensor:
    """Path invariance: the same place reached by different paths should get the same state.

    ``mean over pairs i != j with ||x_i - x_j|| < sigma_x of ||g_i - g_j||^2`` (the source's sum,
    normalised as in :func:`ssl_separation_loss`). 0 when no pair is near.
    """
    near = space_dist < sigma_x  # with the diagonal, taken out below
    total = torch.where(near, code_sq_dist, 0.0).sum() - code_sq_dist.diagonal().sum()
    return total / (near.sum() - len(near)).clamp_min(1)


def ssl_capacity_loss(hidden: torch.Tensor) -> torch.Tensor:
    """Capacity: ``-||mean_i g_i||^2`` over all states ``hidden [..., N]`` of the batch.

    On the non-negative unit sphere, a large mean state means the states share active units, so
    the code cannot spread over ever more orthogonal directions: the term limits how many
    distinct states the separation loss can ask for (the source: without it, one module).
    """
    g = hidden.reshape(-1, hidden.shape[-1])
    return -(g.mean(dim=0) ** 2).sum()


def ssl_conformal_loss(
    hidden: torch.Tensor,
    h0: torch.Tensor,
    velocity: torch.Tensor,
    min_speed: float = SSL_MIN_SPEED,
) -> torch.Tensor:
    """Conformal isometry: a step's change of state should be proportional to its length.

    ``Var over (b, t) of ||g_t - g_{t-1}|| / ||v_t||`` (population variance), with ``hidden``
    ``[B, T, N]`` the states after each step, ``h0`` ``[B, N]`` or ``[N]`` the state before the
    first and ``velocity`` ``[B, T, 2]`` the steps. Steps shorter than ``min_speed`` are left
    out: there the ratio grows as ``1 / ||v||`` and one near-zero step of a batch would make
    the variance (and its gradient) spike by orders of magnitude.
    """
    if hidden.ndim != 3 or velocity.shape != (*hidden.shape[:2], 2):
        raise ValueError(
            f"hidden must be [B, T, N] and velocity [B, T, 2], got {tuple(hidden.shape)} and "
            f"{tuple(velocity.shape)}"
        )
    before = torch.cat([h0.expand(hidden.shape[0], -1)[:, None], hidden[:, :-1]], dim=1)
    speed = velocity.to(hidden).norm(dim=-1)
    keep = speed > min_speed
    ratio = (hidden - before).norm(dim=-1)[keep] / speed[keep]
    return ratio.var(unbiased=False) if len(ratio) else hidden.sum() * 0.0


def ssl_losses(
    model: Any,
    batch: SSLBatch,
    *,
    sigma_x: float = SSL_SIGMA_X,
    sigma_g: float = SSL_SIGMA_G,
    weights: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Run an ssl-grid network on ``batch`` and return every loss term and their weighted sum.

    ``W(v)`` is computed once per distinct velocity and gathered by the permutations
    (``model(batch.velocity, order=batch.order)``). Returns ``separation``, ``invariance``,
    ``capacity``, ``conformal`` and ``total = sum(weights[k] * term_k)`` (default
    :data:`SSL_WEIGHTS`: the source's 1, 0.1, 0.5, and 1 for conformal isometry).
    """
    weights = dict(SSL_WEIGHTS if weights is None else weights)
    hidden = model(batch.velocity, order=batch.order)
    code, space = ssl_pair_geometry(hidden, batch.positions)
    h0 = model.initial_state(1)[0]
    terms = {
        "separation": ssl_separation_loss(code, space, sigma_x, sigma_g),
        "invariance": ssl_invariance_loss(code, space, sigma_x),
        "capacity": ssl_capacity_loss(hidden),
        "conformal": ssl_conformal_loss(hidden, h0, batch.velocity[batch.order]),
    }
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise ValueError(f"weights: unknown loss term(s) {unknown}; terms are {sorted(terms)}")
    terms["total"] = sum(weights.get(k, 0.0) * v for k, v in terms.items())
    return terms


def ssl_grid_network(
    hidden: int = 128,
    mlp_hidden: tuple[int, ...] = (64, 64),
    seed: int = 0,
    output_init_scale: float = 1.0,
    **task: Any,
) -> Any:
    """An untrained :class:`~probekit.models.ssl_grid.HookedSSLGrid` with the task's settings in
    ``cfg.extra`` (``box``, ``seq_len``, ``max_speed``, ``bins``, overridable by ``task``)."""
    from probekit.models.ssl_grid import HookedSSLGrid, SSLGridConfig

    extra = {
        "task": "probekit.tasks.navigation SSL framework (grid-ssl recipe)",
        "box": [2.0, 2.0],
        "seq_len": SSL_STEPS,
        "max_speed": SSL_MAX_SPEED,
        "bins": 40,
        "input": "velocity [vx, vy] (m per step), uniform per component",
    }
    extra.update(task)
    cfg = SSLGridConfig(
        hidden_size=hidden,
        mlp_hidden=tuple(mlp_hidden),
        output_init_scale=output_init_scale,
        extra=extra,
    )
    return HookedSSLGrid(cfg, seed=seed)


def is_ssl_network(model: Any) -> bool:
    """Whether ``model`` is an ssl-grid network (no place cells: trajectories start at 0)."""
    return getattr(getattr(model, "cfg", None), "kind", None) == "ssl-grid"


# ----------------------------------------------------------------------------- the network


def navigation_rnn(hidden: int, n_place: int, seed: int) -> tuple[HookedRNN, torch.nn.Parameter]:
    """An untrained path-integrating RNN and its encoder ``[hidden, n_place]``, seeded.

    A :class:`~probekit.models.HookedRNN` of kind ``"rnn"``: 2 velocity inputs, ``hidden`` ReLU
    units without bias, a linear readout to ``n_place`` place cells; the encoder (the map from
    the scaled place code of the start position to ``h0``) is uniform in
    ``+-1/sqrt(n_place)``, drawn from a generator seeded with ``seed + 1``. The ``grid-rnn``
    recipe trains this network; the ``grid_modules`` study rebuilds it untrained as a control.
    """
    from probekit.models.rnn import HookedRNN, RNNConfig

    check_positive_int("hidden", hidden)
    check_positive_int("n_place", n_place)
    cfg = RNNConfig(
        kind="rnn",
        input_size=2,
        hidden_size=hidden,
        output_size=n_place,
        nonlinearity="relu",
        bias=False,
        extra={"task": "probekit.tasks.navigation path integration (grid-rnn recipe)"},
    )
    model = HookedRNN(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    k = 1.0 / math.sqrt(n_place)
    encoder = torch.nn.Parameter(torch.empty(hidden, n_place).uniform_(-k, k, generator=gen))
    return model, encoder


def attach_task_tensors(
    model: HookedRNN,
    encoder: torch.Tensor,
    centers: torch.Tensor,
    *,
    place_sigma: float,
    place_surround: float,
    box: tuple[float, float],
    seq_len: int,
) -> HookedRNN:
    """Store the encoder ``[hidden, n_place]``, the place-cell centres ``[n_place, 2]`` and the
    place-code settings in ``model`` (extra tensors and ``cfg.extra``), so that a saved network
    can be rolled out again (:func:`initial_state`, :func:`rollout`)."""
    model.add_extra_tensor("encoder", encoder.detach().clone())
    model.add_extra_tensor("place_centers", centers.detach().clone())
    model.cfg.extra.update(
        {
            "place_sigma": place_sigma,
            "place_surround": place_surround,
            "box": list(box),
            "seq_len": seq_len,
            "input": "velocity [vx, vy] (box units per second), dt 0.02 s",
            "h0": "encoder @ (n_place * place_code(start))",
        }
    )
    return model


def _check_navigation_model(model: Any) -> None:
    if is_ssl_network(model):
        return
    for name in ("encoder", "place_centers"):
        if not hasattr(model, name):
            raise ValueError(
                f"model must be a navigation RNN with the {name!r} extra tensor (see "
                "probekit.tasks.navigation.attach_task_tensors)"
            )


def initial_state(model: HookedRNN, start: torch.Tensor, **code_kwargs: Any) -> torch.Tensor:
    """``h0 [batch, hidden]`` of a saved navigation RNN for start positions ``[batch, 2]``.

    ``h0 = encoder @ (n_place * place_code(start))``, with the checkpoint's ``encoder`` and
    ``place_centers`` extra tensors and its place-code settings (``model.cfg.extra``);
    ``code_kwargs`` override ``sigma`` / ``surround``.
    """
    _check_navigation_model(model)
    extra = model.cfg.extra
    kwargs = {"sigma": extra.get("place_sigma", 0.12), "surround": extra.get("place_surround", 2.0)}
    kwargs.update(code_kwargs)
    centers = model.place_centers
    code = len(centers) * place_code(start.to(centers), centers, **kwargs)
    return code.to(model.dtype) @ model.encoder.T.to(model.dtype)


def rollout_data(
    model: HookedRNN, n_trajectories: int, seed: int | torch.Generator, seq_len: int | None = None
) -> dict[str, Any]:
    """Fresh trajectories of a saved navigation RNN's task, ready to run or cache.

    Returns ``{"inputs": velocity [n, T, 2], "h0": [n, hidden], "extras": {"positions":
    [n, T, 2], "start": [n, 2], "target": [n, T, n_place]}}``: the box and ``T`` come from the
    checkpoint (``seq_len`` overrides ``T``), the target is the place code of each position.
    :func:`cache_rollout` stores the hidden states these give, the extras beside them.

    For an ssl-grid network (:func:`ssl_grid_network`) the trajectories are those of its
    training data: sequences of ``T`` velocities uniform per component in ``+-max_speed``
    (``cfg.extra``), each drawn with :data:`SSL_ROLLOUT_PERMUTATIONS` random orderings, all
    starting at the origin from the learned ``g_0`` (``h0``); the extras are ``positions`` and
    ``start`` (no target: there is no readout). The orderings let ``W(v)`` be computed once per
    distinct velocity (``data["table"]``, ``data["order"]``; :func:`ssl_run`), which makes a
    rollout ~50x cheaper; each trajectory on its own is still a uniform random sequence.
    """
    _check_navigation_model(model)
    check_positive_int("n_trajectories", n_trajectories)
    extra = model.cfg.extra
    if is_ssl_network(model):
        seq_len = int(extra.get("seq_len", SSL_STEPS)) if seq_len is None else seq_len
        return _ssl_rollout_data(model, n_trajectories, seed, seq_len)
    box = tuple(extra.get("box", DEFAULT_BOX))
    seq_len = int(extra.get("seq_len", 20)) if seq_len is None else seq_len
    check_positive_int("seq_len", seq_len)
    traj = trajectories(n_trajectories, seq_len, box=box, seed=seed)
    code_kw = {"sigma": extra["place_sigma"], "surround": extra["place_surround"]}
    with torch.no_grad():
        h0 = initial_state(model, traj.start)
        target = place_code(traj.positions, model.place_centers, **code_kw)
    return {
        "inputs": traj.velocity,
        "h0": h0,
        "extras": {"positions": traj.positions, "start": traj.start, "target": target},
    }


def rollout(
    model: HookedRNN, n_trajectories: int, seed: int | torch.Generator, seq_len: int | None = None
) -> dict[str, torch.Tensor]:
    """Run a saved navigation RNN on fresh trajectories of its task (:func:`rollout_data`).

    Returns ``hidden [n, T, H]``, ``logits [n, T, n_place]``, ``positions [n, T, 2]``,
    ``target [n, T, n_place]`` (the place code), ``start [n, 2]``; an ssl-grid network has no
    readout, so no ``logits`` or ``target``.
    """
    data = rollout_data(model, n_trajectories, seed, seq_len)
    if is_ssl_network(model):
        return {"hidden": ssl_run(model, data)["hook_hidden"], **data["extras"]}
    with torch.no_grad():
        logits, cache = model.run_with_cache(data["inputs"], data["h0"], names_filter="hook_hidden")
    return {"hidden": cache["hook_hidden"], "logits": logits, **data["extras"]}


def _ssl_rollout_data(
    model: Any, n: int, seed: int | torch.Generator, seq_len: int
) -> dict[str, Any]:
    check_positive_int("seq_len", seq_len)
    gen = as_generator(seed)
    per = min(SSL_ROLLOUT_PERMUTATIONS, n)
    groups = -(-n // per)
    max_speed = model.cfg.extra.get("max_speed", SSL_MAX_SPEED)
    table = ssl_velocities(groups, seq_len, max_speed=max_speed, seed=gen)  # [G, T, 2]
    order = torch.rand(groups, per, seq_len, generator=gen).argsort(dim=-1)
    order = (order + seq_len * torch.arange(groups)[:, None, None]).reshape(-1, seq_len)[:n]
    table = table.reshape(-1, 2)
    velocity = table[order]
    h0 = model.initial_state(n).detach().cpu()
    return {
        "inputs": velocity,
        "h0": h0,
        "table": table,
        "order": order,
        "extras": {"positions": velocity.cumsum(dim=1), "start": torch.zeros(n, 2)},
    }


def ssl_run(
    model: Any,
    data: dict[str, Any],
    names: list[str] | None = None,
    rows: torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Cached activations ``{name: [n, T, ...]}`` of an ssl-grid network on the trajectories
    ``rows`` (default all) of :func:`rollout_data`, one velocity sequence's orderings at a time
    (``W(v)`` once per distinct velocity); ``names`` default ``["hook_hidden"]``."""
    names = ["hook_hidden"] if names is None else names
    rows = torch.arange(len(data["order"])) if rows is None else rows
    order, seq_len = data["order"][rows], data["order"].shape[1]
    group = order[:, 0] // seq_len
    device = model.device if device is None else device
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.inference_mode():
        for g in group.unique_consecutive():
            sel = (group == g).nonzero()[:, 0]
            lo = int(g) * seq_len
            table = data["table"][lo : lo + seq_len].to(device)
            _, cache = model.run_with_cache(
                table,
                data["h0"][rows[sel]].to(device),
                order=(order[sel] - lo).to(device),
                names_filter=names,
            )
            for name in names:
                parts[name].append((sel, cache[name]))
    out = {}
    for name in names:
        first = parts[name][0][1]
        full = first.new_empty((len(rows), *first.shape[1:]))
        for sel, value in parts[name]:
            full[sel.to(full.device)] = value
        out[name] = full
    return out


def cache_rollout(
    model: HookedRNN,
    n_trajectories: int,
    seed: int | torch.Generator,
    out: str | Path | None = None,
    *,
    seq_len: int | None = None,
    names: str | list[str] = "hook_hidden",
    batch_size: int = 500,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = False,
) -> ActivationStore:
    """Cache a rollout (:func:`rollout_data`) in an activation store, positions beside it.

    The store holds ``names`` (default ``hook_hidden [n, T, H]``) and the extras
    ``positions [n, T, 2]``, ``start [n, 2]`` and ``target [n, T, n_place]``, written by the
    store writer ``pk.cache`` uses (same shards, manifest, fingerprints and resume), so
    ``pk.grid.ratemaps(store["hook_hidden"], store["positions"], ...)`` equals the rate maps of
    :func:`rollout`'s ``hidden`` and ``positions``. Each trajectory starts from its own initial
    state ``h0``, which ``pk.cache``'s data cannot carry: the items are trajectory indices
    (``store["tokens"]``), and the trajectories, their ``h0`` and the model run here (``dtype``
    None keeps float32).
    """
    from probekit.activations import build_store, resolve_names
    from probekit.models.fingerprint import fingerprint
    from probekit.validation import check_positive_int, resolve_device

    check_positive_int("batch_size", batch_size)
    data = rollout_data(model, n_trajectories, seed, seq_len)
    names = resolve_names(model, names)
    device = resolve_device(device)
    model.to(device).eval()

    def compute(index: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        rows = index[:, 0]
        if is_ssl_network(model):
            acts = ssl_run(model, data, names, rows, device)
            return {name: acts[name].cpu().to(dtype or acts[name].dtype) for name in names}
        with torch.inference_mode():
            _, acts = model.run_with_cache(
                data["inputs"][rows].to(device), data["h0"][rows].to(device), names_filter=names
            )
        return {name: acts[name].cpu().to(dtype or acts[name].dtype) for name in names}

    return build_store(
        torch.arange(n_trajectories)[:, None],
        compute,
        model_fingerprint=fingerprint(model),
        options={
            "names": names,
            "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "batch_size": batch_size,
            "rollout": "probekit.tasks.navigation.cache_rollout: items are trajectory indices",
        },
        model_class=type(model).__name__,
        out=out,
        resume=resume,
        progress=progress,
        extras=data["extras"],
        desc="rollout",
        batch_size=batch_size,
    )
