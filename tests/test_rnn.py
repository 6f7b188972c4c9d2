"""HookedRNN: parity with torch's RNN modules and with hand-written recurrences, per-step
caching and interventions inside the recurrence, and the probekit RNN directory format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from probekit.fileio import CheckpointError, read_safetensors, save_safetensors_atomic
from probekit.models.rnn import HookedRNN, RNNConfig, is_rnn_dir

B, T, IN, H = 3, 6, 4, 5
F64 = torch.float64


def _inputs(seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(B, T, IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _torch_module(name: str, batch_first: bool = True) -> nn.Module:
    torch.manual_seed(1)
    factories = {
        "rnn-tanh": lambda: nn.RNN(IN, H, batch_first=batch_first),
        "rnn-relu": lambda: nn.RNN(IN, H, nonlinearity="relu", batch_first=batch_first),
        "gru": lambda: nn.GRU(IN, H, batch_first=batch_first),
        "lstm": lambda: nn.LSTM(IN, H, batch_first=batch_first),
        "lstm-nobias": lambda: nn.LSTM(IN, H, bias=False, batch_first=batch_first),
    }
    return factories[name]().double()


def _model(kind: str, seed: int = 0, **kw) -> HookedRNN:
    if kind == "ctrnn":
        kw = {"nonlinearity": "relu", "dt": 20.0, "tau": 100.0, "convention": "yang2019", **kw}
    return HookedRNN(RNNConfig(kind=kind, input_size=IN, hidden_size=H, **kw), seed=seed).double()


def _set_path(model: HookedRNN, path: str) -> None:
    model.fused = path == "fused"


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("path", ["fused", "loop"])
@pytest.mark.parametrize(
    "name, batch_first",
    [
        ("rnn-tanh", True),
        ("rnn-relu", True),
        ("gru", True),
        ("gru", False),
        ("lstm", True),
        ("lstm-nobias", True),
    ],
)
def test_from_torch_matches_torch_module_at_every_step(name, batch_first, path):
    module = _torch_module(name, batch_first)
    model = HookedRNN.from_torch(module)
    _set_path(model, path)
    x = _inputs()
    g = torch.Generator().manual_seed(2)
    h0 = torch.randn(1, B, H, generator=g, dtype=F64)
    is_lstm = name.startswith("lstm")
    c0 = torch.randn(1, B, H, generator=g, dtype=F64)
    hx = (h0, c0) if is_lstm else h0
    x_torch = x if batch_first else x.transpose(0, 1)
    with torch.no_grad():
        ref_states, ref_final = module(x_torch, hx)
        out, cache = model.run_with_cache(
            x, (h0[0], c0[0]) if is_lstm else h0[0], names_filter="hook_hidden"
        )
        _, final = model(x, (h0[0], c0[0]) if is_lstm else h0[0], return_state=True)
    if not batch_first:
        ref_states = ref_states.transpose(0, 1)
    assert model._last_path == path
    assert cache["hook_hidden"].shape == (B, T, H)
    assert (out - ref_states).abs().max() <= 1e-6
    assert (cache["hook_hidden"] - ref_states).abs().max() <= 1e-6
    if is_lstm:
        assert (final[0] - ref_final[0][0]).abs().max() <= 1e-6
        assert (final[1] - ref_final[1][0]).abs().max() <= 1e-6
    else:
        assert (final - ref_final[0]).abs().max() <= 1e-6


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_fused_and_loop_paths_agree_with_mask_and_dale_signs(kind):
    cfg = RNNConfig(kind=kind, input_size=IN, hidden_size=16, mask_hh=True, ei_sign=True)
    model = HookedRNN(cfg, seed=3)
    with torch.no_grad():
        model.mask_hh.copy_(torch.rand(16, 16, generator=torch.Generator().manual_seed(4)) > 0.5)
    x = _inputs(dtype=torch.float32)
    with torch.no_grad():
        _, fused = model.run_with_cache(x, names_filter="hook_hidden")
        assert model._last_path == "fused"
        model.fused = False
        _, loop = model.run_with_cache(x, names_filter="hook_hidden")
        assert model._last_path == "loop"
    assert (fused["hook_hidden"] - loop["hook_hidden"]).abs().max() <= 1e-6


def test_gru_and_lstm_gate_caches_match_torch_formulas():
    x = _inputs()
    gru = _torch_module("gru")
    model = HookedRNN.from_torch(gru)
    with torch.no_grad():
        states, _ = gru(x)
        _, cache = model.run_with_cache(x)
    prev = torch.cat([torch.zeros(B, 1, H, dtype=F64), states[:, :-1]], dim=1)
    w_ir, w_iz, w_in = gru.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = gru.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = gru.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = gru.bias_hh_l0.chunk(3)
    with torch.no_grad():
        r = torch.sigmoid(x @ w_ir.T + b_ir + prev @ w_hr.T + b_hr)
        z = torch.sigmoid(x @ w_iz.T + b_iz + prev @ w_hz.T + b_hz)
        pre = x @ w_in.T + b_in + r * (prev @ w_hn.T + b_hn)
    for name, ref in [("hook_gate_r", r), ("hook_gate_z", z), ("hook_pre", pre)]:
        assert (cache[name] - ref).abs().max() <= 1e-12, name
    assert (cache["hook_gate_n"] - torch.tanh(pre)).abs().max() <= 1e-12

    lstm = _torch_module("lstm")
    model = HookedRNN.from_torch(lstm)
    with torch.no_grad():
        states, (_, c_n) = lstm(x)
        _, cache = model.run_with_cache(x)
    assert set(model.hook_dict) == {
        "hook_input",
        "hook_gate_i",
        "hook_gate_f",
        "hook_gate_g",
        "hook_gate_o",
        "hook_cell",
        "hook_hidden",
        "hook_output",
    }
    prev = torch.cat([torch.zeros(B, 1, H, dtype=F64), states[:, :-1]], dim=1)
    with torch.no_grad():
        gates = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + prev @ lstm.weight_hh_l0.T
        gi, gf, gg, go = (gates + lstm.bias_hh_l0).chunk(4, dim=-1)
    assert (cache["hook_gate_i"] - torch.sigmoid(gi)).abs().max() <= 1e-12
    assert (cache["hook_gate_f"] - torch.sigmoid(gf)).abs().max() <= 1e-12
    assert (cache["hook_gate_g"] - torch.tanh(gg)).abs().max() <= 1e-12
    assert (cache["hook_gate_o"] - torch.sigmoid(go)).abs().max() <= 1e-12
    assert (cache["hook_cell"][:, -1] - c_n[0]).abs().max() <= 1e-12
    assert (states - cache["hook_gate_o"] * torch.tanh(cache["hook_cell"])).abs().max() <= 1e-12


_F = {
    "relu": lambda v: torch.clamp(v, min=0.0),
    "softplus": lambda v: torch.log1p(torch.exp(v)),
    "tanh": torch.tanh,
    "identity": lambda v: v,
}


def _ctrnn_by_hand(model: HookedRNN, x: torch.Tensor, f, convention: str):
    """Unrolled CTRNN with Dale's law written per sign: positive columns |W|, negative -|W|."""
    alpha = model.cfg.dt / model.cfg.tau
    w = model.weight_hh.detach()
    w_rec = torch.where(model.ei_sign[None, :] > 0, w.abs(), -w.abs()) * model.mask_hh
    h = torch.zeros(x.shape[0], H, dtype=x.dtype)
    states, pres = [], []
    for t in range(x.shape[1]):
        drive = (
            x[:, t] @ model.weight_ih.detach().T
            + model.bias_ih.detach()
            + h @ w_rec.T
            + model.bias_hh.detach()
        )
        if convention == "yang2019":
            pres.append(drive)
            h = (1 - alpha) * h + alpha * f(drive)
        else:
            mix = h * (1 - alpha) + drive * alpha
            pres.append(mix)
            h = f(mix)
        states.append(h)
    return torch.stack(states, 1), torch.stack(pres, 1)


@pytest.mark.parametrize("convention", ["yang2019", "neurogym"])
@pytest.mark.parametrize("f", ["relu", "softplus", "tanh", "identity"])
def test_ctrnn_matches_hand_recurrence_with_mask_and_dale_signs(convention, f):
    model = _model(
        "ctrnn", seed=5, nonlinearity=f, convention=convention, mask_hh=True, ei_sign=True
    )
    with torch.no_grad():
        model.mask_hh.copy_(torch.rand(H, H, generator=torch.Generator().manual_seed(6)) > 0.3)
    assert model.ei_sign.tolist() == [1.0, 1.0, 1.0, 1.0, -1.0]
    x = _inputs()
    with torch.no_grad():
        out, cache = model.run_with_cache(x, names_filter=["hook_pre", "hook_hidden"])
    states, pres = _ctrnn_by_hand(model, x, _F[f], convention)
    assert model._last_path == "loop"
    assert (out - states).abs().max() <= 1e-12
    assert (cache["hook_hidden"] - states).abs().max() <= 1e-12
    assert (cache["hook_pre"] - pres).abs().max() <= 1e-12


# ----------------------------------------------------------------------------- caching


@pytest.mark.parametrize(
    "names_filter",
    ["hook_hidden", ["hook_hidden", "hook_gate_z"], lambda n: n.endswith("hidden"), None],
    ids=["str", "list", "callable", "none"],
)
def test_run_with_cache_holds_every_step_not_only_the_last(names_filter):
    from transformer_lens.ActivationCache import ActivationCache

    gru = _torch_module("gru")
    model = HookedRNN.from_torch(gru)
    x = _inputs()
    with torch.no_grad():
        states, _ = gru(x)
        _, cache = model.run_with_cache(x, names_filter=names_filter)
    assert isinstance(cache, ActivationCache)
    hidden = cache["hook_hidden"]
    assert hidden.shape == (B, T, H)
    assert (hidden - states).abs().max() <= 1e-6
    assert (hidden[:, 0] - hidden[:, -1]).abs().max() > 1e-3  # distinct steps, not one repeated
    for name in model.step_hook_names:
        if name in cache:
            assert cache[name].shape == (B, T, H), name


def test_run_with_cache_options_dict_remove_batch_dim_and_unknown_names():
    model = _model("rnn")
    x = _inputs()[:1]
    with torch.no_grad():
        ref = model(x)
        _, cache = model.run_with_cache(
            x, names_filter="hook_hidden", remove_batch_dim=True, return_cache_object=False
        )
    assert isinstance(cache, dict)
    assert cache["hook_hidden"].shape == (T, H)
    assert torch.equal(cache["hook_hidden"], ref[0])
    with pytest.raises(ValueError, match="hook_gate_r"):
        model.run_with_cache(x, names_filter=["hook_hidden", "hook_gate_r"])


def test_cached_gradients_hold_every_step():
    gru = _torch_module("gru")
    model = HookedRNN.from_torch(gru)
    x = _inputs()
    weights = torch.randn(B, T, H, generator=torch.Generator().manual_seed(7), dtype=F64)
    cache = model.add_caching_hooks(names_filter="hook_hidden", incl_bwd=True)
    (model(x) * weights).sum().backward()
    model.reset_hooks()

    # Reference: autograd on torch's own module, d loss / d h_t through the whole recurrence.
    hs = []
    h = torch.zeros(B, H, dtype=F64)
    for t in range(T):
        h = gru(x[:, t : t + 1], h[None])[1][0]
        h.retain_grad()
        hs.append(h)
    (torch.stack(hs, 1) * weights).sum().backward()
    ref = torch.stack([h.grad for h in hs], 1)
    assert cache["hook_hidden_grad"].shape == (B, T, H)
    assert (cache["hook_hidden_grad"] - ref).abs().max() <= 1e-10


# ----------------------------------------------------------------------------- interventions


@pytest.mark.parametrize("kind", ["rnn", "ctrnn", "gru", "lstm"])
def test_rnn_hidden_ablation_changes_later_steps_only(kind):
    model = _model(kind, seed=8)
    x = _inputs()
    unit, step = 2, 3
    seen = []

    def zero_unit(h, hook):
        seen.append((hook.step, hook.n_steps))
        if hook.step != step:
            return None
        h = h.clone()
        h[:, unit] = 0.0
        return h

    with torch.no_grad():
        base_fused = model(x)
        model.fused = False  # the same arithmetic as the hooked run, so "before t" is bit-exact
        base = model(x)
        edited = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", zero_unit)])
    assert (base_fused - base).abs().max() <= 1e-12
    assert seen == [(t, T) for t in range(T)]
    assert model.hook_hidden.step is None  # reset after the run
    assert torch.equal(edited[:, :step], base[:, :step])
    assert torch.all(edited[:, step, unit] == 0.0)
    assert (base[:, step, unit]).abs().max() > 1e-4
    assert (edited[:, step + 1 :] - base[:, step + 1 :]).abs().max() > 1e-6


def test_hooks_context_and_run_with_cache_hold_intervened_states():
    model = _model("gru", seed=9)
    x = _inputs()

    def zero_unit_1_at_step_2(h, hook):
        if hook.step == 2:
            h = h.clone()
            h[:, 1] = 0.0
            return h

    hooks = [("hook_hidden", zero_unit_1_at_step_2)]
    with torch.no_grad():
        edited = model.run_with_hooks(x, fwd_hooks=hooks)
        with model.hooks(fwd_hooks=hooks):
            out, cache = model.run_with_cache(x, names_filter=["hook_hidden", "hook_gate_z"])
        assert model._last_path == "loop"
        clean, clean_cache = model.run_with_cache(x, names_filter="hook_hidden")
        assert model._last_path == "fused"
    assert torch.equal(out, edited)
    assert torch.equal(cache["hook_hidden"], edited)
    assert torch.all(cache["hook_hidden"][:, 2, 1] == 0.0)
    assert not torch.equal(clean_cache["hook_hidden"], cache["hook_hidden"])
    assert (clean_cache["hook_hidden"] - model(x)).abs().max() <= 1e-6
    assert not model.hook_dict["hook_hidden"].fwd_hooks  # everything removed afterwards


def test_lstm_forget_gate_zeroed_at_one_step_matches_hand_computation():
    lstm = _torch_module("lstm")
    model = HookedRNN.from_torch(lstm)
    x = _inputs()
    step = 2

    def forget_everything(f, hook):
        return torch.zeros_like(f) if hook.step == step else None

    with torch.no_grad():
        edited = model.run_with_hooks(x, fwd_hooks=[("hook_gate_f", forget_everything)])
        h = c = torch.zeros(B, H, dtype=F64)
        states = []
        for t in range(T):
            gates = x[:, t] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0
            gates = gates + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
            i, f, g, o = gates.chunk(4, dim=-1)
            f = torch.zeros_like(f) if t == step else torch.sigmoid(f)
            c = f * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        ref = torch.stack(states, 1)
        clean, _ = lstm(x)
    assert (edited - ref).abs().max() <= 1e-12
    assert (edited[:, step:] - clean[:, step:]).abs().max() > 1e-4


def test_gru_update_gate_of_one_copies_the_previous_state():
    model = _model("gru", seed=10)
    x = _inputs()

    def hold(z, hook):
        return torch.ones_like(z) if hook.step == 4 else None

    with torch.no_grad():
        edited = model.run_with_hooks(x, fwd_hooks=[("hook_gate_z", hold)])
        model.fused = False
        base = model(x)
    assert torch.equal(edited[:, 4], edited[:, 3])
    assert torch.equal(edited[:, :4], base[:, :4])


# ----------------------------------------------------------------------------- inputs


def test_token_ids_match_embedding_lookup_lstm_and_readout_by_hand():
    torch.manual_seed(11)
    vocab, out_size = 13, 7
    emb, lstm, head = (
        nn.Embedding(vocab, IN),
        nn.LSTM(IN, H, batch_first=True),
        nn.Linear(H, out_size),
    )
    model = HookedRNN.from_torch(lstm, embedding=emb, readout=head)
    tokens = torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        ref = head(lstm(emb.weight[tokens])[0])
        logits, cache = model.run_with_cache(tokens, names_filter=["hook_input", "hook_output"])
    assert model.cfg.vocab_size == vocab and model.cfg.output_size == out_size
    assert logits.shape == (B, T, out_size)
    assert (logits - ref).abs().max() <= 1e-6
    assert torch.equal(cache["hook_input"], emb.weight[tokens].detach())
    assert torch.equal(cache["hook_output"], logits)


def test_bad_inputs_raise_errors_naming_argument_and_shape():
    model = _model("gru")
    with pytest.raises(
        ValueError, match=r"x must be float \[batch, time, input_size=4\].*\(3, 6, 5\)"
    ):
        model(torch.zeros(B, T, IN + 1, dtype=F64))
    with pytest.raises(ValueError, match=r"\(6, 4\)"):
        model(torch.zeros(T, IN, dtype=F64))
    with pytest.raises(TypeError, match="no token embedding"):
        model(torch.zeros(B, T, dtype=torch.long))
    with pytest.raises(ValueError, match=r"h0 must be \[batch=3, hidden=5\].*\(3, 4\)"):
        model(_inputs(), torch.zeros(B, H - 1, dtype=F64))
    lm = HookedRNN(RNNConfig(kind="lstm", input_size=IN, hidden_size=H, vocab_size=10))
    with pytest.raises(ValueError, match=r"\[0, 10\).*\[0, 10\]"):
        lm(torch.tensor([[0, 10]]))
    with pytest.raises(TypeError, match=r"pair \(h0, c0\)"):
        lm(torch.tensor([[0, 1]]), torch.zeros(1, H))


def test_from_torch_rejects_multilayer_bidirectional_and_other_modules():
    with pytest.raises(ValueError, match="num_layers=2"):
        HookedRNN.from_torch(nn.GRU(IN, H, num_layers=2))
    with pytest.raises(ValueError, match="bidirectional=True"):
        HookedRNN.from_torch(nn.LSTM(IN, H, bidirectional=True))
    with pytest.raises(TypeError, match="nn.RNN, nn.GRU or nn.LSTM"):
        HookedRNN.from_torch(nn.Linear(IN, H))


# ----------------------------------------------------------------------------- format


def _lm(tmp_path: Path) -> tuple[HookedRNN, Path]:
    cfg = RNNConfig(
        kind="lstm",
        input_size=IN,
        hidden_size=H,
        output_size=3,
        vocab_size=11,
        mask_hh=True,
        ei_sign=True,
        extra={"note": "unit positions from BIMT", "grid": [5, 1]},
    )
    model = HookedRNN(cfg, seed=13).double()
    model.add_extra_tensor("positions", torch.arange(2 * H, dtype=F64).reshape(H, 2))
    return model, model.save(tmp_path / "lm")


def test_save_then_from_dir_round_trip_is_exact(tmp_path):
    model, path = _lm(tmp_path)
    assert is_rnn_dir(path) and not is_rnn_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "probekit-rnn" and config["version"] == 1
    assert config["extra_tensors"] == {"positions": [H, 2]}
    loaded = HookedRNN.from_dir(path)
    assert loaded.cfg == model.cfg
    assert loaded.config_dict() == model.config_dict()
    assert loaded.dtype == F64
    sd, loaded_sd = model.state_dict(), loaded.state_dict()
    assert sd.keys() == loaded_sd.keys()
    for name, tensor in sd.items():
        assert torch.equal(tensor, loaded_sd[name]), name
    assert torch.equal(loaded.positions, model.positions)
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    assert HookedRNN.from_dir(path, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_raise_checkpoint_error_naming_the_file(tmp_path, damage):
    _, path = _lm(tmp_path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        HookedRNN.from_dir(path)


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    _, path = _lm(tmp_path)
    tensors = read_safetensors(path / "model.safetensors")
    tensors["weight_hh"] = torch.zeros(4 * H, H + 1, dtype=F64)
    save_safetensors_atomic(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        HookedRNN.from_dir(path)
    message = str(err.value)
    assert "model.safetensors" in message and "'weight_hh'" in message
    assert str((4 * H, H + 1)) in message and str((4 * H, H)) in message


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    _, path = _lm(tmp_path)
    tensors = read_safetensors(path / "model.safetensors")
    del tensors["readout.bias"]
    save_safetensors_atomic(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['readout.bias'\]"):
        HookedRNN.from_dir(path)
    tensors["readout.bias"] = torch.zeros(3, dtype=F64)
    tensors["stray"] = torch.zeros(2)
    save_safetensors_atomic(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['stray'\]"):
        HookedRNN.from_dir(path)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"kind": "transformer"}, "RNNConfig.kind must be one of 'rnn', 'ctrnn', 'gru', 'lstm'"),
        ({"nonlinearity": "relu"}, "RNNConfig.nonlinearity must be one of 'tanh' for kind 'lstm'"),
        ({"dt": 10.0}, "RNNConfig.dt applies only to kind 'ctrnn'"),
        ({"hidden_size": 0}, "RNNConfig.hidden_size must be a positive integer"),
        ({"colour": "red"}, r"unknown RNNConfig field\(s\) \['colour'\]"),
        ({"format": "hf"}, "RNNConfig.format must be 'probekit-rnn'"),
    ],
)
def test_bad_config_values_name_the_field(tmp_path, change, field):
    _, path = _lm(tmp_path)
    config = json.loads((path / "config.json").read_text())
    with pytest.raises(ValueError, match=field):
        RNNConfig.from_dict({**config, **change})
    (path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match="config.json: " + field):
        HookedRNN.from_dir(path)


def test_ctrnn_config_requires_convention_and_valid_alpha():
    base = {"kind": "ctrnn", "input_size": 2, "hidden_size": 3, "nonlinearity": "softplus"}
    with pytest.raises(
        ValueError, match="RNNConfig.convention must be one of 'yang2019', 'neurogym'"
    ):
        RNNConfig(**base, dt=20.0, tau=100.0)
    with pytest.raises(ValueError, match=r"dt / RNNConfig.tau must lie in \(0, 1\]"):
        RNNConfig(**base, dt=200.0, tau=100.0, convention="neurogym")
    assert RNNConfig(**base, dt=20.0, tau=100.0, convention="neurogym").alpha == pytest.approx(0.2)


def test_initialisation_is_determined_by_the_seed():
    cfg = RNNConfig(kind="gru", input_size=IN, hidden_size=H, output_size=2, vocab_size=9)
    a, b, c = HookedRNN(cfg, seed=1), HookedRNN(cfg, seed=1), HookedRNN(cfg, seed=2)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name
        assert not torch.equal(tensor, c.state_dict()[name]), name
    bound = 1 / H**0.5
    assert a.weight_hh.abs().max() <= bound and a.readout.weight.abs().max() <= bound
