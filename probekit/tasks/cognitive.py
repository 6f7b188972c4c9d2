"""The 20 cognitive tasks of Yang et al. 2019, as batches of trials for an RNN.

Which question this serves: do an RNN's units form functional modules when it learns many
related tasks at once, and are those modules anatomical too (:mod:`probekit.modularity`)? The
tasks are those of Yang, Joglekar, Song, Newsome & Wang
(2019), "Task representations in neural networks trained to perform many cognitive tasks",
written here from the published description (go / anti / decision making / matching families,
each with reaction-time, delayed and context variants).

Encoding (``dt`` = 20 ms per step):

- inputs ``[batch, time, 53]``: ``0`` fixation (1 until the go cue), ``1..16`` ring of modality
  1, ``17..32`` ring of modality 2, ``33..52`` one-hot rule (the task's index in :data:`TASKS`).
  A stimulus at direction ``theta`` with strength ``s`` drives ring unit ``k`` (preferred
  direction ``2 pi k / 16``) by ``s * exp(-d^2 / (2 sigma^2))``, ``d`` the circular distance,
  ``sigma = 2 pi / 16``. Gaussian noise (``noise`` std, fresh per step) is added to every
  input.
- outputs ``[batch, time, 17]``: ``0`` fixation, ``1..16`` ring. Targets: fixation output 0.85
  before the go cue and 0.05 after it (0.85 throughout when the right answer is to keep
  fixating); ring outputs 0.05, plus ``0.8 * exp(-d^2 / (2 sigma^2))`` around the response
  direction after the go cue. The response direction is read out as the population vector
  ``angle(sum_k y_k exp(i theta_k))``.
- cost mask ``[batch, time, 17]``: weight 1 before the go cue, 0 during the first 100 ms after
  it (grace period), 5 afterwards; the fixation output's weight is doubled.

A trial is correct (:func:`performance`) when the fixation output stays above 0.5 at every step
before the go cue and, at the last step, either the fixation output is below 0.5 and the decoded
direction lies within ``pi / 10`` of the target (a response trial), or the fixation output is
still above 0.5 (a trial whose answer is to keep fixating).

Epoch durations (steps; uniform integers, or their midpoints with ``fixed_timing=True``):
fixation 5-10, stimulus 10-20 (tasks whose stimulus stays on), brief stimulus 6-10 (delay and
matching tasks), delay 8-20, response 15. Shorter than the original's (which run ~1-3 s) so that
a CPU can train on all 20 tasks.

Example::

    >>> from probekit.tasks import cognitive
    >>> trials = cognitive.generate("dlygo", 8, seed=0)
    >>> tuple(trials.inputs.shape[::2]), tuple(trials.targets.shape[::2])
    ((8, 53), (8, 17))
    >>> bool(cognitive.performance(trials.targets, trials).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from probekit.validation import as_generator, check_int, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from probekit.models.rnn import HookedRNN

#: Task keys, in the order of the rule inputs (and of Yang et al.'s Figure 1).
TASKS: tuple[str, ...] = (
    "go",
    "rtgo",
    "dlygo",
    "anti",
    "rtanti",
    "dlyanti",
    "dm1",
    "dm2",
    "ctxdm1",
    "ctxdm2",
    "multidm",
    "dlydm1",
    "dlydm2",
    "ctxdlydm1",
    "ctxdlydm2",
    "multidlydm",
    "dms",
    "dnms",
    "dmc",
    "dnmc",
)

#: Display names, as in the paper.
TASK_NAMES: dict[str, str] = dict(
    zip(
        TASKS,
        (
            "Go",
            "RT Go",
            "Dly Go",
            "Anti",
            "RT Anti",
            "Dly Anti",
            "DM 1",
            "DM 2",
            "Ctx DM 1",
            "Ctx DM 2",
            "MultSen DM",
            "Dly DM 1",
            "Dly DM 2",
            "Ctx Dly DM 1",
            "Ctx Dly DM 2",
            "MultSen Dly DM",
            "DMS",
            "DNMS",
            "DMC",
            "DNMC",
        ),
        strict=True,
    )
)

#: Task family of each task (go, anti, dm, dlydm, match).
TASK_FAMILIES: dict[str, str] = {
    **dict.fromkeys(("go", "rtgo", "dlygo"), "go"),
    **dict.fromkeys(("anti", "rtanti", "dlyanti"), "anti"),
    **dict.fromkeys(("dm1", "dm2", "ctxdm1", "ctxdm2", "multidm"), "dm"),
    **dict.fromkeys(("dlydm1", "dlydm2", "ctxdlydm1", "ctxdlydm2", "multidlydm"), "dlydm"),
    **dict.fromkeys(("dms", "dnms", "dmc", "dnmc"), "match"),
}

N_RING = 16
N_RULE = len(TASKS)
N_INPUT = 1 + 2 * N_RING + N_RULE  # 53
N_OUTPUT = 1 + N_RING  # 17
DT = 20.0  # ms per step
RING_SIGMA = 2 * math.pi / N_RING
FIX_ON, FIX_OFF = 0.85, 0.05
RING_BASE, RING_PEAK = 0.05, 0.8
TOLERANCE = math.pi / 10
GRACE_STEPS = 5  # 100 ms after the go cue that the cost ignores
N_RESPONSE = 15  # steps of the response epoch
PREFERRED = torch.arange(N_RING, dtype=torch.float64) * (2 * math.pi / N_RING)

_DUR = {"fix": (5, 10), "stim": (10, 20), "brief": (6, 10), "delay": (8, 20)}
_COHERENCES = (0.08, 0.16, 0.32)


@dataclass
class Trials:
    """A batch of trials of one task (or several, see :func:`mixed`).

    Attributes:
        task: the task key (``"mixed"`` for a mixture).
        inputs: ``[batch, time, 53]`` float, noise included.
        targets: ``[batch, time, 17]`` float.
        mask: ``[batch, time, 17]`` cost weights.
        go: ``[batch]`` long, first step of the response epoch (fixation must hold before it).
        stim_on: ``[batch]`` long, first step with a stimulus (the fixation-only epoch ends).
        direction: ``[batch]`` float, the correct response direction (radians; NaN when the
            right answer is to keep fixating).
        task_index: ``[batch]`` long, index of each trial's task in :data:`TASKS`.
    """

    task: str
    inputs: Tensor
    targets: Tensor
    mask: Tensor
    go: Tensor
    stim_on: Tensor
    direction: Tensor
    task_index: Tensor

    @property
    def respond(self) -> Tensor:
        """``[batch]`` bool: whether the trial asks for a response (else: keep fixating)."""
        return ~torch.isnan(self.direction)

    @property
    def n_steps(self) -> int:
        return self.inputs.shape[1]

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _circ_dist(a: Tensor, b: Tensor) -> Tensor:
    return torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi


def ring_bump(direction: Tensor) -> Tensor:
    """``[n] -> [n, 16]``: Gaussian tuning of the 16 ring units to each direction (peak 1)."""
    d = _circ_dist(direction[:, None], PREFERRED.to(direction.dtype))
    return torch.exp(-0.5 * (d / RING_SIGMA) ** 2)


def decode_direction(ring: Tensor) -> Tensor:
    """Population-vector direction of ring outputs ``[..., 16] -> [...]`` in ``[0, 2 pi)``."""
    pref = PREFERRED.to(ring.dtype).to(ring.device)
    x = (ring * torch.cos(pref)).sum(-1)
    y = (ring * torch.sin(pref)).sum(-1)
    return torch.remainder(torch.atan2(y, x), 2 * math.pi)


class _Draw:
    """Random draws of one batch, all from one generator (or midpoints for fixed timing)."""

    def __init__(self, n: int, gen: torch.Generator, fixed_timing: bool) -> None:
        self.n, self.gen, self.fixed = n, gen, fixed_timing

    def dur(self, kind: str) -> Tensor:
        lo, hi = _DUR[kind]
        if self.fixed:
            return torch.full((self.n,), (lo + hi) // 2, dtype=torch.long)
        return torch.randint(lo, hi + 1, (self.n,), generator=self.gen)

    def uniform(self, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(self.n, generator=self.gen, dtype=torch.float64)

    def angle(self) -> Tensor:
        return self.uniform(0.0, 2 * math.pi)

    def coin(self) -> Tensor:
        return torch.rand(self.n, generator=self.gen) < 0.5

    def coherence(self) -> Tensor:
        """Signed coherence from +-{0.08, 0.16, 0.32}."""
        idx = torch.randint(len(_COHERENCES), (self.n,), generator=self.gen)
        sign = torch.where(self.coin(), 1.0, -1.0).to(torch.float64)
        return torch.tensor(_COHERENCES, dtype=torch.float64)[idx] * sign


@dataclass
class _Plan:
    """What one task's trials contain: stimuli, go cue, whether fixation input stays on."""

    stimuli: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]  # modality, dir, strength, on, off
    go: Tensor
    direction: Tensor
    stim_on: Tensor
    fixation_stays: bool = False  # reaction-time tasks: the fixation input never goes off


_NEVER = 10**6  # an "off" time past any trial's end: the stimulus stays on


def _plan_go(task: str, r: _Draw) -> _Plan:
    modality = r.coin().long()
    theta = r.angle()
    fix = r.dur("fix")
    ones = torch.ones(r.n, dtype=torch.float64)
    target = theta + math.pi if "anti" in task else theta
    if task.startswith("rt"):
        stim = (modality, theta, ones, fix, torch.full_like(fix, _NEVER))
        return _Plan([stim], go=fix, direction=target, stim_on=fix, fixation_stays=True)
    if task.startswith("dly"):
        off = fix + r.dur("brief")
        stim = (modality, theta, ones, fix, off)
        return _Plan([stim], go=off + r.dur("delay"), direction=target, stim_on=fix)
    stim = (modality, theta, ones, fix, torch.full_like(fix, _NEVER))
    return _Plan([stim], go=fix + r.dur("stim"), direction=target, stim_on=fix)


def _two_choices(r: _Draw) -> tuple[Tensor, Tensor]:
    theta1 = r.angle()
    return theta1, theta1 + r.uniform(0.5 * math.pi, 1.5 * math.pi)


def _plan_dm(task: str, r: _Draw) -> _Plan:
    """Two stimuli, respond to the stronger (in one modality, the attended one, or summed)."""
    theta1, theta2 = _two_choices(r)
    gain = r.uniform(0.8, 1.2)
    if task.startswith("multi"):
        total = r.coherence()
        split = r.uniform(-1.5, 1.5)
        coh = (total * (1 + split), total * (1 - split))  # may disagree; their sum never is 0
        decide = total
    else:
        coh = (r.coherence(), r.coherence())
        decide = coh[int(task[-1]) - 1]
    if task in ("dm1", "dm2", "dlydm1", "dlydm2"):
        modalities = (int(task[-1]) - 1,)
    else:
        modalities = (0, 1)
    fix = r.dur("fix")
    delayed = "dly" in task
    if delayed:
        on1, off1 = fix, fix + r.dur("brief")
        on2 = off1 + r.dur("delay")
        off2 = on2 + r.dur("brief")
        go = off2 + r.dur("delay")
    else:
        on1 = on2 = fix
        off1 = off2 = torch.full_like(fix, _NEVER)
        go = fix + r.dur("stim")
    stimuli = []
    for m in modalities:
        mod = torch.full((r.n,), m, dtype=torch.long)
        stimuli.append((mod, theta1, gain * (1 + coh[m]), on1, off1))
        stimuli.append((mod, theta2, gain * (1 - coh[m]), on2, off2))
    target = torch.where(decide > 0, theta1, theta2)
    return _Plan(stimuli, go=go, direction=target, stim_on=fix)


def _category(theta: Tensor) -> Tensor:
    return (torch.remainder(theta, 2 * math.pi) >= math.pi).long()


def _plan_match(task: str, r: _Draw) -> _Plan:
    """Stimulus, delay, second stimulus: match (same direction / category) or not."""
    modality = r.coin().long()
    theta1 = r.angle()
    match = r.coin()
    if task in ("dms", "dnms"):
        theta2 = torch.where(match, theta1, theta1 + r.uniform(0.5 * math.pi, 1.5 * math.pi))
    else:  # category: the half-circle [0, pi) or [pi, 2 pi)
        half = r.uniform(0.0, math.pi)
        same = _category(theta1) == 0
        # match: the same half as theta1; non-match: the other half
        lower = torch.where(match, same, ~same)
        theta2 = torch.where(lower, half, half + math.pi)
    respond = match if task in ("dms", "dmc") else ~match
    fix = r.dur("fix")
    off1 = fix + r.dur("brief")
    on2 = off1 + r.dur("delay")
    ones = torch.ones(r.n, dtype=torch.float64)
    stimuli = [
        (modality, theta1, ones, fix, off1),
        (modality, theta2, ones, on2, torch.full_like(fix, _NEVER)),
    ]
    target = torch.where(respond, theta2, torch.full_like(theta2, math.nan))
    return _Plan(stimuli, go=on2 + r.dur("brief"), direction=target, stim_on=fix)


def _plan(task: str, r: _Draw) -> _Plan:
    family = TASK_FAMILIES[task]
    if family in ("go", "anti"):
        return _plan_go(task, r)
    if family in ("dm", "dlydm"):
        return _plan_dm(task, r)
    return _plan_match(task, r)


def _check_task(task: str) -> int:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    return TASKS.index(task)


def min_steps(task: str, fixed_timing: bool = False) -> int:
    """The most steps any trial of ``task`` needs (go cue at its latest + the response epoch)."""
    _check_task(task)
    hi = {k: ((lo + h) // 2 if fixed_timing else h) for k, (lo, h) in _DUR.items()}
    family = TASK_FAMILIES[task]
    if family in ("go", "anti"):
        pre = hi["fix"] + (
            0
            if task.startswith("rt")
            else hi["brief"] + hi["delay"]
            if task.startswith("dly")
            else hi["stim"]
        )
    elif family == "dm":
        pre = hi["fix"] + hi["stim"]
    elif family == "dlydm":
        pre = hi["fix"] + 2 * hi["brief"] + 2 * hi["delay"]
    else:
        pre = hi["fix"] + 2 * hi["brief"] + hi["delay"]
    return pre + N_RESPONSE


def generate(
    task: str,
    batch_size: int,
    *,
    seed: int | torch.Generator = 0,
    noise: float = 0.05,
    fixed_timing: bool = False,
    n_steps: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Trials:
    """A batch of trials of one task.

    Args:
        task: a key of :data:`TASKS`.
        batch_size: number of trials.
        seed: an int or a ``torch.Generator`` (consumed) for every random draw.
        noise: std of the Gaussian noise added to every input at every step.
        fixed_timing: every trial uses the midpoint epoch durations (for task variance, where
            the variance across trials at each step must compare like epochs).
        n_steps: total steps (default :func:`min_steps`); the response epoch runs from the go
            cue to the end, so a longer trial only lengthens it.
        dtype: dtype of inputs, targets and mask.

    Returns:
        :class:`Trials` with inputs ``[batch, time, 53]`` and targets / mask ``[batch, time, 17]``.
    """
    index = _check_task(task)
    check_positive_int("batch_size", batch_size)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    need = min_steps(task, fixed_timing)
    if n_steps is None:
        n_steps = need
    elif n_steps < need:
        raise ValueError(f"n_steps must be >= {need} for task {task!r}, got {n_steps}")
    gen = as_generator(seed)
    r = _Draw(batch_size, gen, fixed_timing)
    plan = _plan(task, r)
    t = torch.arange(n_steps)

    inputs = torch.zeros(batch_size, n_steps, N_INPUT, dtype=dtype)
    if plan.fixation_stays:
        inputs[:, :, 0] = 1.0
    else:
        inputs[:, :, 0] = (t[None, :] < plan.go[:, None]).to(dtype)
    for modality, theta, strength, on, off in plan.stimuli:
        window = ((t[None, :] >= on[:, None]) & (t[None, :] < off[:, None])).to(dtype)  # [B, T]
        drive = (strength[:, None] * ring_bump(theta)).to(dtype)  # [B, 16]
        ring = window[:, :, None] * drive[:, None, :]  # [B, T, 16]
        first = 1 + modality * N_RING  # [B]
        cols = first[:, None] + torch.arange(N_RING)[None, :]  # [B, 16]
        inputs.scatter_add_(2, cols[:, None, :].expand(-1, n_steps, -1), ring)
    inputs[:, :, 1 + 2 * N_RING + index] = 1.0
    if noise > 0:
        inputs += noise * torch.randn(inputs.shape, generator=gen, dtype=dtype)

    after_go = t[None, :] >= plan.go[:, None]  # [B, T]
    respond = ~torch.isnan(plan.direction)
    targets = torch.full((batch_size, n_steps, N_OUTPUT), RING_BASE, dtype=dtype)
    fix_target = torch.where(after_go & respond[:, None], FIX_OFF, FIX_ON)
    targets[:, :, 0] = fix_target
    bump = (RING_BASE + RING_PEAK * ring_bump(torch.nan_to_num(plan.direction))).to(dtype)
    show = (after_go & respond[:, None]).to(dtype)[:, :, None]
    targets[:, :, 1:] = show * bump[:, None, :] + (1 - show) * RING_BASE

    grace = (t[None, :] >= plan.go[:, None]) & (t[None, :] < plan.go[:, None] + GRACE_STEPS)
    weight = torch.where(after_go, 5.0, 1.0).masked_fill(grace, 0.0)  # [B, T]
    mask = weight[:, :, None].expand(-1, -1, N_OUTPUT).clone()
    mask[:, :, 0] *= 2.0

    direction = torch.remainder(plan.direction, 2 * math.pi)
    return Trials(
        task=task,
        inputs=inputs,
        targets=targets,
        mask=mask.to(dtype),
        go=plan.go.clone(),
        stim_on=plan.stim_on.clone(),
        direction=direction,
        task_index=torch.full((batch_size,), index, dtype=torch.long),
    )


def mixed(
    tasks: Sequence[str],
    per_task: int,
    *,
    seed: int | torch.Generator = 0,
    noise: float = 0.05,
    dtype: torch.dtype = torch.float32,
) -> Trials:
    """``per_task`` trials of each task in ``tasks``, padded to one length (the longest task's),
    concatenated in task order (for training on all tasks in one batch)."""
    if not tasks:
        raise ValueError("tasks must name at least one task")
    gen = as_generator(seed)
    n_steps = max(min_steps(task) for task in tasks)
    parts = [
        generate(task, per_task, seed=gen, noise=noise, n_steps=n_steps, dtype=dtype)
        for task in tasks
    ]
    return Trials(
        task="mixed",
        **{
            name: torch.cat([getattr(p, name) for p in parts])
            for name in ("inputs", "targets", "mask", "go", "stim_on", "direction", "task_index")
        },
    )


def performance(outputs: Tensor, trials: Trials) -> Tensor:
    """``[batch]`` bool: whether each trial was performed correctly (see the module docstring).

    Args:
        outputs: the network's outputs ``[batch, time, 17]`` (fixation, then the ring).
        trials: the trials they answer.
    """
    if outputs.ndim != 3 or outputs.shape[-1] != N_OUTPUT:
        raise ValueError(f"outputs must be [batch, time, {N_OUTPUT}], got {tuple(outputs.shape)}")
    if outputs.shape[:2] != trials.inputs.shape[:2]:
        raise ValueError(
            f"outputs must match the trials' [batch, time] {tuple(trials.inputs.shape[:2])}, "
            f"got {tuple(outputs.shape[:2])}"
        )
    outputs = outputs.detach().double().cpu()
    t = torch.arange(outputs.shape[1])
    before_go = t[None, :] < trials.go[:, None]
    fix = outputs[:, :, 0]
    held = ((fix > 0.5) | ~before_go).all(dim=1)
    last_fix = fix[:, -1]
    decoded = decode_direction(outputs[:, -1, 1:])
    direction = torch.nan_to_num(trials.direction.double())
    on_target = _circ_dist(decoded, direction).abs() < TOLERANCE
    respond = trials.respond
    answered = torch.where(respond, (last_fix < 0.5) & on_target, last_fix > 0.5)
    return held & answered


def accuracy(outputs: Tensor, trials: Trials) -> float:
    """Fraction of trials performed correctly."""
    return float(performance(outputs, trials).double().mean())


# ----------------------------------------------------------------------------- running a network


def ctrnn_forward(model: HookedRNN, x: Tensor) -> Tensor:
    """``[batch, time, in] -> [batch, time, out]``: a ctrnn's "yang2019" recurrence,
    differentiable and lean (training and fast evaluation).

    Equal to ``model(x)`` (tested) without its hook points. It exists because ``HookedRNN`` has
    no fused kernel for a ctrnn and its per-step loop indexes the precomputed input drive with
    ``xw[:, t]``, whose backward writes a full ``[batch, time, H]`` gradient at every step;
    ``unbind`` here gives a backward 3-4x faster on this CPU.
    """
    cfg = model.cfg
    if cfg.kind != "ctrnn" or cfg.convention != "yang2019" or model.W_rec is not model.weight_hh:
        raise ValueError("ctrnn_forward needs a ctrnn (yang2019) without mask or Dale's law")
    f = {"softplus": F.softplus, "relu": torch.relu, "tanh": torch.tanh}[cfg.nonlinearity]
    bias = model.bias_ih + model.bias_hh if cfg.bias else None
    drive = F.linear(x, model.weight_ih, bias).unbind(1)
    h = x.new_zeros(x.shape[0], cfg.hidden_size)
    w_t = model.weight_hh.T
    states = []
    for xt in drive:
        h = torch.lerp(h, f(torch.addmm(xt, h, w_t)), cfg.alpha)
        states.append(h)
    return model.readout(torch.stack(states, dim=1))


def masked_mse(outputs: Tensor, trials: Trials) -> Tensor:
    """Yang et al.'s cost: mean of ``mask * (output - target)^2`` over batch, time, outputs."""
    return (trials.mask * (outputs - trials.targets) ** 2).mean()


def evaluate(
    model: HookedRNN,
    tasks: Sequence[str] = TASKS,
    n_trials: int = 128,
    seed: int = 12345,
    noise: float = 0.05,
    fwd_hooks: list | None = None,
) -> dict[str, float]:
    """Accuracy (:func:`accuracy`) of ``model`` on ``n_trials`` fresh trials of each task.

    The trials of every task come from one generator seeded with ``seed``, in task order; no
    gradient. ``fwd_hooks`` (``[(hook name, fn)]``) run through ``model.run_with_hooks``;
    without them a yang2019 ctrnn runs through :func:`ctrnn_forward`, any other RNN through
    ``model(x)``.
    """
    check_positive_int("n_trials", n_trials)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    with torch.no_grad():
        for task in tasks:
            trials = generate(task, n_trials, seed=gen, noise=noise, dtype=model.dtype)
            if fwd_hooks:
                y = model.run_with_hooks(trials.inputs, fwd_hooks=fwd_hooks)
            elif model.kind == "ctrnn" and model.cfg.convention == "yang2019":
                y = ctrnn_forward(model, trials.inputs)
            else:
                y = model(trials.inputs)
            out[task] = accuracy(y, trials)
    return out


# ----------------------------------------------------------------------------- task variance


def variance_trial_sets(
    tasks: Sequence[str] | None = None,
    n_trials: int = 128,
    seed: int | torch.Generator = 0,
    noise: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[str, Trials]]:
    """``(task, trials)`` for each task: the trials task variance is measured on.

    ``n_trials`` trials per task with fixed epoch timing (every step compares like epochs across
    trials), all tasks drawn in order from one generator seeded with ``seed``.
    """
    tasks = list(TASKS if tasks is None else tasks)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    check_int("n_trials", n_trials, low=2)
    gen = as_generator(seed)
    for task in tasks:
        yield task, generate(task, n_trials, seed=gen, noise=noise, fixed_timing=True, dtype=dtype)


def variance_steps(trials: Trials) -> Tensor:
    """``[time]`` bool: the steps task variance averages over, from the first stimulus on (the
    fixation-only epoch left out); the trials must share their timing (``fixed_timing``)."""
    start = int(trials.stim_on[0])
    if not bool((trials.stim_on == start).all()):
        raise ValueError("trials must share their epoch timing (generate with fixed_timing=True)")
    return torch.arange(trials.n_steps) >= start


def variance_data(
    tasks: Sequence[str] | None = None,
    n_trials: int = 128,
    seed: int | torch.Generator = 0,
    noise: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """The trials of :func:`variance_trial_sets` as one batch for ``pk.cache``, with extras.

    Returns ``{"inputs": [N, T, 53], "extras": {"task_id": [N] long (index in TASKS),
    "step_mask": [N, T] bool (the steps task variance averages over)}, "tasks": [...]}``, tasks
    in order, ``n_trials`` items each. Shorter tasks are padded with zero input after their last
    step, which the mask leaves out (the network is causal, so padding changes no earlier
    step). ``pk.modularity.task_variance(store)`` on
    ``pk.cache(model, data["inputs"], "hook_hidden", extras=data["extras"], dtype=None)`` gives
    the numbers ``task_variance(model)`` gives with the same arguments.
    """
    sets = list(variance_trial_sets(tasks, n_trials, seed, noise, dtype))
    length = max(trials.n_steps for _, trials in sets)
    inputs, task_id, step_mask = [], [], []
    for task, trials in sets:
        pad = length - trials.n_steps
        inputs.append(F.pad(trials.inputs, (0, 0, 0, pad)))
        steps = F.pad(variance_steps(trials), (0, pad), value=False)
        step_mask.append(steps.expand(len(trials), -1))
        task_id.append(torch.full((len(trials),), TASKS.index(task), dtype=torch.long))
    return {
        "inputs": torch.cat(inputs),
        "extras": {"task_id": torch.cat(task_id), "step_mask": torch.cat(step_mask)},
        "tasks": [task for task, _ in sets],
    }
