"""Config and weights must agree before a model is built: no silent wrong model, no allocation
bombs.

A checkpoint's config decides what is allocated, so it is checked first, against the weight
files' headers (names, shapes and dtypes read without loading a tensor): every integer size is
an integer in a sane range and no larger than the evidence in the files allows, and weights are
floating point. Then the model the config describes is loaded on the meta device, where nothing
is allocated, and must hold exactly the tensors the files hold, with the same shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from probekit.fileio import CheckpointError

#: Config fields that size a model: layer counts, widths, vocabularies, contexts.
LAYER_FIELDS = ("n_layer", "num_hidden_layers", "n_layers", "num_layers")
SIZE_FIELDS = (
    "vocab_size",
    "n_embd",
    "hidden_size",
    "n_head",
    "num_attention_heads",
    "num_key_value_heads",
    "n_inner",
    "intermediate_size",
    "n_positions",
    "max_position_embeddings",
    "head_dim",
    "d_model",
    "d_head",
    "n_heads",
    "d_mlp",
    "d_vocab",
    "d_vocab_out",
    "n_ctx",
    "n_key_value_heads",
)
#: Size fields a config may leave null (the architecture then derives them).
OPTIONAL_FIELDS = ("n_inner", "d_mlp", "head_dim", "num_key_value_heads", "n_key_value_heads")
#: A context length that needs no tensor of its size (rotary models) is still capped here.
MAX_UNEVIDENCED_SIZE = 1 << 20
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:h|layers|blocks|layer)\.(\d+)\.")


def weight_headers(files: list[Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{tensor name: (shape, dtype)}`` of weight files, reading safetensors headers only."""
    headers: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(str(file), framework="pt") as handle:
                    for key in handle.keys():
                        part = handle.get_slice(key)
                        headers[key] = (tuple(part.get_shape()), str(part.get_dtype()))
            except (SafetensorError, OSError, ValueError, RuntimeError) as err:
                raise CheckpointError(
                    f"{file}: not a readable safetensors file (truncated or corrupt?): {err}"
                ) from err
        else:
            from probekit.fileio import read_state_dict

            for key, value in read_state_dict(file).items():
                headers[key] = (tuple(value.shape), dtype_code(value.dtype))
    return headers


def dtype_code(dtype: torch.dtype) -> str:
    return {
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.float32: "F32",
        torch.float64: "F64",
    }.get(dtype, str(dtype))


def check_weight_dtypes(headers: Mapping[str, tuple[tuple[int, ...], str]], where: Any) -> None:
    """Every weight is floating point (an integer tensor is not a weight of these models)."""
    for key, (_, dtype) in sorted(headers.items()):
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"{where}: tensor {key!r} has dtype {dtype}; model weights must be floating point"
            )


def check_config_sizes(
    config: Mapping[str, Any],
    headers: Mapping[str, tuple[tuple[int, ...], str]],
    where: Any,
) -> None:
    """Integer size fields are integers >= 1 (``None`` where optional) and no larger than the
    weight files can hold: a layer count no more than the layers present, any other size no
    more than the largest tensor dimension present (or :data:`MAX_UNEVIDENCED_SIZE`)."""
    largest_dim = max((max(shape, default=0) for shape, _ in headers.values()), default=0)
    layers = {int(m.group(1)) for key in headers for m in [_LAYER_INDEX.search(key)] if m}
    n_layers_present = max(layers) + 1 if layers else 0
    for key in LAYER_FIELDS + SIZE_FIELDS:
        if key not in config:
            continue
        value = config[key]
        if (value is None and key in OPTIONAL_FIELDS) or (key == "d_vocab_out" and value == -1):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(
                f"{where}: config field {key!r} must be a non-negative integer, got {value!r}"
            )
        if key in LAYER_FIELDS:
            if value > n_layers_present and headers:
                raise CheckpointError(
                    f"{where}: config field {key!r} = {value}, but the weights hold "
                    f"{n_layers_present} layer(s)"
                )
        elif value > max(largest_dim, MAX_UNEVIDENCED_SIZE if key in _CONTEXT else 0):
            raise CheckpointError(
                f"{where}: config field {key!r} = {value} is larger than any tensor "
                f"dimension in the weights ({largest_dim})"
            )


_CONTEXT = ("n_positions", "max_position_embeddings", "n_ctx")


def check_loading_info(
    info: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    where: Any,
    strict: bool = True,
) -> None:
    """Refuse what transformers' loading report (``output_loading_info``, from a load on the
    meta device, where nothing is allocated) says disagrees: a tensor of another shape, a
    missing tensor, or (``strict``) one the config does not describe. ``shapes``: the
    skeleton's own state-dict shapes, for the message."""
    for name, found, expected in sorted(info.get("mismatched_keys", ())):
        raise CheckpointError(
            f"{where}: tensor {name!r} has shape {tuple(found)}, but the config expects "
            f"{tuple(expected)}"
        )
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        shape = shapes.get(missing[0])
        raise CheckpointError(
            f"{where}: weights are missing tensor {missing[0]!r}"
            + (f" (expected shape {tuple(shape)})" if shape is not None else "")
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = sorted(info.get("unexpected_keys", ()))
    if strict and unexpected:
        raise CheckpointError(
            f"{where}: weights hold tensor {unexpected[0]!r}"
            + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
            + " that the config does not describe (pass strict=False to ignore them)"
        )
