"""``probekit report``: summarise an activation store, or index a directory of report pages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="summarise an activation store, or index a directory of report pages"
    )
    p.add_argument("path", help="an activation store directory, or a directory of .html pages")
    p.add_argument("--out", default=None, help="page to write (default: inside PATH)")
    p.add_argument("--title", default=None)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
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
