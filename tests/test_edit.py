"""probekit.edit: ROME's rank-one algebra, edits that take, originals left alone, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_causal_lm

import probekit as pk
from probekit.edit.request import mlp_out_proj, weight_view

VOCAB = 65


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(64)}
    vocab["<unk>"] = 64
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


def _tiny(kind: str, path):
    hf = tiny_causal_lm(kind, n_layer=3, n_positions=16, vocab_size=VOCAB)
    hf.save_pretrained(path)
    _word_tokenizer().save_pretrained(path)
    return pk.load(path, device="cpu")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return _tiny("gpt2", tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    return _tiny("neox", tmp_path_factory.mktemp("neox"))


COV_TOKENS = torch.randint(0, 64, (64, 12), generator=torch.Generator().manual_seed(3))


def _request(model, subject="w5", prefix="w9 w2"):
    # Subject-final prompts: a randomly initialised model barely moves information between
    # positions, so the edit is read at the subject itself (kg-ring tests the relation context).
    # The new object is the token the model ranks 20th, so the edit has work to do.
    probe = pk.edit.EditRequest(subject, "", 0, prefix=prefix)
    prompt = pk.edit.prepare(model, probe).prompt
    with torch.no_grad():
        ranked = model(prompt[None])[0, -1, :64].argsort(descending=True)
    return pk.edit.EditRequest(subject, "", f"w{int(ranked[20])}", prefix=prefix)


def _changed(before, after):
    a, b = dict(before.named_parameters()), dict(after.named_parameters())
    return sorted(n for n in a if not torch.equal(a[n], b[n]))


def test_rank_one_update_maps_key_and_is_covariance_optimal():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    cov = a.T @ a / 40
    key = torch.randn(12, generator=gen, dtype=torch.float64)
    shift = torch.randn(6, generator=gen, dtype=torch.float64)
    delta = pk.edit.rank_one_update(key, shift, cov, ridge=0.0)
    assert torch.allclose(delta @ key, shift, atol=1e-10)
    assert torch.linalg.matrix_rank(delta).item() == 1
    # Optimality of min tr(dW C dW^T) s.t. dW k = s: dW C is a multiple of k^T, so dW C v = 0
    # for every v orthogonal to k.
    v = torch.randn(12, generator=gen, dtype=torch.float64)
    v -= (v @ key) / (key @ key) * key
    assert (delta @ cov @ v).abs().max().item() < 1e-10


@pytest.mark.parametrize("kind", ["gpt2", "neox"])
def test_rome_edit_outputs_new_object_with_rank_one_change(kind, request):
    model = request.getfixturevalue(kind)
    edit = _request(model)
    fingerprint = pk.fingerprint(model)
    before = pk.edit.success(model, [edit])
    assert not before.success[0]
    edited = pk.edit.rome(model, edit, layer=1, cov_tokens=COV_TOKENS)
    after = pk.edit.success(edited, [edit])
    assert after.success[0] and after.target_prob[0] > before.target_prob[0]
    assert pk.fingerprint(model) == fingerprint
    unchanged = pk.edit.success(model, [edit]).target_prob.to_numpy()
    assert np.array_equal(unchanged, before.target_prob.to_numpy())
    # Only layer 1's MLP output projection changed, by a rank-one matrix.
    changed = _changed(model, edited)
    assert len(changed) == 1 and "1" in changed[0]
    diff = weight_view(mlp_out_proj(edited, 1)) - weight_view(mlp_out_proj(model, 1))
    # float32 weights: W + dW - W carries rounding noise ~1e-7 |W|, far below dW's one direction
    singular = torch.linalg.svdvals(diff.double())
    assert singular[1] / singular[0] < 1e-3


def test_memit_batch_spreads_over_layers_and_takes(gpt2):
    requests = [_request(gpt2, "w5"), _request(gpt2, "w17", "w3 w8 w1"), _request(gpt2, "w40")]
    fingerprint = pk.fingerprint(gpt2)
    edited = pk.edit.memit(
        gpt2, requests, layers=[0, 1], cov_tokens=COV_TOKENS, mom2_weight=1.0, steps=15, lr=0.5
    )
    assert pk.fingerprint(gpt2) == fingerprint
    assert pk.edit.success(edited, requests).success.all()
    changed = _changed(gpt2, edited)
    assert len(changed) == 2  # the two MLP output projections, nothing else
    for layer in (0, 1):
        diff = weight_view(mlp_out_proj(edited, layer)) - weight_view(mlp_out_proj(gpt2, layer))
        assert diff.abs().max() > 0
        # at most one direction per request (above float32 rounding noise)
        singular = torch.linalg.svdvals(diff.double())
        assert singular[len(requests)] / singular[0] < 1e-3


def test_finetune_baseline_takes_and_leaves_original(gpt2):
    edit = _request(gpt2)
    fingerprint = pk.fingerprint(gpt2)
    edited = pk.edit.finetune(gpt2, edit, layers=[1], steps=30, lr=0.05)
    assert pk.edit.success(edited, [edit]).success[0]
    assert pk.fingerprint(gpt2) == fingerprint
    assert all(p.grad is None for p in gpt2.parameters())


def test_key_covariance_matches_cached_keys(gpt2):
    cov = pk.edit.key_covariance(gpt2, COV_TOKENS, [1], batch_size=7)[1]
    _, cache = gpt2.run_with_cache(COV_TOKENS, names_filter="blocks.1.mlp.hook_post")
    keys = cache["blocks.1.mlp.hook_post"].reshape(-1, cov.shape[0]).double()
    assert torch.allclose(cov.double(), keys.T @ keys / len(keys), atol=1e-5)


def test_bad_requests_give_clear_errors(gpt2):
    with pytest.raises(ValueError, match="subject 'w999' is not in the model's vocabulary"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w999", "w1", "w2"), cov_tokens=COV_TOKENS)
    with pytest.raises(ValueError, match="target 'nope' is not in the model's vocabulary"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w3", "w1", "nope"), cov_tokens=COV_TOKENS)
    with pytest.raises(ValueError, match=r"target token id must lie in 0\.\.64"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w3", "w1", 500), cov_tokens=COV_TOKENS)
    with pytest.raises(ValueError, match=r"target must be a single token"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w3", "w1", "w2 w4"), cov_tokens=COV_TOKENS)
    with pytest.raises(ValueError, match=r"layer must be an integer in 0\.\.2, got 3"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w3", "w1", "w2"), layer=3, cov_tokens=COV_TOKENS)
    with pytest.raises(ValueError, match=r"layers must be an integer in 0\.\.2, got -1"):
        pk.edit.memit(gpt2, [pk.edit.EditRequest("w3", "w1", "w2")], layers=[-1, 1])
    with pytest.raises(ValueError, match="position must be 'subject' or 'last'"):
        pk.edit.rome(
            gpt2, pk.edit.EditRequest("w3", "w1", "w2"), cov_tokens=COV_TOKENS, position="middle"
        )
    with pytest.raises(ValueError, match="give cov_tokens"):
        pk.edit.rome(gpt2, pk.edit.EditRequest("w3", "w1", "w2"))
    with pytest.raises(ValueError, match="request must be a probekit.edit.EditRequest"):
        pk.edit.rome(gpt2, ("w3", "w1", "w2"), cov_tokens=COV_TOKENS)


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama"])
def test_plain_taps_see_and_shift_what_the_bridge_hooks_do(kind, tmp_path):
    """The editing loops run on the plain Hugging Face model with torch hooks at the modules
    the bridge's hooks sit on: the same keys, residuals and shifted logits as the bridge."""
    from probekit.edit import request as req
    from probekit.models.runner import bridge_hooks_only, runner, tapping_runner

    model = _tiny(kind, tmp_path)
    run = runner(model)
    tokens = COV_TOKENS[:5]
    hooks = [
        "blocks.1.hook_resid_post",
        req.mlp_out_hook(model, 2),
        req.key_hook(model, 0),
        "blocks.2.hook_resid_post",
    ]
    assert all(run.tap(h) is not None for h in hooks)
    assert run.tap("blocks.1.attn.hook_pattern") is None
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
    with run.tapped(reads=hooks) as got:
        run.plain_module()(input_ids=tokens, use_cache=False)
    for h in hooks:
        assert torch.allclose(got[h], cache[h], atol=1e-5), h
    shift = torch.randn(32, generator=torch.Generator().manual_seed(0))
    hook = req.mlp_out_hook(model, 1)
    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda t, hook: t + shift)])
    with run.tapped(edits={hook: lambda t: t + shift}):
        got_logits = run.plain_module()(input_ids=tokens, use_cache=False).logits
    assert torch.allclose(got_logits, want, atol=1e-5)
    # the hooks are gone afterwards, and the edit functions agree with the bridge path
    assert torch.allclose(run.logits(tokens), model(tokens), atol=1e-5)
    item = pk.edit.prepare(model, _request(model))
    plain_shift = req.optimise_output_shift(model, item, 1)
    plain_keys = req.subject_keys(model, [item], 1)
    with bridge_hooks_only():
        assert tapping_runner(model, [hook]) is None
        assert torch.allclose(req.optimise_output_shift(model, item, 1), plain_shift, atol=1e-4)
        assert torch.allclose(req.subject_keys(model, [item], 1), plain_keys, atol=1e-5)
    assert tapping_runner(model, [hook]) is run
    with pytest.raises(ValueError, match="cannot be served by the plain model"):
        with run.tapped(reads=["blocks.0.attn.hook_pattern"]):
            pass


def test_a_copy_taps_its_own_modules(gpt2):
    """copy_model deep-copies the runner with the model: the copy's taps hook the copy."""
    from probekit.models.runner import runner

    hook = "blocks.2.hook_resid_post"
    tokens = COV_TOKENS[:3]

    def read(m):
        run = runner(m)
        with run.tapped(reads=[hook]) as got:
            run.plain_module()(input_ids=tokens, use_cache=False)
        return got[hook]

    before = read(gpt2)  # the runner and its taps exist before the copy
    gpt2(tokens)  # a forward pass with gradients leaves graph tensors in the bridge
    work = pk.edit.copy_model(gpt2)
    assert runner(work).tap(hook)[0] is not runner(gpt2).tap(hook)[0]
    pk.edit.apply_deltas(work, {2: torch.ones_like(pk.edit.mlp_weights(work, [2])[2])})
    assert not torch.allclose(read(work), before)
    assert torch.equal(read(gpt2), before)
