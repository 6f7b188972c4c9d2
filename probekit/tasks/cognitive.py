"""The 20 cognitive tasks of Yang et al. 2019, as batches of trials for an RNN.

Which question this serves: do an RNN's units form functional modules when it learns many
related tasks at once, and are those modules anatomical too (:mod:`probekit.modularity`)? The
tasks are those of Yang, Joglekar, Song, Newsome & Wang
(2019), "Task representations in neural networks trained to perform many cognitive tasks",
written here from the published description (go / anti / decision making / matching families,
each with reaction-time, delayed and context variants).

Encoding (``dt`` ms per step, default :data:`DT` = 100 ms; every duration below is in ms and is
converted to steps with the ``dt`` a function is given, at least one step each):

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
- reaction-time tasks (RT Go, RT Anti): the fixation input never goes off; the go cue is the
  stimulus onset, so the network must hold fixation until a stimulus appears and then answer.

A trial is correct (:func:`performance`) when the fixation output stays above 0.5 at every step
before the go cue and, at the last step, either the fixation output is below 0.5 and the decoded
direction lies within ``pi / 10`` of the target (a response trial), or the fixation output is
still above 0.5 (a trial whose answer is to keep fixating).

Epoch durations (:data:`DURATIONS_MS`, ms; each drawn as a uniform whole number of steps
between the bounds converted to steps, or their midpoint with ``fixed_timing=True``):
fixation 200-500, stimulus 300-700 (tasks whose stimulus stays on), brief stimulus 200-400
(delay and matching tasks), delay 200-800, response 500. Shorter than the original's (which run
~1-3 s) so that a CPU can train on all 20 tasks; at dt = 100 ms the longest trial is 34 steps.

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
#: default ms per step (neurogym's dt; a model's own ``cfg.dt`` wins, see :func:`model_dt`)
DT = 100.0
#: epoch durations in ms: (low, high) drawn per trial, or one fixed value
DURATIONS_MS: dict[str, tuple[float, float]] = {
    "fix": (200.0, 500.0),
    "stim": (300.0, 700.0),
    "brief": (200.0, 400.0),
    "delay": (200.0, 800.0),
}
RESPONSE_MS = 500.0  # the response epoch after the (latest) go cue
GRACE_MS = 100.0  # after the go cue, ignored by the cost
RING_SIGMA = 2 * math.pi / N_RING
FIX_ON, FIX_OFF = 0.85, 0.05
RING_BASE, RING_PEAK = 0.05, 0.8
TOLERANCE = math.pi / 10
PREFERRED = torch.arange(N_RING, dtype=torch.float64) * (2 * math.pi / N_RING)

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
        dt: ms per step the trials were generated with.
    """

    task: str
    inputs: Tensor
    targets: Tensor
    mask: Tensor
    go: Tensor
    stim_on: Tensor
    direction: Tensor
    task_index: Tensor
    dt: float = DT

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


def to_steps(ms: float, dt: float) -> int:
    """A duration in ms as a whole number of ``dt``-ms steps (rounded, at least 1)."""
    return max(1, round(ms / dt))


def _step_range(kind: str, dt: float) -> tuple[int, int]:
    lo, hi = DURATIONS_MS[kind]
    return to_steps(lo, dt), to_steps(hi, dt)


def _check_dt(dt: float) -> float:
    if not isinstance(dt, (int, float)) or not 0 < dt <= 500:
        raise ValueError(f"dt must be a number of ms in (0, 500], got {dt!r}")
    return float(dt)


class _Draw:
    """Random draws of one batch, all from one generator (or midpoints for fixed timing)."""

    def __init__(self, n: int, gen: torch.Generator, fixed_timing: bool, dt: float) -> None:
        self.n, self.gen, self.fixed, self.dt = n, gen, fixed_timing, dt

    def dur(self, kind: str) -> Tensor:
        lo, hi = _step_range(kind, self.dt)
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


_NEVER = 10**6  # an "off" time past any trial's end: the stimulus stays on
N_SLOTS = 4  # stimuli per trial at most (two directions x two modalities, context DM)


def _in(index: Tensor, names: Sequence[str]) -> Tensor:
    """``[n]`` bool: whether each trial's task (``index`` into :data:`TASKS`) is in ``names``."""
    wanted = torch.tensor([TASKS.index(t) for t in names], dtype=torch.long)
    return (index[:, None] == wanted[None, :]).any(1)


@dataclass
class _Plan:
    """What each trial contains: up to :data:`N_SLOTS` stimuli (``[n, slots]`` each; an unused
    slot has strength 0), go cue, target direction, first stimulus step, whether the fixation
    input stays on (reaction-time tasks)."""

    modality: Tensor  # [n, slots] long, 0 or 1
    theta: Tensor  # [n, slots] float64
    strength: Tensor  # [n, slots] float64
    on: Tensor  # [n, slots] long
    off: Tensor  # [n, slots] long
    go: Tensor  # [n] long
    direction: Tensor  # [n] float64, NaN: keep fixating
    stim_on: Tensor  # [n] long
    fixation_stays: Tensor  # [n] bool


def _plan(index: Tensor, r: _Draw) -> _Plan:
    """Every trial's plan, vectorised over a batch of mixed tasks (``index [n]`` into TASKS).

    All random quantities are drawn for every trial (so a trial's draws do not depend on its
    neighbours' tasks); each family then picks what it uses:

    - go / anti (Go, RT Go, Dly Go and the Anti versions): one stimulus at ``theta`` in a random
      modality; the target is ``theta`` (go) or ``theta + pi`` (anti). Plain: the stimulus stays
      on, go after ``stim``; RT: go = stimulus onset and the fixation input stays on; Dly: a
      brief stimulus, then a delay, then go.
    - decision making (DM 1/2, Ctx DM 1/2, MultSen DM and their delayed versions): two
      directions ``theta1``, ``theta2 = theta1 + U(pi/2, 3pi/2)`` with strengths
      ``gain (1 +- c_m)`` in modality ``m``; DM 1/2 show only modality 1/2, Ctx DM both with
      independent coherences (answer by the attended one), MultSen both with coherences
      ``total (1 +- split)`` (answer by their sum, ``total``). Target: the stronger direction.
      Undelayed: both stay on from stimulus onset, go after ``stim``; delayed: ``theta1`` brief,
      delay, ``theta2`` brief, delay, go.
    - matching (DMS, DNMS, DMC, DNMC): a brief first stimulus, a delay, then a second one in the
      same modality that stays on; match means the same direction (DMS, DNMS; a non-match is
      ``U(pi/2, 3pi/2)`` away) or the same half circle ``[0, pi)`` / ``[pi, 2 pi)`` (DMC, DNMC).
      DMS and DMC answer a match (towards the second stimulus) and fixate on a non-match; DNMS
      and DNMC the reverse. Go comes ``brief`` after the second onset.
    """
    n = len(index)
    modality = r.coin().long()
    theta = r.angle()
    offset = r.uniform(0.5 * math.pi, 1.5 * math.pi)
    gain = r.uniform(0.8, 1.2)
    coh = torch.stack([r.coherence(), r.coherence()], dim=1)  # [n, 2] per modality
    total = r.coherence()
    split = r.uniform(-1.5, 1.5)
    match = r.coin()
    half = r.uniform(0.0, math.pi)
    fix, stim = r.dur("fix"), r.dur("stim")
    brief1, brief2 = r.dur("brief"), r.dur("brief")
    delay1, delay2 = r.dur("delay"), r.dur("delay")
    never = torch.full((n,), _NEVER, dtype=torch.long)
    ones, zeros = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    family_go = _in(index, ("go", "rtgo", "dlygo", "anti", "rtanti", "dlyanti"))
    family_dm = _in(index, [t for t in TASKS if TASK_FAMILIES[t] in ("dm", "dlydm")])
    rt = _in(index, ("rtgo", "rtanti"))
    delayed = _in(index, ("dlygo", "dlyanti", "dlydm1", "dlydm2", "ctxdlydm1", "ctxdlydm2"))
    delayed |= _in(index, ("multidlydm",))

    # --- go / anti: slot 0 only
    go_go = torch.where(rt, fix, torch.where(delayed, fix + brief1 + delay1, fix + stim))
    go_off = torch.where(delayed, fix + brief1, never)
    go_target = theta + math.pi * _in(index, ("anti", "rtanti", "dlyanti")).double()

    # --- decision making: slots (m0, theta1), (m0, theta2), (m1, theta1), (m1, theta2)
    theta2_dm = theta + offset
    multi = _in(index, ("multidm", "multidlydm"))
    coh_dm = torch.where(
        multi[:, None], total[:, None] * (1 + torch.stack([split, -split], 1)), coh
    )
    second = _in(index, ("dm2", "ctxdm2", "dlydm2", "ctxdlydm2"))
    decide = torch.where(multi, total, torch.where(second, coh[:, 1], coh[:, 0]))
    only0 = _in(index, ("dm1", "dlydm1"))
    only1 = _in(index, ("dm2", "dlydm2"))
    shown = torch.stack([~only1, ~only0], dim=1).double()  # [n, 2] modality on
    dm_on1 = fix
    dm_off1 = torch.where(delayed, fix + brief1, never)
    dm_on2 = torch.where(delayed, fix + brief1 + delay1, fix)
    dm_off2 = torch.where(delayed, dm_on2 + brief2, never)
    dm_go = torch.where(delayed, dm_off2 + delay2, fix + stim)
    dm_target = torch.where(decide > 0, theta, theta2_dm)

    # --- matching: slot 0 the first stimulus, slot 1 the second
    category = _in(index, ("dmc", "dnmc"))
    lower1 = torch.remainder(theta, 2 * math.pi) < math.pi
    lower2 = torch.where(match, lower1, ~lower1)
    theta2_cat = torch.where(lower2, half, half + math.pi)
    theta2_dir = torch.where(match, theta, theta + offset)
    theta2_match = torch.where(category, theta2_cat, theta2_dir)
    respond = torch.where(_in(index, ("dms", "dmc")), match, ~match)
    m_off1 = fix + brief1
    m_on2 = m_off1 + delay1
    m_go = m_on2 + brief2
    m_target = torch.where(respond, theta2_match, torch.full_like(theta, math.nan))

    def pick(go_value: Tensor, dm_value: Tensor, match_value: Tensor) -> Tensor:
        return torch.where(family_go, go_value, torch.where(family_dm, dm_value, match_value))

    # stimulus slots, [n] each, then stacked to [n, 4]
    mod0, mod1 = torch.zeros_like(modality), torch.ones_like(modality)
    slots = [
        # (modality, theta, strength, on, off)
        (
            pick(modality, mod0, modality),
            theta,
            pick(ones, gain * (1 + coh_dm[:, 0]) * shown[:, 0], ones),
            fix,
            pick(go_off, dm_off1, m_off1),
        ),
        (
            pick(modality, mod0, modality),
            pick(theta, theta2_dm, theta2_match),
            pick(zeros, gain * (1 - coh_dm[:, 0]) * shown[:, 0], ones),
            pick(fix, dm_on2, m_on2),
            pick(never, dm_off2, never),
        ),
        (mod1, theta, pick(zeros, gain * (1 + coh_dm[:, 1]) * shown[:, 1], zeros), dm_on1, dm_off1),
        (
            mod1,
            theta2_dm,
            pick(zeros, gain * (1 - coh_dm[:, 1]) * shown[:, 1], zeros),
            dm_on2,
            dm_off2,
        ),
    ]
    modality_s, theta_s, strength_s, on_s, off_s = (
        torch.stack([slot[i] for slot in slots], dim=1) for i in range(5)
    )
    return _Plan(
        modality=modality_s,
        theta=theta_s,
        strength=strength_s,
        on=on_s,
        off=off_s,
        go=pick(go_go, dm_go, m_go),
        direction=pick(go_target, dm_target, m_target),
        stim_on=fix,
        fixation_stays=rt,
    )


def _check_task(task: str) -> int:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    return TASKS.index(task)


def min_steps(task: str, fixed_timing: bool = False, dt: float = DT) -> int:
    """The most steps any trial of ``task`` needs (go cue at its latest + the response epoch)
    at ``dt`` ms per step."""
    _check_task(task)
    dt = _check_dt(dt)
    ranges = {k: _step_range(k, dt) for k in DURATIONS_MS}
    hi = {k: ((lo + h) // 2 if fixed_timing else h) for k, (lo, h) in ranges.items()}
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
    return pre + to_steps(RESPONSE_MS, dt)


def _build(
    index: Tensor,
    *,
    task: str,
    gen: torch.Generator,
    noise: float,
    fixed_timing: bool,
    n_steps: int,
    dtype: torch.dtype,
    dt: float,
) -> Trials:
    """Trials of the tasks ``index [n]`` (mixed freely), every tensor built for the whole batch."""
    batch_size = len(index)
    plan = _plan(index, _Draw(batch_size, gen, fixed_timing, dt))
    t = torch.arange(n_steps)

    inputs = torch.zeros(batch_size, n_steps, N_INPUT, dtype=dtype)
    before_go = t[None, :] < plan.go[:, None]  # [B, T]
    inputs[:, :, 0] = (before_go | plan.fixation_stays[:, None]).to(dtype)
    # stimuli: [B, slots, T] windows times [B, slots, 16] tuning, summed into each modality
    window = (t[None, None, :] >= plan.on[:, :, None]) & (t[None, None, :] < plan.off[:, :, None])
    bumps = ring_bump(plan.theta.flatten()).view(batch_size, N_SLOTS, N_RING)
    drive = (plan.strength[:, :, None] * bumps).to(dtype)  # [B, S, 16]
    which = F.one_hot(plan.modality, 2).to(dtype)  # [B, S, 2]
    rings = torch.einsum("bst,bsm,bsk->btmk", window.to(dtype), which, drive)
    inputs[:, :, 1 : 1 + 2 * N_RING] = rings.reshape(batch_size, n_steps, 2 * N_RING)
    inputs[torch.arange(batch_size), :, 1 + 2 * N_RING + index] = 1.0
    if noise > 0:
        inputs += noise * torch.randn(inputs.shape, generator=gen, dtype=dtype)

    after_go = ~before_go
    respond = ~torch.isnan(plan.direction)
    targets = torch.full((batch_size, n_steps, N_OUTPUT), RING_BASE, dtype=dtype)
    show = after_go & respond[:, None]
    targets[:, :, 0] = torch.where(show, FIX_OFF, FIX_ON)
    bump = (RING_BASE + RING_PEAK * ring_bump(torch.nan_to_num(plan.direction))).to(dtype)
    targets[:, :, 1:] = torch.where(show[:, :, None], bump[:, None, :], RING_BASE)

    grace_steps = round(GRACE_MS / dt)
    grace = after_go & (t[None, :] < plan.go[:, None] + grace_steps)
    weight = torch.where(after_go, 5.0, 1.0).masked_fill(grace, 0.0)  # [B, T]
    mask = weight[:, :, None].expand(-1, -1, N_OUTPUT).clone()
    mask[:, :, 0] *= 2.0

    return Trials(
        task=task,
        inputs=inputs,
        targets=targets,
        mask=mask.to(dtype),
        go=plan.go.clone(),
        stim_on=plan.stim_on.clone(),
        direction=torch.remainder(plan.direction, 2 * math.pi),
        task_index=index.clone(),
        dt=dt,
    )


def generate(
    task: str,
    batch_size: int,
    *,
    seed: int | torch.Generator = 0,
    noise: float = 0.05,
    fixed_timing: bool = False,
    n_steps: int | None = None,
    dtype: torch.dtype = torch.float32,
    dt: float = DT,
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
        dt: ms per step; every epoch duration (ms) is converted with it.

    Returns:
        :class:`Trials` with inputs ``[batch, time, 53]`` and targets / mask ``[batch, time, 17]``.
    """
    index = _check_task(task)
    check_positive_int("batch_size", batch_size)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    dt = _check_dt(dt)
    need = min_steps(task, fixed_timing, dt)
    if n_steps is None:
        n_steps = need
    elif n_steps < need:
        raise ValueError(f"n_steps must be >= {need} for task {task!r}, got {n_steps}")
    tasks = torch.full((batch_size,), index, dtype=torch.long)
    return _build(
        tasks,
        task=task,
        gen=as_generator(seed),
        noise=noise,
        fixed_timing=fixed_timing,
        n_steps=n_steps,
        dtype=dtype,
        dt=dt,
    )


def mixed(
    tasks: Sequence[str],
    per_task: int,
    *,
    seed: int | torch.Generator = 0,
    noise: float = 0.05,
    dtype: torch.dtype = torch.float32,
    dt: float = DT,
) -> Trials:
    """``per_task`` trials of each task in ``tasks`` in one batch (for training on all tasks at
    once), task by task in the order given, padded to the longest task's length; generated in
    one vectorised pass (:func:`generate` uses the same code for one task)."""
    if not tasks:
        raise ValueError("tasks must name at least one task")
    check_positive_int("per_task", per_task)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    dt = _check_dt(dt)
    index = torch.tensor([_check_task(t) for t in tasks], dtype=torch.long)
    return _build(
        index.repeat_interleave(per_task),
        task="mixed",
        gen=as_generator(seed),
        noise=noise,
        fixed_timing=False,
        n_steps=max(min_steps(task, dt=dt) for task in tasks),
        dtype=dtype,
        dt=dt,
    )


def model_dt(model: Any) -> float:
    """The ms per step to generate trials for ``model`` with: a ctrnn's ``cfg.dt``, else
    :data:`DT` (discrete-time RNNs have no time step of their own)."""
    cfg = getattr(model, "cfg", None)
    dt = getattr(cfg, "dt", None) if getattr(cfg, "kind", None) == "ctrnn" else None
    return DT if dt is None else float(dt)


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
    dt: float | None = None,
) -> dict[str, float]:
    """Accuracy (:func:`accuracy`) of ``model`` on ``n_trials`` fresh trials of each task.

    The trials of every task come from one generator seeded with ``seed``, in task order, at
    ``dt`` ms per step (default the model's own, :func:`model_dt`); no gradient. ``fwd_hooks`` (``[(hook name, fn)]``) run through ``model.run_with_hooks``;
    without them a yang2019 ctrnn runs through :func:`ctrnn_forward`, any other RNN through
    ``model(x)``.
    """
    check_positive_int("n_trials", n_trials)
    dt = model_dt(model) if dt is None else dt
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    with torch.no_grad():
        for task in tasks:
            trials = generate(task, n_trials, seed=gen, noise=noise, dtype=model.dtype, dt=dt)
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
    dt: float = DT,
) -> Iterator[tuple[str, Trials]]:
    """``(task, trials)`` for each task: the trials task variance is measured on.

    ``n_trials`` trials per task with fixed epoch timing (every step compares like epochs across
    trials), all tasks drawn in order from one generator seeded with ``seed``, at ``dt`` ms per
    step.
    """
    tasks = list(TASKS if tasks is None else tasks)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    check_int("n_trials", n_trials, low=2)
    gen = as_generator(seed)
    for task in tasks:
        yield (
            task,
            generate(task, n_trials, seed=gen, noise=noise, fixed_timing=True, dtype=dtype, dt=dt),
        )


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
    dt: float = DT,
) -> dict[str, Any]:
    """The trials of :func:`variance_trial_sets` as one batch for ``pk.cache``, with extras
    (``dt``: ms per step, the model's own, :func:`model_dt`).

    Returns ``{"inputs": [N, T, 53], "extras": {"task_id": [N] long (index in TASKS),
    "step_mask": [N, T] bool (the steps task variance averages over)}, "tasks": [...]}``, tasks
    in order, ``n_trials`` items each. Shorter tasks are padded with zero input after their last
    step, which the mask leaves out (the network is causal, so padding changes no earlier
    step). ``pk.modularity.task_variance(store)`` on
    ``pk.cache(model, data["inputs"], "hook_hidden", extras=data["extras"], dtype=None)`` gives
    the numbers ``task_variance(model)`` gives with the same arguments.
    """
    sets = list(variance_trial_sets(tasks, n_trials, seed, noise, dtype, dt))
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
