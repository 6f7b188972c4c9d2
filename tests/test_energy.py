"""probekit.tasks.energy: ICL energy task, model, loss, Langevin and the grid KL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from probekit.tasks import energy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small tensor ops: single-threaded is faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_energy_loss_matches_direct_formula():
    gen = torch.Generator().manual_seed(0)
    e_real, e_neg = torch.randn(4, 35, generator=gen), torch.randn(4, 8, 1, generator=gen)
    direct = (
        e_real.sum() / e_real.numel()
        - e_neg.sum() / e_neg.numel()
        + 1e-3 * ((e_real**2).sum() / e_real.numel() + (e_neg**2).sum() / e_neg.numel())
    )
    torch.testing.assert_close(energy.energy_loss(e_real, e_neg, 1e-3), direct)
    # its gradient lowers real energies and raises negative ones
    e_real.requires_grad_(True)
    e_neg.requires_grad_(True)
    energy.energy_loss(e_real, e_neg, 0.0).backward()
    assert (e_real.grad > 0).all() and (e_neg.grad < 0).all()


def test_langevin_step_matches_direct_update_with_clipping():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    grad = torch.tensor([[3.0, -0.2], [-5.0, 0.4]])
    noise = torch.tensor([[0.1, 0.2], [-0.3, 0.0]])
    out = energy.langevin_step(x, grad, step_size=0.2, noise_scale=0.5, clip=1.0, noise=noise)
    expected = torch.tensor(
        [
            [1.0 - 0.1 * 1.0 + 0.05, -2.0 - 0.1 * -0.2 + 0.1],
            [0.5 - 0.1 * -1.0 - 0.15, 0.0 - 0.1 * 0.4 + 0.0],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_langevin_on_a_quadratic_energy_samples_its_gaussian():
    # E(x) = |x|^2 / (2 s^2): exp(-E) is N(0, s^2 I); ULA with small eps samples it.
    s = 0.5
    x0 = torch.full((4000, 2), 2.0)
    eps = 0.01
    out = energy.langevin(
        lambda x: (x**2).sum(-1) / (2 * s**2),
        x0,
        steps=400,
        step_size=eps,
        noise_scale=math.sqrt(eps),
        clip=None,
        seed=0,
    )
    assert abs(float(out.mean())) < 0.03
    assert abs(float(out.std()) - s) < 0.03


def test_energy_path_equals_causal_forward():
    model = energy.EnergyTransformer(energy.EnergyConfig(n_layer=2, d_model=32, n_head=4))
    batch = energy.sample_contexts(3, 10, seed=1)
    forward = model(batch.points)
    via_cache = model.energy(model.encode(batch.points), batch.points[:, :, None])[..., 0]
    torch.testing.assert_close(via_cache, forward, rtol=1e-5, atol=1e-5)
    # energy_given(context of n points, x) is the causal output at position n
    given = model.energy_given(batch.points[:, :6], batch.points[:, 6:7])[:, 0]
    torch.testing.assert_close(given, forward[:, 6], rtol=1e-5, atol=1e-5)
    # a context of 0 points: the output at position 0
    empty = model.energy_given(batch.points[:, :0], batch.points[:, :1])[:, 0]
    torch.testing.assert_close(empty, forward[:, 0], rtol=1e-5, atol=1e-5)


def test_grid_kl_matches_closed_form_gaussian_kl():
    # KL(N(m1, s1^2 I) || N(m2, s2^2 I)) in 2-D = 2 log(s2/s1) + (2 s1^2 + |m1-m2|^2)/(2 s2^2) - 1
    grid = energy.box_grid(10.0, 400)
    m1, s1 = torch.tensor([1.0, -0.5]), 1.0
    m2, s2 = torch.tensor([-0.5, 0.5]), 1.5
    log_p = -((grid - m1) ** 2).sum(-1) / (2 * s1**2)
    log_q = -((grid - m2) ** 2).sum(-1) / (2 * s2**2)
    closed = 2 * math.log(s2 / s1) + (2 * s1**2 + float(((m1 - m2) ** 2).sum())) / (2 * s2**2) - 1
    assert float(energy.grid_kl(log_p, log_q)) == pytest.approx(closed, rel=1e-3)


def test_one_component_posterior_predictive_is_the_conjugate_gaussian():
    grid = energy.box_grid(10.0, 60)
    batch = energy.sample_contexts(2, 7, components=1, seed=3)
    gibbs = energy.posterior_predictive(batch.points, grid, components=1, sweeps=3, burn_in=1)
    closed = energy.gaussian_predictive(batch.points, grid, batch.mean_sd, batch.component_sd)
    torch.testing.assert_close(gibbs, closed, rtol=1e-4, atol=1e-3)
    # the predictive with no context is the prior predictive N(0, (s0^2 + s^2) I)
    prior = energy.posterior_predictive(batch.points[:, :0], grid, components=1)
    var = batch.mean_sd**2 + batch.component_sd**2
    expected = -(grid**2).sum(-1) / (2 * var) - math.log(2 * math.pi * var)
    torch.testing.assert_close(prior[0], expected, rtol=1e-5, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = energy.EnergyTransformer(energy.EnergyConfig(n_layer=1, d_model=16, n_head=2))
    energy.save(model, tmp_path / "m")
    again = energy.load(tmp_path / "m")
    x = energy.sample_contexts(2, 5, seed=0).points
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="icl-energy directory"):
        energy.load(tmp_path)


def test_recipe_is_deterministic_and_writes_a_checkpoint(tmp_path):
    from probekit.train import energy as recipe

    small = recipe.ICLEnergyRecipe(batch_size=4, eval_contexts=2, eval_lengths=(0, 4), eval_grid=30)
    a = recipe.build_icl_energy(tmp_path / "a", steps=2, recipe=small, progress=False)
    b = recipe.build_icl_energy(tmp_path / "b", steps=2, recipe=small, progress=False)
    assert a["model_sha256"] == b["model_sha256"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "card.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    assert [r["context_length"] for r in a["grid_kl"]] == [0, 4]


def test_shipped_icl_energy_beats_a_uniform_density_at_long_context():
    model = energy.load(ROOT / "checkpoints" / "icl-energy")
    held_out = energy.sample_contexts(3, 35, seed=4242)
    (row,) = energy.evaluate_grid(model, held_out, [34], grid_points=60)
    assert row["kl_model"] < row["kl_uniform"] - 1.0
