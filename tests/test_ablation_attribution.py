"""pk.ablation.sweep(estimate="attribution"): each estimate against a central finite difference
of the same ablation done by hand (the derivative of the metric along the ablation direction),
the confirmed rows against the exact sweep, and the errors a user gets."""

from __future__ import annotations

import pytest
import torch
from test_ablation import SEQ, VOCAB, _gpt2

import probekit as pk

EPS = 1e-2


@pytest.fixture(scope="module")
def bridge():
    return pk.load(_gpt2(n_layer=2, n_head=4, d=32, seed=3), device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(VOCAB, (5, SEQ), generator=torch.Generator().manual_seed(2))


def _loss(logits, tokens):
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return float(-lp.mean())


def _directional_derivative(bridge, tokens, layer, head, value):
    """d loss / d eps of z_head -> z_head + eps (value - z_head), by central differences."""

    def run(eps):
        def hook(z, hook):
            z = z.clone()
            target = torch.zeros_like(z[:, :, head]) if value is None else value[: z.shape[1]]
            z[:, :, head] = z[:, :, head] + eps * (target - z[:, :, head])
            return z

        with torch.no_grad():
            logits = bridge.run_with_hooks(
                tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)]
            )
        return _loss(logits, tokens)

    return (run(EPS) - run(-EPS)) / (2 * EPS)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_head_estimates_are_the_first_order_change_of_the_metric(bridge, tokens, method):
    result = pk.ablation.sweep(
        bridge, tokens, "loss", level="head", method=method, estimate="attribution"
    )
    assert result.summary["estimate"] == "attribution"
    assert result.summary["clean"] == pytest.approx(
        _loss(bridge(tokens).detach(), tokens), abs=1e-5
    )
    means = {}
    if method == "mean":
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    for row in result.frame.itertuples():
        value = None
        if method == "mean":
            name = f"blocks.{row.layer}.attn.hook_z"
            means.setdefault(name, cache[name].mean(0))
            value = means[name][:, row.head]
        expected = _directional_derivative(bridge, tokens, row.layer, row.head, value)
        assert row.delta == pytest.approx(expected, rel=2e-3, abs=2e-4)
        assert row.score == pytest.approx(result.summary["clean"] + row.delta, abs=1e-6)
    assert result.frame["exact_delta"].isna().all()


def test_layer_estimate_with_logprob_metric(bridge, tokens):
    result = pk.ablation.sweep(
        bridge, tokens, "logprob", level="layer", component="mlp", estimate="attribution"
    )

    def run(eps):
        def hook(out, hook):
            return out - eps * out  # zero ablation direction: -out

        with torch.no_grad():
            logits = bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", hook)])
        return -_loss(logits, tokens)

    expected = (run(EPS) - run(-EPS)) / (2 * EPS)
    assert result.frame.loc[1, "delta"] == pytest.approx(expected, rel=2e-3, abs=2e-4)
    assert result.summary["higher_is_better"] is True


def test_confirmed_rows_hold_the_exact_sweep_and_the_error(bridge, tokens):
    est = pk.ablation.sweep(
        bridge, tokens, "loss", level="head", method="zero", estimate="attribution", confirm=3
    )
    exact = pk.ablation.sweep(bridge, tokens, "loss", level="head", method="zero")
    done = est.frame.dropna(subset=["exact_delta"])
    assert len(done) == 3 and est.summary["confirmed"] == 3
    # the three the estimate ranks most damaging (largest loss increase)
    assert set(done.index) == set(est.frame["delta"].nlargest(3).index)
    for i, row in done.iterrows():
        assert row.exact_delta == pytest.approx(exact.frame.loc[i, "delta"], abs=1e-5)
        assert row.error == pytest.approx(row.delta - row.exact_delta, abs=1e-9)
    assert -1.0 <= est.summary["rank_correlation_confirmed"] <= 1.0


def test_rnn_unit_groups_estimate_through_the_recurrence():
    from probekit.models import HookedRNN, RNNConfig

    model = HookedRNN(RNNConfig(kind="rnn", input_size=3, hidden_size=6, output_size=2), seed=0)
    x = torch.randn(4, 7, 3, generator=torch.Generator().manual_seed(0))
    groups = [[0, 1], [2, 3, 4], [5]]

    def final_output(out, inputs):
        return out[:, -1, 0]

    result = pk.ablation.sweep(
        model, x, final_output, method="zero", groups=groups, estimate="attribution"
    )
    for g, units in enumerate(groups):

        def run(eps, units=units):
            def hook(h, hook):
                h = h.clone()
                h[:, units] = h[:, units] - eps * h[:, units]
                return h

            with torch.no_grad():
                out = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", hook)])
            return float(out[:, -1, 0].mean())

        expected = (run(EPS) - run(-EPS)) / (2 * EPS)
        assert result.frame.loc[g, "delta"] == pytest.approx(expected, rel=2e-3, abs=2e-5)


def test_attribution_refuses_what_it_cannot_estimate(bridge, tokens):
    with pytest.raises(ValueError, match="differentiable metric"):
        pk.ablation.sweep(bridge, tokens, "accuracy", estimate="attribution")
    with pytest.raises(ValueError, match="teacher-forced"):
        pk.ablation.sweep(bridge, tokens, "logprob", estimate="attribution", prompt_len=3)
    with pytest.raises(ValueError, match="confirm needs"):
        pk.ablation.sweep(bridge, tokens, "loss", confirm=2)
    with pytest.raises(ValueError, match="estimate must be one of"):
        pk.ablation.sweep(bridge, tokens, "loss", estimate="linear")
