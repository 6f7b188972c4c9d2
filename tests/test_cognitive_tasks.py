"""The 20 cognitive tasks: encoding, epochs, the per-task correctness check."""

from __future__ import annotations

import math

import pytest
import torch

from probekit.tasks import cognitive as cog


def test_there_are_twenty_tasks_with_the_standard_encoding():
    assert len(cog.TASKS) == 20 == len(set(cog.TASKS))
    assert cog.N_INPUT == 53 and cog.N_OUTPUT == 17
    trials = cog.generate("go", 4, seed=0, noise=0.0)
    assert trials.inputs.shape[2] == 53 and trials.targets.shape[2] == 17


@pytest.mark.parametrize("task", cog.TASKS)
def test_ideal_response_passes_and_wrong_ones_fail(task):
    trials = cog.generate(task, 64, seed=3)
    ideal = trials.targets.clone()
    assert bool(cog.performance(ideal, trials).all())

    # the response rotated by half a circle: every response trial fails
    rotated = ideal.clone()
    rotated[:, :, 1:] = torch.roll(rotated[:, :, 1:], cog.N_RING // 2, dims=-1)
    passed = cog.performance(rotated, trials)
    assert not bool(passed[trials.respond].any())

    # breaking fixation one step before the go cue fails every trial
    early = ideal.clone()
    early[torch.arange(len(trials)), trials.go - 1, 0] = 0.0
    assert not bool(cog.performance(early, trials).any())

    # never releasing fixation fails response trials and passes fixate-only trials
    stay = ideal.clone()
    stay[:, :, 0] = cog.FIX_ON
    assert torch.equal(cog.performance(stay, trials), ~trials.respond)

    # a response a little inside / outside the tolerance
    for offset, expected in ((0.8 * cog.TOLERANCE, True), (1.2 * cog.TOLERANCE, False)):
        shifted = ideal.clone()
        direction = torch.nan_to_num(trials.direction) + offset
        bump = cog.RING_BASE + cog.RING_PEAK * cog.ring_bump(direction).float()
        after = torch.arange(trials.n_steps)[None, :] >= trials.go[:, None]
        sel = after & trials.respond[:, None]
        shifted[:, :, 1:] = torch.where(sel[:, :, None], bump[:, None, :], shifted[:, :, 1:])
        ok = cog.performance(shifted, trials)[trials.respond]
        assert bool((ok == expected).all()), (task, offset)


def _ring(inputs: torch.Tensor, modality: int) -> torch.Tensor:
    first = 1 + modality * cog.N_RING
    return inputs[..., first : first + cog.N_RING]


def _stimulus_direction(inputs_t: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
    """Population-vector direction of each trial's stimulus in its own modality ring."""
    d0 = cog.decode_direction(_ring(inputs_t, 0).double())
    d1 = cog.decode_direction(_ring(inputs_t, 1).double())
    return torch.where(modality.bool(), d1, d0)


def _circ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (torch.remainder(a - b + math.pi, 2 * math.pi) - math.pi).abs()


def test_go_and_anti_targets_follow_the_stimulus():
    for task, shift in (("go", 0.0), ("anti", math.pi), ("rtgo", 0.0), ("dlyanti", math.pi)):
        tr = cog.generate(task, 32, seed=1, noise=0.0)
        b = torch.arange(32)
        stim = tr.inputs[b, tr.stim_on]  # first stimulus step
        total = _ring(stim, 0).sum(-1) + _ring(stim, 1).sum(-1)
        modality = (_ring(stim, 1).sum(-1) > _ring(stim, 0).sum(-1)).long()
        assert bool((total > 0).all())
        seen = _stimulus_direction(stim, modality)
        assert float(_circ(seen + shift, tr.direction).max()) < 0.05


def test_fixation_input_and_rule_inputs():
    tr = cog.generate("dlygo", 16, seed=2, noise=0.0)
    t = torch.arange(tr.n_steps)
    expected_fix = (t[None, :] < tr.go[:, None]).float()
    assert torch.equal(tr.inputs[:, :, 0], expected_fix)
    rule = tr.inputs[:, :, 33:]
    assert torch.equal(rule.argmax(-1), torch.full((16, tr.n_steps), cog.TASKS.index("dlygo")))
    assert float(rule.sum(-1).min()) == 1.0
    rt = cog.generate("rtanti", 8, seed=2, noise=0.0)
    assert float(rt.inputs[:, :, 0].min()) == 1.0  # reaction time: fixation input never goes off


def test_dm_target_is_the_stronger_stimulus_in_the_attended_modality():
    for task, modality in (("dm1", 0), ("ctxdm2", 1)):
        tr = cog.generate(task, 64, seed=4, noise=0.0)
        b = torch.arange(64)
        stim = tr.inputs[b, tr.stim_on].double()
        ring = _ring(stim, modality)
        # the target direction's bump is the larger of the two summed stimuli
        at_target = (ring * cog.ring_bump(tr.direction)).sum(-1)
        at_opposite = (ring * cog.ring_bump(tr.direction + math.pi)).sum(-1)
        assert bool((at_target > 0).all())
        assert float(_circ(cog.decode_direction(ring), tr.direction).max()) < math.pi / 2
        assert bool((at_target > at_opposite).all())


def test_matching_tasks_respond_on_match_or_nonmatch():
    for task in ("dms", "dnms", "dmc", "dnmc"):
        tr = cog.generate(task, 200, seed=5, noise=0.0)
        assert 0.35 < float(tr.respond.float().mean()) < 0.65
        b = torch.arange(200)
        first = tr.inputs[b, tr.stim_on]
        modality = (_ring(first, 1).sum(-1) > _ring(first, 0).sum(-1)).long()
        d1 = _stimulus_direction(first, modality)
        d2 = _stimulus_direction(tr.inputs[:, -1], modality)
        if task in ("dms", "dnms"):
            match = _circ(d1, d2) < 0.1
        else:
            match = (d1 >= math.pi) == (d2 >= math.pi)
        respond = match if task in ("dms", "dmc") else ~match
        assert torch.equal(respond, tr.respond)
        assert float(_circ(d2[respond], tr.direction[respond]).max()) < 0.05


def test_generation_is_deterministic_and_noise_has_the_asked_std():
    a = cog.generate("multidlydm", 16, seed=7)
    b = cog.generate("multidlydm", 16, seed=7)
    assert torch.equal(a.inputs, b.inputs) and torch.allclose(
        a.direction, b.direction, rtol=0, atol=0, equal_nan=True
    )
    clean = cog.generate("multidlydm", 256, seed=7, noise=0.0)
    noisy = cog.generate("multidlydm", 256, seed=7, noise=0.1)
    assert abs(float((noisy.inputs - clean.inputs).std()) - 0.1) < 0.005


def test_fixed_timing_aligns_epochs_and_mixed_pads_to_one_length():
    tr = cog.generate("dlydm1", 16, seed=0, fixed_timing=True)
    assert len(set(tr.go.tolist())) == 1 and len(set(tr.stim_on.tolist())) == 1
    m = cog.mixed(cog.TASKS, 2, seed=0)
    assert m.inputs.shape[:2] == (40, max(cog.min_steps(t) for t in cog.TASKS))
    assert torch.equal(m.task_index, torch.arange(20).repeat_interleave(2))
    assert bool(cog.performance(m.targets, m).all())


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="task must be one of"):
        cog.generate("nope", 4)
    with pytest.raises(ValueError, match="n_steps must be >="):
        cog.generate("dlydm1", 4, n_steps=10)
    with pytest.raises(ValueError, match=r"outputs must be \[batch, time, 17\]"):
        cog.performance(torch.zeros(4, 10, 3), cog.generate("go", 4))
