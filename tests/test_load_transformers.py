"""pk.load on transformer checkpoints, each compared with an independent forward pass."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_causal_lm

import probekit as pk
from probekit.fileio import CheckpointError, save_safetensors_atomic

VOCAB = 65


def _tiny_hf(kind: str):
    return tiny_causal_lm(kind, n_positions=32, vocab_size=VOCAB)


def _hf_logits(model, tokens):
    model.config._attn_implementation = "eager"
    model.eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama"])
def test_hf_directory_logits_match_transformers(kind, tmp_path, word_tokenizer):
    hf = _tiny_hf(kind)
    hf.save_pretrained(tmp_path)
    word_tokenizer.save_pretrained(tmp_path)
    tokens = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    reference = _hf_logits(hf, tokens)

    bridge = pk.load(tmp_path, device="cpu")
    assert type(bridge).__name__ == "TransformerBridge"
    with torch.no_grad():
        logits = bridge(tokens)
    assert (logits - reference).abs().max().item() <= 1e-4
    assert bridge.tokenizer is not None
    assert bridge.tokenizer("w3 w7", add_special_tokens=False)["input_ids"] == [3, 7]
    # hooks are the TransformerLens ones
    _, cache = bridge.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    assert cache["blocks.1.hook_resid_post"].shape == (3, 12, 32)


def test_hf_directory_without_tokenizer_has_none(tmp_path):
    _tiny_hf("gpt2").save_pretrained(tmp_path)
    assert pk.load(tmp_path, device="cpu").tokenizer is None


def test_in_memory_pretrained_model_becomes_bridge():
    hf = _tiny_hf("neox")
    tokens = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    reference = _hf_logits(hf, tokens)
    bridge = pk.load(hf, device="cpu")
    with torch.no_grad():
        assert (bridge(tokens) - reference).abs().max().item() <= 1e-4


def test_truncated_safetensors_names_the_file(tmp_path):
    _tiny_hf("gpt2").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        pk.load(tmp_path, device="cpu")


def test_config_weights_mismatch_names_tensor_and_shapes(tmp_path):
    _tiny_hf("gpt2").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        pk.load(tmp_path, device="cpu")
    message = str(err.value)
    assert "model.safetensors" in message
    assert "'transformer.h.0.attn.c_attn.bias' has shape (96,)" in message
    assert "expects (144,)" in message


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _tiny_hf("gpt2").save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    victim = next(k for k in sd if k.endswith("h.1.mlp.c_fc.weight"))
    del sd[victim]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="mlp.c_fc.weight"):
        pk.load(tmp_path, device="cpu")


def test_unknown_format_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="unknown config"):
        pk.load(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="not a model directory"):
        pk.load(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pk.load(tmp_path / "nope")
    with pytest.raises(ValueError, match="device"):
        pk.load(empty, device="tpu-9000")


# ----------------------------------------------------------------------------- TL legacy


def _tl_config(attn_only: bool, normalization: str | None) -> dict:
    return {
        "n_layers": 2,
        "d_model": 24,
        "n_ctx": 16,
        "d_head": 6,
        "n_heads": 4,
        "d_mlp": None if attn_only else 48,
        "d_vocab": 40,
        "act_fn": "relu",
        "normalization_type": normalization,
        "attn_only": attn_only,
    }


def _tl_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    from probekit.models.loading import tl_legacy_shapes

    g = torch.Generator().manual_seed(seed)
    shapes = tl_legacy_shapes(cfg)
    sd = {}
    for key, shape in shapes.items():
        if key.split(".")[-1].startswith("_"):
            continue
        if key.endswith("W_gate"):
            continue
        if cfg["normalization_type"] is None and (".ln" in key or key.startswith("ln_final")):
            continue
        if cfg["attn_only"] and ".mlp." in key:
            continue
        sd[key] = torch.randn(shape, generator=g) * 0.3
        if key.endswith(".w"):
            sd[key] = 1 + 0.1 * sd[key]
    return sd


def _layer_norm(x, w, b):
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b


def _tl_hand_forward(cfg: dict, sd: dict, tokens: torch.Tensor) -> torch.Tensor:
    """HookedTransformer's forward written out from its definition."""
    T = tokens.shape[1]
    ln = cfg["normalization_type"] == "LN"
    resid = sd["embed.W_E"][tokens] + sd["pos_embed.W_pos"][:T]
    causal = torch.ones(T, T).tril().bool()
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        x = _layer_norm(resid, sd[p + "ln1.w"], sd[p + "ln1.b"]) if ln else resid
        q = torch.einsum("btm,hmd->bthd", x, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("btm,hmd->bthd", x, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("btm,hmd->bthd", x, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg["d_head"])
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        resid = resid + torch.einsum("bqhd,hdm->bqm", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        if not cfg["attn_only"]:
            x = _layer_norm(resid, sd[p + "ln2.w"], sd[p + "ln2.b"]) if ln else resid
            hidden = F.relu(x @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"])
            resid = resid + hidden @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    if ln:
        resid = _layer_norm(resid, sd["ln_final.w"], sd["ln_final.b"])
    return resid @ sd["unembed.W_U"] + sd["unembed.b_U"]


@pytest.mark.parametrize(
    "attn_only, normalization, suffix",
    [(True, None, ".safetensors"), (False, "LN", ".pth"), (False, None, ".safetensors")],
)
def test_tl_legacy_checkpoint_matches_hand_forward(tmp_path, attn_only, normalization, suffix):
    cfg = _tl_config(attn_only, normalization)
    sd = _tl_state_dict(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if suffix == ".pth":
        torch.save(sd, tmp_path / "model_final.pth")
    else:
        save_safetensors_atomic(sd, tmp_path / "model.safetensors")
    tokens = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(3))
    bridge = pk.load(tmp_path, device="cpu")
    with torch.no_grad():
        logits = bridge(tokens)
    assert (logits - _tl_hand_forward(cfg, sd, tokens)).abs().max().item() <= 1e-4
    # TransformerLens hook names are available
    _, cache = bridge.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert cache["blocks.0.attn.hook_pattern"].shape == (3, 4, 10, 10)


def test_tl_legacy_shape_mismatch_names_tensor(tmp_path):
    cfg = _tl_config(True, None)
    sd = _tl_state_dict(cfg)
    sd["blocks.1.attn.W_Q"] = torch.zeros(4, 24, 5)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_safetensors_atomic(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        pk.load(tmp_path)
    assert "blocks.1.attn.W_Q" in str(err.value)
    assert "(4, 24, 5)" in str(err.value) and "(4, 24, 6)" in str(err.value)


# ----------------------------------------------------------------------------- nanoGPT


def _nanogpt_ckpt(bias: bool, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    args = dict(
        n_layer=2, n_head=2, n_embd=16, block_size=20, bias=bias, vocab_size=30, dropout=0.0
    )
    d = 16

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {"transformer.wte.weight": r(30, d), "transformer.wpe.weight": r(20, d)}
    for i in range(2):
        h = f"_orig_mod.transformer.h.{i}."  # torch.compile prefix, as nanoGPT saves it
        sd |= {
            h + "ln_1.weight": 1 + r(d),
            h + "attn.c_attn.weight": r(3 * d, d),
            h + "attn.c_proj.weight": r(d, d),
            h + "ln_2.weight": 1 + r(d),
            h + "mlp.c_fc.weight": r(4 * d, d),
            h + "mlp.c_proj.weight": r(d, 4 * d),
        }
        if bias:
            sd |= {
                h + "ln_1.bias": r(d),
                h + "attn.c_attn.bias": r(3 * d),
                h + "attn.c_proj.bias": r(d),
                h + "ln_2.bias": r(d),
                h + "mlp.c_fc.bias": r(4 * d),
                h + "mlp.c_proj.bias": r(d),
            }
    sd["transformer.ln_f.weight"] = 1 + r(d)
    if bias:
        sd["transformer.ln_f.bias"] = r(d)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return {
        "model_args": args,
        "model": sd,
        "iter_num": 100,
        "best_val_loss": 1.5,
        "config": {"lr": 1e-3},
    }


def _nanogpt_hand_forward(ckpt: dict, tokens: torch.Tensor) -> torch.Tensor:
    """nanoGPT's GPT.forward (model.py) written out: pre-LN, exact GELU, tied head."""
    sd = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    a = ckpt["model_args"]
    d, nh = a["n_embd"], a["n_head"]
    B, T = tokens.shape

    def ln(x, name):
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd.get(name + ".bias"), 1e-5)

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    x = sd["transformer.wte.weight"][tokens] + sd["transformer.wpe.weight"][:T]
    for i in range(a["n_layer"]):
        h = f"transformer.h.{i}."
        q, k, v = lin(ln(x, h + "ln_1"), h + "attn.c_attn").split(d, dim=2)
        q, k, v = (t.view(B, T, nh, d // nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + lin(y.transpose(1, 2).reshape(B, T, d), h + "attn.c_proj")
        x = x + lin(F.gelu(lin(ln(x, h + "ln_2"), h + "mlp.c_fc")), h + "mlp.c_proj")
    return ln(x, "transformer.ln_f") @ sd["lm_head.weight"].T


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_checkpoint_matches_hand_forward(tmp_path, bias):
    ckpt = _nanogpt_ckpt(bias)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    tokens = torch.randint(0, 30, (2, 15), generator=torch.Generator().manual_seed(4))
    for source in (tmp_path, tmp_path / "ckpt.pt"):
        bridge = pk.load(source, device="cpu")
        with torch.no_grad():
            logits = bridge(tokens)
        assert (logits - _nanogpt_hand_forward(ckpt, tokens)).abs().max().item() <= 1e-4


def test_nanogpt_missing_tensor_named(tmp_path):
    ckpt = _nanogpt_ckpt(True)
    del ckpt["model"]["_orig_mod.transformer.h.1.mlp.c_fc.weight"]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"ckpt.pt.*h\.1\.mlp\.c_fc\.weight"):
        pk.load(tmp_path)


class _Exploit:
    """Unpickling this runs os.mkdir: the canary for code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _nanogpt_ckpt(True)
    ckpt["config"] = _Exploit(marker)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        pk.load(tmp_path)
    assert not marker.exists()
    # the same refusal for a legacy TransformerLens .pth
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(_tl_config(True, None)))
    torch.save({"embed.W_E": _Exploit(marker)}, legacy / "model.pth")
    with pytest.raises(CheckpointError, match="trust_pickle"):
        pk.load(legacy)
    assert not marker.exists()


def test_trust_pickle_allows_rich_checkpoints(tmp_path):
    ckpt = _nanogpt_ckpt(True)
    ckpt["config"] = _NotATensor()
    torch.save(ckpt, tmp_path / "ckpt.pt")
    tokens = torch.randint(0, 30, (1, 5))
    bridge = pk.load(tmp_path, trust_pickle=True, device="cpu")
    with torch.no_grad():
        assert (bridge(tokens) - _nanogpt_hand_forward(ckpt, tokens)).abs().max() <= 1e-4


class _NotATensor:
    """A harmless custom object: weights_only refuses it, trust_pickle accepts it."""


def test_truncated_pickle_names_the_file(tmp_path):
    torch.save(_nanogpt_ckpt(True), tmp_path / "ckpt.pt")
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        pk.load(tmp_path)


def test_fingerprint_stable_and_sensitive(tmp_path):
    _tiny_hf("gpt2").save_pretrained(tmp_path)
    a, b = pk.load(tmp_path, device="cpu"), pk.load(tmp_path, device="cpu")
    assert pk.fingerprint(a) == pk.fingerprint(b)
    assert len(pk.fingerprint(a)) == 64
    with torch.no_grad():
        b.original_model.transformer.h[0].mlp.c_fc.weight[0, 0] += 1e-3
    assert pk.fingerprint(a) != pk.fingerprint(b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_layers": 100_000_000}, "the weights hold 2 layer"),
        ({"d_vocab": 10**9}, "larger than any tensor dimension"),
        ({"n_heads": "four"}, "'n_heads' must be a non-negative integer"),
    ],
)
def test_tl_legacy_config_bombs_are_refused_before_allocating(tmp_path, change, message):
    cfg = _tl_config(True, None)
    save_safetensors_atomic(_tl_state_dict(cfg), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(cfg | change))
    with pytest.raises(CheckpointError, match=message):
        pk.load(tmp_path, device="cpu")
