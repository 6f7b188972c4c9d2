"""A model's identity: sha256 over its config and weights.

Activation stores record the fingerprint of the model that wrote them, so a store is never
silently reused for a different (or edited) model. The hash is over canonical bytes: the
config as sorted JSON, then each tensor by sorted name with its dtype, shape and raw CPU
bytes. It is the same across processes and devices, and changes with any weight.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# Config keys that say how or where a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "name_or_path",
    "_attn_implementation",
    "attn_implementation",
    "_attn_implementation_autoset",
    "_commit_hash",
    "torch_dtype",
    "dtype",
    "device",
    "device_map",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "tie_encoder_decoder",
}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {
            str(k): _jsonable(v)
            for k, v in obj.items()
            if str(k) not in _VOLATILE_CONFIG_KEYS and not str(k).startswith("_")
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config that, with the weights, defines what ``model`` computes."""
    if hasattr(model, "config_dict"):  # probekit.models.HookedRNN
        return {"probekit": model.config_dict()}
    original = getattr(model, "original_model", None)
    hf_config = getattr(original, "config", None) or getattr(model, "config", None)
    if hf_config is not None and hasattr(hf_config, "to_dict"):
        return {"hf": _jsonable(hf_config.to_dict())}
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        return {"tl": _jsonable(cfg.to_dict())}
    return {"module": type(model).__qualname__}


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors hashed: the wrapped Hugging Face model's state dict for a bridge."""
    original = getattr(model, "original_model", None)
    source = original if isinstance(original, nn.Module) else model
    return source.state_dict()


def fingerprint(model: nn.Module) -> str:
    """sha256 hex digest over ``model``'s config and weights.

    Stable across processes and devices (tensors are hashed as CPU bytes), and any change
    to any weight, or to the config, changes it.

    >>> import torch, probekit as pk
    >>> a = pk.load(torch.nn.GRU(3, 4, batch_first=True))
    >>> len(pk.fingerprint(a))
    64
    """
    h = hashlib.sha256()
    h.update(json.dumps(model_config(model), sort_keys=True).encode())
    for name, tensor in sorted(model_weights(model).items()):
        t = tensor.detach()
        h.update(f"\0{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # Viewing as bytes keeps the exact bits for every dtype, bfloat16 and float8 included.
    return t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
