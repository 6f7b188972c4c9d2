"""probekit.tasks.navigation, the grid-rnn recipe, the shipped checkpoint and `probekit grid`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.cli import main
from probekit.tasks import navigation
from probekit.train import navigation as nav_recipe

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "grid-rnn"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny RNN steps run far faster on one thread on the shared CPU; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- task


def test_trajectories_integrate_velocity_and_stay_in_the_box():
    traj = navigation.trajectories(32, 200, box=(1.0, 0.6), seed=3)
    assert traj.velocity.shape == (32, 200, 2) and traj.positions.shape == (32, 200, 2)
    integrated = traj.start[
        :, None
    ].double() + navigation.DEFAULT_DT * traj.velocity.double().cumsum(1)
    torch.testing.assert_close(integrated.float(), traj.positions, atol=1e-5, rtol=0)
    # wall avoidance keeps the agent in the box up to soft walls (as in Sorscher et al.'s
    # generator): a fast step begun just outside the border region may overshoot by one step
    pos = traj.positions
    outside = (pos[..., 0].abs() > 0.5) | (pos[..., 1].abs() > 0.3)
    assert outside.float().mean() < 0.03
    assert (pos[..., 0].abs() - 0.5).max() < 0.08 and (pos[..., 1].abs() - 0.3).max() < 0.08
    # without wall avoidance (no border region) a quarter of these walks would leave the box
    free = navigation.trajectories(32, 200, box=(1.0, 0.6), border=0.0, seed=3).positions
    assert ((free[..., 0].abs() > 0.5) | (free[..., 1].abs() > 0.3)).float().mean() > 0.2
    # the heading is the direction of each step's velocity
    unit = traj.velocity / traj.velocity.norm(dim=-1, keepdim=True)
    direction = torch.stack([torch.cos(traj.heading), torch.sin(traj.heading)], -1)
    torch.testing.assert_close(unit, direction, atol=1e-4, rtol=0)


def test_trajectories_are_seeded_and_speeds_rayleigh():
    a = navigation.trajectories(8, 50, seed=1)
    b = navigation.trajectories(8, 50, seed=1)
    c = navigation.trajectories(8, 50, seed=2)
    assert torch.equal(a.positions, b.positions) and not torch.equal(a.positions, c.positions)
    # in a huge box no wall is ever near: speeds are Rayleigh(scale), mean scale * sqrt(pi / 2)
    free = navigation.trajectories(200, 40, box=(1e4, 1e4), seed=0)
    speed = free.velocity.norm(dim=-1)
    assert speed.mean().item() == pytest.approx(
        navigation.DEFAULT_SPEED_SCALE * math.sqrt(math.pi / 2), rel=0.02
    )


def test_place_code_is_a_distribution_peaked_at_the_nearest_centre():
    centers = navigation.place_cell_centers(512, seed=0)
    pos = torch.tensor([[0.1, -0.3], [0.9, 0.9], [-1.0, 0.2]])
    code = navigation.place_code(pos, centers)
    assert code.shape == (3, 512) and (code >= 0).all()
    torch.testing.assert_close(code.sum(-1), torch.ones(3))
    nearest = ((pos[:, None] - centers) ** 2).sum(-1).argmin(-1)
    assert torch.equal(code.argmax(-1), nearest)
    # the hand formula: DoG of two softmaxes, shifted to min 0, normalised
    d2 = ((pos[:, None] - centers) ** 2).sum(-1)
    dog = torch.softmax(-d2 / (2 * 0.12**2), -1) - torch.softmax(-d2 / (2 * 0.24**2), -1)
    dog = dog - dog.min(-1, keepdim=True).values
    torch.testing.assert_close(code, dog / dog.sum(-1, keepdim=True))
    # decoding the true code puts the position within about one place-cell spacing
    pts = navigation.trajectories(50, 10, seed=4).positions.reshape(-1, 2)
    err = (navigation.decode_position(navigation.place_code(pts, centers), centers) - pts).norm(
        dim=-1
    )
    assert err.mean() < 0.08


def test_navigation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="box must"):
        navigation.trajectories(2, 3, box=(1.0, -1.0))
    with pytest.raises(ValueError, match="steps must"):
        navigation.trajectories(2, 0)
    with pytest.raises(ValueError, match="positions must be"):
        navigation.place_code(torch.zeros(4, 3), torch.zeros(5, 2))


# ----------------------------------------------------------------------------- recipe

TINY = nav_recipe.GridRNNRecipe(hidden=12, n_place=24, batch_size=6, eval_trajectories=60)


def test_training_is_deterministic_and_uses_the_cross_entropy_of_the_place_code():
    a = nav_recipe.train_grid_rnn(TINY, seed=0, steps=4, progress=False)
    b = nav_recipe.train_grid_rnn(TINY, seed=0, steps=4, progress=False)
    assert a["losses"] == b["losses"]
    for pa, pb in zip(a["model"].parameters(), b["model"].parameters()):
        assert torch.equal(pa, pb)
    assert torch.equal(a["encoder"], b["encoder"])
    # the first loss by hand: the untrained model, the first batch of the seeded generator
    model, encoder = nav_recipe.grid_rnn_model(TINY, 0)
    traj = navigation.trajectories(
        TINY.batch_size, TINY.seq_len, seed=torch.Generator().manual_seed(0)
    )
    h0 = TINY.n_place * navigation.place_code(traj.start, a["centers"]) @ encoder.T
    logits = model(traj.velocity, h0)
    target = navigation.place_code(traj.positions, a["centers"])
    ce = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert a["losses"][0] == pytest.approx(float(ce.detach()), rel=1e-6)


def test_build_grid_rnn_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "grid-rnn"
    metrics = nav_recipe.build_grid_rnn(out, steps=2, recipe=TINY, progress=False)
    assert {"card.md", "config.json", "model.safetensors", "metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    model = pk.load(out, device="cpu")
    assert model.encoder.shape == (12, 24) and model.place_centers.shape == (24, 2)
    start = torch.tensor([[0.2, -0.4]])
    code = navigation.place_code(start, model.place_centers)
    torch.testing.assert_close(navigation.initial_state(model, start), 24 * code @ model.encoder.T)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["trained"]["n_units"] == 12 and saved["steps"] == 2
    assert metrics["verdict"] in (out / "card.md").read_text()


def _tiny_navigation_net():
    model, encoder = navigation.navigation_rnn(12, 24, seed=3)
    centers = navigation.place_cell_centers(24, seed=4)
    return navigation.attach_task_tensors(
        model, encoder, centers, place_sigma=0.12, place_surround=2.0, box=(2.2, 2.2), seq_len=15
    )


def test_rollout_is_the_model_run_from_the_encoded_start_on_the_seeded_trajectories():
    model = _tiny_navigation_net()
    out = navigation.rollout(model, 7, seed=11)
    traj = navigation.trajectories(7, 15, seed=11)
    torch.testing.assert_close(out["positions"], traj.positions)
    h0 = 24 * navigation.place_code(traj.start, model.place_centers) @ model.encoder.T
    logits, cache = model.run_with_cache(traj.velocity, h0, names_filter="hook_hidden")
    torch.testing.assert_close(out["hidden"], cache["hook_hidden"])
    torch.testing.assert_close(out["logits"], logits)
    assert out["target"].shape == (7, 15, 24)


def test_ratemaps_from_a_cached_rollout_equal_those_of_the_live_rollout(tmp_path):
    model = _tiny_navigation_net()
    live = navigation.rollout(model, 40, seed=2)
    store = navigation.cache_rollout(model, 40, seed=2, out=tmp_path / "rollout", batch_size=16)
    store = pk.ActivationStore.open(tmp_path / "rollout")  # from disk, as a later session would
    assert {"positions", "start", "target"} <= set(store.extras)
    torch.testing.assert_close(store["hook_hidden"], live["hidden"])
    torch.testing.assert_close(store["positions"], live["positions"])
    extent = navigation.extent_of((2.2, 2.2))
    from_store = pk.grid.ratemaps(store["hook_hidden"], store["positions"], bins=8, extent=extent)
    from_live = pk.grid.ratemaps(live["hidden"], live["positions"], bins=8, extent=extent)
    np.testing.assert_array_equal(from_store, from_live)
    # the same call resumes from the complete store instead of running again
    again = navigation.cache_rollout(model, 40, seed=2, out=tmp_path / "rollout", batch_size=16)
    assert again.meta["data_fingerprint"] == store.meta["data_fingerprint"]


# ----------------------------------------------------------------------------- shipped checkpoint


def test_shipped_grid_rnn_path_integrates_as_its_card_says():
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    model = pk.load(SHIPPED, device="cpu")
    out = navigation.rollout(model, 500, seed=metrics["trained"]["eval_seed"])
    err = (navigation.decode_position(out["logits"], model.place_centers) - out["positions"]).norm(
        dim=-1
    )
    # the first 500 of the card's evaluation trajectories: the same error, near enough
    assert float(err.mean()) == pytest.approx(metrics["trained"]["decoding_error_mean"], rel=0.1)
    start_guess = (out["start"][:, None] - out["positions"]).norm(dim=-1).mean()
    assert float(err.mean()) < float(start_guess)  # better than not integrating at all
    assert metrics["trained"]["decoding_error_mean"] < metrics["untrained"]["decoding_error_mean"]


# ----------------------------------------------------------------------------- command line


def test_grid_command_from_files(tmp_path, capsys):
    pop = pk.grid.synthetic_population(
        modules=[(0.3, 10.0), (0.45, 35.0)],
        cells_per_module=5,
        n_place=2,
        n_band=2,
        n_random=2,
        seed=5,
    )
    rng = np.random.default_rng(0)
    pos = rng.random((30000, 2))
    np.save(tmp_path / "pos.npy", pos)
    np.savez(tmp_path / "acts.npz", hidden=pop.rates(pos))
    out = tmp_path / "grid.html"
    rc = main(
        [
            "grid",
            "--activations",
            f"{tmp_path / 'acts.npz'}:hidden",
            "--positions",
            str(tmp_path / "pos.npy"),
            "--extent",
            "0,1,0,1",
            "--shuffles",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "modules: 2" in text and out.is_file()
    import pandas as pd

    frame = pd.read_csv(out.with_suffix(".units.csv"))
    assert (frame["module"][:10] >= 0).all() and (frame["module"][10:] == -1).all()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["grid"], "either a checkpoint PATH"),
        (["grid", "--activations", "a.npy"], "go together"),
        (["grid", "/nonexistent/ckpt"], "no such checkpoint"),
        (["grid", "--activations", "/nope.npy", "--positions", "/nope2.npy"], "is not a file"),
        (["grid", "x", "--bins", "2"], "--bins must be >= 3"),
        (["grid", "x", "--extent", "0,1,1,0"], "--extent must have"),
    ],
)
def test_grid_command_bad_arguments_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
