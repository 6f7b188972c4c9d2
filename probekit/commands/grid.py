"""``probekit grid``: grid cells, their spacing and orientation, and grid modules.

Either from a path-integrating network checkpoint (``checkpoints/grid-rnn``,
``checkpoints/grid-ssl`` or one built the same way: it runs on fresh trajectories of its task in
``probekit.tasks.navigation``), or from activation and position arrays saved to files
(``--activations``, ``--positions``: ``.npy``, ``.npz``, ``.safetensors`` or ``.pt``,
``FILE:KEY`` to pick an array). Writes the HTML report ``--out DIR/NAME.html`` and beside it
``DIR/NAME.json`` (the modules summary: ``n_modules``, ``spacings``, ``spacing_ratios``,
``orientations``, ...) and ``DIR/NAME.csv`` (one row per unit; also kept as
``NAME.units.csv``); prints the headline numbers.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from probekit.errors import UsageError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "grid", help="grid cells and grid modules of a navigation RNN or saved activations"
    )
    p.add_argument(
        "path", nargs="?", default=None, help="grid-rnn or grid-ssl style checkpoint directory"
    )
    p.add_argument("--activations", help="[samples, units] or [batch, time, units] array file")
    p.add_argument("--positions", help="[samples, 2] or [batch, time, 2] array file (x, y)")
    p.add_argument("--out", default="grid.html", help="report page (default grid.html)")
    p.add_argument(
        "--bins", type=int, default=None, help="bins per axis (default: the checkpoint's, or 20)"
    )
    p.add_argument("--extent", help="x0,x1,y0,y1 (default: the checkpoint's box / data range)")
    p.add_argument("--threshold", type=float, default=0.3, help="score60 threshold (default 0.3)")
    p.add_argument("--method", choices=["banino", "min_max"], default="banino")
    p.add_argument("--n-trajectories", type=int, default=4000, help="checkpoint mode (4000)")
    p.add_argument("--shuffles", type=int, default=2, help="circular shifts per unit (2)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_run)


def _load_array(spec: str, what: str):
    """A float array from ``FILE[:KEY]`` (the one input reader, :func:`probekit.inputs.read_data`)."""
    from probekit.inputs import read_data

    value = read_data(spec, flag=f"--{what}")
    if isinstance(value, list):
        raise UsageError(f"--{what} must be an array file (.npy, .npz, .safetensors, .pt)")
    return value.double().numpy()


def _extent(text: str | None):

    if text is None:
        return None
    try:
        x0, x1, y0, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--extent must be x0,x1,y0,y1, got {text!r}") from None
    if not (x1 > x0 and y1 > y0):
        raise UsageError(f"--extent must have x1 > x0 and y1 > y0, got {text!r}")
    return ((x0, x1), (y0, y1))


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.bins is not None and args.bins < 3:
        raise UsageError(f"--bins must be >= 3, got {args.bins}")
    if args.shuffles < 0:
        raise UsageError(f"--shuffles must be >= 0, got {args.shuffles}")
    if args.n_trajectories < 1:
        raise UsageError(f"--n-trajectories must be >= 1, got {args.n_trajectories}")
    from_files = args.activations is not None or args.positions is not None
    if from_files == (args.path is not None):
        raise UsageError("give either a checkpoint PATH or both --activations and --positions")
    if from_files and (args.activations is None or args.positions is None):
        raise UsageError("--activations and --positions go together")
    extent = _extent(args.extent)

    import probekit as pk

    bins, unit = args.bins or 20, "position units"
    if from_files:
        acts = _load_array(args.activations, "activations")
        pos = _load_array(args.positions, "positions")
        source = f"{args.activations} at {args.positions}"
    else:
        if not Path(args.path).exists():
            raise UsageError(f"no such checkpoint: {args.path}")
        from probekit.models.rnn import HookedRNN
        from probekit.tasks import navigation

        model = pk.load(args.path, device="cpu")
        ssl = navigation.is_ssl_network(model)
        if not isinstance(model, HookedRNN) or not (ssl or hasattr(model, "place_centers")):
            raise UsageError(
                f"{args.path} is not a navigation network (an ssl-grid network, or an RNN with "
                "the encoder and place_centers extra tensors of "
                "probekit.tasks.navigation.attach_task_tensors)"
            )
        out = navigation.rollout(model, args.n_trajectories, args.seed)
        acts, pos = out["hidden"].numpy(), out["positions"].numpy()
        if extent is None:
            extent = navigation.extent_of(tuple(model.cfg.extra.get("box", navigation.DEFAULT_BOX)))
        bins, unit = args.bins or int(model.cfg.extra.get("bins", 20)), "m"
        source = f"{args.path}: {args.n_trajectories} trajectories, seed {args.seed}"
    try:
        maps = pk.grid.ratemaps(acts, pos, bins=bins, extent=extent)
        if extent is None:
            p2 = pos.reshape(-1, 2)
            extent = (
                (float(p2[:, 0].min()), float(p2[:, 0].max())),
                (float(p2[:, 1].min()), float(p2[:, 1].max())),
            )
        null = None
        if args.shuffles:
            null = pk.grid.shuffle_null(
                acts, pos, bins=bins, extent=extent, n_shuffles=args.shuffles, seed=args.seed
            )
        found = pk.grid.modules(
            maps,
            extent=extent,
            threshold=args.threshold,
            method=args.method,
            null_scores=null,
            seed=args.seed,
            unit=unit,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    found.description = f"{found.description} Source: {source}."
    page = pk.report.write([found], Path(args.out), title=f"Grid cells: {source}")
    csv = Path(args.out).with_suffix(".csv")
    found.frame.to_csv(csv, index=False)
    found.frame.to_csv(Path(args.out).with_suffix(".units.csv"), index=False)
    summary_path = Path(args.out).with_suffix(".json")
    summary_path.write_text(json.dumps(_json_summary(found.summary, source, bins), indent=2) + "\n")
    s = found.summary
    print(
        f"units={s['n_units']} score60>{args.threshold}: {s['n_score_pass']} grid cells "
        f"(score + regular ring): {s['n_grid']} modules: {s['n_modules']} null p95: "
        f"{s['null_p95']:.3f}"
    )
    if s["n_modules"]:
        print("module spacings: " + ", ".join(f"{x:.3f}" for x in s["spacings"]))
    print(f"report: {page}\nunits: {csv}\nmodules: {summary_path}")
    return 0


def _json_summary(summary: dict[str, Any], source: str, bins: int) -> dict[str, Any]:
    """The modules summary as JSON: NaN becomes null, numpy numbers plain numbers."""
    import math

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    keys = ("n_modules", "spacings", "spacing_ratios", "orientations")
    out = {k: plain(summary[k]) for k in keys}
    out.update({k: plain(v) for k, v in summary.items() if k not in keys})
    out.update({"source": source, "bins": bins})
    return out
