"""Batched head-ablation sweep vs the naive loop of run_with_hooks, on a 6-layer transformer.

Every attention head of a 6-layer GPT-2 (the shipped ``checkpoints/compfn`` when present, else
a randomly initialised one of the same shape) is zero- and mean-ablated in turn and the model
scored by teacher-forced next-token accuracy on the same inputs:

- naive: one ``bridge.run_with_hooks`` per head (a hook zeroing that head's slice of
  ``blocks.{l}.attn.hook_z``), what one writes by hand;
- batched: ``pk.ablation.sweep(..., share_prefix=False)``, all heads' variants laid along the
  batch dimension, in chunks of ``--batch-size`` rows, every row run from the embedding;
- batched + shared prefix: ``pk.ablation.sweep(...)`` (the default), each variant of layer
  ``l`` run from block ``l`` on, the clean residual stream entering it replayed.

Prints the three timings, the speed-ups over the loop, the work each does in block-rows
(sequences x transformer blocks actually run, counted with forward hooks: a machine-independent
measure of compute) and the largest difference between the score tables (they must agree),
plus peak RSS. Run: ``python benchmarks/ablation_bench.py``.

What to expect: batching removes per-call overhead and lets small inputs fill the device; it
does not remove compute. Sharing the prefix removes compute: for L layers with H heads each,
the loop runs (L*H + 1) * L block-rows per input and the shared sweep L + H * L(L+1)/2, 150
against 90 here (1.67x). No exact sweep of single heads can save much more: each variant must
run from its layer to the output. On a small CPU the forward pass is compute-bound once a call
holds more than a few sequences, so with many inputs the speed-up tends to that compute ratio;
on a GPU, where a forward of a few sequences is mostly launch overhead, batching is where the
time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from functools import partial
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


def _block_rows(bridge, run) -> int:
    """Sequences x transformer blocks that ``run()`` pushes through the model."""
    count = [0]

    def hook(module, args, output):
        count[0] += (output[0] if isinstance(output, tuple) else output).shape[0]

    handles = [b.original_component.register_forward_hook(hook) for b in bridge.blocks]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return count[0]


def _random_deep_model():
    """A 12-layer GPT-2 with random weights (8 heads, d_model 128, 32 positions)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import probekit as pk

    cfg = GPT2Config(n_layer=12, n_embd=128, n_head=8, n_positions=32, vocab_size=512)
    torch.manual_seed(0)
    return pk.load(GPT2LMHeadModel(cfg).eval(), device="cpu"), "random 12-layer GPT-2"


def attribution(args: argparse.Namespace) -> None:
    """Attribution estimates (one forward + one backward) against the exact sweep (prefix
    shared), at 64 inputs: speed and the rank correlation of the estimated deltas with the
    exact ones, for the loss metric, zero and mean ablation."""
    from scipy.stats import spearmanr

    import probekit as pk

    for bridge, what in (_model(), _random_deep_model()):
        tokens = _inputs(bridge, what, args.attribution_n)
        print(
            f"attribution vs exact: {what}, {bridge.cfg.n_layers} x {bridge.cfg.n_heads} heads, "
            f"{len(tokens)} inputs x {tokens.shape[1]} tokens, metric loss"
        )
        for method in ("zero", "mean"):
            runs = {
                est: partial(
                    pk.ablation.sweep,
                    bridge,
                    tokens,
                    "loss",
                    method=method,
                    estimate=est,
                    batch_size=args.batch_size,
                )
                for est in ("exact", "attribution")
            }
            runs["attribution"]()  # warm-up (first backward allocates)
            times: dict[str, list[float]] = {name: [] for name in runs}
            out = {}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t = time.perf_counter()
                    out[name] = run()
                    times[name].append(time.perf_counter() - t)
            best = {name: min(t) for name, t in times.items()}
            exact, est = out["exact"].frame["delta"], out["attribution"].frame["delta"]
            rho = spearmanr(exact, est)[0]
            top = set(exact.nlargest(5).index) & set(est.nlargest(5).index)
            print(
                f"  {method:>4}: exact {best['exact']:7.3f} s | attribution "
                f"{best['attribution']:6.3f} s ({best['exact'] / best['attribution']:5.1f}x) | "
                f"Spearman rho {rho:+.3f} | top-5 overlap {len(top)}/5 (best of {args.repeats})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[1, 4, 16, 64], help="input sequences (one run each)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batched forward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--attribution",
        action="store_true",
        help="run only the attribution-vs-exact comparison (issue: fast sweeps)",
    )
    parser.add_argument("--attribution-n", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.attribution:
        attribution(args)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return

    import probekit as pk

    bridge, what = _model()
    print(
        f"model: {what}, {bridge.cfg.n_layers} layers x {bridge.cfg.n_heads} heads; torch "
        f"threads {args.threads}; rows per batched forward {args.batch_size}"
    )
    for n in args.n:
        tokens = _inputs(bridge, what, n)
        for method in ("zero", "mean"):
            runs = {"loop": partial(naive_sweep, bridge, tokens, method)}
            for name, share in (("batched", False), ("shared", True)):
                runs[name] = partial(
                    pk.ablation.sweep,
                    bridge,
                    tokens,
                    "accuracy",
                    method=method,
                    batch_size=args.batch_size,
                    share_prefix=share,
                )
            times: dict[str, list[float]] = {name: [] for name in runs}
            out = {}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t = time.perf_counter()
                    out[name] = run()
                    times[name].append(time.perf_counter() - t)
            naive = out.pop("loop")
            diff = max(
                abs(row.score - naive[(row.layer, row.head)])
                for result in out.values()
                for row in result.frame.itertuples()
            )
            work = {name: _block_rows(bridge, run) for name, run in runs.items()}
            best = {name: min(t) for name, t in times.items()}
            print(
                f"n={n:3d} x {tokens.shape[1]} tokens, {method:>4}: loop {best['loop']:6.3f} s"
                f" | batched {best['batched']:6.3f} s ({best['loop'] / best['batched']:4.2f}x)"
                f" | batched + shared prefix {best['shared']:6.3f} s "
                f"({best['loop'] / best['shared']:4.2f}x) | block-rows loop/batched/shared "
                f"{work['loop']}/{work['batched']}/{work['shared']} | max |score diff| "
                f"{diff:.1e} (best of {args.repeats})"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
