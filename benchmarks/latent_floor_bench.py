"""What must the latent-memorization study cost on this machine, whatever the decoder?

The study (``analyses/latent_memorization.py``) is greedy decoding of canary-lm: the final
audit, the audit of every snapshot, and the perturbation sweep (noise scales x draws, each a
re-decode of the probe canaries). This benchmark counts those decodes from the shipped files
and the study's own constants, then times, in one process, three things at the study's shapes:

- ``decode``: one real greedy decode of the probe canaries through the runner the study uses
  (prefix 32, 64 new tokens, KV cache);
- ``linear only``: the same decode's matrix products alone, with the model's weights and the
  same row counts (every projection, MLP and the unembedding of every step, the prefix pass
  included), nothing else: no attention, norms, rotary, sampling or Python;
- ``attention reads only``: the same decode's two attention products per layer and step
  (``q @ K^T`` and ``p @ V`` over the cached positions), nothing else.

and scales each to the whole study. The first of the two floors is arithmetic every decoder
must do (the weights are the model's; a decoder can only do fewer operations by decoding
less); the second is memory traffic a KV cache cannot avoid at this batch. Prints the counts,
the times, the floors and what share of the decode they are. Run: ``python
benchmarks/latent_floor_bench.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "canary-lm"
PREFIX, SUFFIX = 32, 64


def _tokens(path: Path) -> torch.Tensor:
    rows = [json.loads(line)["tokens"] for line in path.read_text().splitlines() if line]
    return torch.tensor(rows, dtype=torch.long)[:, : PREFIX + SUFFIX]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def _linear_only(weights: dict[str, list[torch.Tensor]], head: torch.Tensor, rows: int) -> None:
    """The matrix products of one greedy decode of ``rows`` sequences: the prefix pass (every
    prefix token through every layer, the unembedding at the last one), then 63 one-token
    steps (every layer and the unembedding)."""
    d = head.shape[1]
    x = torch.randn(rows * PREFIX, d)
    for _ in range(SUFFIX):
        for w in weights["d_d"]:
            torch.nn.functional.linear(x, w)
        for w in weights["d_f"]:
            h = torch.nn.functional.linear(x, w)
        for w in weights["f_d"]:
            torch.nn.functional.linear(h, w)
        torch.nn.functional.linear(x[:rows], head)
        x = x[:rows]


def _attention_only(rows: int, layers: int, heads: int, head_dim: int) -> None:
    """Each step's two attention products per layer over the cached positions (each layer's
    preallocated cache read through a view, as the runner's decoding does: the caches of all
    layers together do not fit in the CPU's caches, so they are read from memory)."""
    shape = (rows, heads, PREFIX + SUFFIX, head_dim)
    caches = [(torch.randn(shape), torch.randn(shape)) for _ in range(layers)]
    q = torch.randn(rows, heads, 1, head_dim)
    for step in range(1, SUFFIX):
        t = PREFIX + step
        for keys, values in caches:
            p = torch.matmul(q, keys[:, :, :t].transpose(2, 3))
            torch.matmul(p, values[:, :, :t])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "analyses"))
    import latent_memorization as study

    import probekit as pk

    mem = pk.memorization
    schedule = json.loads((CHECKPOINT / "schedule.json").read_text())
    reps = np.asarray(schedule["repetitions"])
    canaries = _tokens(CHECKPOINT / "data" / "canaries.jsonl")
    n_text = sum(
        len(_tokens(CHECKPOINT / "data" / f"{name}.jsonl")) for name in ("members", "nonmembers")
    )
    lm = pk.models.runner.runner(CHECKPOINT)
    # the probe set of the perturbation sweep: seen once or twice and not extractable, and the
    # never-seen controls (as the study picks it)
    lev = mem.levenshtein(
        mem.greedy_continuation(lm, canaries[:, :PREFIX], SUFFIX, 256), canaries[:, PREFIX:]
    ).numpy()
    probe = ((reps >= 1) & (reps <= 2) & (lev >= 10)) | (reps == 0)
    n_probe = int(probe.sum())
    n_snapshots = len(mem.snapshot_series(CHECKPOINT))
    # decodes of the study, as (rows per decode, number of such decodes)
    decodes = {
        "final audit (canaries + text windows)": (len(canaries) + n_text, 1),
        "snapshot audits": (len(canaries), n_snapshots),
        "perturbation sweep (scales x (draws + 1))": (
            n_probe,
            len(study.SIGMAS) * (study.DRAWS + 1),
        ),
    }
    row_decodes = sum(rows * count for rows, count in decodes.values())

    plain = lm._plain_model()
    cfg = plain.config
    weights: dict[str, list[torch.Tensor]] = {"d_d": [], "d_f": [], "f_d": []}
    for layer in plain.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        weights["d_d"] += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]
        weights["d_d"] += [attn.o_proj.weight]
        weights["d_f"] += [mlp.gate_proj.weight, mlp.up_proj.weight]
        weights["f_d"] += [mlp.down_proj.weight]
    head = plain.lm_head.weight
    probe_tokens = canaries[probe][:, :PREFIX]
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads

    with torch.no_grad():
        t_decode = _best(
            lambda: mem.greedy_continuation(lm, probe_tokens, SUFFIX, 256), args.repeats
        )
        t_linear = _best(lambda: _linear_only(weights, head, n_probe), args.repeats)
        t_attn = _best(
            lambda: _attention_only(n_probe, cfg.num_hidden_layers, heads, head_dim), args.repeats
        )
    flops = (
        2 * sum(w.numel() for ws in weights.values() for w in ws) * n_probe * (PREFIX + SUFFIX - 1)
        + 2 * head.numel() * n_probe * SUFFIX
    )
    scale = row_decodes / n_probe
    print(f"canary-lm: {cfg.num_hidden_layers} layers, d {cfg.hidden_size}, vocab {cfg.vocab_size}")
    print("decodes in the study (rows x count):")
    for name, (rows, count) in decodes.items():
        print(f"  {name}: {rows} x {count}")
    print(f"  = {row_decodes} sequence decodes of {SUFFIX} tokens after a {PREFIX}-token prefix")
    print(f"one decode of the {n_probe} probe canaries, CPU s (best of {args.repeats}):")
    print(f"  decode (runner, as the study):   {t_decode:7.3f}")
    print(
        f"  linear only:                     {t_linear:7.3f}  ({t_linear / t_decode:.0%} of it; "
        f"{flops / t_linear / 1e9:.1f} GFLOP/s)"
    )
    print(f"  attention reads only:            {t_attn:7.3f}  ({t_attn / t_decode:.0%} of it)")
    print(f"scaled to the study's {row_decodes} sequence decodes ({scale:.1f} x this one):")
    print(f"  decoding:                        {t_decode * scale:7.1f} s")
    print(f"  linear-only floor:               {t_linear * scale:7.1f} s")
    print(f"  linear + attention-reads floor:  {(t_linear + t_attn) * scale:7.1f} s")
    print(
        "(the teacher-forced scoring passes and everything that is not decoding come on top; "
        "the snapshot audits also re-score 96 tokens per canary)"
    )


if __name__ == "__main__":
    main()
