"""MMCR embedding geometry: isotropic random embeddings against the shipped trained encoder.

Run from the repository root: ``python examples/embedding_geometry.py``.
Method: docs/embedding_geometry.md.
"""

# %%
import torch

import probekit as pk
from probekit.tasks import multiview

# Embeddings are [items, views, dim]: several augmented views of each item.
items, views, dim = 64, 4, 32
g = torch.Generator().manual_seed(0)
random = pk.geometry.mmcr(torch.randn(items, views, dim, generator=g))

# %%
# The shipped MLP trained with MMCR, on fresh views from its own task (blobs in R^32).
task = multiview.load_task("checkpoints/mmcr-mlp")
encoder = multiview.load_encoder("checkpoints/mmcr-mlp")
with torch.no_grad():
    trained = pk.geometry.mmcr(encoder(task.sample(items, views, seed=1)))

# %%
# gap = 1 - ||M||_* / sqrt(N min(N, D)): how far the centroids' nuclear norm is from its bound.
# Alignment (views of an item agree: lower is better) and uniformity (items spread: lower).
for name, r in [("random", random), ("trained", trained)]:
    s = r.summary
    print(
        f"{name:8s} gap {s['gap']:.3f}  alignment {s['alignment']:.3f}  "
        f"uniformity {s['uniformity']:.3f}  effective rank {s['effective_rank']:.1f}"
    )
