"""Formulas as short pure functions over tensors, shared by analyses and recipes.

- :mod:`probekit.stats.mmcr`: nuclear norms, the MMCR loss and the geometry of multi-view
  embeddings (alignment, uniformity, effective rank, the capacity bound).
"""
