"""Which canaries does canary-lm memorize, and are any memorized latently?

A study on the shipped ``checkpoints/canary-lm`` (a ~1.1M-parameter Llama trained on the Python
documentation with planted canaries; seeds/abstracts.md §2, Duan et al. on latent memorization):

1. audit every canary on the final model (greedy extraction from a 32-token prefix, 64-token
   suffix) and fit P(memorized) against log2(repetitions);
2. membership inference: training-text windows vs held-out windows, every score as an attack;
3. latent memorization: follow the canaries through the float16 snapshots; label them
   memorized / latent / control per Duan et al., with the cross-entropy diagnostic;
4. weight-perturbation recovery on the final model for the canaries seen once.

The canary schedule (``schedule.json``) is used here only to evaluate what the audit found; the
audit itself never reads it. Built only from the public API (pk.load, pk.memorization,
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
    first_seen = np.asarray(schedule["first_seen"])
    if quick:  # two canaries per kind and repetition count, a quarter of the passages
        keep = np.flatnonzero(np.arange(len(reps)) % 6 < 2)
        canaries, reps, kinds, first_seen = (
            canaries[keep],
            reps[keep],
            kinds[keep],
            first_seen[keep],
        )
        members, nonmembers = members[::4], nonmembers[::4]
    model = pk.load(CHECKPOINT)

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
    scaling = mem.repetition_scaling(frame, reps)
    scaling.title = "P(memorized) vs repetitions, all canaries"
    per_kind = {
        kind: mem.repetition_scaling(frame[kinds == kind], reps[kinds == kind]).summary
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
            "memorized": int(frame["memorized"].sum()),
            "canaries": len(frame),
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

    # 3. latent memorization across the snapshots
    series = mem.snapshot_series(CHECKPOINT)  # step -> directory; loaded one at a time
    pick = np.arange(len(canaries)) if not quick else np.flatnonzero(reps <= 2)
    latent = mem.latent(series, canaries[pick], first_seen=first_seen[pick], repetitions=reps[pick])
    latent.frame.insert(0, "canary", pick)
    latent.frame.insert(1, "kind", kinds[pick])

    # 4. perturbation recovery on the canaries seen once
    once = np.flatnonzero(reps == 1)
    draws = 1 if quick else 32
    pert = mem.perturbation_recovery(model, canaries[once], draws=draws, sigma=2e-3, seed=0)
    pert.frame.insert(0, "canary", once)
    pert.frame.insert(1, "kind", kinds[once])
    pert.frame.insert(2, "label", latent.frame.set_index("canary").loc[once, "label"].to_numpy())

    s = latent.summary
    canary_table.description = _findings(canary_table, per_kind, membership, s, pert)
    latent.description = (
        f"Checkpoints {s['checkpoints']}. Labels (Duan et al.): memorized = lev < "
        f"{s['memorized_threshold']:.0f} at the first checkpoint after first exposure; latent = "
        f"lev > {s['latent_threshold']:.0f} there, lev < {s['memorized_threshold']:.0f} at a "
        "later checkpoint, seen once; control = lev > "
        f"{s['latent_threshold']:.0f} at every checkpoint from first exposure on. Found: "
        f"{s['memorized']} memorized, {s['latent']} latent, {s['control']} control, "
        f"{s['other']} other. CE diagnostic AUROC (latent vs control): "
        f"{s['ce_auroc_latent_vs_control']}."
    )
    pert.description = (
        f"Canaries seen once; {draws} draws of N(0, 2e-3^2) noise on every weight, weights "
        f"restored after each draw. {pert.summary['recovered']} of {len(once)} recovered "
        f"(min lev < 10 while lev >= 10 without noise); mean lev {pert.summary['mean_lev']:.1f}"
        f" -> mean min lev {pert.summary['mean_min_lev']:.1f}."
    )
    return [canary_table, scaling, audit, membership, latent, pert]


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
    pert: Any,
) -> str:
    s = table.summary
    lo, hi = s["slope_ci"]
    best = membership.frame.sort_values("auroc", ascending=False).iloc[0]
    latent_text = (
        f"{latent['latent']} canaries were latently memorized"
        if latent["latent"]
        else "no canary was latently memorized (none went from lev > 50 at first exposure to "
        "lev < 10 later without being seen again): this small model does not show the effect"
    )
    return (
        f"What the shipped model showed: {s['memorized']} of {s['canaries']} canaries are "
        f"memorized (lev < 10) by the final model. P(memorized) rises by {s['slope_per_doubling']:.3f}"
        f" per doubling of the repetitions (95% CI {lo:.3f} to {hi:.3f}); passage canaries "
        f"{per_kind['passage']['slope']:.3f}, random-word canaries "
        f"{per_kind['random']['slope']:.3f} per doubling. Membership of training vs held-out "
        f"text is best told by {best['score']} (AUROC {best['auroc']:.3f}). Across the "
        f"snapshots {latent_text}. Weight noise recovered {pert.summary['recovered']} of the "
        f"{pert.summary['sequences']} canaries seen once."
    )


def run(out: Path, quick: bool = False) -> dict[str, str]:
    out = Path(out)
    results = analyse(quick=quick)
    title = "Latent memorization in canary-lm"
    page = pk.report.write(results, out / "latent_memorization.html", title=title)
    s = results[0].summary
    headline = (
        f"{s['memorized']}/{s['canaries']} canaries memorized; slope "
        f"{s['slope_per_doubling']:.3f} per doubling of repetitions; latent: "
        f"{results[4].summary['latent']}"
    )
    latent_count = results[4].summary["latent"]
    rising = s["slope_ci"][0] > 0
    label = (
        "reproduced" if rising and latent_count else "partly" if rising or latent_count else "not"
    )
    verdict = (
        f"{label}: P(memorized) changes by {s['slope_per_doubling']:.3f} per doubling of "
        f"repetitions (95% CI {s['slope_ci'][0]:.3f}..{s['slope_ci'][1]:.3f}); {latent_count} "
        "latent canaries (source: sequences seen once become extractable later)"
    )
    return {"title": title, "path": page.name, "description": headline, "verdict": verdict}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="report")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(Path(args.out), quick=args.quick))
