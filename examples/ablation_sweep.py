"""Which layers does composing functions need? Mean-ablate each layer of the shipped compfn.

Run from the repository root: ``python examples/ablation_sweep.py``. Method: docs/ablation.md.
"""

# %%
import probekit as pk
from probekit.tasks import compositional

# The model, and the task with its train / held-out split of function compositions.
model = pk.load("checkpoints/compfn")
task, split = compositional.load_split("checkpoints/compfn")

# %%
# 16 held-out compositions applied to 16 random inputs: token ids [16, T].
inputs = task.sequences(split.heldout[:16], task.random_inputs(16, seed=0))
print("inputs", tuple(inputs.shape))

# %%
# Replace each layer's attention output by its mean over the batch, one layer at a time, and
# score next-token accuracy on the output tokens only (the study's metric). delta = the drop.
result = pk.ablation.sweep(
    model, inputs, "accuracy", level="layer", method="mean", positions=task.output_mask()
)
print(f"clean accuracy {result.summary['clean']:.3f}")
print(result.frame[["layer", "score", "delta"]].round(3).to_string(index=False))
