"""Which canaries does canary-lm memorize, and are any memorized latently?

A study on the shipped ``checkpoints/canary-lm`` (a ~1.1M-parameter Llama trained on the Python
documentation with planted canaries; docs/memorization.md, Duan et al. on latent memorization):

1. audit every canary on the final model (greedy extraction from a 32-token prefix, 64-token
   suffix) and fit P(memorized) against log2(repetitions);
2. membership inference: training-text windows vs held-out windows, every score as an attack;
3. latent memorization: follow the canaries through the float16 snapshots; label them
   memorized / latent / control per Duan et al., with the cross-entropy diagnostic;
4. weight-perturbation recovery on the final model for the canaries seen once.

The canary schedule (``schedule.json``) is used here only to evaluate what the audit found; the
audit itself never reads it. Built only from the public API (pk.models.runner, pk.memorization,
pk.report). Run alone: ``python analyses/latent_memorization.py --out report/``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import probekit as pk

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "canary-lm"


def _tokens(path: Path) -> np.ndarray:
    rows = [json.loads(line)["tokens"] for line in path.read_text().splitlines() if line]
    return np.asarray(rows, dtype=np.int64)


def analyse(quick: bool = False) -> list[Any]:
    mem = pk.memorization
    schedule = json.loads((CHECKPOINT / "schedule.json").read_text())
    canaries = _tokens(CHECKPOINT / "data" / "canaries.jsonl")
    members = _tokens(CHECKPOINT / "data" / "members.jsonl")
    nonmembers = _tokens(CHECKPOINT / "data" / "nonmembers.jsonl")
    reps = np.asarray(schedule["repetitions"])
    kinds = np.asarray(schedule["kind"])
    keep = np.arange(len(reps))
    if quick:  # a third of the canaries (every group keeps two or more), a quarter of the text
        keep = np.flatnonzero(np.arange(len(reps)) % 3 == 0)
        canaries, reps, kinds = canaries[keep], reps[keep], kinds[keep]
        members, nonmembers = members[::4], nonmembers[::4]
    # scoring and decoding need no hooks: the plain model's runner, no TransformerLens bridge
    model = pk.models.runner.runner(CHECKPOINT)

    # 1. audit of the canaries on the final model (one batched call for canaries, training
    # windows and held-out windows: decoding cost grows with calls more than with batch size)
    everything = np.concatenate([canaries, members, nonmembers])
    audit = mem.audit(model, everything, batch_size=256)
    full = audit.frame
    n_c = len(canaries)
    frame = full.iloc[:n_c].reset_index(drop=True).assign(kind=kinds, repetitions=reps)
    audit.frame = frame
    audit.summary = _counts(frame) | {"prefix_len": 32, "suffix_len": 64, "lev_threshold": 10}
    audit.title = f"Audit of the {len(canaries)} canaries (final model)"
    audit.description = (
        "Every canary audited on the final model: 32-token prefix, greedy 64-token suffix, "
        "memorized = token Levenshtein < 10. Columns 'kind' and 'repetitions' come from the "
        "schedule (ground truth, not used by the audit)."
    )
    seen = reps >= 1  # repetitions 0: the never-seen controls
    # the perturbation diagnostic's canaries (step 5): seen once or twice and not extractable
    # by the final model, and the never-seen controls; its sweep is most of the study's time,
    # so it starts now in a second process and the snapshots are audited meanwhile
    rare = (reps >= 1) & (reps <= 2) & ~frame["memorized"].to_numpy()
    never = reps == 0
    probe = np.flatnonzero(rare | never)
    sigmas = (0.1,) if quick else SIGMAS
    draws = 1 if quick else DRAWS
    sweep_options = {"draws": draws, "seed": 0, "relative": True, "batch_size": 256}
    pending = None if quick else _in_background(canaries[probe], sigmas, sweep_options)
    scaling = mem.repetition_scaling(frame[seen], reps[seen])
    scaling.title = "P(memorized) vs repetitions, seen canaries"
    per_kind = {
        kind: mem.repetition_scaling(
            frame[seen & (kinds == kind)], reps[seen & (kinds == kind)]
        ).summary
        for kind in ("passage", "random")
    }
    table = (
        frame.groupby(["kind", "repetitions"])
        .agg(
            canaries=("lev", "size"),
            memorized=("memorized", "sum"),
            exact=("exact_match", "sum"),
            mean_lev=("lev", "mean"),
            mean_ce=("ce", "mean"),
        )
        .reset_index()
    )
    import plotly.graph_objects as go

    fig = go.Figure()
    for kind in ("passage", "random"):
        part = table[table["kind"] == kind]
        fig.add_trace(
            go.Scatter(x=part["repetitions"], y=part["mean_lev"], mode="markers+lines", name=kind)
        )
    fig.update_layout(
        title="Mean edit distance of the greedy suffix vs repetitions",
        xaxis={"type": "log", "title": "repetitions"},
        yaxis_title="mean token Levenshtein (64 = nothing recovered)",
    )
    canary_table = pk.report.Result(
        title="Canaries memorized by repetition count",
        frame=table,
        summary={
            "memorized": int(frame["memorized"][seen].sum()),
            "canaries": int(seen.sum()),
            "never_seen_memorized": int(frame["memorized"][~seen].sum()),
            "slope_per_doubling": scaling.summary["slope"],
            "slope_ci": [scaling.summary["slope_ci_low"], scaling.summary["slope_ci_high"]],
            "slope_passage": per_kind["passage"]["slope"],
            "slope_random": per_kind["random"]["slope"],
        },
        figs=[fig],
    )

    # 2. membership: training windows vs held-out windows
    labels = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    scored = full.iloc[n_c:].drop(columns="text").reset_index(drop=True)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        membership = mem.membership(scored, labels, n_bootstrap=200 if quick else 1000)
    membership.description += (
        f" Members: {len(members)} windows of training text; non-members: {len(nonmembers)} "
        "windows of held-out topics. Fewer than 1000 non-members, so TPR at 0.1% FPR means "
        "little."
    )

    # 3. latent memorization across the snapshots: never-seen controls stand in at the step
    # their place in the schedule would have shown them at (matched_step)
    matched = np.asarray(schedule.get("matched_step", schedule["first_seen"]))
    if quick:
        matched = matched[keep]
    series = mem.snapshot_series(CHECKPOINT)  # step -> directory; loaded one at a time
    if quick:  # the first, middle and last snapshots
        steps = list(series)
        series = {s: series[s] for s in steps[:: max(1, (len(steps) - 1) // 2)]}
    latent = mem.latent(series, canaries, first_seen=matched, repetitions=reps)
    latent.frame.insert(0, "canary", np.arange(len(canaries)))
    latent.frame.insert(1, "kind", kinds)
    trace = (
        mem.exposure_trace(latent, reps, matched, groups=kinds)
        .rename(columns={"group": "kind"})
        .dropna(subset=["auroc"])
    )
    # the baseline for "latent": never-seen controls on the same path (lev > 50 at the
    # checkpoint after the step they stand in for, < 10 later), and a one-sided Fisher test
    lf = latent.frame
    path = (lf["lev_first"] > latent.summary["latent_threshold"]) & (
        lf["min_lev_later"] < latent.summary["memorized_threshold"]
    )
    once_latent = int((lf["label"] == "latent").sum())
    n_once, n_never = int((reps == 1).sum()), int((reps == 0).sum())
    never_path = int((path & (reps == 0)).sum())
    from scipy.stats import fisher_exact

    fisher_p = float(
        fisher_exact(
            [[once_latent, n_once - once_latent], [never_path, n_never - never_path]],
            alternative="greater",
        )[1]
    )
    latent.summary |= {
        "seen_once": n_once,
        "never_seen_same_path": never_path,
        "never_seen_total": n_never,
        "latent_vs_never_seen_fisher_p": fisher_p,
        "latent_by_kind": {
            k: int(((lf["label"] == "latent") & (kinds == k)).sum()) for k in ("passage", "random")
        },
    }

    # 4. the cross-entropy diagnostic at the final model: canaries seen once or twice that the
    # audit cannot extract, against the never-seen controls of the same kind
    diag_rows = []
    diag_frames = {}
    for kind in ("all", "passage", "random"):
        of_kind = np.ones(len(reps), bool) if kind == "all" else kinds == kind
        pick = of_kind & (rare | never)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mem.membership(
                frame[pick].reset_index(drop=True),
                rare[pick],
                scores=["ce", "min_k_prob", "zlib_ratio"],
                n_bootstrap=200 if quick else 2000,
            )
        diag_frames[kind] = res
        row = res.frame.set_index("score").loc["ce"]
        diag_rows.append(
            {
                "canaries": kind,
                "seen_not_extractable": int((pick & rare).sum()),
                "never_seen": int((pick & never).sum()),
                "ce_auroc": float(row["auroc"]),
                "ce_auroc_ci_low": float(row["auroc_ci_low"]),
                "ce_auroc_ci_high": float(row["auroc_ci_high"]),
                "mean_ce_seen": float(frame["ce"][pick & rare].mean()),
                "mean_ce_never_seen": float(frame["ce"][pick & never].mean()),
            }
        )
    diag_table = pd.DataFrame(diag_rows)
    ce_diag = pk.report.Result(
        title="Cross-entropy diagnostic: seen once or twice, not extractable, vs never seen",
        frame=diag_table,
        summary={
            # within each kind (the two kinds differ in CE level, so the pooled AUROC mixes
            # that difference in); the pooled one is in the table
            "ce_auroc": min(diag_rows[1]["ce_auroc"], diag_rows[2]["ce_auroc"]),
            "ce_auroc_passage": diag_rows[1]["ce_auroc"],
            "ce_auroc_passage_ci": [
                diag_rows[1]["ce_auroc_ci_low"],
                diag_rows[1]["ce_auroc_ci_high"],
            ],
            "ce_auroc_random": diag_rows[2]["ce_auroc"],
            "ce_auroc_random_ci": [
                diag_rows[2]["ce_auroc_ci_low"],
                diag_rows[2]["ce_auroc_ci_high"],
            ],
            "ce_auroc_pooled": diag_rows[0]["ce_auroc"],
            "ce_auroc_after_exposure": {
                kind: float(trace[trace["kind"] == kind]["auroc"].iloc[0])
                for kind in ("passage", "random")
                if (trace["kind"] == kind).any()
            },
            "aim": 0.75,
        },
        figs=_trace_figures(trace, latent.frame, reps, kinds, list(series)),
        description=(
            "AUROC of -CE (the mean next-token cross-entropy over the 96 tokens) separating the "
            "canaries seen once or twice that the final model does not reproduce (lev >= 10) "
            "from the never-seen controls of the same kind, with a 95% bootstrap interval "
            "(rows resampled), per kind and pooled (the kinds differ in CE level, so the pooled "
            "AUROC mixes that in; the headline is the lower of the two kinds). 0.5 = the exposure "
            "left no trace the loss can see. The figures follow the same AUROC, and the mean edit "
            "distance, through the snapshots."
        ),
    )

    # 5. the perturbation diagnostic: seeded weight noise, relative to each tensor's std
    if pending is not None:
        pool, future = pending
        results = future.result()
        pool.shutdown()  # waits for the worker to exit, so its CPU time is counted as ours
    else:
        results = mem.perturbation_sweep(model, canaries[probe], sigmas, **sweep_options)
    sweep_rows = []
    for sigma, res in zip(sigmas, results, strict=True):
        f = res.frame.assign(seen=rare[probe], kind=kinds[probe])
        for group, part in (("seen once or twice", f[f["seen"]]), ("never seen", f[~f["seen"]])):
            sweep_rows.append(
                {
                    "sigma_rel": sigma,
                    "group": group,
                    "canaries": len(part),
                    "extractable_under_noise": float((part["min_lev"] < 10).mean()),
                    "mean_lev": float(part["lev"].mean()),
                    "mean_min_lev": float(part["min_lev"].mean()),
                    "mean_drop": float((part["lev"] - part["min_lev"]).mean()),
                }
            )
    sweep = pd.DataFrame(sweep_rows)
    pert = pk.report.Result(
        title="Perturbation diagnostic: greedy suffix under weight noise",
        frame=sweep,
        summary={
            "sigmas_relative": list(sigmas),
            "draws": draws,
            "best_fraction_seen": float(
                sweep[sweep["group"] != "never seen"]["extractable_under_noise"].max()
            ),
            "best_fraction_never_seen": float(
                sweep[sweep["group"] == "never seen"]["extractable_under_noise"].max()
            ),
        },
        figs=[_sweep_figure(sweep)],
        description=(
            f"{draws} seeded draws per sigma of N(0, (sigma x std of the tensor)^2) noise on "
            "every weight of the final model, greedy re-decoding, weights restored exactly "
            "after each draw; per canary the minimum edit distance over the draws. "
            "'extractable under noise' = min lev < 10. Seen = seen once or twice and not "
            "extractable without noise; never seen = the planted controls."
        ),
    )

    s = latent.summary
    canary_table.description = _findings(canary_table, per_kind, membership, s, ce_diag, pert)
    latent.description = (
        f"Checkpoints {s['checkpoints']}. Labels (Duan et al.): memorized = lev < "
        f"{s['memorized_threshold']:.0f} at the first checkpoint after first exposure; latent = "
        f"lev > {s['latent_threshold']:.0f} there, lev < {s['memorized_threshold']:.0f} at a "
        "later checkpoint, seen once; control = lev > "
        f"{s['latent_threshold']:.0f} at every checkpoint from first exposure on; never-seen = "
        f"a planted control. Found: {s['memorized']} memorized, {s['latent']} latent, "
        f"{s['control']} control, {s['other']} other, {s['never-seen']} never-seen. The "
        f"baseline: {s['never_seen_same_path']} of the {s['never_seen_total']} never-seen "
        f"controls follow the latent path too (lev > 50 after the step they stand in for, "
        f"< 10 later); latent among the {s['seen_once']} canaries seen once vs that, one-sided "
        f"Fisher p = {s['latent_vs_never_seen_fisher_p']:.3g}."
    )
    return [canary_table, scaling, audit, membership, latent, ce_diag, pert]


SIGMAS = (0.03, 0.1, 0.3)
DRAWS = 50


def _in_background(tokens: np.ndarray, sigmas: tuple, options: dict[str, Any]) -> Any:
    """The perturbation sweep in a second process, ``(executor, future of its results)``,
    when this machine has a second core; None otherwise. Seeded draws and as many torch
    threads as here: the same numbers as the sweep in this process."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2:
        return None
    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(torch.get_num_threads(),),
    )
    future = pool.submit(
        pk.memorization.perturbation_sweep, str(CHECKPOINT), tokens, sigmas, **options
    )
    return pool, future


def _trace_figures(
    trace: pd.DataFrame, frame: pd.DataFrame, reps: np.ndarray, kinds: np.ndarray, steps: list
) -> list[Any]:
    import plotly.graph_objects as go

    auc = go.Figure()
    for kind in ("passage", "random"):
        part = trace[trace["kind"] == kind]
        auc.add_trace(go.Scatter(x=part["step"], y=part["auroc"], mode="markers+lines", name=kind))
    auc.add_hline(y=0.5, line_dash="dot", annotation_text="no trace")
    auc.update_layout(
        title="CE diagnostic through training (seen once or twice, not extractable, vs never seen)",
        xaxis_title="training step",
        yaxis={"title": "AUROC of -CE", "range": [0, 1]},
    )
    lev = go.Figure()
    for kind in ("passage", "random"):
        for label, mask in (
            ("seen once", reps == 1),
            ("seen twice", reps == 2),
            ("never seen", reps == 0),
        ):
            rows = frame[mask & (kinds == kind)]
            lev.add_trace(
                go.Scatter(
                    x=steps,
                    y=[float(rows[f"lev@{s}"].mean()) for s in steps],
                    mode="markers+lines",
                    name=f"{kind}, {label}",
                )
            )
    lev.update_layout(
        title="Mean edit distance of the greedy suffix through training",
        xaxis_title="training step",
        yaxis={"title": "mean token Levenshtein (64 = nothing recovered)", "range": [0, 64]},
    )
    return [auc, lev]


def _sweep_figure(sweep: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for group in sweep["group"].unique():
        part = sweep[sweep["group"] == group]
        fig.add_trace(
            go.Scatter(
                x=part["sigma_rel"], y=part["mean_min_lev"], mode="markers+lines", name=group
            )
        )
    fig.update_layout(
        title="Minimum edit distance over the noise draws vs noise scale",
        xaxis={"type": "log", "title": "sigma (x each tensor's std)"},
        yaxis={"title": "mean min token Levenshtein", "range": [0, 64]},
    )
    return fig


def _counts(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "sequences": len(frame),
        "memorized": int(frame["memorized"].sum()),
        "memorized_rate": float(frame["memorized"].mean()),
        "exact_match": int(frame["exact_match"].sum()),
        "median_lev": float(frame["lev"].median()),
        "mean_ce": float(frame["ce"].mean()),
    }


def _findings(
    table: pk.report.Result,
    per_kind: dict[str, dict[str, Any]],
    membership: Any,
    latent: dict[str, Any],
    ce_diag: pk.report.Result,
    pert: pk.report.Result,
) -> str:
    s = table.summary
    lo, hi = s["slope_ci"]
    best = membership.frame.sort_values("auroc", ascending=False).iloc[0]
    latent_text = (
        f"{latent['latent']} canaries seen once were latently memorized "
        f"({latent['latent_by_kind']['passage']} passage, {latent['latent_by_kind']['random']} "
        f"random), against {latent['never_seen_same_path']} of {latent['never_seen_total']} "
        f"never-seen controls on the same path (one-sided Fisher p = "
        f"{latent['latent_vs_never_seen_fisher_p']:.3g})"
        if latent["latent"]
        else "no canary was latently memorized (none went from lev > 50 at the first snapshot "
        "after its exposure to lev < 10 later without being seen again)"
    )
    c = ce_diag.summary
    p = pert.summary
    return (
        f"What the shipped model showed: {s['memorized']} of {s['canaries']} seen canaries are "
        f"memorized (lev < 10) by the final model. P(memorized) rises by "
        f"{s['slope_per_doubling']:.3f} per doubling of the repetitions (95% CI {lo:.3f} to "
        f"{hi:.3f}); passage canaries {per_kind['passage']['slope']:.3f}, random-word canaries "
        f"{per_kind['random']['slope']:.3f} per doubling. Membership of training vs held-out "
        f"text is best told by {best['score']} (AUROC {best['auroc']:.3f}). Across the "
        f"snapshots {latent_text}. The cross-entropy diagnostic tells the canaries seen once or "
        f"twice that the final model does not reproduce from never-seen controls of the same "
        f"kind with AUROC {c['ce_auroc_passage']:.3f} for passages (95% CI "
        f"{c['ce_auroc_passage_ci'][0]:.3f}..{c['ce_auroc_passage_ci'][1]:.3f}) and "
        f"{c['ce_auroc_random']:.3f} for random words (95% CI "
        f"{c['ce_auroc_random_ci'][0]:.3f}..{c['ce_auroc_random_ci'][1]:.3f}); at the first "
        f"snapshot after the exposure it was "
        + ", ".join(f"{k} {v:.3f}" for k, v in c["ce_auroc_after_exposure"].items())
        + ". Under weight "
        f"noise at most {p['best_fraction_seen']:.0%} of those seen canaries and "
        f"{p['best_fraction_never_seen']:.0%} of the never-seen controls became extractable."
    )


def run(out: Path, quick: bool = False) -> dict[str, str]:
    out = Path(out)
    results = analyse(quick=quick)
    title = "Latent memorization in canary-lm"
    page = pk.report.write(results, out / "latent_memorization.html", title=title)
    s = results[0].summary
    ls = results[4].summary
    latent_count = ls["latent"]
    # latent memorization counts when it exceeds what the never-seen controls do by chance
    latent_shown = latent_count > 0 and ls["latent_vs_never_seen_fisher_p"] < 0.05
    c = results[5].summary
    headline = (
        f"{s['memorized']}/{s['canaries']} seen canaries memorized; slope "
        f"{s['slope_per_doubling']:.3f} per doubling of repetitions; CE diagnostic AUROC "
        f"passage {c['ce_auroc_passage']:.3f}, random {c['ce_auroc_random']:.3f}; latent: "
        f"{latent_count}"
    )
    rising = s["slope_ci"][0] > 0
    trace = c["ce_auroc"] >= c["aim"]
    met = sum([rising, trace, latent_shown])
    label = "reproduced" if met == 3 else "partly" if met else "not"
    verdict = (
        f"{label}: P(memorized) changes by {s['slope_per_doubling']:.3f} per doubling of "
        f"repetitions (95% CI {s['slope_ci'][0]:.3f}..{s['slope_ci'][1]:.3f}); canaries seen "
        f"once or twice and not extractable vs never seen: CE AUROC passage "
        f"{c['ce_auroc_passage']:.3f}, random {c['ce_auroc_random']:.3f} (aim "
        f">= {c['aim']}); {latent_count} latent canaries vs {ls['never_seen_same_path']} of "
        f"{ls['never_seen_total']} never-seen controls on the same path (Fisher p "
        f"{ls['latent_vs_never_seen_fisher_p']:.2g}; source: sequences seen once become "
        "extractable later)"
    )
    return {"title": title, "path": page.name, "description": headline, "verdict": verdict}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="report")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(Path(args.out), quick=args.quick))
