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
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the shipped models are small, and more threads than "
        "free cores make every study several times slower)",
    )
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
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    times: list[tuple[str, float, float]] = []
    total, total_cpu = time.perf_counter(), time.process_time()
    for script in scripts:
        started, started_cpu = time.perf_counter(), time.process_time()
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
        times.append((script.stem, seconds, time.process_time() - started_cpu))
        print(f"[demo] {script.stem}: wrote {entry['path']} in {seconds:.1f}s", flush=True)
    index = report.write_index(entries, out / "index.html", title="probekit demo")
    print(f"[demo] wrote {index}")
    # CPU time is what the study costs; wall time also counts whatever else the machine runs
    print(f"[demo] time per study:{'wall':>24}{'cpu':>10}")
    for name, seconds, cpu in times:
        print(f"[demo]   {name:<28} {seconds:7.1f} s {cpu:7.1f} s")
    wall, cpu = time.perf_counter() - total, time.process_time() - total_cpu
    print(f"[demo]   {'total':<28} {wall:7.1f} s {cpu:7.1f} s")
    return 0
