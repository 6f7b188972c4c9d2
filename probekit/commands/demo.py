"""``probekit demo``: every study in ``analyses/`` on the shipped checkpoints, one index."""

from __future__ import annotations

import argparse
import contextlib
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
        help="torch threads per study (default 1: the shipped models are small, and more "
        "threads than free cores make every study several times slower)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="studies run at once, each in its own process (default: the usable CPU cores, "
        "at most 2 per 1 thread each; 1 runs them one after another in this process)",
    )
    p.set_defaults(handler=_run)


def analyses_dir() -> Path:
    return REPO_ROOT / "analyses"


#: Studies known to take longest; they start first so that the others fill the other cores
#: around them (used when no earlier run's times are at hand).
LONG_FIRST = ("latent_memorization", "representation_shattering", "compositional_ablation")
TIMES_FILE = "_cache/demo_times{}.json"  # "" or "_quick"


def default_jobs(threads: int) -> int:
    """Usable cores // threads per study, at least 1."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // threads)


def run_study(script: str, out: str, quick: bool, threads: int | None) -> tuple[dict, float, float]:
    """Run one study's ``run(out, quick)``; returns ``(entry, wall s, CPU s)``. Module-level so
    that a worker process can run it (``threads`` is set there; ``None`` keeps the caller's)."""
    import resource
    import runpy
    import time

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    started, started_cpu = time.perf_counter(), time.process_time()
    # a study may run part of its work in processes of its own (their CPU counts as its own)
    started_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    print(f"[demo] {Path(script).stem} ...", flush=True)
    namespace = runpy.run_path(script, run_name="probekit_demo")
    if "run" not in namespace:
        raise UsageError(f"{script} defines no run(out, quick=False) function")
    entry = dict(namespace["run"](Path(out), quick=quick))
    seconds = time.perf_counter() - started
    print(
        f"[demo] {Path(script).stem}: wrote {Path(entry['path']).name} in {seconds:.1f}s",
        flush=True,
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - started_children
    return entry, seconds, time.process_time() - started_cpu + children


def _worker_init() -> None:
    """A demo worker ends without the interpreter's teardown of every module (torch,
    transformers, ...): 1.5-3 s per worker, measured, and nothing to save by then (each result
    has been sent, each page written atomically). Registered first, so it runs after every
    exit handler a study registers; multiprocessing's own runs before the process leaves."""
    import atexit
    import os
    import sys

    def leave() -> None:
        try:
            from multiprocessing import util

            util._exit_function()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(0)

    atexit.register(leave)


def _schedule(scripts: list[Path], out: Path, suffix: str) -> list[Path]:
    """Longest first: by the times of the last run into ``out`` when recorded, else
    :data:`LONG_FIRST`, then alphabetical (longest-processing-time-first list scheduling)."""
    import json

    try:
        past = json.loads((out / TIMES_FILE.format(suffix)).read_text())
    except (OSError, ValueError):
        past = {}

    def key(script: Path) -> tuple[float, str]:
        if isinstance(past.get(script.stem), (int, float)):
            return (-float(past[script.stem]), script.stem)
        if script.stem in LONG_FIRST:
            return (-1e9 + LONG_FIRST.index(script.stem), script.stem)
        return (0.0, script.stem)

    return sorted(scripts, key=key)


def _run(args: argparse.Namespace) -> int:
    import json
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
    jobs = default_jobs(args.threads) if args.jobs is None else args.jobs
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    jobs = min(jobs, len(scripts))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[dict, float, float]] = {}
    total, total_cpu = time.perf_counter(), time.process_time()
    import resource

    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    if jobs == 1:
        import torch

        torch.set_num_threads(args.threads)
        for script in scripts:
            results[script.stem] = run_study(str(script), str(out), args.quick, None)
    else:
        # ``jobs`` spawned worker processes (nothing shared with this one), longest study first.
        # A worker runs several studies in turn, so it imports torch and transformers once; each
        # study runs from its own script and seeds its own generators (the verdict lines of a
        # parallel run matched a sequential run's, line by line; benchmarks/RESULTS.md).
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        print(f"[demo] {len(scripts)} studies, {jobs} at a time", flush=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_worker_init
        ) as pool:
            futures = {
                script.stem: pool.submit(run_study, str(script), str(out), args.quick, args.threads)
                for script in _schedule(scripts, out, "_quick" if args.quick else "")
            }
            try:
                for stem, future in futures.items():
                    results[stem] = future.result()
            except BaseException:
                # a failed study stops the demo: the studies not started yet are dropped (the
                # one still running finishes its page), and no index is written
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    entries = []
    for script in scripts:
        entry = dict(results[script.stem][0])
        # Pages are written into out; link them by file name so the index works from any out.
        page = Path(entry["path"])
        entry["path"] = page.name if (out / page.name).is_file() else str(page)
        if entry.get("verdict"):
            entry["description"] = f"{entry['verdict']}. {entry.get('description', '')}".strip()
        entries.append(entry)
    index = report.write_index(entries, out / "index.html", title="probekit demo")
    print(f"[demo] wrote {index}")
    wall = time.perf_counter() - total
    times = {stem: results[stem][1] for stem in sorted(results)}
    times_file = out / TIMES_FILE.format("_quick" if args.quick else "")
    try:  # keep the times of studies this run skipped (--only)
        times = json.loads(times_file.read_text()) | times
    except (OSError, ValueError, TypeError):
        pass
    times_file.parent.mkdir(parents=True, exist_ok=True)
    times_file.write_text(json.dumps(times, indent=1) + "\n")
    # CPU time is what the study costs; wall time also counts whatever else the machine runs
    print(f"[demo] time per study ({jobs} at a time):{'wall':>10}{'cpu':>10}")
    for stem in sorted(results):
        _, seconds, cpu = results[stem]
        print(f"[demo]   {stem:<28} {seconds:7.1f} s {cpu:7.1f} s")
    # the whole cost, worker start-up and imports included (each row above is the study alone)
    cpu = time.process_time() - total_cpu
    if jobs > 1:
        cpu += resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - children_cpu
    print(f"[demo]   {'total':<28} {wall:7.1f} s {cpu:7.1f} s")
    return 0
