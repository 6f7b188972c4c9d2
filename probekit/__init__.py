"""probekit: load a trained transformer or RNN, cache its activations, analyse and report.

The public API (see README.md and docs/index.md)::

    import probekit as pk
    model = pk.load("checkpoints/cyclic-lm")
    store = pk.cache(model, tokens, names=["blocks.0.hook_resid_post"], out="acts/")
    pk.report.write(result, "report/page.html")

Imports are lazy: ``import probekit`` and ``probekit --help`` never import transformer_lens,
which costs several seconds; it is imported the first time a transformer is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "load": ("probekit.models.loading", "load"),
    "fingerprint": ("probekit.models.fingerprint", "fingerprint"),
    "cache": ("probekit.activations", "cache"),
    "ActivationStore": ("probekit.activations", "ActivationStore"),
    "models": ("probekit.models", None),
    "activations": ("probekit.activations", None),
    "report": ("probekit.report", None),
    "tasks": ("probekit.tasks", None),
    "probes": ("probekit.probes", None),
    "memorization": ("probekit.memorization", None),
    "ablation": ("probekit.ablation", None),
    "modularity": ("probekit.modularity", None),
    "grid": ("probekit.grid", None),
    "edit": ("probekit.edit", None),
    "shattering": ("probekit.shattering", None),
    "stepwise": ("probekit.stepwise", None),
    "geometry": ("probekit.geometry", None),
    "forced_choice": ("probekit.forced_choice", None),
    "attention": ("probekit.attention", None),
    "memory": ("probekit.memory", None),
}

__all__ = [
    "ActivationStore",
    "ablation",
    "activations",
    "attention",
    "cache",
    "edit",
    "fingerprint",
    "forced_choice",
    "geometry",
    "grid",
    "load",
    "memorization",
    "memory",
    "models",
    "modularity",
    "probes",
    "report",
    "shattering",
    "stepwise",
    "tasks",
]

if TYPE_CHECKING:  # pragma: no cover
    from probekit.activations import ActivationStore, cache
    from probekit.models.fingerprint import fingerprint
    from probekit.models.loading import load


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'probekit' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
