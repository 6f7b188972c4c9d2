"""The self-supervised grid-cell framework: data, losses, the ssl-grid network, its files,
its use by pk.cache / rollouts / `probekit grid`, and the grid-ssl recipe's training."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import probekit as pk
from probekit.cli import main
from probekit.models.ssl_grid import HookedSSLGrid, SSLGridConfig, normalise_relu
from probekit.tasks import navigation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0, hidden: int = 12) -> HookedSSLGrid:
    return navigation.ssl_grid_network(hidden, (8, 8), seed=seed, seq_len=9, bins=8)


# ----------------------------------------------------------------------------- data


def test_permutations_keep_start_and_end_and_reorder_one_sequence():
    batch = navigation.ssl_batch(16, 30, start=(0.2, -0.1), seed=4)
    assert batch.velocity.shape == (30, 2) and batch.order.shape == (16, 30)
    assert batch.velocity.abs().max() <= navigation.SSL_MAX_SPEED
    # each row is a permutation of the one sequence
    assert torch.equal(batch.order.sort(dim=1).values, torch.arange(30).expand(16, 30))
    assert len({tuple(r) for r in batch.order.tolist()}) == 16
    start = torch.tensor([0.2, -0.1])
    first = start + batch.velocity[batch.order[:, 0]]
    torch.testing.assert_close(batch.positions[:, 0], first)
    end = (start.double() + batch.velocity.double().sum(0)).float()
    torch.testing.assert_close(batch.positions[:, -1], end.expand(16, 2), atol=1e-5, rtol=0)
    # hand integration of one row
    row = start.double() + batch.velocity.double()[batch.order[3]].cumsum(0)
    torch.testing.assert_close(batch.positions[3], row.float(), atol=1e-5, rtol=0)


def test_permuted_trajectories_cross_so_invariance_has_pairs():
    batch = navigation.ssl_batch(16, 60, seed=0)
    pos = batch.positions
    d = torch.cdist(pos.reshape(-1, 2), pos.reshape(-1, 2))
    traj = torch.arange(16).repeat_interleave(60)
    other = traj[:, None] != traj[None, :]
    mid = torch.zeros(16, 60, dtype=torch.bool)
    mid[:, 5:-5] = True
    mid = mid.reshape(-1)
    near = (d < navigation.SSL_SIGMA_X) & other & mid[:, None] & mid[None, :]
    assert near.sum() > 100  # crossings away from the shared start and end


def test_ssl_batch_is_deterministic_and_validates():
    a, b = navigation.ssl_batch(4, 10, seed=7), navigation.ssl_batch(4, 10, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="n_permutations"):
        navigation.ssl_batch(0, 10)
    with pytest.raises(ValueError, match="max_speed"):
        navigation.ssl_velocities(2, 3, max_speed=0.0)


# ----------------------------------------------------------------------------- losses


def _tiny_states(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64).abs()
    hidden = hidden / hidden.norm(dim=-1, keepdim=True)
    positions = torch.rand(3, 5, 2, generator=gen, dtype=torch.float64) * 0.15
    return hidden, positions


def test_separation_loss_matches_a_pair_loop():
    hidden, positions = _tiny_states()
    g, x = hidden.reshape(-1, 6), positions.reshape(-1, 2)
    total, count = 0.0, 0
    for i, j in itertools.permutations(range(len(g)), 2):
        if math.dist(x[i].tolist(), x[j].tolist()) > 0.05:
            total += math.exp(-float(((g[i] - g[j]) ** 2).sum()) / (2 * 0.4**2))
            count += 1
    assert 0 < count < len(g) * (len(g) - 1)
    code, space = navigation.ssl_pair_geometry(hidden, positions)
    got = navigation.ssl_separation_loss(code, space, sigma_x=0.05, sigma_g=0.4)
    assert float(got) == pytest.approx(total / count, rel=1e-9, abs=1e-12)


def test_invariance_loss_matches_a_pair_loop():
    hidden, positions = _tiny_states(1)
    g, x = hidden.reshape(-1, 6), positions.reshape(-1, 2)
    total, count = 0.0, 0
    for i, j in itertools.permutations(range(len(g)), 2):
        if math.dist(x[i].tolist(), x[j].tolist()) < 0.05:
            total += float(((g[i] - g[j]) ** 2).sum())
            count += 1
    assert count > 0
    code, space = navigation.ssl_pair_geometry(hidden, positions)
    got = navigation.ssl_invariance_loss(code, space, sigma_x=0.05)
    assert float(got) == pytest.approx(total / count, rel=1e-9, abs=1e-12)


def test_capacity_loss_is_minus_the_squared_norm_of_the_mean_state():
    hidden, _ = _tiny_states(2)
    g = hidden.reshape(-1, 6).tolist()
    mean = [sum(row[k] for row in g) / len(g) for k in range(6)]
    expected = -sum(m * m for m in mean)
    assert float(navigation.ssl_capacity_loss(hidden)) == pytest.approx(expected, rel=1e-12)


def test_conformal_loss_matches_a_step_loop():
    hidden, _ = _tiny_states(3)
    gen = torch.Generator().manual_seed(9)
    velocity = (torch.rand(3, 5, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.3
    velocity[1, 2] = 0.0  # a zero step is left out
    h0 = torch.full((6,), 6**-0.5, dtype=torch.float64)
    ratios = []
    for b in range(3):
        prev = h0
        for t in range(5):
            speed = float(velocity[b, t].norm())
            if speed > 0.02:
                ratios.append(float((hidden[b, t] - prev).norm()) / speed)
            prev = hidden[b, t]
    mean = sum(ratios) / len(ratios)
    expected = sum((r - mean) ** 2 for r in ratios) / len(ratios)
    got = navigation.ssl_conformal_loss(hidden, h0, velocity, min_speed=0.02)
    assert 0 < len(ratios) < 15
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_pair_losses_are_zero_without_qualifying_pairs():
    hidden, positions = _tiny_states()
    code, space = navigation.ssl_pair_geometry(hidden, positions)
    assert float(navigation.ssl_invariance_loss(code, space, sigma_x=1e-9)) == 0.0
    assert float(navigation.ssl_separation_loss(code, space, sigma_x=10.0)) == 0.0
    with pytest.raises(ValueError, match="leading dims"):
        navigation.ssl_pair_geometry(hidden, positions[:, :4])


# ----------------------------------------------------------------------------- the network


def test_recurrence_matches_a_hand_loop():
    model = tiny()
    v = navigation.ssl_velocities(2, 6, seed=1)
    out = model(v)
    with torch.no_grad():
        g = torch.relu(model.g0) / torch.relu(model.g0).norm()
        g = g.expand(2, -1)
        for t in range(6):
            w = model.mlp(v[:, t]).reshape(2, 12, 12)
            r = torch.relu(torch.einsum("bij,bj->bi", w, g))
            g = r / r.norm(dim=-1, keepdim=True)
            torch.testing.assert_close(out[:, t], g, atol=1e-6, rtol=1e-5)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 6), atol=1e-5)
    assert (out >= 0).all()


def test_order_gathers_the_same_weights_as_full_velocities():
    model = tiny()
    batch = navigation.ssl_batch(5, 9, seed=2)
    gathered = model(batch.velocity, order=batch.order)
    full = model(batch.velocity[batch.order])
    torch.testing.assert_close(gathered, full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="order must index"):
        model(batch.velocity, order=batch.order + 100)
    with pytest.raises(ValueError, match=r"velocities \[K, 2\]"):
        model(batch.velocity[None], order=batch.order)


def test_hooks_cache_every_step_and_an_intervention_changes_later_steps():
    model = tiny()
    v = navigation.ssl_velocities(3, 7, seed=3)
    out, cache = model.run_with_cache(v)
    assert set(cache.keys()) == {"hook_input", "hook_pre", "hook_hidden", "hook_output"}
    assert cache["hook_hidden"].shape == (3, 7, 12) and cache["hook_pre"].shape == (3, 7, 12)
    torch.testing.assert_close(cache["hook_hidden"], out)
    torch.testing.assert_close(normalise_relu(cache["hook_pre"]), out)

    def silence_at_step_2(g, hook):
        if hook.step == 2:
            g = torch.zeros_like(g)
            g[:, 0] = 1.0
        return g

    patched = model.run_with_hooks(v, fwd_hooks=[("hook_hidden", silence_at_step_2)])
    torch.testing.assert_close(patched[:, :2], out[:, :2])
    assert torch.equal(patched[:, 2], torch.eye(12)[0].expand(3, 12))
    assert (patched[:, 3:] - out[:, 3:]).abs().amax() > 1e-3  # later steps changed


def test_save_load_round_trip_through_pk_load(tmp_path):
    model = tiny(seed=5)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["format"] == "probekit-ssl-grid" and cfg["hidden_size"] == 12
    loaded = pk.load(tmp_path / "m", device="cpu")
    assert isinstance(loaded, HookedSSLGrid) and isinstance(loaded, pk.models.HookedRNN)
    assert pk.fingerprint(loaded) == pk.fingerprint(model)
    v = navigation.ssl_velocities(2, 5, seed=0)
    assert torch.equal(loaded(v), model(v))
    assert loaded.cfg.extra["seq_len"] == 9
    assert pk.fingerprint(tiny(seed=6)) != pk.fingerprint(model)


def test_bad_checkpoints_and_configs_are_refused(tmp_path):
    model = tiny()
    model.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] = 13
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(pk.models.CheckpointError, match="shape"):
        pk.load(tmp_path / "m", device="cpu")
    cfg["hidden_size"], cfg["bogus"] = 12, 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(pk.models.CheckpointError, match="bogus"):
        pk.load(tmp_path / "m", device="cpu")
    with pytest.raises(ValueError, match="mlp_hidden"):
        SSLGridConfig(hidden_size=4, mlp_hidden=(0,))


def test_pk_cache_and_cache_rollout_hold_the_rollout_states():
    model = tiny()
    v = navigation.ssl_velocities(6, 9, seed=1)
    store = pk.cache(model, v, "hook_hidden", dtype=None, batch_size=4, progress=False)
    torch.testing.assert_close(store["hook_hidden"], model(v).detach())
    n = navigation.SSL_ROLLOUT_PERMUTATIONS + 7  # two velocity sequences, the second partly used
    data = navigation.rollout_data(model, n, seed=3)
    velocity, order = data["inputs"], data["order"]
    assert velocity.shape == (n, 9, 2) and torch.equal(velocity, data["table"][order])
    per = navigation.SSL_ROLLOUT_PERMUTATIONS
    assert torch.equal(order[:per].sort(1).values, torch.arange(9).expand(per, 9))
    assert torch.equal(order[per:].sort(1).values, torch.arange(9, 18).expand(7, 9))
    torch.testing.assert_close(data["extras"]["positions"], velocity.cumsum(1))
    out = navigation.rollout(model, n, seed=3)
    assert set(out) == {"hidden", "positions", "start"}
    torch.testing.assert_close(out["hidden"], model(velocity).detach(), atol=1e-6, rtol=1e-5)
    store = navigation.cache_rollout(model, n, seed=3, batch_size=20)
    torch.testing.assert_close(store["hook_hidden"], out["hidden"])
    torch.testing.assert_close(store["positions"], out["positions"])


# ----------------------------------------------------------------------------- training


def _train(weights: dict[str, float], steps: int = 25, seed: int = 0):
    model = navigation.ssl_grid_network(16, (8, 8), seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        batch = navigation.ssl_batch(8, 20, seed=gen)
        terms = navigation.ssl_losses(model, batch, weights=weights)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


@pytest.mark.parametrize("term", ["separation", "invariance", "capacity", "conformal"])
def test_a_short_training_run_lowers_each_loss_term(term):
    weights = {k: float(k == term) for k in navigation.SSL_WEIGHTS}
    history = _train(weights)
    first = np.mean([h[term] for h in history[:3]])
    last = np.mean([h[term] for h in history[-3:]])
    assert last < first - 0.02


def test_a_short_training_run_with_the_published_weights_lowers_the_total():
    history = _train(navigation.SSL_WEIGHTS, steps=40)
    first = np.mean([h["total"] for h in history[:5]])
    last = np.mean([h["total"] for h in history[-5:]])
    assert last < first - 0.1 * abs(first)
    assert np.mean([h["separation"] for h in history[-5:]]) < history[0]["separation"]


def test_recipe_is_deterministic_and_writes_a_loadable_checkpoint(tmp_path):
    from probekit.train.grid_ssl import GridSSLRecipe, build_grid_ssl

    recipe = GridSSLRecipe(
        hidden=12,
        mlp_hidden=(8, 8),
        seq_len=12,
        permutations=6,
        bins=10,
        eval_trajectories=60,
        ablation_steps=2,
    )
    a = build_grid_ssl(tmp_path / "a", steps=3, progress=False, recipe=recipe)
    b = build_grid_ssl(tmp_path / "b", steps=3, progress=False, recipe=recipe)
    assert a["model_sha256"] == b["model_sha256"]
    assert (tmp_path / "a" / "card.md").is_file()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for net in ("trained", "no_capacity", "untrained"):
        assert {"n_modules", "module_spacings", "spacing_ratios"} <= set(metrics[net])
    model = pk.load(tmp_path / "a", device="cpu")
    assert isinstance(model, HookedSSLGrid) and model.cfg.extra["bins"] == 10


# ----------------------------------------------------------------------------- probekit grid


def test_grid_command_writes_json_and_csv_beside_the_page_for_an_ssl_checkpoint(tmp_path, capsys):
    tiny(hidden=10).save(tmp_path / "ckpt")
    out = tmp_path / "rep" / "grid.html"
    argv = ["grid", str(tmp_path / "ckpt"), "--n-trajectories", "80", "--shuffles", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "modules:" in capsys.readouterr().out
    summary = json.loads((tmp_path / "rep" / "grid.json").read_text())
    assert {"n_modules", "spacings", "spacing_ratios", "orientations"} <= set(summary)
    assert summary["bins"] == 8 and summary["n_units"] == 10
    assert len(summary["spacing_ratios"]) == max(summary["n_modules"] - 1, 0)
    frame = pd.read_csv(tmp_path / "rep" / "grid.csv")
    assert len(frame) == 10 and {"unit", "score60", "spacing", "module"} <= set(frame.columns)


def test_grid_command_json_for_the_shipped_grid_rnn(tmp_path):
    out = tmp_path / "grid.html"
    ckpt = ROOT / "checkpoints" / "grid-rnn"
    argv = ["grid", str(ckpt), "--n-trajectories", "300", "--shuffles", "0", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "grid.json").read_text())
    frame = pd.read_csv(tmp_path / "grid.csv")
    assert len(frame) == 256 and summary["n_units"] == 256
    assert summary["n_modules"] == len(summary["spacings"]) == len(summary["orientations"])
    assert summary["n_modules"] == int(frame.loc[frame["module"] >= 0, "module"].nunique())
    sizes = frame.loc[frame["module"] >= 0].groupby("module").size().tolist()
    assert sizes == summary["module_sizes"]
    spacing = frame.loc[frame["module"] >= 0].groupby("module")["spacing"].mean().to_numpy()
    np.testing.assert_allclose(spacing, summary["spacings"], rtol=1e-9)
    assert summary["spacing_unit"] == "m"


def test_train_device_option_is_refused_by_recipes_without_one(tmp_path, capsys):
    argv = ["train", "grid-rnn", "--device", "cpu", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "does not take --device" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_card_measurement_survives_a_single_grid_cell():
    from probekit.train.grid_ssl import module_table_or_single

    pop = pk.grid.synthetic_population(
        modules=[(0.3, 10.0)], cells_per_module=1, n_place=3, n_band=2, n_random=2, seed=0
    )
    found = module_table_or_single(pop.ratemaps, extent=pop.extent)
    assert found["summary"]["n_grid"] == 1 and found["summary"]["n_modules"] == 0
    assert found["frame"]["is_grid"].tolist() == [True] + [False] * 7
    two = module_table_or_single(pop.ratemaps[[0, 0, 0, 1]], extent=pop.extent)
    assert two["summary"]["n_grid"] == 3 and two["summary"]["n_modules"] == 1


def test_invariance_weight_schedule_is_constant_then_geometric():
    from probekit.train.grid_ssl import GridSSLRecipe

    fixed = GridSSLRecipe(invariance_weight=0.7)
    assert {fixed.invariance_at(s, 100) for s in range(100)} == {0.7}
    r = GridSSLRecipe(invariance_weight=1.0, invariance_weight_final=0.1, anneal_start=40)
    steps = 101
    assert r.invariance_at(0, steps) == r.invariance_at(40, steps) == 1.0
    assert r.invariance_at(100, steps) == pytest.approx(0.1)
    # half way through the anneal: the geometric mean of the two ends
    assert r.invariance_at(70, steps) == pytest.approx(0.1**0.5)
    assert r.weights(70, steps)["invariance"] == pytest.approx(0.1**0.5)
    assert r.weights()["invariance"] == 1.0
