"""Synthetic data generators, one module per task family.

- :mod:`probekit.tasks.cyclic`: arithmetic progressions mod P (the ``cyclic-lm`` checkpoint).
"""
