"""Which training sequences has a language model memorized, and which are latently memorized?

An auditor gives a causal LM and sequences it may have seen; :func:`audit` says per sequence how
extractable it is (greedy continuation of a ``prefix_len``-token prefix compared with the true
``suffix_len``-token suffix) and how likely a training member it looks (loss-based scores).
:func:`latent` follows sequences over a series of training checkpoints and labels them
memorized / latent / control, and :func:`perturbation_recovery` tests whether small Gaussian
weight noise recovers a sequence the model no longer reproduces. :func:`membership` turns every
score into a membership-inference attack when members and non-members are known, and
:func:`repetition_scaling` fits P(memorized) against log(repetitions).

Source study: docs/memorization.md (latent memorization, Duan et al., Pythia-1B). Scores:
k-extractability (Carlini et al. 2022), the Pythia memorization score (Biderman et al. 2023),
Min-K% Prob (Shi et al. 2023), Min-K%++ (Zhang et al. 2024), the zlib ratio and reference-model
ratio (Carlini et al. 2021). Formulas: ``docs/memorization.md``.

Works on any causal LM :func:`probekit.load` returns: a TransformerBridge (the Hugging Face model
underneath is called directly, with its KV cache, for speed), a Hugging Face ``PreTrainedModel``,
or a :class:`probekit.models.HookedRNN` language model (token embedding + readout over the
vocabulary), whose hidden state is carried while decoding.

Example::

    >>> import probekit as pk
    >>> model = pk.load("checkpoints/canary-lm")                      # doctest: +SKIP
    >>> result = pk.memorization.audit(model, tokens)                 # tokens [N, >= 96]
    >>> result.frame[["lev", "memorized", "min_k_pp"]].head()         # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probekit.inputs import as_token_matrix
from probekit.models.runner import Runner, runner
from probekit.report.page import Rendered
from probekit.stats.memorization import (
    auroc_rows,
    complexity,
    latent_labels,
    levenshtein,
    logistic_fit,
    min_k_pp,
    min_k_prob,
    roc_points,
    token_scores,
    tpr_at_fpr,
    zlib_ratio,
)
from probekit.validation import check_positive_int

__all__ = [
    "AuditResult",
    "LatentResult",
    "MembershipResult",
    "PerturbationResult",
    "ScalingResult",
    "AuditRun",
    "audit",
    "audit_all",
    "audit_frame",
    "greedy_continuation",
    "latent",
    "latent_labels",
    "levenshtein",
    "membership",
    "min_k_pp",
    "min_k_prob",
    "perturbation_recovery",
    "exposure_trace",
    "repetition_scaling",
    "roc_points",
    "snapshot_series",
    "token_scores",
]

#: Score columns and their orientation for membership: +1 = higher means member.
SCORE_ORIENTATION: dict[str, int] = {
    "ce": -1,
    "suffix_ce": -1,
    "min_k_prob": 1,
    "min_k_pp": 1,
    "zlib_ratio": -1,
    "pythia_score": 1,
    "match_len": 1,
    "lev": -1,
    "ref_ratio": -1,
}


# ============================================================================ audit


@dataclass
class AuditResult(Rendered):
    """Per-sequence memorization scores.

    ``frame``: one row per input sequence, in input order (columns in the module docstring /
    the spec); ``summary``: counts and rates; ``generated``: the greedy suffixes ``[N, m]``;
    ``texts``: the decoded sequences (or None when redacted).
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    generated: Tensor | None = None
    store: Any = None
    title: str = "Memorization audit"
    description: str = ""

    def figures(self) -> list[Any]:
        from probekit.report.figures.memorization import audit_figures

        return audit_figures(self.frame)


@torch.no_grad()
def _score_batch(
    lm: Runner,
    tokens: Tensor,
    prefix_len: int,
    suffix_len: int,
    k_percent: float,
    reference: Runner | None,
) -> dict[str, Tensor]:
    """Every per-sequence record of the audit for one batch ``tokens [b, k+m]``: the per-token
    log-probabilities ``logp [b, k+m-1]``, the greedy suffix ``generated [b, m]`` and one value
    per sequence for each score."""
    # one forward pass scores the sequence and encodes the prefix for greedy decoding
    logits, generated = lm.logits_and_generate(tokens, prefix_len, suffix_len)
    generated = generated.cpu()
    logp, z = token_scores(logits, tokens.to(logits.device))
    del logits
    ce = -logp.mean(-1)
    cols: dict[str, Tensor] = {
        "logp": logp,
        "ce": ce,
        "suffix_ce": -logp[:, -suffix_len:].mean(-1),
        "min_k_prob": min_k_prob(logp, k_percent),
        "min_k_pp": min_k_pp(z, k_percent),
    }
    if reference is not None:
        ref_logp, _ = token_scores(reference.logits(tokens), tokens.to(reference.device))
        cols["ref_ratio"] = ce.cpu() - (-ref_logp.mean(-1)).cpu()
    suffix = tokens[:, prefix_len:].cpu()
    equal = generated == suffix
    mismatch = ~equal
    cols["generated"] = generated
    cols["exact_match"] = equal.all(-1)
    cols["match_len"] = torch.where(
        mismatch.any(-1), mismatch.float().argmax(-1), torch.tensor(suffix_len)
    )
    cols["pythia_score"] = equal.float().mean(-1)
    cols["lev"] = levenshtein(generated, suffix)
    rows = tokens.tolist()
    cols["zlib_ratio"] = torch.tensor(
        [zlib_ratio(c, lm.decode(row)) for row, c in zip(rows, ce.tolist())], dtype=torch.float64
    )
    cols["complexity"] = torch.tensor(
        [complexity(lm.decode(row[prefix_len:])) for row in rows], dtype=torch.float64
    )
    return {k: v.detach().cpu() for k, v in cols.items()}


_COLUMNS = (
    "ce",
    "suffix_ce",
    "min_k_prob",
    "min_k_pp",
    "zlib_ratio",
    "exact_match",
    "match_len",
    "pythia_score",
    "lev",
    "memorized",
    "complexity",
    "ref_ratio",
)


def audit(
    model: Any,
    sequences: Any,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    k_percent: float = 20,
    lev_threshold: int = 10,
    tokenizer: Any = None,
    reference: Any = None,
    progress: bool = False,
    include_text: bool = True,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    extras: Mapping[str, Any] | None = None,
    backend: str = "local",
    workers: int | None = None,
) -> AuditResult:
    """Score every sequence for memorization (one frame row per sequence, in input order).

    Args:
        model: a causal LM from :func:`probekit.load` (or its path, or a Hugging Face model).
        sequences: token ids ``[N, L]`` (tensor, array, nested list) with
            ``L >= prefix_len + suffix_len`` (only the first ``prefix_len + suffix_len`` tokens
            are used), or a list of texts, tokenised with ``tokenizer`` or the model's own.
        prefix_len, suffix_len: ``k`` and ``m`` of the spec; the model sees ``k`` tokens and
            greedily writes ``m``.
        batch_size: sequences per forward pass / decode batch.
        k_percent: the ``k`` of Min-K% and Min-K%++ (percent of scored tokens).
        lev_threshold: ``memorized = lev < lev_threshold`` (Duan et al. use 10 for m = 64).
        tokenizer: used for texts and to decode ids for the zlib scores.
        reference: a second model (or path) on the same tokenizer; adds ``ref_ratio``.
        progress: show a progress bar.
        include_text: add a ``text`` column with each decoded sequence (off for private data).
        out: a directory to write the per-sequence records to, in the activation-store format
            (:class:`probekit.ActivationStore`: ``tokens``, ``logp [k+m-1]``, ``generated
            [m]`` and one value per score for every sequence); an interrupted audit resumes
            from it, and a finished one is read back instead of recomputed. None keeps them in
            memory.
        resume: with False an existing audit store in ``out`` is replaced.
        extras: per-sequence tensors stored beside the records (e.g. which set a row is from).
        backend, workers: ``"ray"`` scores the shards on ``workers`` Ray actors (one per GPU
            when there are GPUs) into ``out`` (required), as :func:`probekit.cache` does; the
            records and the frame are the same as with ``"local"``.

    Returns:
        :class:`AuditResult`; ``frame`` columns ``ce, suffix_ce, min_k_prob, min_k_pp,
        zlib_ratio, exact_match, match_len, pythia_score, lev, memorized, complexity`` (+
        ``ref_ratio``, ``text``); ``store`` the records.
    """
    from probekit.activations import build_store
    from probekit.models.fingerprint import fingerprint

    for name, value in (("prefix_len", prefix_len), ("suffix_len", suffix_len)):
        check_positive_int(name, value)
    check_positive_int("batch_size", batch_size)
    if not 0 < k_percent <= 100:
        raise ValueError(f"k_percent must be in (0, 100], got {k_percent!r}")
    if not isinstance(lev_threshold, (int, float)) or lev_threshold <= 0:
        raise ValueError(f"lev_threshold must be a positive number, got {lev_threshold!r}")
    lm = _language_model(model, tokenizer)
    length = prefix_len + suffix_len
    if lm.max_length is not None and length > lm.max_length:
        raise ValueError(
            f"prefix_len + suffix_len = {length} exceeds the model's context of {lm.max_length}"
        )
    tokens = as_token_matrix(sequences, length, lm.vocab_size, lm.tokenizer)
    ref = None
    if reference is not None:
        ref = _language_model(reference, None)
        if ref.vocab_size < lm.vocab_size and int(tokens.max()) >= ref.vocab_size:
            raise ValueError(
                f"reference has a vocabulary of {ref.vocab_size}, smaller than the token ids "
                "used; it must share the model's tokenizer"
            )
    options = {
        "kind": "memorization-audit",
        "prefix_len": prefix_len,
        "suffix_len": suffix_len,
        "k_percent": k_percent,
        "batch_size": batch_size,
        "reference_fingerprint": None if ref is None else fingerprint(ref.model),
    }
    remote = None
    if backend == "ray":
        from probekit.distributed import RemoteCompute

        remote = RemoteCompute(
            factory="probekit.memorization:audit_compute",
            models={"lm": lm.model} | ({} if ref is None else {"reference": ref.model}),
            kwargs={
                "tokenizer": lm.tokenizer,
                "prefix_len": prefix_len,
                "suffix_len": suffix_len,
                "k_percent": k_percent,
            },
        )
    store = build_store(
        tokens,
        audit_compute(lm, prefix_len, suffix_len, k_percent, reference=ref),
        model_fingerprint=fingerprint(lm.model),
        options=options,
        model_class=type(lm.model).__name__,
        out=out,
        resume=resume,
        progress=progress,
        extras=extras,
        desc="audit",
        batch_size=batch_size,
        shard_size=_audit_shard_size(batch_size),
        backend=backend,
        workers=workers,
        remote=remote,
    )
    frame = audit_frame(store, lev_threshold)
    if include_text:
        frame["text"] = [lm.decode(row) for row in tokens.tolist()]
    return AuditResult(
        frame=frame,
        summary=_audit_summary(frame, prefix_len, suffix_len, lev_threshold),
        generated=store["generated"],
        store=store,
    )


def audit_compute(
    lm: Any,
    prefix_len: int,
    suffix_len: int,
    k_percent: float,
    reference: Any = None,
    tokenizer: Any = None,
    device: Any = None,
) -> Any:
    """The audit's per-batch computation ``compute(tokens, mask) -> records`` (what
    :func:`audit` stores), for a model (or runner) ``lm``; ``device`` is where a Ray actor put
    the models (unused here: the runner runs where its model is)."""
    if not isinstance(lm, Runner):
        lm = _language_model(lm, tokenizer)
    ref = reference
    if reference is not None and not isinstance(reference, Runner):
        ref = _language_model(reference, None)
    return lambda batch, _mask: _score_batch(lm, batch, prefix_len, suffix_len, k_percent, ref)


def _audit_shard_size(batch_size: int) -> int:
    """Small shards: an interrupted audit loses at most a few hundred sequences."""
    return batch_size * max(1, 256 // batch_size)


def audit_frame(store: Any, lev_threshold: float = 10) -> pd.DataFrame:
    """The audit table (one row per sequence) from an audit store (or its path)."""
    from probekit.activations import ActivationStore

    if isinstance(store, (str, os.PathLike)):
        store = ActivationStore.open(store)
    if store.meta.get("kind") != "memorization-audit":
        raise ValueError("store must be written by pk.memorization.audit (out=...)")
    data = {c: store[c].numpy() for c in _COLUMNS if c in store}
    data["memorized"] = data["lev"] < lev_threshold
    frame = pd.DataFrame({c: data[c] for c in _COLUMNS if c in data})
    frame["exact_match"] = frame["exact_match"].astype(bool)
    frame["match_len"] = frame["match_len"].astype(int)
    frame["lev"] = frame["lev"].astype(int)
    return frame


def _language_model(model: Any, tokenizer: Any) -> Runner:
    lm = runner(model)
    if tokenizer is not None:
        lm.tokenizer = tokenizer
    if not lm.is_language_model:
        cfg = lm.model.cfg
        raise ValueError(
            "an RNN model must be a language model: a token embedding (vocab_size) and "
            f"a readout over the vocabulary (output_size == vocab_size), got vocab_size="
            f"{cfg.vocab_size}, output_size={cfg.output_size}"
        )
    return lm


def greedy_continuation(
    model: Any, prefixes: Tensor | np.ndarray, steps: int, batch_size: int = 64
) -> Tensor:
    """Batched greedy decode: ``prefixes [N, k]`` -> the next ``steps`` tokens ``[N, steps]``.

    Equal-length prefixes, so no padding; a KV cache (transformers) or the carried state (RNNs)
    means the prefix is never recomputed. Token for token the same as decoding one sequence at
    a time with ``generate(do_sample=False)``.
    """
    lm = runner(model)
    prefixes = torch.as_tensor(prefixes, dtype=torch.long)
    parts = [lm.generate(p, steps) for p in prefixes.split(batch_size)]
    return torch.cat(parts).cpu()


def _audit_summary(
    frame: pd.DataFrame, prefix_len: int, suffix_len: int, lev_threshold: float
) -> dict[str, Any]:
    n = len(frame)
    return {
        "sequences": n,
        "prefix_len": prefix_len,
        "suffix_len": suffix_len,
        "lev_threshold": lev_threshold,
        "memorized": int(frame["memorized"].sum()),
        "memorized_rate": float(frame["memorized"].mean()),
        "exact_match": int(frame["exact_match"].sum()),
        "exact_match_rate": float(frame["exact_match"].mean()),
        "mean_pythia_score": float(frame["pythia_score"].mean()),
        "median_lev": float(frame["lev"].median()),
        "mean_ce": float(frame["ce"].mean()),
    }


# ============================================================================ membership


def _frame_of(result_or_frame: Any, name: str) -> pd.DataFrame:
    frame = getattr(result_or_frame, "frame", result_or_frame)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"{name} must be an AuditResult or a DataFrame, got {type(frame).__name__}"
        )
    return frame


@dataclass
class MembershipResult(Rendered):
    """Membership-inference evaluation, one row per score (oriented so higher = member)."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    title: str = "Membership inference"
    description: str = (
        "Every score as a membership attack (oriented so higher = member): AUROC with a "
        "bootstrap 95% interval, TPR at 1% and 0.1% FPR (the highest TPR among ROC points with "
        "FPR at or below the target)."
    )

    def figures(self) -> list[Any]:
        from probekit.report.figures.memorization import membership_figures

        return membership_figures(self.curves)


def membership(
    audit_or_frame: Any,
    members: Sequence[bool] | np.ndarray,
    scores: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> MembershipResult:
    """Evaluate each score of an audit as a membership-inference attack.

    Args:
        audit_or_frame: an :class:`AuditResult` or its frame (one row per sequence).
        members: one bool per row: True for known training members, False for non-members.
        scores: columns to evaluate (default: every score column present).
        n_bootstrap: resamples of the rows for the AUROC 95% interval.
        seed: seed of the bootstrap.

    Returns:
        :class:`MembershipResult`; ``frame`` columns ``score, auroc, auroc_ci_low,
        auroc_ci_high, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr``. Warns under 1000 non-members.
    """
    frame = _frame_of(audit_or_frame, "audit_or_frame")
    labels = np.asarray(members)
    if labels.dtype != bool or labels.ndim != 1 or len(labels) != len(frame):
        raise ValueError(
            f"members must be one bool per row ({len(frame)}), got {labels.dtype} "
            f"shape {labels.shape}"
        )
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"members needs both classes, got {n_pos} members and {n_neg} non-members")
    names = [s for s in SCORE_ORIENTATION if s in frame] if scores is None else list(scores)
    for s in names:
        if s not in frame:
            raise ValueError(f"score {s!r} is not a column of the audit frame")
    if n_neg < 1000:
        warnings.warn(
            f"only {n_neg} non-members: TPR at 0.1% FPR rests on fewer than one false positive",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(labels), size=(n_bootstrap, len(labels)))
    boot_labels = labels[idx]
    rows, curves = [], {}
    for name in names:
        oriented = SCORE_ORIENTATION.get(name, 1) * frame[name].to_numpy(dtype=float)
        auc = float(auroc_rows(oriented[None], labels[None])[0])
        boot = auroc_rows(oriented[idx], boot_labels)
        boot = boot[np.isfinite(boot)]
        fpr, tpr = roc_points(oriented, labels)
        curves[name] = (fpr, tpr)
        rows.append(
            {
                "score": name,
                "auroc": auc,
                "auroc_ci_low": float(np.quantile(boot, 0.025)),
                "auroc_ci_high": float(np.quantile(boot, 0.975)),
                "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.01),
                "tpr_at_0.1pct_fpr": tpr_at_fpr(fpr, tpr, 0.001),
            }
        )
    table = pd.DataFrame(rows)
    best = table.loc[table["auroc"].idxmax()]
    return MembershipResult(
        frame=table,
        summary={
            "members": n_pos,
            "nonmembers": n_neg,
            "best_score": best["score"],
            "best_auroc": float(best["auroc"]),
            "bootstrap_resamples": n_bootstrap,
            "few_nonmembers_warning": n_neg < 1000,
        },
        curves=curves,
    )


# ============================================================================ repetition scaling


@dataclass
class ScalingResult(Rendered):
    """P(memorized) against log2(repetitions): per-count table and fitted slopes."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Memorization vs repetitions"
    description: str = (
        "Fraction memorized per repetition count. 'slope' is the least-squares slope of "
        "memorized (0/1) on log2(repetitions): the change in P(memorized) per doubling, with a "
        "normal 95% interval; 'logistic_slope' is the same on the log-odds scale."
    )

    def figures(self) -> list[Any]:
        from probekit.report.figures.memorization import scaling_figures

        return scaling_figures(self.frame, self.summary)


def repetition_scaling(
    audit_or_frame: Any, repetitions: Sequence[int] | np.ndarray, column: str = "memorized"
) -> ScalingResult:
    """Fit P(memorized) against log(repetitions).

    ``repetitions``: one count >= 1 per row of the audit frame. Returns a :class:`ScalingResult`
    with a per-count table (``repetitions, n, memorized, fraction_memorized, stderr``) and the
    summary ``slope`` (per doubling, least squares on the rows), ``slope_ci_low/high``,
    ``intercept``, ``logistic_slope`` and its interval (NaN when the data are separated).
    """
    frame = _frame_of(audit_or_frame, "audit_or_frame")
    reps = np.asarray(repetitions, dtype=float)
    if reps.ndim != 1 or len(reps) != len(frame):
        raise ValueError(f"repetitions must be one count per row ({len(frame)}), got {reps.shape}")
    if np.any(reps < 1) or not np.all(np.isfinite(reps)):
        raise ValueError("repetitions must be counts >= 1")
    if column not in frame:
        raise ValueError(f"column {column!r} is not in the audit frame")
    y = frame[column].to_numpy(dtype=float)
    x = np.log2(reps)
    table = (
        pd.DataFrame({"repetitions": reps.astype(int), "m": y})
        .groupby("repetitions")["m"]
        .agg(n="size", memorized="sum", fraction_memorized="mean")
        .reset_index()
    )
    p = table["fraction_memorized"]
    table["stderr"] = np.sqrt(p * (1 - p) / table["n"])
    nan = float("nan")
    summary: dict[str, Any] = {"sequences": len(y), "distinct_counts": len(table)}
    if len(table) >= 2:
        xc = x - x.mean()
        slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
        intercept = float(y.mean() - slope * x.mean())
        resid = y - intercept - slope * x
        se = math.sqrt((resid**2).sum() / max(len(y) - 2, 1) / (xc**2).sum())
        summary |= {
            "slope": slope,
            "slope_ci_low": slope - 1.96 * se,
            "slope_ci_high": slope + 1.96 * se,
            "intercept": intercept,
        }
        fit = logistic_fit(x, y) if 0 < y.sum() < len(y) else None
        if fit is None:
            summary |= {"logistic_slope": nan, "logistic_ci_low": nan, "logistic_ci_high": nan}
        else:
            (b0, b1), (_, se1) = fit
            summary |= {
                "logistic_slope": float(b1),
                "logistic_ci_low": float(b1 - 1.96 * se1),
                "logistic_ci_high": float(b1 + 1.96 * se1),
            }
    else:
        summary |= {"slope": nan, "slope_ci_low": nan, "slope_ci_high": nan, "intercept": nan}
        summary |= {"logistic_slope": nan, "logistic_ci_low": nan, "logistic_ci_high": nan}
    return ScalingResult(frame=table, summary=summary)


# ============================================================================ latent memorization


def snapshot_series(model_dir: str | os.PathLike) -> dict[int, Path]:
    """Step -> directory for a checkpoint with ``snapshots/step-NNNNN/`` (as canary-lm ships).

    The top-level directory is included as the last step when its ``metrics.json`` records
    ``steps``. Sorted by step.
    """
    root = Path(model_dir)
    series: dict[int, Path] = {}
    for path in sorted((root / "snapshots").glob("step-*")):
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and path.is_dir():
            series[int(match.group(1))] = path
    metrics = root / "metrics.json"
    if metrics.is_file():
        import json

        steps = json.loads(metrics.read_text()).get("steps")
        if isinstance(steps, int):
            series[steps] = root
    if not series:
        raise ValueError(f"{root}: no snapshots/step-NNNNN/ directories found")
    return dict(sorted(series.items()))


@dataclass
class LatentResult(Rendered):
    """Per sequence: edit distance (and CE) at every checkpoint and the Duan et al. label.

    ``frame``: one row per sequence: ``label`` (memorized / latent / control / other /
    unseen), ``first_checkpoint`` (the step right after first exposure), ``lev_first``,
    ``min_lev_later``, ``ce_first``, then ``lev@STEP`` and ``ce@STEP`` per checkpoint.
    ``trajectories``: long table (sequence, step, lev, ce, label).
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    trajectories: pd.DataFrame
    title: str = "Latent memorization over training"
    description: str = ""

    def figures(self) -> list[Any]:
        from probekit.report.figures.memorization import latent_figures

        return latent_figures(self.frame, self.trajectories)


def latent(
    checkpoints: Mapping[int, Any],
    sequences: Any,
    first_seen: Sequence[int] | None = None,
    repetitions: Sequence[int] | None = None,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    memorized_threshold: float | None = None,
    latent_threshold: float | None = None,
    tokenizer: Any = None,
    progress: bool = False,
) -> LatentResult:
    """Label sequences memorized / latent / control over a series of checkpoints (Duan et al.).

    Args:
        checkpoints: ordered mapping training step -> model (or path) (:func:`snapshot_series`).
        sequences: as for :func:`audit`.
        first_seen: per sequence, the 0-based training step of its first exposure; its
            "first-exposure checkpoint" is the first checkpoint with step > first_seen. Default:
            every sequence's first-exposure checkpoint is the first checkpoint.
        repetitions: per sequence, how often it was seen (latent requires 1). Default: 1.
        memorized_threshold, latent_threshold: lev thresholds; default ``10/64`` and ``50/64``
            of ``suffix_len``.

    Labels: memorized = lev < memorized_threshold at the first-exposure checkpoint; latent =
    lev > latent_threshold there, min lev over later checkpoints < memorized_threshold, and
    repetitions == 1; control = lev > latent_threshold at every checkpoint from the first-
    exposure one on; never-seen = repetitions 0 (a planted control: give as ``first_seen`` the
    step it stands in for); other = none of these; unseen = no checkpoint after first exposure.
    Two cross-entropy diagnostics: the AUROC of ``-ce_first`` separating latent from control,
    and, when never-seen sequences are given, the AUROC of ``-ce`` at the last checkpoint
    separating the seen sequences not extractable there from the never-seen ones.
    """
    if not isinstance(checkpoints, Mapping) or len(checkpoints) == 0:
        raise ValueError("checkpoints must be a non-empty mapping step -> model or path")
    steps = list(checkpoints)
    if any(not isinstance(s, int) for s in steps) or steps != sorted(steps):
        raise ValueError(f"checkpoint steps must be increasing integers, got {steps}")
    mem_thr = 10 / 64 * suffix_len if memorized_threshold is None else memorized_threshold
    lat_thr = 50 / 64 * suffix_len if latent_threshold is None else latent_threshold
    levs, ces = [], []
    n = None
    for step in steps:
        model = runner(checkpoints[step])
        result = audit(
            model,
            sequences,
            prefix_len=prefix_len,
            suffix_len=suffix_len,
            batch_size=batch_size,
            tokenizer=tokenizer,
            include_text=False,
            progress=progress,
        )
        levs.append(result.frame["lev"].to_numpy())
        ces.append(result.frame["ce"].to_numpy())
        n = len(result.frame)
        del model
    lev = np.stack(levs, axis=1)  # [N, C]
    ce = np.stack(ces, axis=1)
    step_arr = np.asarray(steps)
    if first_seen is None:
        first_idx = np.zeros(n, dtype=int)
    else:
        seen = np.asarray(first_seen)
        if seen.shape != (n,):
            raise ValueError(f"first_seen must be one step per sequence ({n}), got {seen.shape}")
        first_idx = np.searchsorted(step_arr, seen, side="right")
    reps = np.ones(n, dtype=int) if repetitions is None else np.asarray(repetitions)
    if reps.shape != (n,):
        raise ValueError(f"repetitions must be one count per sequence ({n}), got {reps.shape}")
    n_ckpt = len(steps)
    unseen = first_idx >= n_ckpt
    safe = np.minimum(first_idx, n_ckpt - 1)
    rows = np.arange(n)
    lev_first = lev[rows, safe].astype(float)
    ce_first = ce[rows, safe]
    later = np.arange(n_ckpt)[None, :] > safe[:, None]
    min_later = np.where(later, lev, np.inf).min(axis=1)
    label = latent_labels(lev, first_idx, reps, mem_thr, lat_thr)
    frame = pd.DataFrame(
        {
            "label": label,
            "first_checkpoint": np.where(unseen, -1, step_arr[safe]),
            "repetitions": reps,
            "lev_first": lev_first,
            "min_lev_later": min_later,
            "ce_first": ce_first,
        }
    )
    for j, step in enumerate(steps):
        frame[f"lev@{step}"] = lev[:, j]
    for j, step in enumerate(steps):
        frame[f"ce@{step}"] = ce[:, j]
    traj = pd.DataFrame(
        {
            "sequence": np.repeat(rows, n_ckpt),
            "step": np.tile(step_arr, n),
            "lev": lev.reshape(-1),
            "ce": ce.reshape(-1),
            "label": np.repeat(label, n_ckpt),
        }
    )
    kinds = ("memorized", "latent", "control", "other", "never-seen")
    counts = {k: int((label == k).sum()) for k in kinds}
    is_latent, is_control = label == "latent", label == "control"
    if is_latent.any() and is_control.any():
        both = is_latent | is_control
        ce_auroc = float(auroc_rows(-ce_first[both][None], is_latent[both][None])[0])
    else:
        ce_auroc = float("nan")
    # The trace a tiny model keeps: seen, not extractable at the last checkpoint, yet lower CE
    # there than the never-seen controls.
    never = reps == 0
    hidden = (reps >= 1) & (lev[:, -1] >= mem_thr) & ~unseen
    if never.any() and hidden.any():
        both = hidden | never
        ce_auroc_hidden = float(auroc_rows(-ce[both, -1][None], hidden[both][None])[0])
    else:
        ce_auroc_hidden = float("nan")
    summary = {
        "checkpoints": steps,
        "sequences": n,
        **counts,
        "unseen": int(unseen.sum()),
        "memorized_threshold": mem_thr,
        "latent_threshold": lat_thr,
        "ce_auroc_latent_vs_control": ce_auroc,
        "seen_not_extractable_final": int(hidden.sum()),
        "ce_auroc_seen_not_extractable_vs_never_seen": ce_auroc_hidden,
        "mean_ce_first_latent": float(ce_first[is_latent].mean()) if is_latent.any() else None,
        "mean_ce_first_control": float(ce_first[is_control].mean()) if is_control.any() else None,
    }
    return LatentResult(frame=frame, summary=summary, trajectories=traj)


def exposure_trace(
    latent_result: LatentResult,
    repetitions: Sequence[int],
    shown_at: Sequence[int],
    groups: Sequence[str] | None = None,
    max_repetitions: int = 2,
) -> pd.DataFrame:
    """The cross-entropy trace of an exposure through a checkpoint series, per group.

    At each checkpoint of ``latent_result`` (from :func:`latent`), the AUROC of ``-ce``
    separating the sequences seen 1..``max_repetitions`` times that are not extractable there
    (``lev >=`` the memorized threshold) from the never-seen ones (``repetitions`` 0), among the
    sequences already shown (or, for never-seen ones, standing in for a step) before it
    (``shown_at < step``), within each group (e.g. the kind of text; default one group "all").
    Returns ``step, group, auroc, seen, never_seen``; the AUROC is NaN where a side is empty.
    """
    frame = latent_result.frame
    steps = latent_result.summary["checkpoints"]
    reps = np.asarray(repetitions)
    shown = np.asarray(shown_at)
    group = np.asarray(["all"] * len(frame) if groups is None else groups)
    if not (len(reps) == len(shown) == len(group) == len(frame)):
        raise ValueError(
            f"repetitions, shown_at and groups must be one per sequence ({len(frame)}), got "
            f"{len(reps)}, {len(shown)}, {len(group)}"
        )
    threshold = latent_result.summary["memorized_threshold"]
    rows = []
    for step in steps:
        lev, ce = frame[f"lev@{step}"].to_numpy(), frame[f"ce@{step}"].to_numpy()
        for name in dict.fromkeys(group.tolist()):
            here = (group == name) & (shown < step)
            seen = here & (reps >= 1) & (reps <= max_repetitions) & (lev >= threshold)
            never = here & (reps == 0)
            auc = float("nan")
            if seen.any() and never.any():
                both = seen | never
                auc = float(auroc_rows(-ce[both][None], seen[both][None])[0])
            rows.append(
                {
                    "step": step,
                    "group": name,
                    "auroc": auc,
                    "seen": int(seen.sum()),
                    "never_seen": int(never.sum()),
                }
            )
    return pd.DataFrame(rows)


# ============================================================================ perturbation


@dataclass
class PerturbationResult(Rendered):
    """Per sequence: lev without noise and the minimum lev over the weight-noise draws."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Weight-perturbation recovery"
    description: str = ""

    def figures(self) -> list[Any]:
        from probekit.report.figures.memorization import perturbation_figures

        return perturbation_figures(self.frame)


def perturbation_recovery(
    model: Any,
    sequences: Any,
    sigma: float = 2e-3,
    draws: int = 8,
    seed: int = 0,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    lev_threshold: float = 10,
    tokenizer: Any = None,
    progress: bool = False,
    relative: bool = False,
) -> PerturbationResult:
    """Greedy-decode under seeded Gaussian weight noise; keep each sequence's minimum lev.

    Draw ``d`` adds ``eps ~ N(0, sigma^2)`` to every parameter (generator seeded with
    ``seed * 1_000_003 + d``, parameters in ``named_parameters`` order); with ``relative``
    the noise on each tensor is ``N(0, (sigma * std(tensor))^2)`` instead, so one ``sigma``
    means the same for a small model's large weights as for a large model's small ones (the
    source's absolute 2e-3 is about a tenth of a Pythia weight matrix's std). Re-decodes, and puts
    the original weights back exactly (copied, not subtracted) before the next draw, also on
    error. ``frame``: ``lev`` (no noise), ``min_lev``, ``best_draw`` (-1 if no draw beat the
    unperturbed lev), ``recovered`` (``min_lev < lev_threshold`` while ``lev >= lev_threshold``).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    check_positive_int("draws", draws)
    check_positive_int("prefix_len", prefix_len)
    check_positive_int("suffix_len", suffix_len)
    lm = _language_model(model, tokenizer)
    tokens = as_token_matrix(sequences, prefix_len + suffix_len, lm.vocab_size, lm.tokenizer)
    prefixes, suffix = tokens[:, :prefix_len], tokens[:, prefix_len:]
    lev0 = levenshtein(greedy_continuation(lm, prefixes, suffix_len, batch_size), suffix)
    best = lev0.clone()
    best_draw = torch.full_like(lev0, -1)
    params = [p for _, p in lm.named_parameters()]
    originals = [p.detach().clone() for p in params]
    scales = [
        float(o.float().std()) * sigma if relative and o.numel() > 1 else sigma for o in originals
    ]
    from probekit.progress import bar as progress_bar

    try:
        for d in progress_bar(range(draws), desc="perturb", unit="draw", enabled=progress):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + d)
            with torch.no_grad():
                for p, scale in zip(params, scales):
                    noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale
                    p.add_(noise.to(device=p.device, dtype=p.dtype))
            lev = levenshtein(greedy_continuation(lm, prefixes, suffix_len, batch_size), suffix)
            with torch.no_grad():
                for p, orig in zip(params, originals):
                    p.copy_(orig)
            better = lev < best
            best = torch.where(better, lev, best)
            best_draw = torch.where(better, torch.full_like(best_draw, d), best_draw)
    finally:
        with torch.no_grad():
            for p, orig in zip(params, originals):
                p.copy_(orig)
    frame = pd.DataFrame(
        {
            "lev": lev0.numpy(),
            "min_lev": best.numpy(),
            "best_draw": best_draw.numpy(),
        }
    )
    frame["recovered"] = (frame["min_lev"] < lev_threshold) & (frame["lev"] >= lev_threshold)
    summary = {
        "sequences": len(frame),
        "sigma": sigma,
        "relative": relative,
        "draws": draws,
        "seed": seed,
        "memorized_unperturbed": int((frame["lev"] < lev_threshold).sum()),
        "memorized_best_draw": int((frame["min_lev"] < lev_threshold).sum()),
        "recovered": int(frame["recovered"].sum()),
        "mean_lev": float(frame["lev"].mean()),
        "mean_min_lev": float(frame["min_lev"].mean()),
    }
    return PerturbationResult(frame=frame, summary=summary)


def perturbation_sweep(
    model: Any, sequences: Any, sigmas: Sequence[float], **options: Any
) -> list[PerturbationResult]:
    """:func:`perturbation_recovery` at each noise scale of ``sigmas``, in order, with the same
    ``options`` (draws, seed, relative, ...). ``model`` may be a checkpoint path, so the sweep
    can run in another process (each draw is seeded: the results are the same there)."""
    if isinstance(sigmas, (int, float)) or not len(sigmas):
        raise ValueError(f"sigmas must be a non-empty sequence of noise scales, got {sigmas!r}")
    return [perturbation_recovery(model, sequences, sigma=sigma, **options) for sigma in sigmas]


# ============================================================================ the whole audit


@dataclass
class AuditRun:
    """What :func:`audit_all` produced: the report sections, the JSON summary and the table."""

    results: list[Any]
    summary: dict[str, Any]
    frame: pd.DataFrame
    store: Any


def audit_all(
    model: Any,
    members: Any,
    nonmembers: Any = None,
    reference: Any = None,
    checkpoints: Mapping[int, Any] | None = None,
    perturb_draws: int = 0,
    sigma: float = 2e-3,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    k_percent: float = 20,
    lev_threshold: float = 10,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    redact: bool = False,
    redact_key: bytes | None = None,
    progress: bool = False,
    names: tuple[str, str] = ("data", "nonmembers"),
    backend: str = "local",
    workers: int | None = None,
) -> AuditRun:
    """An auditor's whole job: the audit of ``members`` (and ``nonmembers``, adding the
    membership evaluation), the latent analysis over ``checkpoints`` and weight-perturbation
    recovery when asked, in one resumable store at ``out`` (one item per audited sequence,
    ``nonmember`` marking the second set). ``names`` name the two sets in error messages.
    ``redact`` replaces every text by a keyed hash (HMAC-SHA256
    prefix; the key is ``redact_key``, or a fresh random one kept nowhere, so a guessed text
    cannot be confirmed against the report) and its length. The report sections, summary and table come back; ``probekit audit`` writes them.
    ``backend="ray"`` (with ``workers``) scores the audit's shards on Ray actors (see
    :func:`audit`); the other sections run here.
    """
    import hashlib
    import hmac

    lm = _language_model(model, None)
    length = prefix_len + suffix_len
    if lm.max_length is not None and length > lm.max_length:
        raise ValueError(
            f"prefix_len + suffix_len = {length} exceeds the model's context of {lm.max_length}"
        )
    member_tokens = as_token_matrix(members, length, lm.vocab_size, lm.tokenizer, names[0])
    tokens, is_nonmember = member_tokens, torch.zeros(len(member_tokens), dtype=torch.bool)
    if nonmembers is not None:
        other = as_token_matrix(nonmembers, length, lm.vocab_size, lm.tokenizer, names[1])
        tokens = torch.cat([member_tokens, other])
        is_nonmember = torch.cat([is_nonmember, torch.ones(len(other), dtype=torch.bool)])
    result = audit(
        lm,
        tokens,
        prefix_len=prefix_len,
        suffix_len=suffix_len,
        batch_size=batch_size,
        k_percent=k_percent,
        lev_threshold=lev_threshold,
        reference=reference,
        progress=progress,
        include_text=False,
        out=out,
        resume=resume,
        extras={"nonmember": is_nonmember},
        backend=backend,
        workers=workers,
    )
    frame = result.frame
    frame.insert(0, "set", np.where(is_nonmember.numpy(), "nonmembers", "data"))
    texts = [lm.decode(row) for row in tokens.tolist()]
    if redact:
        # Keyed: without the key, a guessed text cannot be confirmed against the report.
        key = redact_key if redact_key is not None else os.urandom(32)
        frame["sha256"] = [
            hmac.new(key, t.encode(), hashlib.sha256).hexdigest()[:16] for t in texts
        ]
        frame["chars"] = [len(t) for t in texts]
    else:
        frame["text"] = texts
    result.summary = _audit_summary(frame, prefix_len, suffix_len, lev_threshold)
    results: list[Any] = [result]
    summary: dict[str, Any] = {"audit": result.summary}
    if nonmembers is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            memb = membership(frame, ~is_nonmember.numpy())
        if caught:
            memb.description += " Warning: " + str(caught[0].message) + "."
        results.append(memb)
        summary["membership"] = memb.summary | {
            "auroc": dict(zip(memb.frame["score"], memb.frame["auroc"]))
        }
    if checkpoints is not None:
        lat = latent(
            checkpoints,
            member_tokens,
            prefix_len=prefix_len,
            suffix_len=suffix_len,
            batch_size=batch_size,
            progress=progress,
        )
        results.append(lat)
        summary["latent"] = lat.summary
    if perturb_draws:
        pert = perturbation_recovery(
            lm,
            member_tokens,
            sigma=sigma,
            draws=perturb_draws,
            prefix_len=prefix_len,
            suffix_len=suffix_len,
            batch_size=batch_size,
            lev_threshold=lev_threshold,
            progress=progress,
        )
        results.append(pert)
        summary["perturbation"] = pert.summary
    return AuditRun(results=results, summary=summary, frame=frame, store=result.store)
