"""Cognitive-task CTRNNs: epochs in ms at any dt, mixed batches, short recipe runs that learn,
BIMT's schedule, sparsity and wiring measures, and the shipped checkpoints' per-task behaviour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import probekit as pk
from probekit import modularity as mod
from probekit.stats import modularity as sm
from probekit.tasks import cognitive as cog
from probekit.train import cognitive as tc

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("task", ["go", "rtanti", "dlydm1", "dnmc"])
def test_epochs_are_defined_in_ms_and_converted_with_dt(task):
    fast = cog.generate(task, 4, seed=0, fixed_timing=True, dt=20.0)
    coarse = cog.generate(task, 4, seed=0, fixed_timing=True, dt=100.0)
    assert fast.dt == 20.0 and coarse.dt == 100.0
    # the same epochs in ms, up to the rounding of each of the (at most five) epochs to a step
    go_ms = (float(fast.go[0]) * 20.0, float(coarse.go[0]) * 100.0)
    assert abs(go_ms[0] - go_ms[1]) <= 5 * 50.0
    assert float(fast.stim_on[0]) * 20.0 == pytest.approx(
        float(coarse.stim_on[0]) * 100.0, abs=50.0
    )
    # the longest trial: fixation 500 + 2 x brief 400 + 2 x delay 800 + response 500 = 3400 ms
    assert cog.min_steps("dlydm1", dt=100.0) == 34
    assert cog.min_steps("dlydm1", dt=20.0) == 170
    assert cog.to_steps(100.0, 100.0) == 1 and cog.to_steps(10.0, 100.0) == 1
    with pytest.raises(ValueError, match="dt must be"):
        cog.generate(task, 4, dt=0.0)


def test_mixed_batches_hold_every_task_with_its_own_rules():
    m = cog.mixed(cog.TASKS, 6, seed=3, noise=0.0, dt=100.0)
    assert m.dt == 100.0 and len(m) == 120
    rule = m.inputs[:, 0, 1 + 2 * cog.N_RING :]
    assert torch.equal(rule.argmax(-1), m.task_index)
    assert torch.equal(m.task_index, torch.arange(20).repeat_interleave(6))
    assert bool(cog.performance(m.targets, m).all())  # the targets pass the task's own check
    rt = torch.isin(m.task_index, torch.tensor([1, 4]))
    assert float(m.inputs[rt, :, 0].min()) == 1.0  # RT tasks: fixation input never goes off
    # matching tasks fixate on about half their trials; every other task always answers
    matching = m.task_index >= cog.TASKS.index("dms")
    assert bool(m.respond[~matching].all()) and not bool(m.respond[matching].all())


def test_model_dt_and_evaluate_use_the_models_own_time_step():
    recipe = tc.CogRNNRecipe(hidden_size=8, dt=20.0, tau=100.0)
    model = tc.cog_rnn_model(recipe, seed=0)
    assert cog.model_dt(model) == 20.0
    assert cog.model_dt(object()) == cog.DT == 100.0
    # a dt = 20 ms model is evaluated on 20 ms trials: the same numbers as asking for them
    assert cog.evaluate(model, ["go"], n_trials=8) == cog.evaluate(model, ["go"], 8, dt=20.0)


def test_recipe_init_is_a_small_diagonal_and_records_dt_in_the_config(tmp_path):
    recipe = tc.CogRNNRecipe(hidden_size=16, w_rec_diag=0.5)
    model = tc.cog_rnn_model(recipe, seed=0)
    torch.testing.assert_close(model.weight_hh.detach(), 0.5 * torch.eye(16))
    std = float(model.weight_ih.detach().std())
    assert std == pytest.approx(1 / math.sqrt(53), rel=0.1)
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["dt"] == 100.0 and config["tau"] == 100.0


def test_bimt_schedule_is_low_high_low_by_quarters():
    values = [tc.lambda_schedule(s, 100, 1e-3, 1e-2, "steps") for s in range(100)]
    assert values[:25] == [1e-3] * 25
    assert values[25:75] == [1e-2] * 50
    assert values[75:] == [1e-3] * 25
    with pytest.raises(ValueError, match="shape must be one of"):
        tc.lambda_schedule(0, 10, 1e-3, 1e-2, "cosine")


def test_a_short_run_learns_go_and_anti_by_the_tasks_own_check():
    torch.set_num_threads(1)
    recipe = tc.CogRNNRecipe(hidden_size=32)
    model = tc.cog_rnn_model(recipe, seed=0)
    before = cog.evaluate(model, ["go", "anti"], n_trials=64)
    result = tc.train_cognitive_rnn(
        model,
        steps=300,
        tasks=["go", "anti"],
        per_task=16,
        lr=1e-2,
        lr_final=0.1,
        clip=1.0,
        progress=False,
    )
    after = cog.evaluate(model, ["go", "anti"], n_trials=64)
    assert max(before.values()) < 0.2
    assert min(after.values()) >= 0.6, after
    assert np.mean(result.losses[-20:]) < 0.5 * np.mean(result.losses[:20])


def test_short_l1_and_bimt_runs_sparsify_and_bimt_shortens_wiring():
    torch.set_num_threads(1)
    kwargs = dict(steps=120, tasks=["go", "dm1"], per_task=8, lr=5e-3, clip=1.0, progress=False)
    pos = sm.grid_positions(36, 6)
    models = {}
    for reg in ("none", "l1", "bimt"):
        model = tc.cog_rnn_model(tc.CogRNNRecipe(hidden_size=36, w_rec_diag=None), seed=0)
        result = tc.train_cognitive_rnn(
            model,
            regularizer=reg,
            lam_low=1e-3,
            lam_high=1e-2,
            schedule="steps",
            swap_every=20,
            swap_k=6,
            positions=pos,
            **kwargs,
        )
        models[reg] = (model.weight_hh.detach(), result.positions)
    sums = {k: float(w.abs().sum()) for k, (w, _) in models.items()}
    assert sums["l1"] < 0.7 * sums["none"] and sums["bimt"] < 0.7 * sums["none"]
    wiring = {k: float(sm.wiring_length(w, p)) for k, (w, p) in models.items()}
    assert wiring["bimt"] < wiring["l1"] and wiring["bimt"] < wiring["none"]


def test_top_fraction_and_between_distance_by_hand():
    w = torch.tensor([[4.0, -1.0], [0.0, 5.0]])
    # top 10% of 4 entries = ceil(0.4) = 1 entry: 5 / 10
    assert float(sm.top_fraction(w, 0.1)) == pytest.approx(0.5)
    assert float(sm.top_fraction(w, 0.5)) == pytest.approx(0.9)
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [4.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # across pairs (ordered): (0,2)=3, (0,3)=5, (1,2)=sqrt(10), (1,3)=sqrt(18), each twice
    expected = (3 + 5 + math.sqrt(10) + math.sqrt(18)) / 4
    assert float(sm.between_distance(pos, labels)) == pytest.approx(expected)
    assert float(sm.locality(pos, labels)) == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="fraction must lie"):
        sm.top_fraction(w, 0.0)


def test_anatomical_reports_wiring_length_and_across_cluster_distance():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 10, generator=g, dtype=torch.float64)
    pos = torch.rand(10, 2, generator=g, dtype=torch.float64)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
    s = mod.anatomical(w, labels, positions=pos, n_null=20).summary
    kept = torch.arange(8)
    hand = float((w[:8, :8].abs() * torch.cdist(pos[:8], pos[:8])).sum() / w[:8, :8].abs().sum())
    assert s["wiring_length"] == pytest.approx(hand, rel=1e-9)
    expected = sm.between_distance(pos[kept].double(), torch.as_tensor(labels[:8]))
    assert s["locality_across"] == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.parametrize("name", ["cog-rnn-plain"])
def test_shipped_network_performs_every_task_by_the_tasks_own_check(name):
    torch.set_num_threads(1)
    root = ROOT / "checkpoints" / name
    metrics = json.loads((root / "metrics.json").read_text())
    model = pk.load(root)
    assert model.cfg.dt == metrics["settings"]["dt"] == 100.0
    acc = {}
    gen = torch.Generator().manual_seed(2024)  # fresh trials, not the card's
    for task in cog.TASKS:
        trials = cog.generate(task, 64, seed=gen, dt=model.cfg.dt)
        with torch.no_grad():
            acc[task] = cog.accuracy(model(trials.inputs), trials)
    assert min(acc.values()) >= 0.4, acc
    assert np.mean(list(acc.values())) == pytest.approx(metrics["mean_accuracy"], abs=0.05)


def test_a_recipe_run_twice_writes_the_same_checkpoint(tmp_path):
    recipe = tc.CogRNNRecipe(
        regularizer="bimt",
        hidden_size=16,
        grid_columns=4,
        per_task=1,
        swap_every=2,
        eval_every=2,
        eval_trials=2,
        final_eval_trials=2,
        lam_low=1e-4,
        lam_high=1e-3,
    )
    a = tc.build_cog_rnn("cog-rnn-bimt", tmp_path / "a", "bimt", steps=4, recipe=recipe)
    b = tc.build_cog_rnn("cog-rnn-bimt", tmp_path / "b", "bimt", steps=4, recipe=recipe)
    assert a["model_sha256"] == b["model_sha256"]
    assert a["sparsity"] == b["sparsity"] and a["sparsity"]["wiring_positions"].startswith("final")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["dt"] == 100.0
