"""pk.ablation.sweep: each ablation method against an independent computation, the batched
sweep against a naive loop of run_with_hooks, and a planted head that the sweep must find."""

from __future__ import annotations

import pytest
import torch

import probekit as pk
from probekit.models.runner import runner

VOCAB = 24
SEQ = 10


def _gpt2(n_layer: int = 2, n_head: int = 4, d: int = 32, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_layer=n_layer,
        n_embd=d,
        n_head=n_head,
        n_positions=SEQ,
        vocab_size=VOCAB,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger weights than GPT-2's init so ablations visibly matter
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def bridge():
    return pk.load(_gpt2(), device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(VOCAB, (6, SEQ), generator=torch.Generator().manual_seed(1))


def _per_seq_loss(logits, tokens):
    return (
        torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1), reduction="none"
        )
        .reshape(len(tokens), -1)
        .mean(1)
    )


def test_zero_head_equals_zeroing_its_rows_of_W_O(bridge, tokens):
    result = pk.ablation.sweep(bridge, tokens, "loss", level="head", method="zero")
    hf = bridge.original_model
    d_head = bridge.cfg.d_head
    for layer, head in [(0, 1), (1, 3)]:
        w = hf.transformer.h[layer].attn.c_proj.weight  # Conv1D: [d_in = heads*d_head, d_out]
        saved = w.detach().clone()
        with torch.no_grad():
            w[head * d_head : (head + 1) * d_head] = 0.0
            expected = _per_seq_loss(hf(tokens).logits, tokens).mean()
            w.copy_(saved)
            clean = _per_seq_loss(hf(tokens).logits, tokens).mean()
        row = result.frame.query("layer == @layer and head == @head").iloc[0]
        assert row["score"] == pytest.approx(float(expected), abs=1e-5)
    assert result.summary["clean"] == pytest.approx(float(clean), abs=1e-6)


def _hand_patched_loss(bridge, tokens, hook_name, replace):
    def fn(act, hook):
        return replace(act.clone())

    with torch.no_grad():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])
    return float(_per_seq_loss(logits, tokens).mean())


def test_mean_ablation_uses_the_reference_mean_per_position(bridge, tokens):
    reference = torch.randint(VOCAB, (9, SEQ), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, cache = bridge.run_with_cache(reference, names_filter="blocks.1.attn.hook_z")
    mean_z = cache["blocks.1.attn.hook_z"].mean(0)  # [pos, head, d_head]

    def replace(z):
        z[:, :, 2] = mean_z[:, 2]
        return z

    expected = _hand_patched_loss(bridge, tokens, "blocks.1.attn.hook_z", replace)
    result = pk.ablation.sweep(
        bridge, tokens, "loss", level="head", method="mean", reference=reference, layers=[1]
    )
    assert result.frame.query("head == 2")["score"].item() == pytest.approx(expected, abs=1e-5)
    # a layer-level mean ablation of the MLP, the same way
    with torch.no_grad():
        _, cache = bridge.run_with_cache(reference, names_filter="blocks.0.hook_mlp_out")
    mean_mlp = cache["blocks.0.hook_mlp_out"].mean(0)
    expected = _hand_patched_loss(
        bridge, tokens, "blocks.0.hook_mlp_out", lambda a: mean_mlp.expand_as(a).clone()
    )
    result = pk.ablation.sweep(
        bridge, tokens, "loss", level="layer", component="mlp", method="mean", reference=reference
    )
    assert result.frame.query("layer == 0")["score"].item() == pytest.approx(expected, abs=1e-5)


def test_resample_takes_another_inputs_activation(bridge, tokens):
    n = len(tokens)
    seed = 3
    # the documented draw: input i takes input (i + r_i) mod n with r_i in 1..n-1
    g = torch.Generator().manual_seed(seed)
    src = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
    assert bool((src != torch.arange(n)).all())
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens, names_filter="blocks.0.hook_attn_out")
    other = cache["blocks.0.hook_attn_out"][src]
    expected = _hand_patched_loss(bridge, tokens, "blocks.0.hook_attn_out", lambda a: other)
    result = pk.ablation.sweep(
        bridge, tokens, "loss", level="layer", component="attn", method="resample", seed=seed
    )
    assert result.frame.query("layer == 0")["score"].item() == pytest.approx(expected, abs=1e-5)


def _naive_head_sweep(bridge, tokens, method, reference):
    """One run_with_hooks per head: the loop the batched sweep must reproduce."""
    with torch.no_grad():
        _, cache = bridge.run_with_cache(reference, names_filter=lambda n: n.endswith("hook_z"))
    out = {}
    for layer in range(bridge.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(bridge.cfg.n_heads):

            def fn(z, hook, head=head, name=name):
                z = z.clone()
                z[:, :, head] = 0.0 if method == "zero" else cache[name].mean(0)[:, head]
                return z

            with torch.no_grad():
                logits = bridge.run_with_hooks(tokens, fwd_hooks=[(name, fn)])
            out[(layer, head)] = (logits[:, :-1].argmax(-1) == tokens[:, 1:]).float().mean()
    return out


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_batched_sweep_equals_naive_loop(bridge, tokens, method):
    expected = _naive_head_sweep(bridge, tokens, method, tokens)
    # batch_size 10 splits variants across chunks and puts several variants in one chunk
    for batched, batch_size in [(True, 10), (True, 256), (False, 256)]:
        result = pk.ablation.sweep(
            bridge, tokens, "accuracy", method=method, batch_size=batch_size, batched=batched
        )
        assert len(result.frame) == 8
        for row in result.frame.itertuples():
            assert row.score == pytest.approx(float(expected[(row.layer, row.head)]), abs=1e-6)


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama"])
@pytest.mark.parametrize(
    ("level", "component", "method"),
    [("head", "attn", "zero"), ("head", "attn", "resample"), ("layer", "mlp", "mean")],
)
def test_prefix_shared_sweep_equals_naive_loop(kind, level, component, method, monkeypatch):
    """Each variant run from its own layer on (the clean residual stream replayed into it)
    gives the naive loop's numbers, on every architecture, with groups split across chunks."""
    from tiny_models import tiny_causal_lm

    hf = tiny_causal_lm(kind, n_layer=3, n_positions=SEQ, vocab_size=VOCAB).eval()
    with torch.no_grad():  # larger weights than the init, so that every ablation matters
        for p in hf.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    model = pk.load(hf)
    assert runner(model).shareable_blocks() is not None  # the prefix-shared path is taken
    tokens = torch.randint(VOCAB, (5, SEQ), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(pk.ablation, "_MIN_ROWS", 0)  # one group per layer
    kw = {"level": level, "component": component, "method": method, "seed": 1}
    naive = pk.ablation.sweep(model, tokens, "loss", batched=False, **kw)
    for batch_size in (7, 256):
        shared = pk.ablation.sweep(model, tokens, "loss", batch_size=batch_size, **kw)
        assert torch.allclose(shared.scores, naive.scores, atol=5e-6, rtol=0)
    assert naive.frame["delta"].abs().min() > 1e-4  # every ablation changes the loss


def test_prefix_sharing_skips_the_blocks_before_the_ablated_layer(bridge, tokens, monkeypatch):
    """Rows through each block: the clean rows everywhere; a variant of layer l from block l
    on only. With merging (few rows), layers share one forward from the first of them."""
    hf_blocks = bridge.original_model.transformer.h
    rows = [0, 0]

    def count(layer):
        def hook(module, args, output):
            rows[layer] += output.shape[0]

        return hook

    handles = [
        b.original_component.register_forward_hook(count(i)) for i, b in enumerate(hf_blocks)
    ]
    try:
        n = len(tokens)
        monkeypatch.setattr(pk.ablation, "_MIN_ROWS", 0)
        shared = pk.ablation.sweep(bridge, tokens, "loss")
        assert rows == [n + 4 * n, n + 4 * n + 4 * n]  # clean + layer 0 heads; + layer 1 heads
        rows[:] = [0, 0]
        pk.ablation.sweep(bridge, tokens, "loss", share_prefix=False)
        assert rows == [9 * n, 9 * n]
        rows[:] = [0, 0]
        monkeypatch.setattr(pk.ablation, "_MIN_ROWS", 32)  # 6 clean + 24 layer-0 rows < 32
        merged = pk.ablation.sweep(bridge, tokens, "loss")
        assert rows == [9 * n, 9 * n]
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(shared.scores, merged.scores, atol=1e-6, rtol=0)
    # the blocks are restored: a plain forward still runs every block
    rows[:] = [0, 0]
    with torch.no_grad():
        bridge(tokens)
    assert all(isinstance(b, type(hf_blocks[0])) for b in hf_blocks)


def test_generation_mode_ablates_every_decoding_step(bridge, tokens):
    prompt_len = 4

    def greedy(hooks):
        seq = tokens[:, :prompt_len]
        with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
            while seq.shape[1] < SEQ:
                nxt = bridge(seq)[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], 1)
        return seq

    # targets = the clean model's own greedy continuation, so the clean score is exactly 1
    targets = greedy([])
    assert float(
        pk.ablation.sweep(
            bridge, targets, "accuracy", level="layer", prompt_len=prompt_len
        ).summary["clean"]
    ) == pytest.approx(1.0)

    def kill_layer1(a, hook):
        return torch.zeros_like(a)

    ablated = greedy([("blocks.1.hook_attn_out", kill_layer1)])
    expected = (ablated[:, prompt_len:] == targets[:, prompt_len:]).all(1).float().mean()
    result = pk.ablation.sweep(bridge, targets, "accuracy", level="layer", prompt_len=prompt_len)
    assert result.summary["metric"] == "exact_match"
    assert result.frame.query("layer == 1")["score"].item() == pytest.approx(float(expected))


def test_sweep_ranks_the_planted_answer_head_first(bridge):
    """The heads and MLPs of the fixture model scaled to write almost nothing, except layer 1
    head 2, scaled up: the logits (and so the clean argmax answers) come from that head."""
    hf = bridge.original_model
    d_head = bridge.cfg.d_head
    saved = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    try:
        with torch.no_grad():
            for layer, block in enumerate(hf.transformer.h):
                block.mlp.c_proj.weight.mul_(0.01)
                w = block.attn.c_proj.weight
                for head in range(4):
                    scale = 10.0 if (layer, head) == (1, 2) else 0.01
                    w[head * d_head : (head + 1) * d_head].mul_(scale)
        tokens = torch.randint(VOCAB, (16, SEQ), generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            clean = {tuple(t): p for t, p in zip(tokens.tolist(), bridge(tokens).argmax(-1))}

        def agrees_with_clean(logits, inputs):
            answers = torch.stack([clean[tuple(t)] for t in inputs.tolist()])
            return (logits.argmax(-1) == answers).float().mean(1)

        result = pk.ablation.sweep(bridge, tokens, agrees_with_clean, method="mean")
    finally:
        hf.load_state_dict(saved)
    assert result.summary["clean"] == pytest.approx(1.0)
    ranked = result.frame.sort_values("delta")
    assert (ranked.iloc[0]["layer"], ranked.iloc[0]["head"]) == (1, 2)
    assert ranked.iloc[0]["delta"] < -0.3
    assert ranked.iloc[1:]["delta"].abs().max() < 0.1
    assert result.summary["most_damaging"] == {
        "layer": 1,
        "head": 2,
        "delta": pytest.approx(ranked.iloc[0]["delta"]),
    }
    figs = result.figures()
    assert len(figs) == 2 and figs[0].data[0].type == "heatmap"
    assert figs[0].data[0].z.shape == (2, 4)


def test_rnn_unit_groups_are_ablated_inside_the_recurrence():
    from probekit.models import HookedRNN, RNNConfig

    model = HookedRNN(RNNConfig(kind="rnn", input_size=3, hidden_size=6, output_size=2), seed=0)
    x = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0))
    groups = [[0, 1], [2, 3, 4], [5]]

    def final_output(out, inputs):
        return out[:, -1, 0]

    result = pk.ablation.sweep(model, x, final_output, method="zero", groups=groups)
    assert list(result.frame["n_units"]) == [2, 3, 1]
    # by hand: a plain Elman loop with the group's units forced to 0 at every step
    w_ih, w_hh = model.weight_ih.detach(), model.W_rec.detach()
    b = (model.bias_ih + model.bias_hh).detach()
    for g, units in enumerate(groups):
        h = torch.zeros(5, 6)
        for t in range(7):
            h = torch.tanh(x[:, t] @ w_ih.T + h @ w_hh.T + b)
            h[:, units] = 0.0
        expected = model.readout(h)[:, 0].mean().detach()
        assert result.frame.loc[g, "score"] == pytest.approx(float(expected), abs=1e-5)
    # mean over the reference per time step: compare with the hook done by hand
    with torch.no_grad():
        _, cache = model.run_with_cache(x, names_filter="hook_hidden")
    mean_h = cache["hook_hidden"].mean(0)  # [time, hidden]

    def hand(h, hook):
        h = h.clone()
        h[:, 2:5] = mean_h[hook.step, 2:5]
        return h

    with torch.no_grad():
        expected = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", hand)])[:, -1, 0].mean()
    result = pk.ablation.sweep(model, x, final_output, method="mean", groups=groups)
    assert result.frame.loc[1, "score"] == pytest.approx(float(expected), abs=1e-5)


def test_bad_arguments_name_the_argument(bridge, tokens):
    with pytest.raises(ValueError, match="level"):
        pk.ablation.sweep(bridge, tokens, level="neuron")
    with pytest.raises(ValueError, match="method"):
        pk.ablation.sweep(bridge, tokens, method="noise")
    with pytest.raises(ValueError, match="metric"):
        pk.ablation.sweep(bridge, tokens, metric="f1")
    with pytest.raises(ValueError, match='component="mlp"'):
        pk.ablation.sweep(bridge, tokens, level="head", component="mlp")
    with pytest.raises(ValueError, match="inputs"):
        pk.ablation.sweep(bridge, tokens.float())
    with pytest.raises(ValueError, match="layers"):
        pk.ablation.sweep(bridge, tokens, layers=[5])
    with pytest.raises(ValueError, match="reference"):
        pk.ablation.sweep(bridge, tokens, method="mean", reference=tokens[:, :4])
    with pytest.raises(ValueError, match="prompt_len"):
        pk.ablation.sweep(bridge, tokens, prompt_len=SEQ)


def test_cli_ablate_writes_report_and_table(bridge, tokens, tmp_path, capsys):
    from probekit.cli import main

    model_dir = tmp_path / "model"
    _gpt2().save_pretrained(model_dir)  # the same weights as the fixture (seed 0)
    data = tmp_path / "tokens.pt"
    torch.save(tokens, data)
    out = tmp_path / "abl.html"
    code = main(
        ["ablate", str(model_dir), "--data", str(data), "--level", "layer", "--metric", "loss"]
        + ["--out", str(out), "--quiet"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "clean loss" in printed and "most damaging: layer" in printed
    import pandas as pd

    table = pd.read_csv(out.with_suffix(".csv"))
    expected = pk.ablation.sweep(bridge, tokens, "loss", level="layer").frame
    assert list(table["layer"]) == [0, 1]
    assert table["score"].tolist() == pytest.approx(expected["score"].tolist(), abs=1e-5)
    assert out.read_text().count("<html") == 1
    assert main(["ablate", str(model_dir), "--data", str(data), "--component", "mlp"]) == 2
