"""The ``probekit`` command.

Start-up stays fast: this module imports nothing heavy at the top, so ``probekit --help``
never pays for ``transformer_lens`` (seconds); each command imports what it needs.
Bad arguments exit with status 2 and one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Subcommands defined in ``probekit/commands/<name>.py``, in ``--help`` order.
COMMAND_MODULES = ("audit", "ablate", "grid", "modularity", "shatter", "choose")


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, not usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="probekit",
        description="Load trained transformers and RNNs, cache their activations, analyse, report.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("info", help="what a checkpoint is: format, kind, sizes, hooks, fingerprint")
    p.add_argument("path", help="model directory, nanoGPT ckpt.pt, or probekit RNN directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--all-hooks", action="store_true", help="list every hook name")
    p.add_argument("--trust-pickle", action="store_true", help="allow rich .pt/.pth pickles")

    p = sub.add_parser("cache", help="cache a model's activations on a data file to a store")
    p.add_argument("path", help="model checkpoint")
    p.add_argument(
        "--data",
        required=True,
        help="token ids (.pt/.safetensors/.npy [N, T]), RNN inputs [N, T, in], or text "
        "(.txt one per line, .jsonl with a 'text' field)",
    )
    p.add_argument("--names", required=True, nargs="+", help="hook names to cache")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--positions", default=None, help="'all' (default), an int like -1, or 0,1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-resume", action="store_true", help="replace an existing store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    for name in COMMAND_MODULES:
        # Analysis commands live in probekit/commands/<name>.py, each with
        # ``register(subparsers)`` adding its parser with ``set_defaults(handler=...)``.
        # Those modules import nothing heavy at the top, so --help stays fast.
        if importlib.util.find_spec(f"probekit.commands.{name}") is not None:
            importlib.import_module(f"probekit.commands.{name}").register(sub)

    p = sub.add_parser(
        "report", help="summarise an activation store, or index a directory of report pages"
    )
    p.add_argument("path", help="an activation store directory, or a directory of .html pages")
    p.add_argument("--out", default=None, help="page to write (default: inside PATH)")
    p.add_argument("--title", default=None)

    p = sub.add_parser("train", help="rebuild a shipped checkpoint from its recipe")
    p.add_argument("name", nargs="?", help="recipe name (omit to list them)")
    p.add_argument("--out", default=None, help="output directory (default checkpoints/NAME)")
    p.add_argument("--steps", type=int, default=None, help="override the training steps")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("demo", help="run every study in analyses/ on the shipped checkpoints")
    p.add_argument("--out", default="report", help="report directory (default: report/)")
    p.add_argument("--only", nargs="*", default=None, help="run only these analyses")
    p.add_argument("--quick", action="store_true", help="smaller data, for a smoke run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = getattr(args, "handler", None) or globals()[f"_cmd_{args.command}"]
    try:
        return int(handler(args) or 0)
    except UsageError as err:
        print(f"probekit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"probekit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"probekit {args.command}: interrupted", file=sys.stderr)
        return 130


# ----------------------------------------------------------------------------- info


def describe(model: Any) -> dict[str, Any]:
    """A JSON-able description of a loaded model."""
    from probekit.models.fingerprint import fingerprint

    n_params = sum(p.numel() for p in model.parameters())
    info: dict[str, Any] = {"class": type(model).__name__, "parameters": n_params}
    cfg = getattr(model, "cfg", None)
    if type(model).__name__ == "HookedRNN":
        info |= {"family": "rnn", **model.config_dict()}
    else:
        original = getattr(model, "original_model", None)
        hf_cfg = getattr(original, "config", None)
        info |= {
            "family": "transformer",
            "architecture": getattr(hf_cfg, "model_type", None)
            or getattr(cfg, "original_architecture", None)
            or getattr(cfg, "architecture", None),
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


def _cmd_info(args: argparse.Namespace) -> int:
    from probekit.models.loading import detect_format, load

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"PATH {args.path!r} does not exist")
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


# ----------------------------------------------------------------------------- cache


def read_data_file(path: str | Path) -> Any:
    """Token ids / RNN inputs from .pt/.safetensors/.npy, or texts from .txt/.jsonl."""
    from probekit.fileio import load_pickle_checkpoint, read_safetensors

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--data {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or "text" not in record:
                    raise UsageError(f"--data {path}: line {i + 1} has no 'text' field")
                texts.append(record["text"])
        return texts
    if suffix == ".npy":
        import numpy as np
        import torch

        return torch.from_numpy(np.load(path, allow_pickle=False))
    if suffix == ".safetensors":
        tensors = read_safetensors(path)
    elif suffix in (".pt", ".pth"):
        tensors = load_pickle_checkpoint(path)
    else:
        raise UsageError(
            f"--data {path}: unknown file type {suffix!r}; expected .pt, .safetensors, .npy, "
            ".txt or .jsonl"
        )
    import torch

    if isinstance(tensors, torch.Tensor):
        return tensors
    if isinstance(tensors, dict) and len(tensors) == 1:
        return next(iter(tensors.values()))
    if isinstance(tensors, dict) and "input_ids" in tensors:
        return tensors["input_ids"]
    raise UsageError(
        f"--data {path}: expected one tensor (or 'input_ids'), found {type(tensors).__name__}"
    )


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


def _cmd_cache(args: argparse.Namespace) -> int:
    import torch

    from probekit.activations import cache
    from probekit.models.loading import load

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if not Path(args.path).exists():
        raise UsageError(f"PATH {args.path!r} does not exist")
    data = read_data_file(args.data)
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
    )
    print(f"cached {len(store)} items of {', '.join(store.names)} to {args.out}")
    for name, shape in store.shapes.items():
        print(f"  {name:<40} [{len(store)}, {', '.join(map(str, shape))}]")
    return 0


# ----------------------------------------------------------------------------- report


def _cmd_report(args: argparse.Namespace) -> int:
    from probekit import report
    from probekit.activations import MANIFEST, ActivationStore

    path = Path(args.path)
    if not path.is_dir():
        raise UsageError(f"PATH {args.path!r} is not a directory")
    if (path / MANIFEST).is_file():
        from probekit.activations import summarize

        store = ActivationStore.open(path)
        out = Path(args.out) if args.out else path / "report.html"
        report.write(summarize(store), out, title=args.title or f"Activation store {path.name}")
        print(f"wrote {out}")
        return 0
    pages = sorted(p for p in path.glob("*.html") if p.name != "index.html")
    if not pages:
        raise UsageError(f"PATH {args.path!r} holds neither an activation store nor .html pages")
    out = Path(args.out) if args.out else path / "index.html"
    entries = [
        {"title": p.stem.replace("_", " "), "path": str(p.relative_to(out.parent))} for p in pages
    ]
    report.write_index(entries, out, title=args.title or "probekit report")
    print(f"wrote {out} ({len(entries)} pages)")
    return 0


# ----------------------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
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
    out = Path(args.out) if args.out else REPO_ROOT / "checkpoints" / args.name
    metrics = recipe(out, steps=args.steps, seed=args.seed)
    print(f"wrote {out}")
    print(json.dumps(metrics, indent=2, default=str))
    return 0


# ----------------------------------------------------------------------------- demo


def analyses_dir() -> Path:
    return REPO_ROOT / "analyses"


def _cmd_demo(args: argparse.Namespace) -> int:
    import runpy
    import time

    from probekit import report

    scripts = sorted(p for p in analyses_dir().glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        raise UsageError(f"no analyses found in {analyses_dir()}")
    if args.only:
        known = {p.stem for p in scripts}
        unknown = sorted(set(args.only) - known)
        if unknown:
            raise UsageError(f"--only: unknown analyses {unknown}; known: {sorted(known)}")
        scripts = [p for p in scripts if p.stem in args.only]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for script in scripts:
        started = time.perf_counter()
        print(f"[demo] {script.stem} ...", flush=True)
        namespace = runpy.run_path(str(script), run_name="probekit_demo")
        if "run" not in namespace:
            raise UsageError(f"{script} defines no run(out, quick=False) function")
        entry = namespace["run"](out, quick=args.quick)
        entries.append(entry)
        print(
            f"[demo] {script.stem}: wrote {entry['path']} in {time.perf_counter() - started:.1f}s"
        )
    index = report.write_index(entries, out / "index.html", title="probekit demo")
    print(f"[demo] wrote {index}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
