"""Task variance and functional clusters of a cognitive-task RNN from cached activations.

Run from the repository root: ``python examples/modularity_from_store.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import probekit as pk
from probekit.tasks import cognitive

ROOT = Path(__file__).resolve().parent.parent

# 1. The trials task variance is measured on (fixed epoch timing, 32 per task), as one batch
#    with each trial's task id and the steps that count (after the fixation epoch) as extras.
model = pk.load(ROOT / "checkpoints" / "cog-rnn-bimt")
data = cognitive.variance_data(n_trials=32, seed=0)
out = Path(tempfile.mkdtemp()) / "acts"
pk.cache(
    model,
    data["inputs"],
    "hook_hidden",
    out=out,
    extras=data["extras"],
    dtype=None,
    batch_size=128,
    progress=False,
)

# 2. From the store (a path works too): the same numbers as task_variance(model, n_trials=32).
tv = pk.modularity.task_variance(out)
clusters = pk.modularity.cluster(tv, k_range=range(2, 13), n_init=5, embeddings=())
print(f"{clusters.summary['n_active']} active units in k = {clusters.k} clusters")
anat = pk.modularity.anatomical(model.W_rec, clusters.labels, positions=model.positions)
print(f"Newman Q {anat.summary['Q']:.3f} (z = {anat.summary['Q_z']:.1f} against label shuffles)")
