"""Attention as clustering on the hypersphere, and a Gaussian KDE as an associative memory.

Run from the repository root: ``python examples/attention_hypersphere.py``.
Method: docs/attention_clustering.md.
"""

# %%
import torch

import probekit as pk
from probekit.tasks import cyclic

# The shipped pre-LayerNorm GPT-2 and 16 arithmetic progressions mod 53: tokens [16, 17].
model = pk.load("checkpoints/cyclic-lm")
tokens = cyclic.progressions(53, 12, 16)[::40][:16]

# %%
# Each head's attention rewritten exactly as the posterior of a von Mises-Fisher mixture over
# its keys: reconstruction error (~0 = exact), concentration kappa, modes per query.
heads = pk.attention.hypersphere(model, tokens, mode_sequences=1)
cols = ["layer", "head", "reconstruction_error", "kappa_mean", "modes_fixed_point"]
print(heads.frame[cols].round(4).to_string(index=False))

# %%
# pk.memory: the update v <- sum_k softmax(-beta ||mu_k - v||^2) mu_k retrieves stored patterns.
# 32 unit patterns in 16 dimensions, starts at cosine 0.6 to their pattern, 10 updates.
patterns = pk.memory.random_patterns(32, 16, seed=0)
starts = pk.memory.perturb(patterns, overlap=0.6, seed=1)
ends = pk.memory.retrieve(patterns, starts, beta=16.0, steps=10)
cosine = torch.nn.functional.cosine_similarity(ends, patterns, dim=-1)
print(f"cosine to own pattern: start 0.60, after retrieval {float(cosine.mean()):.3f}")
