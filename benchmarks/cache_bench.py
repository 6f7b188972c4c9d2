"""How much does pk.cache cost over a plain forward pass, and does its memory stay flat?

Prints, measured in this one run on this machine:

1. A 4-layer GPT-2-style transformer (d_model 256, batches of 32 x 128 tokens): seconds per
   batch of a plain Hugging Face forward, TransformerLens's ``run_with_cache`` keeping every
   hook in memory, and ``pk.cache`` of 2 hooks streamed to disk; ratios to the plain forward.
2. Peak RSS of ``pk.cache`` (in a fresh subprocess each) for 1x and 10x the data.
3. A 256-unit GRU at T=100: plain ``nn.GRU``, ``HookedRNN.run_with_cache("hook_hidden")`` and
   ``pk.cache`` of ``hook_hidden`` to disk.

Run: ``python benchmarks/cache_bench.py [--quick]``. Results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

VOCAB, LAYERS, D_MODEL, HEADS, SEQ, BATCH = 4096, 4, 256, 4, 128, 32
NAMES = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]


def _hf_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=LAYERS, n_embd=D_MODEL, n_head=HEADS, n_positions=SEQ, vocab_size=VOCAB
    )
    cfg._attn_implementation = "eager"
    return GPT2LMHeadModel(cfg).eval()


def _tokens(n_batches: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (n_batches * BATCH, SEQ), generator=g)


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each function, the functions interleaved per round so
    that a slow phase of the machine hits all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _rss_now_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak-RSS mark (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def transformer(n_batches: int, repeats: int) -> dict:
    import probekit as pk

    hf = _hf_model()
    bridge = pk.load(_hf_model(), device="cpu")
    tokens = _tokens(n_batches)
    batches = tokens.split(BATCH)

    def plain():
        with torch.inference_mode():
            for b in batches:
                hf(b)

    def tl_all_hooks():
        with torch.inference_mode():
            for b in batches:
                _, cache = bridge.run_with_cache(b, return_cache_object=False)
                del cache

    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-"))

    def pk_cache():
        shutil.rmtree(tmp / "store", ignore_errors=True)
        pk.cache(bridge, tokens, NAMES, out=tmp / "store", batch_size=BATCH, progress=False)

    def bridge_forward():
        with torch.inference_mode():
            for b in batches:
                bridge(b)

    with torch.inference_mode():  # warm-up
        hf(batches[0])
        bridge.run_with_cache(batches[0], return_cache_object=False)
    timings = _interleaved(
        {
            "plain_forward_s": plain,
            "bridge_forward_s": bridge_forward,
            "tl_run_with_cache_all_s": tl_all_hooks,
            "pk_cache_2_hooks_disk_s": pk_cache,
        },
        repeats=repeats,
    )
    results = dict(timings)
    results["store_bytes"] = sum(
        f.stat().st_size for f in (tmp / "store").rglob("*") if f.is_file()
    )
    shutil.rmtree(tmp, ignore_errors=True)
    results["per_batch_plain_s"] = results["plain_forward_s"] / n_batches
    results["n_hooks_all"] = len(bridge.hook_dict)
    return results


def _rss_child(n_batches: int) -> tuple[float, float]:
    """RSS just before, and peak RSS during, ``pk.cache`` of ``n_batches`` batches to disk,
    in a fresh process (MiB)."""
    code = f"""
import os, sys, tempfile, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
import cache_bench as cb, probekit as pk
bridge = pk.load(cb._hf_model(), device="cpu")
tokens = cb._tokens({n_batches})
before = cb._rss_now_mib()
cb._reset_peak_rss()
with tempfile.TemporaryDirectory() as tmp:
    pk.cache(bridge, tokens, cb.NAMES, out=tmp + "/s", batch_size=cb.BATCH, progress=False)
after = cb._peak_rss_mib()
print("RSS", before, after)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(row for row in out.stdout.splitlines() if row.startswith("RSS"))
    _, before, after = line.split()
    return float(before), float(after)


def rnn(n_batches: int, hidden: int = 256, T: int = 100, n_in: int = 32) -> dict:
    import probekit as pk

    torch.manual_seed(0)
    gru = torch.nn.GRU(n_in, hidden, batch_first=True).eval()
    hooked = pk.load(gru, device="cpu")
    x = torch.randn(n_batches * BATCH, T, n_in, generator=torch.Generator().manual_seed(1))
    batches = x.split(BATCH)
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-rnn-"))

    def plain():
        with torch.inference_mode():
            for b in batches:
                gru(b)

    def hooked_cache():
        with torch.inference_mode():
            for b in batches:
                hooked.run_with_cache(b, names_filter="hook_hidden")

    def pk_cache():
        shutil.rmtree(tmp / "store", ignore_errors=True)
        pk.cache(hooked, x, "hook_hidden", out=tmp / "store", batch_size=BATCH, progress=False)

    with torch.inference_mode():
        gru(batches[0])
        hooked.run_with_cache(batches[0], names_filter="hook_hidden")
    results = _interleaved(
        {
            "plain_gru_s": plain,
            "hooked_run_with_cache_s": hooked_cache,
            "pk_cache_disk_s": pk_cache,
        },
        repeats=5,
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches (a smoke run)")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    n = args.batches or (4 if args.quick else 24)
    repeats = 1 if args.quick else 3
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    t = transformer(n, repeats)
    plain = t["plain_forward_s"]
    print(
        f"\n[transformer] {LAYERS} layers, d_model {D_MODEL}, vocab {VOCAB}, {n} batches of "
        f"{BATCH}x{SEQ} tokens"
    )
    print(
        f"  plain HF forward                  {plain:8.2f} s   1.00x   ({t['per_batch_plain_s']:.3f} s/batch)"
    )
    print(
        f"  bridge forward (no hooks)         {t['bridge_forward_s']:8.2f} s   "
        f"{t['bridge_forward_s'] / plain:.2f}x"
    )
    print(
        f"  TL run_with_cache, all {t['n_hooks_all']} hooks   {t['tl_run_with_cache_all_s']:8.2f} s   "
        f"{t['tl_run_with_cache_all_s'] / plain:.2f}x"
    )
    print(
        f"  pk.cache, 2 hooks -> disk (fp16)  {t['pk_cache_2_hooks_disk_s']:8.2f} s   "
        f"{t['pk_cache_2_hooks_disk_s'] / plain:.2f}x   ({t['store_bytes'] / 2**20:.0f} MiB written)"
    )

    small = 2 if args.quick else 24  # 24 batches = 96 MiB of fp16 activations: 2 default shards
    b1, r1 = _rss_child(small)
    b10, r10 = _rss_child(small * 10)
    print("\n[memory] peak RSS of pk.cache to disk, fresh process each")
    print(
        f"  {small:4d} batches (1x):  before {b1:7.0f} MiB, peak {r1:7.0f} MiB, growth {r1 - b1:6.0f} MiB"
    )
    print(
        f"  {small * 10:4d} batches (10x): before {b10:7.0f} MiB, peak {r10:7.0f} MiB, growth {r10 - b10:6.0f} MiB"
    )
    print(f"  peak ratio 10x/1x: {r10 / r1:.2f}")

    r = rnn(max(4, n // 2))
    print(f"\n[rnn] GRU 256 units, T=100, input 32, {max(4, n // 2)} batches of {BATCH}")
    print(f"  plain nn.GRU                       {r['plain_gru_s']:8.3f} s   1.00x")
    print(
        f"  HookedRNN.run_with_cache(hidden)   {r['hooked_run_with_cache_s']:8.3f} s   "
        f"{r['hooked_run_with_cache_s'] / r['plain_gru_s']:.2f}x"
    )
    print(
        f"  pk.cache(hook_hidden) -> disk      {r['pk_cache_disk_s']:8.3f} s   "
        f"{r['pk_cache_disk_s'] / r['plain_gru_s']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"transformer": t, "rss": [b1, r1, b10, r10], "rnn": r}, indent=2)
        )


if __name__ == "__main__":
    main()
