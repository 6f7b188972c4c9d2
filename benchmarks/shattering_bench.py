"""The shattering sweep's edit loop on the plain Hugging Face model vs through the bridge.

``pk.shattering.sweep`` on the shipped ``checkpoints/kg-ring`` (ROME and MEMIT at d = 1..4,
``--edits`` edits per distance): per edit it optimises ROME's output shift (40 Adam steps, each
a forward and backward pass with the MLP output shifted at one position), reads the MLP keys
and residuals at the edit position, then the edited model's entity representations (3072
prompts) and four evaluation sets. Two ways of running those forward passes, in one process,
alternating:

- bridge: TransformerLens hooks on the bridge (``run_with_hooks`` / ``run_with_cache``), what
  the sweep did before;
- plain: the plain Hugging Face model that shares the bridge's weight tensors, with torch hooks
  on the modules the bridge's hooks sit on (``Runner.tapped``), the default now.

Prints the times, their ratio, and how far the two sweeps' tables are apart (the same
arithmetic in a different order: ROME agrees to float rounding; MEMIT's two-layer update
amplifies rounding through its output-shift optimisation, which stops at a probability
threshold, so a few edits move more), plus peak RSS. Run: ``python
benchmarks/shattering_bench.py`` (``--edits 2``).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edits", type=int, default=2, help="edits per distance and method")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)

    import contextlib

    import probekit as pk
    from probekit.models.runner import bridge_hooks_only
    from probekit.tasks import knowledge_graph as kg

    checkpoint = ROOT / "checkpoints" / "kg-ring"
    model = pk.load(checkpoint)
    graph = kg.load_graph(checkpoint)
    cov_tokens = kg.walks(graph, 1024, seed=1000)

    def sweep(plain: bool, edits: int):
        with contextlib.nullcontext() if plain else bridge_hooks_only():
            return pk.shattering.sweep(
                model,
                graph,
                cov_tokens,
                methods=["rome", "memit"],
                edits_per_distance=edits,
                layer=1,
                memit_layers=[0, 1],
                eval_items=256,
                seed=0,
                progress=False,
                position="last",
            ).frame

    sweep(True, 1), sweep(False, 1)  # warm-up: first calls, lazily built runners and taps
    times: dict[str, list[float]] = {"bridge": [], "plain": []}
    frames = {}
    for _ in range(args.repeats):
        for name in ("bridge", "plain"):
            start = time.process_time()
            frames[name] = sweep(name == "plain", args.edits)
            times[name].append(time.process_time() - start)
    n = len(frames["plain"])
    bridge, plain = min(times["bridge"]), min(times["plain"])
    print(f"kg-ring, {n} edits (ROME and MEMIT, d = 1..4, {args.edits} per d), one thread")
    print(f"CPU s, best of {args.repeats}: bridge {bridge:.2f} ({bridge / n:.3f} per edit)")
    print(f"CPU s, best of {args.repeats}: plain  {plain:.2f} ({plain / n:.3f} per edit)")
    print(f"ratio bridge / plain: {bridge / plain:.2f}x")
    a, b = frames["bridge"], frames["plain"]
    for method in ("rome", "memit"):
        rows = (a["method"] == method).to_numpy()
        gap = max(
            float((a.loc[rows, col] - b.loc[rows, col]).abs().max())
            for col in ("R", "drop", "target_prob")
        )
        print(f"{method}: largest |difference| in R, drop, target_prob: {gap:.2e}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
