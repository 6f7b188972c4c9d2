"""``probekit cache``: run a model over a data file and keep its activations in a store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cache", help="cache a model's activations on a data file to a store")
    p.add_argument("path", help="model checkpoint")
    p.add_argument(
        "--data",
        required=True,
        help="token ids (.pt/.safetensors/.npy/.npz[:KEY] [N, T]), RNN inputs [N, T, in], or "
        "text (.txt one per line, .jsonl with a 'text' field)",
    )
    p.add_argument("--names", required=True, nargs="+", help="hook names to cache")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--positions", default=None, help="'all' (default), an int like -1, or 0,1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-resume", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from probekit.commands.audit import _add_ray_flags

    _add_ray_flags(p)
    p.set_defaults(handler=_run)


def _parse_positions(text: str | None) -> Any:
    if text is None or text == "all":
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--positions must be 'all', an int or ints separated by commas, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _run(args: argparse.Namespace) -> int:
    import torch

    from probekit.activations import cache
    from probekit.models.loading import load

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if not Path(args.path).exists():
        raise UsageError(f"PATH {args.path!r} does not exist")
    from probekit.commands.audit import _backend

    backend = _backend(args)
    from probekit.inputs import read_data

    data = read_data(args.data, "--data")
    positions = _parse_positions(args.positions)
    model = load(args.path, device=args.device)
    store = cache(
        model,
        data,
        args.names,
        out=args.out,
        batch_size=args.batch_size,
        device=args.device,
        dtype=getattr(torch, args.dtype),
        positions=positions,
        resume=not args.no_resume,
        progress=not args.quiet,
        **backend,
    )
    print(f"cached {len(store)} items of {', '.join(store.names)} to {args.out}")
    for name, shape in store.shapes.items():
        print(f"  {name:<40} [{len(store)}, {', '.join(map(str, shape))}]")
    return 0
