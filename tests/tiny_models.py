"""Tiny randomly initialised causal LMs (GPT-2, GPT-NeoX, Llama) for tests, built offline."""

from __future__ import annotations

import torch


def tiny_causal_lm(
    kind: str = "gpt2",
    *,
    n_layer: int = 2,
    n_positions: int = 32,
    vocab_size: int = 65,
    seed: int = 0,
) -> torch.nn.Module:
    """A 2-layer, d_model 32, 4-head model of ``kind`` in {"gpt2", "neox", "llama"}, seeded."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    if kind == "gpt2":
        cfg = GPT2Config(
            n_layer=n_layer, n_embd=32, n_head=4, n_positions=n_positions, vocab_size=vocab_size
        )
        return GPT2LMHeadModel(cfg)
    if kind == "neox":
        cfg = GPTNeoXConfig(
            num_hidden_layers=n_layer,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=n_positions,
            vocab_size=vocab_size,
            rotary_pct=0.25,
        )
        return GPTNeoXForCausalLM(cfg)
    if kind == "llama":
        cfg = LlamaConfig(
            num_hidden_layers=n_layer,
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=n_positions,
            vocab_size=vocab_size,
        )
        return LlamaForCausalLM(cfg)
    raise ValueError(f"kind must be 'gpt2', 'neox' or 'llama', got {kind!r}")
