"""The hooked-model layer: anything probekit analyses is a TransformerLens-hookable model.

Transformers become a ``transformer_lens`` ``TransformerBridge``; RNNs become
:class:`probekit.models.HookedRNN`, a ``HookedRootModule`` whose hidden-state hooks cover every
time step. Both speak TransformerLens's contract (``run_with_cache``, ``run_with_hooks``,
``hook_dict``), so one analysis function serves both. :mod:`probekit.models.runner` is the one
place that runs a model (logits, decoding, activations) for every analysis.

Names are imported lazily: ``import probekit.models.runner`` costs no transformer_lens import.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CheckpointError": ("probekit.fileio", "CheckpointError"),
    "HookedRNN": ("probekit.models.rnn", "HookedRNN"),
    "HookedSSLGrid": ("probekit.models.ssl_grid", "HookedSSLGrid"),
    "RNNConfig": ("probekit.models.rnn", "RNNConfig"),
    "SSLGridConfig": ("probekit.models.ssl_grid", "SSLGridConfig"),
    "Runner": ("probekit.models.runner", "Runner"),
    "fingerprint": ("probekit.models.fingerprint", "fingerprint"),
    "load": ("probekit.models.loading", "load"),
}

__all__ = sorted(_LAZY)


_SUBMODULES = ("agreement", "fingerprint", "loading", "rnn", "runner", "ssl_grid")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"probekit.models.{name}")
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'probekit.models' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
