"""Synthetic data generators, one module per task family.

- :mod:`probekit.tasks.cyclic`: arithmetic progressions mod P (the ``cyclic-lm`` checkpoint).
- :mod:`probekit.tasks.canaries`: Python-docs text with planted canaries (``canary-lm``).
- :mod:`probekit.tasks.compositional`: compositions of token-wise functions (``compfn``).
- :mod:`probekit.tasks.knowledge_graph`: entities on three cyclic orders (``kg-ring``).
- :mod:`probekit.tasks.cognitive`: the 20 cognitive tasks of Yang et al. 2019 (``cog-rnn-*``).
- :mod:`probekit.tasks.navigation`: random walks in a box with place-cell targets (``grid-rnn``).
"""
