"""``probekit modularity``: functional clusters of an RNN's units and their anatomy.

For a CTRNN trained on the cognitive tasks (e.g. ``checkpoints/cog-rnn-bimt``): task variance of
every unit, k-means clusters chosen by silhouette, Newman Q / within-cluster weight fraction /
locality (when the checkpoint has unit ``positions``) against label shuffles, and cluster
lesions. Writes one HTML report and a CSV of the unit labels; prints the headline numbers.
"""

from __future__ import annotations

import argparse
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "modularity",
        help="functional clusters of an RNN's units (task variance), their anatomy and lesions",
    )
    p.add_argument("path", help="probekit RNN checkpoint trained on probekit.tasks.cognitive")
    p.add_argument("--out", default="modularity.html", help="report page (default modularity.html)")
    p.add_argument("--tasks", nargs="+", default=None, help="task keys (default: all 20)")
    p.add_argument("--n-trials", type=int, default=64, help="trials per task (default 64)")
    p.add_argument("--k-max", type=int, default=29, help="largest k tried (default 29)")
    p.add_argument("--normalize", choices=["max", "sum"], default="max")
    p.add_argument("--n-null", type=int, default=100, help="label shuffles (default 100)")
    p.add_argument("--no-lesion", action="store_true", help="skip the cluster lesions")
    p.add_argument("--umap", action="store_true", help="also draw a UMAP map (slow first call)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.n_trials < 2:
        raise UsageError(f"--n-trials must be >= 2, got {args.n_trials}")
    if args.k_max < 2:
        raise UsageError(f"--k-max must be >= 2, got {args.k_max}")
    if args.n_null < 1:
        raise UsageError(f"--n-null must be >= 1, got {args.n_null}")
    if not Path(args.path).exists():
        raise UsageError(f"no such checkpoint: {args.path}")

    import probekit as pk
    from probekit.models.rnn import HookedRNN
    from probekit.tasks import cognitive

    if args.tasks is not None:
        bad = [t for t in args.tasks if t not in cognitive.TASKS]
        if bad:
            raise UsageError(
                f"unknown task(s) {', '.join(bad)}; known: {', '.join(cognitive.TASKS)}"
            )
    model = pk.load(args.path)
    if not isinstance(model, HookedRNN):
        raise UsageError(f"{args.path} is not an RNN checkpoint (got {type(model).__name__})")
    tv = pk.modularity.task_variance(model, args.tasks, n_trials=args.n_trials, seed=args.seed)
    clusters = pk.modularity.cluster(
        tv,
        k_range=range(2, args.k_max + 1),
        normalize=args.normalize,
        seed=args.seed,
        embeddings=("tsne", "umap") if args.umap else ("tsne",),
    )
    positions = getattr(model, "positions", None)
    anat = pk.modularity.anatomical(
        model.W_rec, clusters.labels, positions=positions, n_null=args.n_null, seed=args.seed
    )
    results: list[Any] = [clusters, anat]
    if not args.no_lesion:
        results.append(
            pk.modularity.lesion(
                model, args.tasks, clusters.labels, n_trials=args.n_trials, seed=args.seed
            )
        )
    results.append(tv)
    out = Path(args.out)
    page = pk.report.write(results, out, title=f"Modularity of {Path(args.path).name}")
    csv = out.with_suffix(".labels.csv")
    clusters.frame.to_csv(csv, index=False)
    s = anat.summary
    line = (
        f"k={clusters.k} silhouette={clusters.silhouette:.3f} active={clusters.summary['n_active']}"
        f" Q={s['Q']:.3f} (z={s['Q_z']:.1f}, p={s['Q_p']:.3f})"
        f" within_fraction={s['within_fraction']:.3f} (z={s['within_fraction_z']:.1f})"
    )
    if positions is not None:
        line += f" locality={s['locality']:.3f} (z={s['locality_z']:.1f})"
    print(line)
    print(f"report: {page}\nlabels: {csv}")
    return 0
