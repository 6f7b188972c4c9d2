"""Grid cells from cached activations: roll the shipped grid-rnn out once, analyse the store.

Run from the repository root: ``python examples/grid_from_store.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import probekit as pk
from probekit.tasks import navigation

ROOT = Path(__file__).resolve().parent.parent

# 1. Load the path-integrating RNN and cache its hidden states on 500 fresh trajectories; the
#    positions, start points and place-code targets are kept beside them as store extras.
model = pk.load(ROOT / "checkpoints" / "grid-rnn", device="cpu")
out = Path(tempfile.mkdtemp()) / "rollout"
navigation.cache_rollout(model, 500, seed=0, out=out)

# 2. Later, anywhere (no model needed): reopen the store and run the grid analysis from it.
store = pk.ActivationStore.open(out)
print(store, store.extras)
extent = navigation.extent_of(tuple(model.cfg.extra["box"]))
maps = pk.grid.ratemaps(store["hook_hidden"], store["positions"], bins=20, extent=extent)
found = pk.grid.modules(maps, extent=extent)
s = found.summary
print(f"{s['n_grid']} grid cells of {s['n_units']} units in {s['n_modules']} module(s)")
page = pk.report.write([found], out.parent / "grid.html", title="grid-rnn from a store")
print("report:", page)
