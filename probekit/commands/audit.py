"""``probekit audit``: memorization audit of a causal LM on a data file -> report + table.

Runs :func:`probekit.memorization.audit` on every sequence of ``--data`` (and ``--nonmembers``,
which adds the membership evaluation with ``--data`` as members), optionally with a reference
model (``ref_ratio``), a latent-memorization pass over ``--checkpoints``, and weight-perturbation
recovery (``--perturb-draws``). Writes ``OUT/report.html``, ``OUT/table.csv``,
``OUT/table.parquet`` and ``OUT/summary.json``.

Data files: ``.txt`` (one sequence per line), ``.jsonl`` (one object per line with ``text`` or
``tokens``), ``.npy``/``.npz[:KEY]``/``.pt``/``.safetensors`` (an integer array ``[N, L]``).
``--redact`` replaces each text in every output by a sha256 prefix and a length. Every
per-sequence record (tokens, per-token log-probabilities, greedy suffix, scores) is written to
``OUT/store`` in the activation-store format, shard by shard; rerunning the same command after
an interruption resumes from the last complete shard, and ``pk.ActivationStore.open(OUT /
"store")`` opens it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "audit", help="memorization audit of a causal LM on a data file -> report + table"
    )
    p.add_argument("model", help="causal LM checkpoint (Hugging Face directory or RNN LM)")
    p.add_argument("--data", required=True, help="sequences: .txt lines, .jsonl, or .npy [N, L]")
    p.add_argument("--nonmembers", default=None, help="known non-members (adds membership)")
    p.add_argument("--reference", default=None, help="reference model on the same tokenizer")
    p.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        help="latent analysis: a checkpoint with snapshots/step-N/, or step-N model directories",
    )
    p.add_argument("--prefix", type=int, default=32, help="prefix tokens (default 32)")
    p.add_argument("--suffix", type=int, default=64, help="suffix tokens (default 64)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--k-percent", type=float, default=20.0, help="k of Min-K%% (default 20)")
    p.add_argument("--lev-threshold", type=float, default=10.0, help="memorized: lev below this")
    p.add_argument("--perturb-draws", type=int, default=0, help="weight-noise draws (default 0)")
    p.add_argument("--sigma", type=float, default=2e-3, help="weight-noise std (default 2e-3)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--redact", action="store_true", help="keyed hash and length instead of texts")
    p.add_argument(
        "--redact-key",
        default=None,
        help="key of the --redact hashes (default: a random key, kept nowhere); the same key "
        "gives the same hashes across reports",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an audit of other data or model in --out"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_ray_flags(p)
    p.set_defaults(handler=_run)


def _checkpoint_series(paths: list[str]) -> dict[int, Any]:
    import re

    from probekit.memorization import snapshot_series

    if len(paths) == 1 and (Path(paths[0]) / "snapshots").is_dir():
        return snapshot_series(paths[0])
    series: dict[int, Any] = {}
    for p in paths:
        match = re.search(r"(\d+)$", Path(p).name)
        if not Path(p).is_dir() or match is None:
            raise UsageError(
                f"--checkpoints {p!r}: expected a directory ending in its step number "
                "(e.g. step-01000), or one checkpoint with snapshots/step-N/"
            )
        series[int(match.group(1))] = p
    return dict(sorted(series.items()))


def _run(args: argparse.Namespace) -> int:
    from probekit.inputs import read_data

    for flag, value in (("--prefix", args.prefix), ("--suffix", args.suffix)):
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.perturb_draws < 0:
        raise UsageError(f"--perturb-draws must be >= 0, got {args.perturb_draws}")
    if not Path(args.model).exists():
        raise UsageError(f"MODEL {args.model!r} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out!r} exists and is not a directory")
    members = read_data(args.data, "--data")
    nonmembers = read_data(args.nonmembers, "--nonmembers") if args.nonmembers else None
    checkpoints = _checkpoint_series(args.checkpoints) if args.checkpoints else None
    from probekit.activations import StaleStoreError

    try:
        run = _audit(args, members, nonmembers, checkpoints, out)
    except StaleStoreError as err:
        raise UsageError(
            f"--out {args.out} holds an audit of another model, data or settings ({err}); "
            "use --force to replace it, or another --out"
        ) from None
    return _write_outputs(args, run, out)


def _audit(args: argparse.Namespace, members: Any, nonmembers: Any, checkpoints: Any, out: Path):
    from probekit import memorization

    return memorization.audit_all(
        args.model,  # a Hugging Face directory loads without booting a bridge
        members,
        nonmembers=nonmembers,
        reference=args.reference,
        checkpoints=checkpoints,
        perturb_draws=args.perturb_draws,
        sigma=args.sigma,
        prefix_len=args.prefix,
        suffix_len=args.suffix,
        batch_size=args.batch_size,
        k_percent=args.k_percent,
        lev_threshold=args.lev_threshold,
        out=out / "store",
        resume=not args.force,
        redact=args.redact,
        redact_key=None if args.redact_key is None else args.redact_key.encode(),
        progress=not args.quiet,
        names=(f"--data {args.data}", f"--nonmembers {args.nonmembers}"),
        **_backend(args),
    )


def _add_ray_flags(p: Any) -> None:
    p.add_argument(
        "--ray",
        action="store_true",
        help="compute the shards on Ray actors (one per GPU, else --workers CPU actors); uses "
        "a running Ray cluster or starts a local one; needs pip install -e '.[ray]'",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="Ray actors (with --ray; default 2 on CPU)"
    )


def _backend(args: argparse.Namespace) -> dict[str, Any]:
    """``backend``/``workers`` keyword arguments from ``--ray``/``--workers``."""
    if args.workers is not None and not args.ray:
        raise UsageError("--workers needs --ray")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    if args.ray:
        from probekit.distributed import import_ray

        try:
            import_ray()
        except ImportError as err:
            raise UsageError(str(err)) from None
    return {"backend": "ray" if args.ray else "local", "workers": args.workers}


def _write_outputs(args: argparse.Namespace, run: Any, out: Path) -> int:
    import io
    import json

    import probekit as pk
    from probekit.fileio import write_bytes_atomic, write_text_atomic

    frame = run.frame
    audit_result = run.results[0]
    audit_result.description = (
        f"Model {args.model}; data {args.data}"
        + (f"; non-members {args.nonmembers}" if args.nonmembers else "")
        + f". Greedy continuation of a {args.prefix}-token prefix compared with the true "
        f"{args.suffix}-token suffix; memorized = token Levenshtein < {args.lev_threshold:g}."
        + (" Texts are redacted (keyed hash prefix and length)." if args.redact else "")
    )

    write_text_atomic(out / "table.csv", frame.to_csv(index=False))
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes_atomic(out / "table.parquet", buffer.getvalue())
    write_text_atomic(out / "summary.json", json.dumps(run.summary, indent=2, default=_json) + "\n")
    # One file an auditor can hand on: plotly.js inside the page.
    page = pk.report.write(
        run.results,
        out / "report.html",
        title=f"Memorization audit: {args.model}",
        self_contained=True,
    )
    a = audit_result.summary
    print(
        f"{a['sequences']} sequences: {a['memorized']} memorized (lev < {args.lev_threshold:g}), "
        f"{a['exact_match']} exact; report {page}; records {out / 'store'}"
    )
    return 0


def _json(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)
