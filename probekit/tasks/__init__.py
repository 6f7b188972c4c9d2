"""Synthetic tasks, one module per family: the data, its files, and the rollouts and
evaluations that run any model probekit accepts.

- :mod:`probekit.tasks.cyclic`: arithmetic progressions mod P (the ``cyclic-lm`` checkpoint).
- :mod:`probekit.tasks.canaries`: Python-docs text with planted canaries (``canary-lm``).
- :mod:`probekit.tasks.compositional`: compositions of token-wise functions (``compfn``).
- :mod:`probekit.tasks.knowledge_graph`: entities on three cyclic orders (``kg-ring``).
- :mod:`probekit.tasks.cognitive`: the 20 cognitive tasks of Yang et al. 2019 (``cog-rnn-*``).
- :mod:`probekit.tasks.navigation`: random walks in a box with place-cell targets (``grid-rnn``).
- :mod:`probekit.tasks.grid_population`: synthetic grid-cell populations with known modules.
- :mod:`probekit.tasks.multiview`: Gaussian-blob items seen in several views (``mmcr-mlp``).
- :mod:`probekit.tasks.abstracts`: templated "abstracts" for forced choice (``brainbench-lm``).
- :mod:`probekit.tasks.energy`: contexts from 2-D Gaussian mixtures (``icl-energy``).
- :mod:`probekit.tasks.graph_navigation`: paths on DAGs, stepwise and direct (``graphnav-*``).
"""
