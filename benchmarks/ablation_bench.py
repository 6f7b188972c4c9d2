"""Batched head-ablation sweep vs the naive loop of run_with_hooks, on a 6-layer transformer.

Every attention head of a 6-layer GPT-2 (the shipped ``checkpoints/compfn`` when present, else
a randomly initialised one of the same shape) is zero- and mean-ablated in turn and the model
scored by teacher-forced next-token accuracy on the same inputs:

- naive: one ``bridge.run_with_hooks`` per head (a hook zeroing that head's slice of
  ``blocks.{l}.attn.hook_z``), what one writes by hand;
- batched: ``pk.ablation.sweep(..., batched=True)``, all heads' variants laid along the batch
  dimension, in chunks of ``--batch-size`` rows.

Prints both timings, their ratio and the largest difference between the two score tables
(they must agree), plus peak RSS. Run: ``python benchmarks/ablation_bench.py``.

What to expect: batching removes per-call Python overhead and lets small inputs fill the
device; it does not remove compute. On a small CPU the forward pass is compute-bound once a
call holds more than a few sequences, so the ratio falls towards 1x as ``n`` grows; on a GPU,
where a forward of a few sequences is mostly launch overhead, batching is where the time goes.
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


def _model():
    import probekit as pk

    ckpt = ROOT / "checkpoints" / "compfn"
    if (ckpt / "config.json").is_file():
        return pk.load(ckpt, device="cpu"), "checkpoints/compfn"
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=6, n_embd=48, n_head=4, n_positions=48, vocab_size=34)
    torch.manual_seed(0)
    return pk.load(GPT2LMHeadModel(cfg).eval(), device="cpu"), "random 6-layer GPT-2"


def _inputs(bridge, what: str, n: int) -> torch.Tensor:
    if what == "checkpoints/compfn":
        from probekit.tasks.compositional import CompositionTask

        task = CompositionTask()
        return task.sample(task.in_order(), n, seed=0)[0]
    gen = torch.Generator().manual_seed(0)
    return torch.randint(bridge.cfg.d_vocab, (n, bridge.cfg.n_ctx), generator=gen)


def naive_sweep(bridge, tokens: torch.Tensor, method: str) -> dict[tuple[int, int], float]:
    """One run_with_hooks per (layer, head)."""
    means = {}
    if method == "mean":
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
        means = {name: z.mean(0) for name, z in cache.items()}
    scores = {}
    for layer in range(bridge.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        for head in range(bridge.cfg.n_heads):

            def ablate(z, hook, head=head, name=name):
                z = z.clone()
                z[:, :, head] = 0.0 if method == "zero" else means[name][:, head]
                return z

            with torch.no_grad():
                logits = bridge.run_with_hooks(tokens, fwd_hooks=[(name, ablate)])
            right = logits[:, :-1].argmax(-1) == tokens[:, 1:]
            scores[(layer, head)] = float(right.float().mean())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1, 4, 16, 64], help="input sequences (one run each)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batched forward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import probekit as pk

    bridge, what = _model()
    print(
        f"model: {what}, {bridge.cfg.n_layers} layers x {bridge.cfg.n_heads} heads; torch "
        f"threads {args.threads}; rows per batched forward {args.batch_size}"
    )
    for n in args.n:
        tokens = _inputs(bridge, what, n)
        for method in ("zero", "mean"):
            naive_t, batched_t = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                naive = naive_sweep(bridge, tokens, method)
                naive_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                result = pk.ablation.sweep(
                    bridge, tokens, "accuracy", method=method, batch_size=args.batch_size
                )
                batched_t.append(time.perf_counter() - t)
            diff = max(
                abs(row.score - naive[(row.layer, row.head)]) for row in result.frame.itertuples()
            )
            best_naive, best_batched = min(naive_t), min(batched_t)
            print(
                f"n={n:3d} x {tokens.shape[1]} tokens, {method:>4}: naive loop {best_naive:7.3f} s"
                f" | batched sweep {best_batched:7.3f} s | speed-up "
                f"{best_naive / best_batched:5.2f}x | max |score diff| {diff:.1e} "
                f"(best of {args.repeats})"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
