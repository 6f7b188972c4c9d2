"""Does one knowledge edit shatter the entity geometry of kg-ring, and does that predict damage?

The representation-shattering study (docs/shattering.md) on the shipped
``checkpoints/kg-ring`` (a small GPT-2 trained on random walks over three cyclic orders of
entities): counterfactual edits of facts on ring I, rewriting the tail to the entity d = 1..4
steps away on that ring, with ROME and MEMIT; per edit the shattering R of the entity
representations (pairwise-distance distortion after the edited layer), R per subgraph (contexts
from the edit ring, a retained ring and the third, test ring) and the accuracy drop on direct
recall, logical and compositional inference. The source reports R rising with d (about 0.02 at
d=1 to 0.28 at d=4) and R explaining most of the accuracy drop (r^2 about 0.9); this page
reports what the shipped model shows, whatever it is. Built only from the public API.

Run alone: ``python analyses/representation_shattering.py --out report/``; ``probekit demo``
runs it too.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

import probekit as pk
from probekit.tasks import knowledge_graph as kg

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "kg-ring"


def _fmt_by_d(values: dict[int, float]) -> str:
    return ", ".join(f"d={d}: {v:.4f}" for d, v in values.items())


def _verdict(summary: dict[str, Any], methods: list[str]) -> str:
    lines = []
    for method in methods:
        s = summary[method]
        r_by_d = s["R_mean_by_d"]
        ds = sorted(r_by_d)
        rising = all(r_by_d[a] < r_by_d[b] for a, b in zip(ds, ds[1:], strict=False))
        r2 = s["r2_R_vs_drop"]
        lines.append(
            f"{method.upper()}: edit success {s['success_rate']:.0%}. Mean R by distance: "
            f"{_fmt_by_d(r_by_d)} (normalised: {_fmt_by_d(s['R_normalized_mean_by_d'])}); mean "
            f"accuracy drop: {_fmt_by_d(s['drop_mean_by_d'])}. Correlation of R with the "
            f"accuracy drop over edits: r = {s['r_R_vs_drop']:.3f}, r^2 = {r2:.3f}; correlation "
            f"of d with R: r = {s['r_distance_vs_R']:.3f}. "
            + (
                "R rises monotonically with d here"
                if rising
                else "R does not rise monotonically with d here"
            )
            + (
                " and R explains most of the accuracy drop (r^2 > 0.5), as in the source."
                if (not math.isnan(r2) and r2 > 0.5)
                else " and R does not explain most of the accuracy drop (r^2 <= 0.5), unlike the source."
            )
        )
    return "\n\n".join(lines)


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = pk.load(CHECKPOINT)
    graph = kg.load_graph(CHECKPOINT)
    metrics = json.loads((CHECKPOINT / "metrics.json").read_text())
    n_layers = int(model.cfg.n_layers)
    layer = min(1, n_layers - 1)
    memit_layers = list(range(layer + 1))
    position = "last"
    methods = ["rome", "memit"]
    per_d = 1 if quick else 20
    cov_tokens = kg.walks(graph, 256 if quick else 1024, seed=1000)
    sweep = pk.shattering.sweep(
        model,
        graph,
        cov_tokens,
        methods=methods,
        distances=(1, 4) if quick else (1, 2, 3, 4),
        edits_per_distance=per_d,
        layer=layer,
        memit_layers=memit_layers,
        eval_items=64 if quick else 256,
        seed=0,
        progress=not quick,
        position=position,
    )
    # One edit pictured: the first ROME edit at the largest distance.
    first = pk.shattering.kg_edits(graph, model, 4, 1, order=0, seed=4)[0]
    edited = pk.edit.rome(
        model, first.request(), layer=layer, cov_tokens=cov_tokens, position=position
    )
    # Why position="last": the best shift of the MLP output at the subject token alone, found
    # without any constraint, barely moves the answer in this model.
    at_subject = pk.edit.prepare(model, first.request(), "subject")
    shift = pk.edit.optimise_output_shift(model, at_subject, layer, kl_weight=0.0, weight_decay=0.0)
    mask = torch.zeros(1, len(at_subject.prompt), 1)
    mask[0, at_subject.subject_position] = 1.0
    with torch.no_grad():
        shifted = model.run_with_hooks(
            at_subject.prompt[None],
            fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", lambda t, hook: t + mask * shift)],
        )
    p_subject = float(torch.softmax(shifted[0, -1], -1)[at_subject.target])
    acc = metrics["accuracy"]
    sweep.description = (
        f"Model: checkpoints/kg-ring ({n_layers} layers; direct recall {acc['direct']:.3f}, "
        f"logical inference {acc['logical']:.3f}, compositional inference "
        f"{acc['compositional']:.3f}, chance {1 / graph.n_entities:.4f}). "
        f"{per_d} counterfactual edit(s) per distance d = {'1 and 4' if quick else '1..4'} "
        "on ring I, each with ROME "
        f"(layer {layer}) and MEMIT (layers {memit_layers}); key covariance from "
        f"{len(cov_tokens)} training walks. The edits key on the relation token (the prompt's "
        f"last token, position='last'), not on the subject token as ROME and MEMIT do in large "
        f"models: in kg-ring an unconstrained shift of layer {layer}'s MLP output at the subject "
        f"token raises p(new object) only to {p_subject:.3f} (example edit below), so the fact is "
        "looked up at the relation token. R: distortion of the pairwise distances of the "
        f"{graph.n_entities} entity representations at blocks.{layer}.hook_resid_post, averaged "
        "over the 24 true-fact contexts of each entity (8 per ring; R_edit / R_retain / R_test "
        "use one ring's contexts). Accuracy drop: mean over direct recall on the edit ring and "
        "on the retained ring II (the edited fact excluded), logical and compositional "
        "inference.\n\n"
        + _verdict(sweep.summary, methods)
        + (
            "\n\nQuick mode: one edit at d = 1 and one at d = 4 per method; illustrative only."
            if quick
            else ""
        )
    )

    sets = kg.evaluation_sets(graph, max_items=64 if quick else 256, seed=0)
    one = pk.shattering.measure(
        model,
        edited,
        torch.arange(graph.n_entities),
        f"blocks.{layer}.hook_resid_post",
        pk.shattering.kg_contexts(graph),
        subgraphs={
            "edit": pk.shattering.kg_contexts(graph, 0),
            "retain": pk.shattering.kg_contexts(graph, 1),
            "test": pk.shattering.kg_contexts(graph, 2),
        },
        evaluations=sets,
        positions=graph.positions[0].tolist(),
        edited_entity=first.head,
        projections=("pca",) if quick else ("isomap", "pca"),
    )
    ok = pk.edit.success(edited, [first.request()])
    example = pk.report.Result(
        title="One edit, pictured",
        frame=one.frame,
        summary=one.summary
        | {
            "edit_success": bool(ok.success[0]),
            "target_prob": float(ok.target_prob[0]),
            "p_new_object_best_subject_shift": p_subject,
        },
        figs=one.figures(),
        description=(
            f"ROME edit (layer {layer}, position='last') of e{first.head} "
            f"{kg.relation_name(first.relation)}: e{first.old} -> e{first.new} (d = 4). Entity representations before and after, coloured by the "
            "position on ring I (the edited ring), the edited subject starred. PCA of 'after' "
            "uses the 'before' axes; Isomap is fitted on each set."
        ),
    )
    path = pk.report.write(
        [sweep, example],
        out / "representation_shattering.html",
        title="Representation shattering on kg-ring",
    )
    sweep.frame.to_csv(out / "representation_shattering.csv", index=False)
    rome = sweep.summary["rome"]
    r_by_d = rome["R_mean_by_d"]
    ds = sorted(r_by_d)
    rising = all(r_by_d[a] < r_by_d[b] for a, b in zip(ds, ds[1:], strict=False))
    r2 = rome["r2_R_vs_drop"]
    explains = not math.isnan(r2) and r2 > 0.5
    label = "reproduced" if rising and explains else "partly" if rising or explains else "not"
    r_ci = rome["R_ci95_by_d"]
    drop_by_d, drop_ci = rome["drop_mean_by_d"], rome["drop_ci95_by_d"]

    def interval(ci: list[float]) -> str:
        return "" if any(math.isnan(v) for v in ci) else f" [{ci[0]:.3f}, {ci[1]:.3f}]"

    verdict = (
        f"{label}: ROME's R goes {r_by_d[ds[0]]:.3f}{interval(r_ci[ds[0]])} (d = {ds[0]}) to "
        f"{r_by_d[ds[-1]]:.3f}{interval(r_ci[ds[-1]])} (d = {ds[-1]}), accuracy drop "
        f"{drop_by_d[ds[0]]:.3f}{interval(drop_ci[ds[0]])} to "
        f"{drop_by_d[ds[-1]]:.3f}{interval(drop_ci[ds[-1]])} (95% intervals over "
        f"{rome['edits_by_d'][ds[-1]]} edits per d); r = {rome['r_R_vs_drop']:.2f}, r^2 = "
        f"{r2:.2f} of R with the drop (source: R from ~0.02 at d = 1 to ~0.28 at d = 4, "
        "r^2 ~ 0.9)"
    )
    return {
        "title": "Representation shattering on kg-ring",
        "path": path.name,
        "description": "ROME / MEMIT edits at distance d = 1..4: R per d, accuracy drop, r^2.",
        "verdict": verdict,
        "summary": sweep.summary,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="report")
    parser.add_argument("--quick", action="store_true")
    ns = parser.parse_args()
    info = run(Path(ns.out), quick=ns.quick)
    print(info["path"])
    print(json.dumps(info["summary"], indent=1))
