"""pk.memory: the Gaussian KDE as an associative memory, its retrieval and its capacity."""

from __future__ import annotations

import math

import pytest
import torch

import probekit as pk


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small tensor ops: single-threaded is faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_retrieval_step_is_one_softmax_attention_step_with_patterns_as_keys_and_values():
    patterns = pk.memory.random_patterns(20, 8, seed=0)  # unit norm
    queries = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    beta = 3.0
    out = pk.memory.retrieve(patterns, queries, beta, steps=1)
    assert out.shape == (5, 8)
    # softmax(-beta |mu - v|^2) = softmax(2 beta mu . v) when all |mu| are equal
    attention = torch.nn.functional.scaled_dot_product_attention(
        queries[None], patterns[None], patterns[None], scale=2 * beta
    )[0]
    torch.testing.assert_close(out, attention)
    # two steps are two attention steps
    twice = pk.memory.retrieve(patterns, queries, beta, steps=2)
    again = torch.softmax(2 * beta * attention @ patterns.T, -1) @ patterns
    torch.testing.assert_close(twice, again)


def test_retrieval_lowers_the_kde_energy():
    patterns = pk.memory.random_patterns(30, 6, seed=2)
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e0 = pk.memory.kde_energy(x, patterns, 2.0)
    e1 = pk.memory.kde_energy(pk.memory.retrieve(patterns, x, 2.0), patterns, 2.0)
    assert (e1 <= e0 + 1e-12).all()
    d2 = ((x[:, None] - patterns[None]) ** 2).sum(-1)
    torch.testing.assert_close(e0, -torch.log(torch.exp(-2.0 * d2).sum(-1)) / 2.0)


def test_orthogonal_patterns_one_step_matches_hand_formula():
    # K orthonormal patterns, start rho e_1 + sigma e_2: the weights are
    # exp(2 beta rho), exp(2 beta sigma), 1, ..., 1 (normalised)
    k, beta, rho = 6, 2.0, 0.8
    sigma = math.sqrt(1 - rho**2)
    patterns = torch.eye(k, dtype=torch.float64)
    start = rho * patterns[0] + sigma * patterns[1]
    w = torch.tensor([math.exp(2 * beta * rho), math.exp(2 * beta * sigma)] + [1.0] * (k - 2))
    expected = (w / w.sum()).double()
    out = pk.memory.retrieve(patterns, start[None], beta)[0]
    torch.testing.assert_close(out, expected)


def test_capacity_of_orthogonal_patterns_is_the_dimension_when_retrievable():
    # orthonormal patterns, start cosine 0.9: every other pattern has cosine <= sqrt(1 - 0.81)
    # = 0.44 < 0.9 with the start, so at high beta all K <= D are retrieved: K* = D.
    for d in (4, 9):
        assert pk.memory.capacity(d, beta=60.0, overlap=0.9, orthogonal=True) == d
    # at tiny beta two patterns already blur into their mean (cosine 0.71 < 0.99): K* = 1
    assert pk.memory.capacity(6, beta=0.1, overlap=0.9, orthogonal=True) == 1


def test_capacity_grows_exponentially_with_dimension():
    result = pk.memory.capacity_sweep([8, 16, 24], beta_per_dim=1.0, k_max=512)
    caps = result.frame["capacity"].tolist()
    assert caps[0] < caps[1] < caps[2]
    assert result.summary["slope_measured"] > 0.05
    # the prediction at b = beta/D >= rho/2 is rho^2/2 per dimension
    assert result.summary["slope_predicted"] == pytest.approx(0.6**2 / 2)
    assert len(result.figures()) == 1


def test_retrieve_rejects_bad_shapes():
    with pytest.raises(ValueError, match="queries must be"):
        pk.memory.retrieve(torch.zeros(3, 4), torch.zeros(2, 5), 1.0)
    with pytest.raises(ValueError, match="beta must be"):
        pk.memory.retrieve(torch.zeros(3, 4), torch.zeros(2, 4), -1.0)
    with pytest.raises(ValueError, match="patterns must be"):
        pk.memory.retrieve(torch.zeros(4), torch.zeros(2, 4), 1.0)
