"""How long a researcher waits before probekit does anything: ``import probekit`` and
``probekit --help``, each in a fresh process, against the bare interpreter in the same run.

Each command runs ``--repeats`` times, interleaved (bare, import, help, bare, ...), so machine
load hits all three alike; the median wall time of each is printed, with what probekit adds on
top of the interpreter's own start-up (``python -c pass``), and the modules the import pulls in
that would make it slow (torch, transformer_lens, transformers, pandas, plotly, scipy: none may
be imported by ``import probekit`` or ``--help``).

Targets: ``import probekit`` under 0.3 s, ``probekit --help`` under 0.5 s.
Run: ``python benchmarks/startup_bench.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformer_lens", "transformers", "pandas", "plotly", "scipy", "sklearn")

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import probekit": [sys.executable, "-c", "import probekit"],
    "probekit --help": [sys.executable, "-m", "probekit.cli", "--help"],
}


def heavy_modules(code: str) -> list[str]:
    """The heavy modules ``code`` leaves imported, in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            t = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["python -c pass"]
    print(f"median of {args.repeats} fresh processes each (interleaved):")
    for name, seconds in med.items():
        extra = "" if name == "python -c pass" else f"  (+{seconds - base:.3f} s over bare python)"
        print(f"  {name:<18} {seconds:6.3f} s{extra}")
    for name, target in (("import probekit", 0.3), ("probekit --help", 0.5)):
        verdict = "met" if med[name] < target else "NOT met"
        print(f"  target {name} < {target} s: {verdict}")
    print(f"  heavy modules after import probekit: {heavy_modules('import probekit') or 'none'}")
    help_code = "from probekit.cli import _parser\n_parser().format_help()"
    print(f"  heavy modules after building --help: {heavy_modules(help_code) or 'none'}")


if __name__ == "__main__":
    main()
