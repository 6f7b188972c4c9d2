"""Analyses read cached activations: a store opened in a fresh process gives the numbers the
live model gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch
from tiny_models import tiny_causal_lm

import probekit as pk


def _in_fresh_process(code: str, tmp_path) -> torch.Tensor:
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(tmp_path / "result.pt")


def test_entity_representations_from_a_store_equal_the_live_model(tmp_path):
    model = pk.load(tiny_causal_lm("gpt2", vocab_size=40), device="cpu")
    entities = torch.arange(12)
    contexts = torch.randint(12, 40, (3, 2), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_resid_post"
    live = pk.shattering.entity_representations(model, entities, hook, contexts)
    prompts = pk.shattering.entity_prompts(entities, contexts)
    pk.cache(
        model,
        prompts,
        hook,
        out=tmp_path / "store",
        positions=-1,
        dtype=torch.float32,
        progress=False,
    )
    cached = _in_fresh_process(
        f"""
        import torch, probekit as pk
        entities = torch.arange(12)
        contexts = torch.tensor({contexts.tolist()})
        reps = pk.shattering.entity_representations(
            {str(tmp_path / "store")!r}, entities, {hook!r}, contexts
        )
        torch.save(reps, {str(tmp_path / "result.pt")!r})
        """,
        tmp_path,
    )
    torch.testing.assert_close(cached, live, atol=1e-6, rtol=1e-5)
    # and R computed from the store equals R from the model
    assert (
        abs(pk.shattering.distortion(cached, 2 * cached) - pk.shattering.distortion(live, 2 * live))
        < 1e-6
    )


def test_audit_records_reopened_in_a_fresh_process_give_the_same_table(tmp_path):
    model = tiny_causal_lm("llama", vocab_size=50)
    tokens = torch.randint(0, 50, (9, 20), generator=torch.Generator().manual_seed(1))
    live = pk.memorization.audit(
        model,
        tokens,
        prefix_len=8,
        suffix_len=12,
        batch_size=4,
        include_text=False,
        out=tmp_path / "audit",
    )
    table = _in_fresh_process(
        f"""
        import torch, probekit as pk
        frame = pk.memorization.audit_frame({str(tmp_path / "audit")!r})
        torch.save(torch.tensor(frame[["ce", "lev", "min_k_pp"]].to_numpy()),
                   {str(tmp_path / "result.pt")!r})
        """,
        tmp_path,
    )
    want = torch.tensor(live.frame[["ce", "lev", "min_k_pp"]].to_numpy())
    torch.testing.assert_close(table, want)
