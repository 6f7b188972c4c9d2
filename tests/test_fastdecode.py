"""probekit.models.fastdecode: Llama decoding steps, bit for bit Hugging Face's own forward."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_causal_lm

from probekit.models import fastdecode
from probekit.models import runner as runner_module


def _llama(**changes):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=changes.pop("num_key_value_heads", 2),
        intermediate_size=64,
        max_position_embeddings=48,
        vocab_size=65,
        **changes,
    )
    cfg._attn_implementation = "eager"
    return LlamaForCausalLM(cfg).eval()


def _prefilled(model, prefix, extra):
    with torch.no_grad():
        out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    assert runner_module.preallocate_kv(out.past_key_values, extra)
    return out


@pytest.mark.parametrize(
    "changes",
    [{}, {"num_key_value_heads": 4}, {"attention_bias": True, "mlp_bias": True}],
    ids=["gqa", "mha", "biases"],
)
def test_each_step_gives_the_models_own_logits_and_cache_bit_for_bit(changes):
    model = _llama(**changes)
    with torch.no_grad():  # non-zero biases, so a dropped bias would show
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    prefix = torch.randint(0, 65, (5, 7), generator=torch.Generator().manual_seed(0))
    ours, theirs = _prefilled(model, prefix, 12), _prefilled(model, prefix, 12)
    step = fastdecode.llama_stepper(model, ours.past_key_values)
    assert step is not None
    tokens = theirs.logits[:, -1].argmax(-1)
    cache = theirs.past_key_values
    with torch.no_grad():
        for _ in range(12):
            expected = model(input_ids=tokens[:, None], use_cache=True, cache=cache).logits[:, -1]
            got = step(tokens)
            assert torch.equal(got, expected)
            tokens = expected.argmax(-1)
    for a, b in zip(ours.past_key_values.layers, cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    with pytest.raises(RuntimeError, match="full"):
        step(tokens)


def test_runner_decodes_with_it_and_gives_hugging_faces_greedy_tokens(monkeypatch):
    from test_memorization import _hf_greedy

    model = tiny_causal_lm("llama", n_positions=40).eval()
    model.config._attn_implementation = "eager"  # as probekit loads a checkpoint
    calls = []
    real = fastdecode.llama_stepper

    def counting(module, cache):
        step = real(module, cache)
        calls.append(step is not None)
        return step

    monkeypatch.setattr(fastdecode, "llama_stepper", counting)
    prefix = torch.randint(0, 65, (4, 9), generator=torch.Generator().manual_seed(1))
    got = runner_module.runner(model).generate(prefix, 15)
    assert calls == [True]
    with torch.no_grad():
        assert torch.equal(got, _hf_greedy(model, prefix, 15))


def test_anything_it_does_not_reproduce_exactly_is_left_to_the_model():
    prefix = torch.randint(0, 65, (2, 5), generator=torch.Generator().manual_seed(2))
    gpt2 = tiny_causal_lm("gpt2").eval()
    with torch.no_grad():
        cache = gpt2(input_ids=prefix, use_cache=True).past_key_values
    runner_module.preallocate_kv(cache, 4)
    assert fastdecode.llama_stepper(gpt2, cache) is None

    model = _llama()
    assert fastdecode.llama_stepper(model, _prefilled(model, prefix, 4).past_key_values)
    # a cache without preallocated buffers
    with torch.no_grad():
        plain = model(input_ids=prefix, use_cache=True).past_key_values
    assert fastdecode.llama_stepper(model, plain) is None
    # a hook on any submodule (e.g. probekit's taps) must see the real modules run
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *a: None)
    assert fastdecode.llama_stepper(model, _prefilled(model, prefix, 4).past_key_values) is None
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        assert fastdecode.llama_stepper(model, _prefilled(model, prefix, 4).past_key_values) is None
    finally:
        handle.remove()
    # another attention kernel, rotary scaling, training mode
    model.config._attn_implementation = "sdpa"
    assert fastdecode.llama_stepper(model, _prefilled(model, prefix, 4).past_key_values) is None
    model.config._attn_implementation = "eager"
    scaled = _llama(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})
    cache = _prefilled(scaled, prefix, 4).past_key_values
    assert fastdecode.llama_stepper(scaled, cache) is None
    model.train()
    assert fastdecode.llama_stepper(model, _prefilled(model, prefix, 4).past_key_values) is None
