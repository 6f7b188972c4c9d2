"""``probekit train``: rebuild a shipped checkpoint from its recipe (the only importer of
:mod:`probekit.train` besides the tests)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from probekit.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="rebuild a shipped checkpoint from its recipe")
    p.add_argument("name", nargs="?", help="recipe name (omit to list them)")
    p.add_argument("--out", default=None, help="output directory (default checkpoints/NAME)")
    p.add_argument("--steps", type=int, default=None, help="override the training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default=None, help="train on this device (recipes that take one: grid-ssl)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1, as the shipped cards were trained: the same seed and "
        "thread count give the same weights)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from probekit.train.recipes import RECIPES

    if args.name is None:
        for name in sorted(RECIPES):
            print(name)
        return 0
    if args.name not in RECIPES:
        raise UsageError(
            f"NAME {args.name!r} is not a recipe; recipes: {', '.join(sorted(RECIPES))}"
        )
    try:
        recipe = RECIPES[args.name]
    except ImportError as err:
        raise UsageError(f"recipe {args.name!r} is not available in this install: {err}") from None
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out) if args.out else REPO_ROOT / "checkpoints" / args.name
    extra = {}
    if args.device is not None:
        import inspect

        from probekit.validation import resolve_device

        if "device" not in inspect.signature(recipe).parameters:
            raise UsageError(f"recipe {args.name!r} does not take --device")
        extra["device"] = str(resolve_device(args.device))
    import torch

    torch.set_num_threads(args.threads)
    metrics = recipe(out, steps=args.steps, seed=args.seed, **extra)
    print(f"wrote {out}")
    print(json.dumps(metrics, indent=2, default=str))
    return 0
