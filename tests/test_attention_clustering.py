"""pk.attention.hypersphere: the vMF-mixture rewrite reproduces every head's attention exactly."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import tiny_causal_lm

import probekit as pk
from probekit import attention


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny tensor ops: on a shared 2-core machine thread hand-offs cost more than they
    save, so this module runs single-threaded and restores the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sharp(kind: str) -> torch.nn.Module:
    """A tiny random model with large weights, so attention is far from uniform (a wrong rewrite
    would show) and the norm's gain and bias are far from 1 and 0."""
    model = tiny_causal_lm(kind, seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and "norm" in name or "ln" in name:
                p.copy_(1.0 + 0.5 * noise if name.endswith("weight") else 0.3 * noise)
            else:
                p.copy_(0.35 * noise)
    return model


@pytest.fixture(scope="module", params=["gpt2", "neox", "llama"])
def loaded(request):
    model = pk.load(_sharp(request.param), device="cpu")
    tokens = torch.randint(0, 65, (3, 12), generator=torch.Generator().manual_seed(0))
    return request.param, model, tokens


def test_vmf_rewrite_reconstructs_every_head_to_1e5(loaded):
    kind, model, tokens = loaded
    result = pk.attention.hypersphere(model, tokens, mode_sequences=1)
    frame = result.frame
    assert len(frame) == 2 * 4
    assert {"layer", "head", "reconstruction_error", "kappa_mean"} <= set(frame.columns)
    assert frame["reconstruction_error"].max() < 1e-5
    assert bool(frame["rope"].all()) == (kind != "gpt2")
    # the patterns are far from uniform, so the comparison has teeth
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert max(float(cache[n][:, :, 4:].max()) for n in cache) > 0.6
    assert (frame["kappa_mean"] > 0.5).all()


def test_vmf_parameters_match_hand_formula_on_one_head():
    model = pk.load(_sharp("gpt2"), device="cpu")
    tokens = torch.randint(0, 65, (1, 6), generator=torch.Generator().manual_seed(3))
    _, cache = model.run_with_cache(tokens)
    x_hat = cache["blocks.0.ln1.hook_normalized"][0]  # [T, D]
    k = cache["blocks.0.attn.hook_k"][0, :, 1]  # head 1: [T, dh]
    blk = model.blocks[0]
    W, b = blk.attn.W_Q[1].detach(), blk.attn.b_Q[1].detach()  # [D, dh], [dh]
    g, delta = blk.ln1.w.detach(), blk.ln1.b.detach()
    d, dh = W.shape
    w = g[None] * (k @ W.T)  # w_j = diag(gamma) W_Q k_j
    kappa = math.sqrt(d) * w.norm(dim=-1) / math.sqrt(dh)
    log_pi = k @ (delta @ W + b) / math.sqrt(dh)
    kap, m, lp = attention.vmf_parameters(
        k.T[None, None, None].permute(0, 1, 2, 4, 3), W[None], b[None], g, delta, dh**-0.5
    )
    torch.testing.assert_close(kap[0, 0, 0], kappa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp[0, 0, 0], log_pi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m[0, 0, 0].norm(dim=-1), torch.ones(6))
    # the logits equal the model's scores: kappa m . x_hat / sqrt(D) + log pi = q . k / sqrt(dh)
    logits = attention.vmf_logits(kap, m, lp, (x_hat / math.sqrt(d))[None])[0, 0]
    q = cache["blocks.0.attn.hook_q"][0, :, 1]
    torch.testing.assert_close(logits, q @ k.T / math.sqrt(dh), rtol=1e-4, atol=1e-4)


def test_rope_keys_must_be_rotated_into_the_query_frame():
    model = pk.load(_sharp("llama"), device="cpu")
    tokens = torch.randint(0, 65, (2, 10), generator=torch.Generator().manual_seed(4))
    names = ["blocks.0.attn.hook_k", "blocks.0.attn.hook_cos", "blocks.0.attn.hook_sin"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    k = cache["blocks.0.attn.hook_k"]
    seen = attention.rotate_keys_to_query_frame(k, cache[names[1]], cache[names[2]])
    # the diagonal (j = i) sees the unrotated key: R_i^T R_i = I
    diag = seen.diagonal(dim1=2, dim2=3).permute(0, 3, 1, 2)
    torch.testing.assert_close(diag, k, rtol=1e-5, atol=1e-5)
    # off the diagonal the query at i sees k_j rotated by the offset j - i: R_{j-i} k_j
    cos, sin = cache[names[1]][0, 2], cache[names[2]][0, 2]  # position 2 = offset 5 - 3
    k5 = k[:, 5]  # [B, H, dh]
    half = torch.cat([-k5[..., 4:], k5[..., :4]], -1)
    torch.testing.assert_close(seen[:, :, 3, 5], k5 * cos + half * sin, rtol=1e-4, atol=1e-5)
    assert (seen[:, :, 0, 5] - k[:, 5]).abs().max() > 1e-2


def test_hypersphere_from_cached_activations_matches_the_model_run():
    model = pk.load(_sharp("neox"), device="cpu")
    tokens = torch.randint(0, 65, (2, 9), generator=torch.Generator().manual_seed(5))
    names = [f"blocks.{i}.{h}" for i in range(2) for h in ("ln1.hook_normalized", "attn.hook_k")]
    names += [f"blocks.{i}.attn.hook_q" for i in range(2)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    acts = {n: cache[n] for n in names}  # no hook_pattern: the reference comes from q and k
    direct = pk.attention.hypersphere(model, tokens, mode_sequences=1)
    stored = pk.attention.hypersphere(model, acts, mode_sequences=1)
    assert stored.frame["reconstruction_error"].max() < 1e-5
    torch.testing.assert_close(
        torch.tensor(stored.frame["kappa_mean"].values),
        torch.tensor(direct.frame["kappa_mean"].values),
    )
    # the same from an ActivationStore written by pk.cache (float32 keeps the 1e-5 comparison)
    store = pk.cache(model, tokens, names, device="cpu", dtype=torch.float32, progress=False)
    from_store = pk.attention.hypersphere(model, store, mode_sequences=1)
    assert from_store.frame["reconstruction_error"].max() < 1e-5
    torch.testing.assert_close(
        torch.tensor(from_store.frame["kappa_mean"].values),
        torch.tensor(direct.frame["kappa_mean"].values),
    )


def test_constant_kappa_surrogate_kl_is_zero_when_kappa_is_constant():
    gen = torch.Generator().manual_seed(0)
    m = torch.nn.functional.normalize(torch.randn(1, 1, 1, 5, 4, generator=gen), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(1, 5, 4, generator=gen), dim=-1)
    log_pi = torch.randn(1, 1, 1, 5, generator=gen)
    const = torch.full((1, 1, 1, 5), 3.0)
    pattern = attention._causal_softmax(attention.vmf_logits(const, m, log_pi, v))
    assert float(attention.constant_kappa_kl(pattern, const, m, log_pi, v)[0]) < 1e-10
    varied = const * torch.tensor([0.2, 1.0, 3.0, 6.0, 9.0])
    pattern = attention._causal_softmax(attention.vmf_logits(varied, m, log_pi, v))
    assert float(attention.constant_kappa_kl(pattern, varied, m, log_pi, v)[0]) > 1e-3


def test_fixed_point_finds_one_mode_per_separated_cluster():
    gen = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=gen), dim=-1)
    keys = centres.repeat_interleave(5, 0) + 0.05 * torch.randn(15, 16, generator=gen)
    m = torch.nn.functional.normalize(keys, dim=-1)
    starts = m + 0.1 * torch.randn(15, 16, generator=gen)
    n, ends = attention.fixed_point_modes(torch.full((15,), 20.0), m, torch.zeros(15), starts)
    assert int(n) == 3
    # each start ends at the centre of its own cluster
    assert (ends @ centres.T).argmax(-1).tolist() == [i // 5 for i in range(15)]
    assert (ends @ centres.T).max(-1).values.min() > 0.95
    assert attention.spherical_kmeans_modes(m.double().numpy()) == 3
    # a flat mixture (small kappa) has a single mode, the mean direction
    n, _ = attention.fixed_point_modes(torch.full((15,), 0.5), m, torch.zeros(15), starts)
    assert int(n) == 1


def test_hypersphere_rejects_bad_tokens():
    model = pk.load(tiny_causal_lm("gpt2"), device="cpu")
    with pytest.raises(ValueError, match="tokens must be"):
        pk.attention.hypersphere(model, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="layers must be"):
        pk.attention.hypersphere(model, torch.zeros(1, 4, dtype=torch.long), layers=[5])
