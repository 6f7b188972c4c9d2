"""``probekit info``: what a checkpoint is: format, kind, sizes, hooks, fingerprint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info", help="what a checkpoint is: format, kind, sizes, hooks, fingerprint"
    )
    p.add_argument("path", help="model directory, nanoGPT ckpt.pt, or probekit RNN directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--all-hooks", action="store_true", help="list every hook name")
    p.add_argument("--trust-pickle", action="store_true", help="allow rich .pt/.pth pickles")
    p.set_defaults(handler=_run)


def describe(model: Any) -> dict[str, Any]:
    """A JSON-able description of a loaded model."""
    from probekit.models.fingerprint import fingerprint

    n_params = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {"class": type(model).__name__, "parameters": n_params}
    from probekit.models.runner import runner

    cfg = getattr(model, "cfg", None)
    run = runner(model)
    if run.family == "rnn":
        info |= {"family": "rnn", **model.config_dict()}
    else:
        info |= {
            "family": "transformer",
            "architecture": run.architecture,
            "n_layers": getattr(cfg, "n_layers", None),
            "d_model": getattr(cfg, "d_model", None),
            "n_heads": getattr(cfg, "n_heads", None),
            "d_vocab": getattr(cfg, "d_vocab", None),
            "n_ctx": getattr(cfg, "n_ctx", None),
            "tokenizer": type(model.tokenizer).__name__ if model.tokenizer is not None else None,
        }
    info["hooks"] = list(model.hook_dict)
    info["fingerprint"] = fingerprint(model)
    return info


def _hook_patterns(names: list[str]) -> list[str]:
    """Collapse ``blocks.0.x``, ``blocks.1.x``... into ``blocks.{0..N}.x``."""
    import re

    groups: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        match = re.match(r"^blocks\.(\d+)\.(.*)$", name)
        key = f"blocks.{{}}.{match.group(2)}" if match else name
        if key not in groups:
            groups[key] = []
            order.append(key)
        if match:
            groups[key].append(int(match.group(1)))
    out = []
    for key in order:
        layers = groups[key]
        if layers:
            span = f"{min(layers)}..{max(layers)}" if len(layers) > 1 else str(layers[0])
            out.append(key.replace("{}", "{" + span + "}"))
        else:
            out.append(key)
    return out


def _run(args: argparse.Namespace) -> int:
    from probekit.models.loading import detect_format, load

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"PATH {args.path!r} does not exist")
    if path.is_file() and (path.suffix == ".safetensors" or path.name == "config.json"):
        raise UsageError(
            f"PATH {args.path!r} is one file of a model directory; pass the directory "
            f"{str(path.parent)!r}"
        )
    fmt = detect_format(path)
    model = load(path, device="cpu", trust_pickle=args.trust_pickle)
    info = {"path": str(path), "format": fmt, **describe(model)}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    hooks = info.pop("hooks")
    print(f"{path}  ({fmt})")
    for key, value in info.items():
        if key in ("path", "format") or value is None or isinstance(value, dict) and not value:
            continue
        print(f"  {key:<14} {value}")
    shown = hooks if args.all_hooks else _hook_patterns(hooks)
    print(f"  hooks ({len(hooks)}):")
    for name in shown:
        print(f"    {name}")
    return 0
