"""How fast is the memorization audit compared with a naive per-sequence ``generate`` loop?

Measured in one process on one model (the shipped ``checkpoints/canary-lm`` if present, else a
random Llama of the same shape) and 512 sequences of 96 tokens (32 prefix + 64 suffix):

- ``audit``: :func:`probekit.memorization.audit` (every score, batched greedy decode with the
  KV cache), sequences/s;
- ``naive generate``: Hugging Face ``generate(do_sample=False)`` one sequence at a time for the
  64 suffix tokens only (extraction alone, no scores), sequences/s, timed on the first
  ``--naive`` sequences;
- ``teacher-forced forward``: one batched forward pass over the 96 tokens (the floor of any
  likelihood score), sequences/s;
- ``decoding limit``: Hugging Face's own batched greedy ``generate`` (KV cache) for all 32-token
  prefixes, in batches of ``--batch-size``, plus the teacher-forced forward pass above: what
  the audit cannot beat without changing the model's arithmetic.

Prints the ratios audit / naive, audit time / limit time and forward / audit, checks the greedy
tokens agree (audit vs one-at-a-time and vs batched generate), and the peak RSS. Run: ``python benchmarks/memorization_bench.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "canary-lm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--naive", type=int, default=64, help="sequences timed for the naive loop")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    import probekit as pk
    from probekit import memorization as mem

    if (CHECKPOINT / "config.json").is_file():
        model = pk.load(CHECKPOINT, device="cpu")
        source = str(CHECKPOINT.relative_to(ROOT))
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=2048,
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=384,
            max_position_embeddings=128,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg).eval()
        source = "random Llama (canary-lm shape)"
    from probekit.models.runner import runner

    lm = runner(model)
    hf = lm.plain_module()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, lm.vocab_size, (args.n, 96), generator=gen)

    mem.audit(model, tokens[:8], batch_size=8)  # warm-up
    start = time.perf_counter()
    result = mem.audit(model, tokens, batch_size=args.batch_size, include_text=False)
    audit_s = time.perf_counter() - start

    start = time.perf_counter()
    naive = []
    for row in tokens[: args.naive]:
        prefix = row[None, :32]
        out = hf.generate(
            prefix,
            attention_mask=torch.ones_like(prefix),
            max_new_tokens=64,
            min_new_tokens=64,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
        naive.append(out[0, 32:])
    naive_s = time.perf_counter() - start
    same = torch.equal(torch.stack(naive), result.generated[: args.naive])

    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, args.n, args.batch_size):
            hf(input_ids=tokens[i : i + args.batch_size], use_cache=False)
    forward_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = []
    with torch.no_grad():
        for i in range(0, args.n, args.batch_size):
            prefix = tokens[i : i + args.batch_size, :32]
            out = hf.generate(
                prefix,
                attention_mask=torch.ones_like(prefix),
                max_new_tokens=64,
                min_new_tokens=64,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
            batched.append(out[:, 32:])
    generate_s = time.perf_counter() - start
    limit_s = generate_s + forward_s
    same_batched = torch.equal(torch.cat(batched), result.generated)

    audit_rate = args.n / audit_s
    naive_rate = args.naive / naive_s
    forward_rate = args.n / forward_s
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: {source}; {args.n} sequences x 96 tokens; {args.threads} thread(s)")
    print(f"audit (all scores, batched KV-cache greedy): {audit_rate:8.1f} seq/s")
    print(f"naive per-sequence generate (extraction only): {naive_rate:8.1f} seq/s")
    print(f"teacher-forced forward only:                 {forward_rate:8.1f} seq/s")
    print(f"forward / audit: {forward_rate / audit_rate:.1f}x")
    print(
        f"decoding limit (HF batched generate {generate_s:.2f} s + forward {forward_s:.2f} s): "
        f"{args.n / limit_s:8.1f} seq/s; audit time / limit time: {audit_s / limit_s:.2f}x "
        "(target <= 1.2x)"
    )
    print(f"audit / naive generate: {audit_rate / naive_rate:.1f}x (target >= 15x)")
    print(f"greedy tokens identical to generate on {args.naive} sequences: {same}")
    print(f"greedy tokens identical to batched generate on all {args.n}: {same_batched}")
    print(f"peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
