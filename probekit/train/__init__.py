"""Training loops and the recipes that produce the checkpoints shipped under ``checkpoints/``.

``train_causal_lm`` is a deterministic next-token loop for small causal LMs; ``RECIPES`` maps a
shipped checkpoint's name to the function that rebuilds it (``probekit train NAME``).
"""

from __future__ import annotations

from probekit.train.causal_lm import TrainResult, cosine_lr_factor, train_causal_lm
from probekit.train.recipes import RECIPES, CyclicLMRecipe, atomic_directory, build_cyclic_lm

__all__ = [
    "RECIPES",
    "CyclicLMRecipe",
    "TrainResult",
    "atomic_directory",
    "build_cyclic_lm",
    "cosine_lr_factor",
    "train_causal_lm",
]
