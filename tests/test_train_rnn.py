"""The cognitive-task RNN trainer: BIMT geometry and swaps, regularisers, determinism, recipes."""

from __future__ import annotations

import json
import math

import pytest
import torch

import probekit as pk
from probekit.stats import modularity as sm
from probekit.tasks import cognitive as cog
from probekit.train import cognitive as tc
from probekit.train.recipes import RECIPES


def test_grid_positions_connection_cost_and_wiring_length_by_hand():
    pos = sm.grid_positions(6, columns=3)
    expected = torch.tensor([[0, 0], [0.5, 0], [1, 0], [0, 0.5], [0.5, 0.5], [1, 0.5]])
    torch.testing.assert_close(pos, expected.double())
    w = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    p = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # |W_ij| (A d_ij + l0): 0*(0.2) + 2*(5 + 0.2) + 1*(5 + 0.2) + 3*(0.2)
    assert float(sm.connection_cost(w, p, A=1.0, l0=0.2)) == pytest.approx(2 * 5.2 + 5.2 + 0.6)
    # sum |W_ij| d_ij / sum |W_ij| = (2 * 5 + 1 * 5) / (2 + 1 + 3)
    assert float(sm.wiring_length(w, p)) == pytest.approx(15 / 6)


def test_swap_gains_equal_brute_force_cost_changes():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 10, generator=g, dtype=torch.float64)
    pos = torch.rand(10, 2, generator=g, dtype=torch.float64)
    for unit in (0, 4, 9):
        gains = tc.swap_gains(w.abs() + w.abs().T, sm.distance_matrix(pos), unit)
        base = sm.connection_cost(w, pos)
        for j in range(10):
            moved = pos.clone()
            moved[[unit, j]] = moved[[j, unit]]
            change = sm.connection_cost(w, moved) - base  # the l0 part does not move
            assert float(gains[j]) == pytest.approx(float(change), abs=1e-9)


def test_bimt_swap_lowers_the_cost_and_keeps_the_function():
    # random (not diagonal) recurrent weights, so that some swap lowers the cost
    model = tc.cog_rnn_model(tc.CogRNNRecipe(hidden_size=16, w_rec_diag=None), seed=0)
    pos = sm.grid_positions(16, 4)
    before = sm.connection_cost(model.weight_hh.detach(), pos)
    trials = cog.generate("go", 4, seed=0)
    y0 = model(trials.inputs)
    new_pos, swaps = tc.bimt_swap(model.weight_hh, pos, k=8)
    assert swaps > 0
    assert float(sm.connection_cost(model.weight_hh.detach(), new_pos)) < float(before)
    # a permutation of the same positions; the weights (and so the outputs) are untouched
    assert sorted(map(tuple, new_pos.tolist())) == sorted(map(tuple, pos.tolist()))
    torch.testing.assert_close(model(trials.inputs), y0)


def test_lambda_schedule_rises_then_falls():
    values = [tc.lambda_schedule(s, 101, 1e-3, 1e-2) for s in range(101)]
    assert values[0] == pytest.approx(1e-3) and values[-1] == pytest.approx(1e-3)
    assert values[50] == pytest.approx(1e-2)
    assert values[25] == pytest.approx(math.sqrt(1e-5))
    assert all(a <= b for a, b in zip(values[:50], values[1:51], strict=True))


def test_training_forward_equals_the_hooked_model():
    model = tc.cog_rnn_model(tc.CogRNNRecipe(hidden_size=12), seed=1)
    trials = cog.mixed(["go", "dmc"], 3, seed=0)
    torch.testing.assert_close(cog.ctrnn_forward(model, trials.inputs), model(trials.inputs))


def _train(reg: str, seed: int = 0, steps: int = 6) -> tuple[torch.nn.Module, tc.RNNTrainResult]:
    model = tc.cog_rnn_model(tc.CogRNNRecipe(hidden_size=16), seed=seed)
    result = tc.train_cognitive_rnn(
        model,
        steps=steps,
        regularizer=reg,
        tasks=["go", "anti", "dm1"],
        per_task=4,
        lam_low=1e-3,
        lam_high=1e-2,
        swap_every=3,
        swap_k=4,
        positions=sm.grid_positions(16, 4),
        seed=seed,
        progress=False,
    )
    return model, result


def test_training_is_deterministic_and_regularisers_shrink_weights():
    torch.set_num_threads(1)
    (m1, r1), (m2, r2) = _train("bimt"), _train("bimt")
    assert r1.losses == r2.losses
    torch.testing.assert_close(r1.positions, r2.positions, rtol=0, atol=0)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert r1.swaps > 0
    m_plain, r_plain = _train("none")
    m_l1, r_l1 = _train("l1")
    assert r_plain.swaps == 0 and r_l1.swaps == 0
    assert r_plain.losses[0] == r1.losses[0]  # same init, same first batch
    l1 = {k: float(m.weight_hh.detach().abs().sum()) for k, m in (("none", m_plain), ("l1", m_l1))}
    assert l1["l1"] < l1["none"]
    with pytest.raises(ValueError, match="regularizer must be one of"):
        tc.train_cognitive_rnn(m1, steps=1, regularizer="l2")


def test_recipe_writes_a_loadable_checkpoint_with_positions(tmp_path):
    recipe = tc.CogRNNRecipe(
        hidden_size=16,
        grid_columns=4,
        eval_every=2,
        eval_trials=2,
        final_eval_trials=4,
        swap_every=2,
        per_task=1,
    )
    out = tmp_path / "cog"
    metrics = tc.build_cog_rnn("cog-rnn-bimt", out, "bimt", steps=4, recipe=recipe, progress=False)
    assert set(metrics["accuracy"]) == set(cog.TASKS)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    card = (out / "card.md").read_text()
    assert "Mean accuracy over the 20 tasks" in card and "BIMT" in card
    model = pk.load(out)
    assert model.kind == "ctrnn" and model.positions.shape == (16, 2)
    assert metrics["connection_cost"] == pytest.approx(
        float(sm.connection_cost(model.weight_hh.detach(), model.positions)), rel=1e-5
    )
    assert sorted(map(tuple, model.positions.tolist())) == sorted(
        map(tuple, sm.grid_positions(16, 4).float().tolist())
    )
    assert "cog-rnn-bimt" in RECIPES


def test_shipped_bimt_checkpoint_matches_its_card():
    from pathlib import Path

    from probekit.train.recipes import sha256_file

    root = Path(__file__).resolve().parent.parent / "checkpoints" / "cog-rnn-bimt"
    metrics = json.loads((root / "metrics.json").read_text())
    assert sha256_file(root / "model.safetensors") == metrics["model_sha256"]
    model = pk.load(root)
    recipe = tc.CogRNNRecipe(**metrics["settings"])
    grid = sm.grid_positions(recipe.hidden_size, recipe.grid_columns).float()
    assert sorted(map(tuple, model.positions.tolist())) == sorted(map(tuple, grid.tolist()))
    cost = sm.connection_cost(model.weight_hh.detach(), model.positions, recipe.A, recipe.l0)
    assert float(cost) == pytest.approx(metrics["connection_cost"], rel=1e-4)
    # the swaps lowered the cost the final weights would have at the initial grid order
    assert metrics["connection_cost"] < metrics["connection_cost_initial_positions"]
    assert len(metrics["accuracy"]) == 20
