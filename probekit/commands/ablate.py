"""``probekit ablate``: which layers / heads a transformer's score depends on.

Runs :func:`probekit.ablation.sweep` on a checkpoint and token-id inputs: every attention head
(``--level head``) or every attention / MLP layer (``--level layer``), zero-, mean- or
resample-ablated, scored by teacher-forced next-token accuracy or loss, or (``--prompt-len``) by
exact match of greedy generations with the ablation active at every step. Writes one HTML report
and a CSV of the table; prints the clean score and the most damaging component.

Inputs: ``--data`` (token ids ``[N, T]`` in .pt/.safetensors/.npy), or, for a checkpoint made by
the ``compfn`` recipe (its ``split.json`` names the task), ``--split heldout|train|out_of_order``
builds one sequence per composition of that split, and generation mode is the default.
"""

from __future__ import annotations

import argparse
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ablate", help="ablate each attention head or layer and score the model (batched sweep)"
    )
    p.add_argument("path", help="transformer checkpoint (Hugging Face directory)")
    p.add_argument("--data", default=None, help="token ids [N, T] (.pt, .safetensors, .npy)")
    p.add_argument(
        "--split",
        default=None,
        choices=["train", "heldout", "out_of_order"],
        help="compfn-style checkpoints: inputs from this split of the task (default heldout)",
    )
    p.add_argument("--level", default="head", choices=["layer", "head"])
    p.add_argument("--component", default="attn", choices=["attn", "mlp"])
    p.add_argument("--method", default="zero", choices=["zero", "mean", "resample"])
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "loss", "logprob"])
    p.add_argument(
        "--estimate",
        default="exact",
        choices=["exact", "attribution"],
        help="exact: run every ablation; attribution: first-order estimates from one forward "
        "and one backward pass (needs --metric loss or logprob; teacher-forced)",
    )
    p.add_argument(
        "--confirm",
        type=int,
        default=0,
        help="with --estimate attribution: run the exact ablation of the N top-ranked components",
    )
    p.add_argument(
        "--prompt-len",
        type=int,
        default=None,
        help="generation mode: greedy-decode after this many tokens and score exact match",
    )
    p.add_argument("--teacher-forced", action="store_true", help="--split: no generation mode")
    p.add_argument("--n", type=int, default=256, help="at most this many inputs (default 256)")
    p.add_argument("--batch-size", type=int, default=128, help="rows per forward (default 128)")
    p.add_argument("--out", default="ablation.html", help="report page (default ablation.html)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)


def _task_inputs(path: Any, split_name: str, n: int, seed: int) -> tuple[Any, int]:
    import json

    import torch

    from probekit.tasks.compositional import CompositionTask

    split_file = path / "split.json"
    if not split_file.is_file():
        raise UsageError(f"--split needs a checkpoint with split.json (compfn); {path} has none")
    record = json.loads(split_file.read_text())
    if "task" not in record:
        raise UsageError(f"{split_file} does not describe a compositional task")
    task = CompositionTask(**record["task"])
    compositions = torch.tensor(record[split_name], dtype=torch.long)[:n]
    x = task.random_inputs(len(compositions), seed)
    return task.sequences(compositions, x), task.prompt_len


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from probekit.inputs import read_data

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"no such checkpoint: {args.path}")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.data is not None and args.split is not None:
        raise UsageError("give --data or --split, not both")
    if args.level == "head" and args.component == "mlp":
        raise UsageError("--component mlp needs --level layer (an MLP layer has no heads)")
    prompt_len = args.prompt_len
    if args.estimate == "attribution" and args.metric == "accuracy":
        raise UsageError(
            "--estimate attribution needs a differentiable --metric (loss or logprob); argmax "
            "accuracy has no gradient"
        )
    if args.confirm < 0:
        raise UsageError(f"--confirm must be >= 0, got {args.confirm}")
    if args.data is not None:
        tokens = read_data(args.data, "--data")
        if isinstance(tokens, list):
            raise UsageError("--data must hold token ids [N, T], not text")
        tokens = tokens[: args.n]
    else:
        tokens, task_prompt = _task_inputs(path, args.split or "heldout", args.n, args.seed)
        generation = not args.teacher_forced and args.estimate == "exact"
        if prompt_len is None and generation and args.metric == "accuracy":
            prompt_len = task_prompt

    import probekit as pk

    model = pk.load(path)
    if not hasattr(model, "cfg") or not hasattr(model.cfg, "n_heads"):
        raise UsageError(f"{args.path} is not a transformer checkpoint")
    result = pk.ablation.sweep(
        model,
        tokens,
        args.metric,
        level=args.level,
        component=args.component,
        method=args.method,
        prompt_len=prompt_len,
        estimate=args.estimate,
        confirm=args.confirm,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    result.title = f"{args.method}-ablation of each {args.component} {args.level}: {path.name}"
    out = Path(args.out)
    page = pk.report.write([result], out, title=f"Ablation sweep of {path.name}")
    csv = out.with_suffix(".csv")
    result.frame.to_csv(csv, index=False)
    s = result.summary
    worst = s["most_damaging"]
    where = f"layer {worst['layer']}" + ("" if worst["head"] is None else f" head {worst['head']}")
    print(
        f"clean {s['metric']} {s['clean']:.4f} on {s['n_inputs']} inputs; most damaging: "
        f"{where} (delta {worst['delta']:+.4f})"
    )
    print(f"report: {page}\ntable: {csv}")
    return 0
