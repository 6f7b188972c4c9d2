"""What each layer of the shipped compfn encodes: linear probes on cached residual streams.

Run from the repository root: ``python examples/probes.py``. Method: docs/probes.md.
"""

# %%
import probekit as pk
from probekit.tasks import compositional

model = pk.load("checkpoints/compfn")
task, split = compositional.load_split("checkpoints/compfn")
inputs = task.sequences(split.heldout[:16], task.random_inputs(16, seed=0))  # [16, T]

# %%
# Cache the residual stream after the first and the last block (in memory: no out=).
names = ["blocks.0.hook_resid_post", f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
acts = pk.cache(model, inputs, names, progress=False)

# %%
# Per-position labels: "next" is the token the model must write next (-1 = position skipped).
# One logistic-regression probe per hook, scored on held-out sequences against chance.
labels = {"next": task.labels(inputs)["next"]}
probe = pk.probes.linear(acts, labels, max_iter=100)  # converged enough for a demo
print(probe.frame[["hook", "label", "test_accuracy", "chance"]].round(3).to_string(index=False))
