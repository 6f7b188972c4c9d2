"""``probekit shatter``: edit a knowledge-graph model many times and measure the damage.

Runs :func:`probekit.shattering.sweep` on a ``kg-ring``-style checkpoint (a Hugging Face
directory with the ``graph.json`` written by the recipe): counterfactual edits at cyclic
distance d with ROME, MEMIT and/or fine-tuning; per edit the shattering R of the entity
representations, R per subgraph, and the accuracy drop. Writes one HTML report and a CSV of the
per-edit table; prints R per d and the correlation between R and the accuracy drop.
"""

from __future__ import annotations

import argparse
from typing import Any

from probekit.errors import UsageError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "shatter", help="knowledge edits (ROME/MEMIT/fine-tuning) and representation shattering"
    )
    p.add_argument(
        "path", nargs="?", default="checkpoints/kg-ring", help="kg checkpoint (with graph.json)"
    )
    p.add_argument("--methods", default="rome,memit", help="comma-separated: rome,memit,finetune")
    p.add_argument("--distances", type=_int_list, default=[1, 2, 3, 4], help="e.g. 1,2,3,4")
    p.add_argument("--edits", type=int, default=20, help="edits per distance and method")
    p.add_argument("--layer", type=int, default=1, help="ROME / fine-tuning layer (default 1)")
    p.add_argument(
        "--memit-layers", type=_int_list, default=[0, 1], help="MEMIT layers (default 0,1)"
    )
    p.add_argument(
        "--position",
        default="last",
        choices=["last", "subject"],
        help="token whose MLP key is edited (default last: kg-ring looks facts up there)",
    )
    p.add_argument("--hook", default=None, help="representation hook (default after --layer)")
    p.add_argument("--eval-items", type=int, default=256, help="prompts per evaluation")
    p.add_argument("--out", default="shattering.html", help="report page (default shattering.html)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    path = Path(args.path)
    if not path.is_dir():
        raise UsageError(f"no such checkpoint directory: {args.path}")
    if not (path / "graph.json").is_file():
        raise UsageError(f"{args.path} has no graph.json: not a knowledge-graph checkpoint")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - {"rome", "memit", "finetune"})
    if not methods or bad:
        raise UsageError(f"--methods must name rome, memit and/or finetune, got {args.methods!r}")
    if args.edits < 1:
        raise UsageError(f"--edits must be >= 1, got {args.edits}")
    if not args.distances or min(args.distances) < 1:
        raise UsageError(f"--distances must be positive integers, got {args.distances}")
    if args.eval_items < 1:
        raise UsageError(f"--eval-items must be >= 1, got {args.eval_items}")

    import probekit as pk
    from probekit.tasks import knowledge_graph as kg

    graph = kg.load_graph(path)
    if max(args.distances) > graph.n_entities // 2:
        raise UsageError(f"--distances must be at most {graph.n_entities // 2} for this graph")
    model = pk.load(path)
    n_layers = int(model.cfg.n_layers)
    for layer in [args.layer, *args.memit_layers]:
        if not 0 <= layer < n_layers:
            raise UsageError(f"layers must lie in 0..{n_layers - 1}, got {layer}")
    if args.hook is not None and args.hook not in model.hook_dict:
        raise UsageError(f"--hook {args.hook!r} is not a hook of this model")
    cov_tokens = kg.walks(graph, 512, seed=args.seed + 1000)
    result = pk.shattering.sweep(
        model,
        graph,
        cov_tokens,
        methods=methods,
        distances=args.distances,
        edits_per_distance=args.edits,
        layer=args.layer,
        memit_layers=args.memit_layers,
        hook=args.hook,
        eval_items=args.eval_items,
        seed=args.seed,
        progress=not args.quiet,
        position=args.position,
    )
    out = Path(args.out)
    pk.report.write(result, out, title=f"Representation shattering: {path.name}")
    csv = out.with_suffix(".csv")
    result.frame.to_csv(csv, index=False)
    for method in methods:
        s = result.summary[method]
        by_d = ", ".join(f"d={d}: {r:.4f}" for d, r in s["R_mean_by_d"].items())
        print(
            f"{method}: success {s['success_rate']:.2f}; mean R {by_d}; "
            f"r(R, drop) = {s['r_R_vs_drop']:.3f}, r^2 = {s['r2_R_vs_drop']:.3f}"
        )
    print(f"wrote {out} and {csv}")
    return 0
