"""``probekit demo``: every study in ``analyses/`` on the shipped checkpoints, one index."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probekit.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run every study in analyses/ on the shipped checkpoints"
    )
    p.add_argument("--out", default="report", help="report directory (default: report/)")
    p.add_argument("--only", nargs="*", default=None, help="run only these analyses")
    p.add_argument("--quick", action="store_true", help="smaller data, for a smoke run")
    p.set_defaults(handler=_run)


def analyses_dir() -> Path:
    return REPO_ROOT / "analyses"


def _run(args: argparse.Namespace) -> int:
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
    times: list[tuple[str, float]] = []
    total = time.perf_counter()
    for script in scripts:
        started = time.perf_counter()
        print(f"[demo] {script.stem} ...", flush=True)
        namespace = runpy.run_path(str(script), run_name="probekit_demo")
        if "run" not in namespace:
            raise UsageError(f"{script} defines no run(out, quick=False) function")
        entry = dict(namespace["run"](out, quick=args.quick))
        # Pages are written into out; link them by file name so the index works from any out.
        page = Path(entry["path"])
        entry["path"] = page.name if (out / page.name).is_file() else str(page)
        if entry.get("verdict"):
            entry["description"] = f"{entry['verdict']}. {entry.get('description', '')}".strip()
        entries.append(entry)
        seconds = time.perf_counter() - started
        times.append((script.stem, seconds))
        print(f"[demo] {script.stem}: wrote {entry['path']} in {seconds:.1f}s", flush=True)
    index = report.write_index(entries, out / "index.html", title="probekit demo")
    print(f"[demo] wrote {index}")
    print("[demo] time per study:")
    for name, seconds in times:
        print(f"[demo]   {name:<28} {seconds:7.1f} s")
    print(f"[demo]   {'total':<28} {time.perf_counter() - total:7.1f} s")
    return 0
