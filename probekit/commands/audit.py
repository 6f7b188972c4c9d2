"""``probekit audit``: memorization audit of a causal LM on a data file -> report + table.

Runs :func:`probekit.memorization.audit` on every sequence of ``--data`` (and ``--nonmembers``,
which adds the membership evaluation with ``--data`` as members), optionally with a reference
model (``ref_ratio``), a latent-memorization pass over ``--checkpoints``, and weight-perturbation
recovery (``--perturb-draws``). Writes ``OUT/report.html``, ``OUT/table.csv``,
``OUT/table.parquet`` and ``OUT/summary.json``.

Data files: ``.txt`` (one sequence per line), ``.jsonl`` (one object per line with ``text`` or
``tokens``), ``.npy`` (an integer array ``[N, L]``). ``--redact`` replaces each text in every
output by a sha256 prefix and a length. The audit runs in chunks saved under
``OUT/.audit-partial/``; rerunning the same command after an interruption resumes from the last
complete chunk (a different model, data file or setting starts over).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

CHUNK = 256


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
    p.add_argument("--redact", action="store_true", help="hash and length instead of texts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run)


# ----------------------------------------------------------------------------- data files


def read_sequences(path: str | Path, flag: str = "--data") -> Any:
    """Texts (list of str) or token ids (list of lists / array) from a data file.

    Raises :class:`probekit.cli.UsageError` naming the file for anything unreadable or empty.
    """
    import json

    import numpy as np

    from probekit.cli import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{flag} {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim != 2 or array.shape[0] == 0:
                raise UsageError(f"{flag} {path}: expected a [N, L] array, got {array.shape}")
            if not np.issubdtype(array.dtype, np.integer):
                raise UsageError(f"{flag} {path}: expected integer token ids, got {array.dtype}")
            return array
        text = path.read_text(encoding="utf-8")
    except UsageError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"{flag} {path}: cannot be read: {err}") from None
    if suffix == ".txt":
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise UsageError(f"{flag} {path}: no sequences (the file is empty)")
        return lines
    if suffix == ".jsonl":
        rows: list[Any] = []
        field = None
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UsageError(f"{flag} {path}: line {i} is not JSON: {err}") from None
            key = "tokens" if isinstance(obj, dict) and "tokens" in obj else "text"
            if not isinstance(obj, dict) or key not in obj:
                raise UsageError(f"{flag} {path}: line {i} has neither 'text' nor 'tokens'")
            if field is not None and key != field:
                raise UsageError(f"{flag} {path}: line {i} mixes 'text' and 'tokens' rows")
            field = key
            value = obj[key]
            ok = isinstance(value, str) if key == "text" else _is_int_list(value)
            if not ok:
                what = "a string" if key == "text" else "a list of integers"
                raise UsageError(f"{flag} {path}: line {i}: '{key}' must be {what}")
            rows.append(value)
        if not rows:
            raise UsageError(f"{flag} {path}: no sequences (the file is empty)")
        if field == "tokens":
            lengths = {len(r) for r in rows}
            shortest = min(lengths)
            return [r[:shortest] for r in rows] if len(lengths) > 1 else rows
        return rows
    raise UsageError(f"{flag} {path}: unknown format {suffix!r} (use .txt, .jsonl or .npy)")


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


# ----------------------------------------------------------------------------- resumable audit


def _digest(obj: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _resumable_audit(
    model: Any,
    tokens: Any,
    label: str,
    partial: Path,
    settings: dict[str, Any],
    bar: Any,
    **kwargs: Any,
) -> Any:
    """Audit ``tokens [N, k+m]`` in chunks of :data:`CHUNK`, each saved once complete."""
    import pandas as pd

    from probekit.fileio import write_bytes_atomic
    from probekit.memorization import audit

    frames = []
    for index, start in enumerate(range(0, len(tokens), CHUNK)):
        chunk_file = partial / f"{label}-{index:05d}.parquet"
        batch = tokens[start : start + CHUNK]
        if chunk_file.is_file():
            frame = pd.read_parquet(chunk_file)
        else:
            frame = audit(model, batch, include_text=False, **settings, **kwargs).frame
            import io

            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            write_bytes_atomic(chunk_file, buffer.getvalue())
        frames.append(frame)
        bar.update(len(batch))
    return pd.concat(frames, ignore_index=True)


def _checkpoint_series(paths: list[str]) -> dict[int, Any]:
    import re

    from probekit.cli import UsageError
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
    import hashlib
    import json
    import shutil

    import numpy as np
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    import probekit as pk
    from probekit import memorization
    from probekit.cli import UsageError
    from probekit.fileio import write_json_atomic, write_text_atomic

    for flag, value in (("--prefix", args.prefix), ("--suffix", args.suffix)):
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.perturb_draws < 0:
        raise UsageError(f"--perturb-draws must be >= 0, got {args.perturb_draws}")
    if not Path(args.model).exists():
        raise UsageError(f"MODEL {args.model!r} does not exist")
    members_raw = read_sequences(args.data, "--data")
    nonmembers_raw = read_sequences(args.nonmembers, "--nonmembers") if args.nonmembers else None
    checkpoints = _checkpoint_series(args.checkpoints) if args.checkpoints else None

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    # Scoring needs no hooks: Hugging Face directories load without booting a bridge.
    model = memorization._load_if_path(args.model)
    lm = memorization._CausalLM(model)
    length = args.prefix + args.suffix
    if lm.max_length is not None and length > lm.max_length:
        raise UsageError(
            f"--prefix + --suffix = {length} exceeds the model's context of {lm.max_length}"
        )

    def tokens_of(raw: Any, flag: str, path: str) -> torch.Tensor:
        try:
            return memorization.as_token_matrix(raw, length, lm.vocab_size, lm.tokenizer)
        except ValueError as err:
            message = str(err).replace("sequences", "sequence", 1)
            raise UsageError(f"{flag} {path}: {message}") from None

    member_tokens = tokens_of(members_raw, "--data", args.data)
    nonmember_tokens = (
        tokens_of(nonmembers_raw, "--nonmembers", args.nonmembers)
        if nonmembers_raw is not None
        else None
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".audit-partial"
    settings = {
        "prefix_len": args.prefix,
        "suffix_len": args.suffix,
        "batch_size": args.batch_size,
        "k_percent": args.k_percent,
        "lev_threshold": args.lev_threshold,
    }
    manifest = {
        "model": pk.fingerprint(model),
        "reference": args.reference and str(Path(args.reference).resolve()),
        "members": hashlib.sha256(member_tokens.numpy().tobytes()).hexdigest(),
        "nonmembers": None
        if nonmember_tokens is None
        else hashlib.sha256(nonmember_tokens.numpy().tobytes()).hexdigest(),
        "settings": settings,
        "chunk": CHUNK,
    }
    manifest_file = partial / "manifest.json"
    if manifest_file.is_file():
        try:
            previous = json.loads(manifest_file.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != manifest:
            shutil.rmtree(partial)
    partial.mkdir(exist_ok=True)
    write_json_atomic(manifest_file, manifest)
    reference = memorization._load_if_path(args.reference) if args.reference else None

    total = len(member_tokens) + (0 if nonmember_tokens is None else len(nonmember_tokens))
    bar = tqdm(total=total, desc="audit", unit="seq", disable=args.quiet)
    try:
        frame = _resumable_audit(
            lm, member_tokens, "data", partial, settings, bar, reference=reference
        )
        frame.insert(0, "set", "data")
        if nonmember_tokens is not None:
            other = _resumable_audit(
                lm,
                nonmember_tokens,
                "nonmembers",
                partial,
                settings,
                bar,
                reference=reference,
            )
            other.insert(0, "set", "nonmembers")
            frame = pd.concat([frame, other], ignore_index=True)
    finally:
        bar.close()
    all_tokens = (
        member_tokens if nonmember_tokens is None else torch.cat([member_tokens, nonmember_tokens])
    )
    texts = [lm.decode(row) for row in all_tokens.tolist()]
    if args.redact:
        frame["sha256"] = [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts]
        frame["chars"] = [len(t) for t in texts]
    else:
        frame["text"] = texts

    results: list[Any] = []
    audit_result = memorization.AuditResult(
        frame=frame,
        summary=memorization._audit_summary(frame, args.prefix, args.suffix, args.lev_threshold),
        title="Memorization audit",
        description=(
            f"Model {args.model}; data {args.data}"
            + (f"; non-members {args.nonmembers}" if args.nonmembers else "")
            + f". Greedy continuation of a {args.prefix}-token prefix compared with the true "
            f"{args.suffix}-token suffix; memorized = token Levenshtein < {args.lev_threshold:g}."
            + (" Texts are redacted (sha256 prefix and length)." if args.redact else "")
        ),
    )
    results.append(audit_result)
    summary: dict[str, Any] = {"audit": audit_result.summary}
    if nonmember_tokens is not None:
        members = (frame["set"] == "data").to_numpy()
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            memb = memorization.membership(frame, np.asarray(members, dtype=bool))
        if caught:
            memb.description += " Warning: " + str(caught[0].message) + "."
        results.append(memb)
        summary["membership"] = memb.summary | {
            "auroc": dict(zip(memb.frame["score"], memb.frame["auroc"]))
        }
    if checkpoints is not None:
        lat = memorization.latent(
            checkpoints,
            member_tokens,
            prefix_len=args.prefix,
            suffix_len=args.suffix,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        results.append(lat)
        summary["latent"] = lat.summary
    if args.perturb_draws:
        pert = memorization.perturbation_recovery(
            lm,
            member_tokens,
            sigma=args.sigma,
            draws=args.perturb_draws,
            prefix_len=args.prefix,
            suffix_len=args.suffix,
            batch_size=args.batch_size,
            lev_threshold=args.lev_threshold,
            progress=not args.quiet,
        )
        results.append(pert)
        summary["perturbation"] = pert.summary

    frame.to_csv(out / "table.csv.tmp", index=False)
    (out / "table.csv.tmp").replace(out / "table.csv")
    frame.to_parquet(out / "table.parquet.tmp", index=False)
    (out / "table.parquet.tmp").replace(out / "table.parquet")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=_json) + "\n")
    page = pk.report.write(results, out / "report.html", title=f"Memorization audit: {args.model}")
    shutil.rmtree(partial, ignore_errors=True)
    a = audit_result.summary
    print(
        f"{a['sequences']} sequences: {a['memorized']} memorized (lev < {args.lev_threshold:g}), "
        f"{a['exact_match']} exact; report {page}"
    )
    return 0


def _json(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)
