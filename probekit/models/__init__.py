"""The hooked-model layer: anything probekit analyses is a TransformerLens-hookable model.

Transformers become a ``transformer_lens`` ``TransformerBridge``; RNNs become
:class:`probekit.models.HookedRNN`, a ``HookedRootModule`` whose hidden-state hooks cover every
time step. Both speak TransformerLens's contract (``run_with_cache``, ``run_with_hooks``,
``hook_dict``), so one analysis function serves both.
"""

from __future__ import annotations

from probekit.fileio import CheckpointError
from probekit.models.fingerprint import fingerprint
from probekit.models.loading import load
from probekit.models.rnn import HookedRNN, RNNConfig

__all__ = ["CheckpointError", "HookedRNN", "RNNConfig", "fingerprint", "load"]
