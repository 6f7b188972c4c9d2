"""pk.cache on Ray actors against the local backend, on the same data, on this machine.

Prints, measured in this one run (each configuration in a fresh subprocess):

1. seconds and items/s of ``pk.cache`` of 2 hooks (float32, to disk) of a 4-layer GPT-2-style
   transformer (d_model 256) over N sequences of 128 tokens: local; Ray with 1 and 2 CPU
   actors. For Ray, the first run in a process (actors start: imports, model shipped) and a
   second run (the actor pool reused) are both timed; ``ray.init`` itself is reported apart.
2. the overhead ratio of each Ray run to the local one (time_ray / time_local);
3. the driver's peak RSS growth during the call (VmHWM reset before it): the local backend
   holds up to two shards of activations, the Ray driver only the inputs in flight;
4. per-shard compute and write seconds on the actors and the shard write rate (MiB/s), from
   which RESULTS.md gives a (marked) estimate for N GPUs.

Run: ``python benchmarks/ray_bench.py [--quick]``. Results go in benchmarks/RESULTS.md.
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

VOCAB, LAYERS, D_MODEL, HEADS, SEQ, BATCH = 4096, 4, 256, 4, 128, 32
NAMES = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
SHARD = 4 * BATCH  # 128 items = 32 MiB of float32 activations per shard


def _model():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import probekit as pk

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=LAYERS, n_embd=D_MODEL, n_head=HEADS, n_positions=SEQ, vocab_size=VOCAB
    )
    return pk.load(GPT2LMHeadModel(cfg).eval(), device="cpu")


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key)) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # Linux: VmHWM := current RSS


def child(mode: str, items: int, out: Path) -> dict:
    """One configuration in this (fresh) process: ``local``, ``ray1`` or ``ray2``."""
    import torch

    torch.set_num_threads(1)
    import probekit as pk

    model = _model()
    tokens = torch.randint(0, VOCAB, (items, SEQ), generator=torch.Generator().manual_seed(0))
    kwargs = dict(batch_size=BATCH, shard_size=SHARD, dtype=torch.float32, progress=False)
    result: dict = {"mode": mode, "items": items}
    if mode != "local":
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = time.perf_counter() - started
        kwargs |= {"backend": "ray", "workers": int(mode[-1])}
    runs = ["first", "second"] if mode != "local" else ["first"]
    for run in runs:
        target = out / f"{mode}-{run}"
        shutil.rmtree(target, ignore_errors=True)
        before = _status("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        store = pk.cache(model, tokens, NAMES, out=target, **kwargs)
        result[f"{run}_s"] = time.perf_counter() - started
        result[f"{run}_peak_growth_mib"] = _status("VmHWM") - before
        result["shards"] = len(store.meta["shards"])
        result["store_mib"] = sum(s["bytes"] for s in store.meta["shards"]) / 2**20
        if mode != "local":
            from probekit.distributed import LAST_RUN

            result[f"{run}_compute_s"] = LAST_RUN["compute_s"]
            result[f"{run}_write_s"] = LAST_RUN["write_s"]
    result["input_mib"] = tokens.numel() * tokens.element_size() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.items, Path(args.out))))
        return
    items = 256 if args.quick else 1024
    tmp = Path(tempfile.mkdtemp(prefix="pk-ray-bench-"))
    results = {}
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for mode in ("local", "ray1", "ray2"):
        cmd = [sys.executable, __file__, "--child", mode, "--items", str(items), "--out", str(tmp)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(tmp, ignore_errors=True)

    local = results["local"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"data: {items} x {SEQ} tokens, {len(NAMES)} hooks of d_model {D_MODEL} in float32 = "
        f"{local['store_mib']:.0f} MiB in {local['shards']} shards of {SHARD} items; inputs "
        f"{local['input_mib']:.2f} MiB"
    )
    print(f"{'backend':<24}{'seconds':>9}{'items/s':>9}{'x local':>9}{'driver peak +MiB':>18}")
    print(
        f"{'local':<24}{local['first_s']:>9.2f}{items / local['first_s']:>9.1f}{1:>9.2f}"
        f"{local['first_peak_growth_mib']:>18.1f}"
    )
    for mode in ("ray1", "ray2"):
        r = results[mode]
        for run in ("first", "second"):
            label = f"ray, {mode[-1]} actor(s), {'cold' if run == 'first' else 'warm'}"
            print(
                f"{label:<24}{r[f'{run}_s']:>9.2f}{items / r[f'{run}_s']:>9.1f}"
                f"{r[f'{run}_s'] / local['first_s']:>9.2f}{r[f'{run}_peak_growth_mib']:>18.1f}"
            )
    for mode in ("ray1", "ray2"):
        r = results[mode]
        compute, write = r["second_compute_s"], r["second_write_s"]
        shard_mib = r["store_mib"] / r["shards"]
        print(
            f"{mode}: ray.init {r['ray_init_s']:.1f} s; per shard (warm run) compute "
            f"{sum(compute) / len(compute):.3f} s, write {sum(write) / len(write):.3f} s "
            f"({shard_mib * len(write) / max(sum(write), 1e-9):.0f} MiB/s per actor)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
