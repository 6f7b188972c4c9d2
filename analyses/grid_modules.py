"""Grid cells and grid modules: the self-supervised grid-ssl against the supervised grid-rnn.

The source (Schaeffer, Khona, Ma, Eyzaguirre, Koyejo, Fiete, NeurIPS 2023; ``docs/grid.md``)
reports that a recurrent network trained with a self-supervised framework (permuted velocity
sequences; separation, path-invariance, capacity and conformal-isometry losses; no position
target) develops grid cells in several modules of discrete spacing (three, periods about 0.3,
0.5 and 0.9 m by eye), one module without the capacity term, and a code that generalises to
larger arenas; supervised path integration onto place cells (Sorscher et al. 2023) gives one
spacing per network. The same detector (``pk.grid``: rate maps, Banino grid scores, six-peak
spacing and orientation, Gaussian-mixture modules, circular-shift null) is run on

1. ``checkpoints/grid-ssl`` (the framework, trained here on the CPU), in its training arena and
   in a 2x arena (sequences 4x longer, box 2x wider, same bin size);
2. ``checkpoints/grid-rnn`` (supervised, Sorscher-style) and its untrained twin, in its arena
   and in a 2x box;
3. a synthetic population with three known modules and distractors (what the detector reports
   when modules are there);

and the grid-ssl card's own controls (the capacity-term ablation and the untrained network) are
shown beside them. The page says what was measured, including when a network shows no grid
cells or one module. Built from the public API: pk.load, pk.grid and probekit.tasks.navigation.
Run alone: ``python analyses/grid_modules.py --out report/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

import probekit as pk
from probekit.tasks import navigation

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "checkpoints" / "grid-rnn"
SSL_CHECKPOINT = ROOT / "checkpoints" / "grid-ssl"
SYNTHETIC_MODULES = [(0.25, 6.0), (0.35, 6.0), (0.5, 21.0)]
#: The source's modules (periods read off its figure, so approximate) and its claim.
SOURCE_SPACINGS = [0.3, 0.5, 0.9]


def _activity(model: Any, n_traj: int, seed: int, scale: float = 1.0) -> dict[str, Any]:
    """Hidden states and positions of fresh trajectories in the network's arena scaled by
    ``scale``, with the extent and the bin count (same bin size at every scale)."""
    extra = model.cfg.extra
    box = tuple(scale * b for b in extra.get("box", navigation.DEFAULT_BOX))
    if navigation.is_ssl_network(model):
        bins = round(int(extra.get("bins", 40)) * scale)
        seq_len = round(int(extra.get("seq_len", navigation.SSL_STEPS)) * scale**2)
        out = navigation.rollout(model, n_traj, seed, seq_len=seq_len)
        hidden, pos = out["hidden"], out["positions"]
    else:
        bins = round(20 * scale)
        # Walks of the training length in the larger box; the start code is the place code of
        # the start, whose place cells cover only the training box.
        traj = navigation.trajectories(n_traj, int(extra.get("seq_len", 20)), box=box, seed=seed)
        with torch.no_grad():
            h0 = navigation.initial_state(model, traj.start)
            _, cache = model.run_with_cache(traj.velocity, h0, names_filter="hook_hidden")
        hidden, pos = cache["hook_hidden"], traj.positions
    return {"hidden": hidden, "positions": pos, "extent": navigation.extent_of(box), "bins": bins}


def _modules(act: dict[str, Any], shuffles: int, seed: int, null: Any = None) -> Any:
    maps = pk.grid.ratemaps(act["hidden"], act["positions"], bins=act["bins"], extent=act["extent"])
    if null is None:
        null = pk.grid.shuffle_null(
            act["hidden"],
            act["positions"],
            bins=act["bins"],
            extent=act["extent"],
            n_shuffles=shuffles,
            seed=seed,
        )
    options = {"extent": act["extent"], "null_scores": null, "seed": seed, "unit": "m"}
    try:
        return pk.grid.modules(maps, **options)
    except ValueError as err:
        # pk.grid.modules fits a Gaussian mixture to the grid cells and raises when there is
        # exactly one; one cell is no module: score without clustering, mark the cell again.
        if "minimum of 2 is required" not in str(err):
            raise
    found = pk.grid.modules(maps, max_orientation_sd=-1.0, **options)
    f = found.frame
    f["regular"] = (
        (f["n_peaks"] == 6) & (f["spacing_sd"] <= 0.1 * f["spacing"]) & (f["orientation_sd"] <= 6.0)
    )
    f["is_grid"] = f["score_pass"] & f["regular"]
    found.summary["n_grid"] = int(f["is_grid"].sum())
    return found


def map_stability(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Per unit, the Pearson correlation between its rate map in the training arena
    ``small [units, n, n]`` and the same region of its map in a 2x arena ``large [units, 2n,
    2n]`` (the central ``n x n`` bins), over bins valid in both: does the code of a place stay
    the same when the walks range further?"""
    n = small.shape[-1]
    lo = (large.shape[-1] - n) // 2
    centre = large[:, lo : lo + n, lo : lo + n]
    ok = np.isfinite(small) & np.isfinite(centre)
    out = np.full(len(small), np.nan)
    for u in range(len(small)):  # a few hundred units at most; each a short vector op
        a, b = small[u][ok[u]], centre[u][ok[u]]
        if len(a) > 2 and a.std() > 0 and b.std() > 0:
            out[u] = float(np.corrcoef(a, b)[0, 1])
    return out


def _network(
    model: Any, n_traj: int, shuffles: int, seed: int, larger: bool = True
) -> dict[str, Any]:
    one = _activity(model, n_traj, seed)
    found = _modules(one, shuffles, seed)
    if not larger:
        return {"found": found, "found_2x": None, "stability": None}
    # 4x longer walks: half as many keep the samples per (4x smaller) bin area similar
    two_act = _activity(model, max(n_traj // 2, 1), seed + 1, scale=2.0)
    # the 2x maps are judged against the training arena's null (same units, same bin size)
    two = _modules(two_act, 0, seed, null=found.null_scores)
    stable = map_stability(found.ratemaps, two.ratemaps)
    return {"found": found, "found_2x": two, "stability": stable}


def _untrained_twin(model: Any) -> Any:
    """grid-rnn at its initialisation: rebuilt from the seed and sizes on its card."""
    metrics = json.loads((CHECKPOINT / "metrics.json").read_text())
    s = metrics["settings"]
    twin, encoder = navigation.navigation_rnn(s["hidden"], s["n_place"], metrics["seed"])
    return navigation.attach_task_tensors(
        twin,
        encoder,
        model.place_centers,
        place_sigma=s["place_sigma"],
        place_surround=s["place_surround"],
        box=tuple(s["box"]),
        seq_len=s["seq_len"],
    )


def _ratios(spacings: list[float]) -> str:
    return ", ".join(f"{b / a:.2f}" for a, b in zip(spacings[:-1], spacings[1:])) or "-"


def _row(name: str, found: Any, net: dict[str, Any] | None = None) -> dict[str, Any]:
    s, f = found.summary, found.frame
    row = {
        "population": name,
        "units": s["n_units"],
        "median score60": float(f["score60"].median()),
        "max score60": float(f["score60"].max()),
        "score60 > 0.3": s["n_score_pass"],
        "null p95": s["null_p95"],
        "grid cells": s["n_grid"],
        "modules": s["n_modules"],
        "module sizes": ", ".join(str(n) for n in s["module_sizes"]) or "-",
        "module spacings": ", ".join(f"{x:.3f}" for x in s["spacings"]) or "-",
        "spacing ratios": _ratios(s["spacings"]),
        "2x arena: grid cells": None,
        "2x arena: modules": None,
        "2x arena: median map stability": None,
    }
    if net is not None and net["found_2x"] is not None:
        two = net["found_2x"].summary
        row["2x arena: grid cells"] = two["n_grid"]
        row["2x arena: modules"] = two["n_modules"]
        row["2x arena: median map stability"] = float(np.nanmedian(net["stability"]))
    return row


def _card_row(name: str, e: dict[str, Any]) -> dict[str, Any]:
    """A row from the grid-ssl card's metrics (a control trained by the recipe)."""
    spacings = e["module_spacings"]
    return {
        "population": name,
        "units": e["n_units"],
        "median score60": e["score60_quantiles"]["0.5"],
        "max score60": e["score60_max"],
        "score60 > 0.3": e["n_score_above_0.3"],
        "null p95": e["null_score60_p95"],
        "grid cells": e["n_grid_cells"],
        "modules": e["n_modules"],
        "module sizes": ", ".join(str(n) for n in e["module_sizes"]) or "-",
        "module spacings": ", ".join(f"{x:.3f}" for x in spacings) or "-",
        "spacing ratios": _ratios(spacings),
        "2x arena: grid cells": None,
        "2x arena: modules": None,
        "2x arena: median map stability": None,
    }


def _describe(name: str, s: dict[str, Any]) -> str:
    if s["n_modules"] == 0:
        return (
            f"{name}: no grid module ({s['n_grid']} grid cells; {s['n_score_pass']} units pass "
            "score60 > 0.3 alone)"
        )
    return (
        f"{name}: {s['n_grid']} grid cells in {s['n_modules']} module(s), spacings "
        f"{', '.join(f'{x:.2f}' for x in s['spacings'])} m"
        + (f", ratios {_ratios(s['spacings'])}" if s["n_modules"] > 1 else "")
    )


def analyse(quick: bool = False, seed: int = 0) -> tuple[pk.report.Result, list[Any]]:
    # --quick: fewer walks and no 2x arena (its 4x longer walks cost most of the study)
    n_traj = 300 if quick else 600
    shuffles = 1
    ssl = pk.load(SSL_CHECKPOINT, device="cpu")
    rnn = pk.load(CHECKPOINT, device="cpu")
    nets = {
        "grid-ssl (self-supervised)": _network(ssl, n_traj, shuffles, seed, larger=not quick),
        "grid-rnn (supervised)": _network(rnn, n_traj, shuffles, seed, larger=not quick),
    }
    twin = _modules(_activity(_untrained_twin(rnn), n_traj, seed), shuffles, seed)
    pop = pk.grid.synthetic_population(
        modules=SYNTHETIC_MODULES,
        cells_per_module=15,
        n_place=10,
        n_band=10,
        n_random=10,
        noise=0.1,
        seed=seed,
    )
    synth = pk.grid.modules(pop.ratemaps, extent=pop.extent, seed=seed)
    card = json.loads((SSL_CHECKPOINT / "metrics.json").read_text())

    rows = [_row(name, net["found"], net) for name, net in nets.items()]
    rows += [
        _card_row("grid-ssl without the capacity term (card)", card["no_capacity"]),
        _card_row("grid-ssl untrained (card)", card["untrained"]),
        _row("grid-rnn untrained (same init)", twin),
        _row("synthetic: 3 modules + distractors", synth),
    ]
    frame = pd.DataFrame(rows)
    s_ssl = nets["grid-ssl (self-supervised)"]["found"].summary
    s_rnn = nets["grid-rnn (supervised)"]["found"].summary
    big = [s for s, n in zip(s_ssl["spacings"], s_ssl["module_sizes"]) if n >= 8]
    ssl_multi = len(big) >= 2 and all(1.3 <= b / a <= 2.0 for a, b in zip(big[:-1], big[1:]))
    truth_spacings = sorted(s for s, _ in SYNTHETIC_MODULES)
    synth_ok = synth.summary["n_modules"] == len(SYNTHETIC_MODULES) and np.allclose(
        synth.summary["spacings"], truth_spacings, rtol=0.05
    )
    stab = {
        name: None if net["stability"] is None else float(np.nanmedian(net["stability"]))
        for name, net in nets.items()
    }
    text = "; ".join(
        [
            _describe("grid-ssl", s_ssl),
            _describe("grid-rnn", s_rnn),
            _describe("grid-ssl without the capacity term (card)", _card_summary(card)),
        ]
    )
    summary = {
        "verdict": text,
        "source_claim": (
            "three modules (about 0.3, 0.5, 0.9 m; ratios about 1.7-1.8) from the framework, "
            "one without the capacity term; the code generalises to larger arenas"
        ),
        "ssl_grid_cells": s_ssl["n_grid"],
        "ssl_modules": s_ssl["n_modules"],
        "ssl_spacings": [round(x, 4) for x in s_ssl["spacings"]],
        "ssl_modules_of_8_with_ratios_1.3_to_2": bool(ssl_multi),
        "rnn_grid_cells": s_rnn["n_grid"],
        "rnn_modules": s_rnn["n_modules"],
        "rnn_spacings": [round(x, 4) for x in s_rnn["spacings"]],
        "median_map_stability_2x": stab,
        "synthetic_modules_found": synth.summary["n_modules"],
        "synthetic_spacings_found": [round(x, 4) for x in synth.summary["spacings"]],
        "synthetic_spacings_true": truth_spacings,
        "synthetic_recovered": bool(synth_ok),
        "ssl_card_verdict": card["verdict"],
        "trajectories": n_traj,
    }
    figs = [_score_figure(nets, twin)]
    if not quick:
        figs.append(_stability_figure(nets))
    larger = (
        "2x arena (--quick: not measured)"
        if quick
        else "2x arena: rate maps over a box twice as wide at the same bin size; map stability is "
        "each unit's correlation between its map in the training arena and the same region of "
        f"its 2x map (median: grid-ssl {stab['grid-ssl (self-supervised)']:.2f}, grid-rnn "
        f"{stab['grid-rnn (supervised)']:.2f})"
    )
    study = pk.report.Result(
        title="Grid modules: self-supervised grid-ssl vs supervised grid-rnn",
        frame=frame,
        summary=summary,
        figs=figs,
        description=(
            f"{text}. The source: {summary['source_claim']}. {larger}. The detector finds "
            f"{synth.summary['n_modules']} modules in the synthetic population (spacings "
            f"{summary['synthetic_spacings_found']}, true {truth_spacings})."
        ),
    )
    sections = [study]
    for name, net in nets.items():
        net["found"].title = f"{name}: grid cells and modules (training arena)"
        sections.append(net["found"])
        if net["found_2x"] is not None:
            net["found_2x"].title = f"{name}: the 2x arena"
            sections.append(net["found_2x"])
    twin.title = "grid-rnn untrained (same init): control"
    synth.title = "Synthetic population: 3 known modules + place, band, random distractors"
    return study, [*sections, twin, synth]


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    e = card["no_capacity"]
    return {
        "n_grid": e["n_grid_cells"],
        "n_modules": e["n_modules"],
        "spacings": e["module_spacings"],
        "n_score_pass": e["n_score_above_0.3"],
    }


def _score_figure(nets: dict[str, Any], twin: Any) -> go.Figure:
    fig = go.Figure()
    series = [(name, net["found"]) for name, net in nets.items()]
    for name, found in [*series, ("grid-rnn untrained", twin)]:
        fig.add_trace(
            go.Histogram(
                x=found.frame["score60"].dropna(),
                name=name,
                opacity=0.6,
                histnorm="probability",
                nbinsx=40,
            )
        )
    fig.add_vline(x=0.3, line_dash="dash", annotation_text="grid threshold 0.3")
    fig.update_layout(
        title="score60 per unit in the training arena",
        barmode="overlay",
        xaxis_title="score60 (Banino grid score, unitless)",
        yaxis_title="fraction of units",
    )
    return fig


def _stability_figure(nets: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    for name, net in nets.items():
        fig.add_trace(
            go.Histogram(
                x=net["stability"][np.isfinite(net["stability"])],
                name=name,
                opacity=0.6,
                histnorm="probability",
                xbins={"start": -1.0, "end": 1.0, "size": 0.05},
            )
        )
    fig.update_layout(
        title="Map stability in a 2x arena (training region of the 2x map vs the 1x map)",
        barmode="overlay",
        xaxis_title="Pearson correlation between the two rate maps (unitless)",
        yaxis_title="fraction of units",
        xaxis_range=[-1, 1],
    )
    return fig


def run(out: Path, quick: bool = False) -> dict[str, str]:
    out = Path(out)
    import time

    t0 = time.perf_counter()
    study, results = analyse(quick=quick)
    t1 = time.perf_counter()
    page = pk.report.write(results, out / "grid_modules.html", title=study.title)
    print(f"[grid_modules] analyse {t1 - t0:.1f} s, page {time.perf_counter() - t1:.1f} s")
    s = study.summary
    if s["ssl_modules_of_8_with_ratios_1.3_to_2"]:
        head = "reproduced"
    elif s["ssl_grid_cells"] > 0:
        head = "partly"
    else:
        head = "not"
    verdict = (
        f"{head}: grid-ssl (self-supervised, CPU scale) has {s['ssl_grid_cells']} grid cells in "
        f"{s['ssl_modules']} module(s) (source: 3 modules); grid-rnn (supervised) "
        f"{s['rnn_grid_cells']} in {s['rnn_modules']}; detector finds "
        f"{s['synthetic_modules_found']} of the synthetic population's {len(SYNTHETIC_MODULES)}"
    )
    return {
        "title": study.title,
        "path": page.name,
        "description": study.description,
        "verdict": verdict,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="report")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(Path(args.out), quick=args.quick))
