"""``pk.load``: one entry point from a checkpoint (or a module) to a hookable model.

Transformers come back as a TransformerLens ``TransformerBridge``; RNNs as
:class:`probekit.models.HookedRNN`. Everything is offline: nothing is fetched from a hub.

Accepted sources (the format is detected, never guessed from the name alone):

- a Hugging Face model directory (``config.json`` with ``model_type`` + safetensors);
- a legacy TransformerLens checkpoint directory (``config.json`` with HookedTransformerConfig
  fields, weights in HookedTransformer's key layout as ``model.safetensors`` or ``.pth``);
- a nanoGPT ``ckpt.pt`` (a dict with ``model_args`` and ``model``), as a file or a directory;
- a probekit RNN directory (``config.json`` with ``"format": "probekit-rnn"``, or
  ``"probekit-ssl-grid"`` for :class:`probekit.models.ssl_grid.HookedSSLGrid`);
- an ``nn.Module``: a Hugging Face ``PreTrainedModel``, ``nn.RNN``/``nn.GRU``/``nn.LSTM``,
  a ``HookedRNN`` or an existing bridge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probekit.fileio import (
    PICKLE_SUFFIXES,
    CheckpointError,
    check_shape,
    load_pickle_checkpoint,
    read_json,
    read_state_dict,
)
from probekit.validation import resolve_device

# Fields of a HookedTransformerConfig that mark a legacy TransformerLens config.json.
_TL_REQUIRED = ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab", "act_fn")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}")
        dtype = value
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}")
    return dtype


def load(
    source: str | os.PathLike | nn.Module,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str | None = None,
    trust_pickle: bool = False,
    strict: bool = True,
) -> nn.Module:
    """Load ``source`` into a hookable model.

    Args:
        source: a checkpoint path (see the module docstring) or an ``nn.Module``.
        device: ``"auto"`` (CUDA if present, else CPU), or any torch device.
        dtype: parameter dtype; None means float32.
        trust_pickle: allow ``.pt``/``.pth``/``.bin`` files that hold more than tensors and
            plain containers. Off by default: such files can run code when unpickled.
        strict: refuse weight tensors the config does not describe (a Hugging Face directory
            whose config disagrees with its weights). ``strict=False`` ignores them, as
            transformers does; missing tensors and other shapes are refused either way.

    Returns:
        a ``transformer_lens`` ``TransformerBridge`` for transformers, with the tokenizer
        attached when the checkpoint has one; a :class:`probekit.models.HookedRNN` for RNNs.
        An in-memory Hugging Face model is wrapped in place (TransformerBridge swaps in its
        own components and forces eager attention), and moved to ``device``/``dtype``; set
        ``bridge.tokenizer`` yourself if you have one. A torch RNN is copied, not wrapped.

    >>> import torch, probekit as pk
    >>> rnn = pk.load(torch.nn.GRU(3, 8, batch_first=True))
    >>> rnn.run_with_cache(torch.zeros(2, 5, 3), names_filter="hook_hidden")[1]["hook_hidden"].shape
    torch.Size([2, 5, 8])
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    device = resolve_device(device)
    dtype = _resolve_dtype(dtype)
    if isinstance(source, nn.Module):
        return _from_module(source, device, dtype)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or an nn.Module, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"source {str(path)!r} does not exist")
    kind = detect_format(path)
    if kind == "probekit-rnn":
        from probekit.models.rnn import HookedRNN

        return HookedRNN.from_dir(path, device=device, dtype=dtype)
    if kind == "probekit-ssl-grid":
        from probekit.models.ssl_grid import HookedSSLGrid

        return HookedSSLGrid.from_dir(path, device=device, dtype=dtype)
    if kind == "hf":
        return _load_hf_dir(path, device, dtype, trust_pickle, strict)
    if kind == "tl-legacy":
        return _load_tl_legacy(path, device, dtype, trust_pickle)
    if kind == "nanogpt":
        ckpt = path / "ckpt.pt" if path.is_dir() else path
        return _load_nanogpt(ckpt, device, dtype, trust_pickle)
    raise AssertionError(kind)  # detect_format raised for anything else


def detect_format(path: str | os.PathLike) -> str:
    """One of ``"hf"``, ``"tl-legacy"``, ``"nanogpt"``, ``"probekit-rnn"``, ``"probekit-ssl-grid"``.

    Raises :class:`CheckpointError` naming the path and what was found otherwise.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            return "nanogpt"
        if path.name == "config.json" or path.suffix == ".safetensors":
            return detect_format(path.parent)
        raise CheckpointError(
            f"{path}: unknown checkpoint format (expected a model directory, a nanoGPT "
            "ckpt.pt, or a config.json/model.safetensors inside a model directory)"
        )
    config_path = path / "config.json"
    if config_path.is_file():
        config = read_json(config_path)
        if config.get("format") in ("probekit-rnn", "probekit-ssl-grid"):
            return config["format"]
        if "model_type" in config:
            return "hf"
        if all(k in config for k in _TL_REQUIRED):
            return "tl-legacy"
        raise CheckpointError(
            f"{config_path}: unknown config: no 'model_type' (Hugging Face), no "
            "'format': 'probekit-rnn', and not all TransformerLens fields "
            f"{list(_TL_REQUIRED)}; keys found: {sorted(config)[:12]}"
        )
    if (path / "ckpt.pt").is_file():
        return "nanogpt"
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CheckpointError(
        f"{path}: not a model directory: no config.json or ckpt.pt (found {found})"
    )


# ----------------------------------------------------------------------------- in-memory


def _from_module(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from probekit.models.rnn import HookedRNN

    if isinstance(module, HookedRNN):
        return module.to(device=device, dtype=dtype)
    if isinstance(module, (nn.RNN, nn.GRU, nn.LSTM)):
        return HookedRNN.from_torch(module).to(device=device, dtype=dtype)
    if type(module).__name__ in ("TransformerBridge",):
        return module
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers comes with transformer-lens
        PreTrainedModel = ()  # type: ignore[assignment]
    if isinstance(module, PreTrainedModel):
        return _bridge_from_hf_model(module, device, dtype, tokenizer=None)
    raise TypeError(
        "source module must be a Hugging Face PreTrainedModel, nn.RNN/nn.GRU/nn.LSTM, "
        f"a HookedRNN or a TransformerBridge; got {type(module).__name__}"
    )


def _bridge_from_hf_model(
    hf_model: nn.Module, device: torch.device, dtype: torch.dtype, tokenizer: Any
) -> nn.Module:
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    name = getattr(hf_model.config, "_name_or_path", "") or hf_model.config.model_type
    bridge = TransformerBridge.boot_transformers(
        str(name),
        hf_model=hf_model,
        device=device,
        dtype=dtype,
        # Without a tokenizer, boot_transformers would look one up by name (on the hub);
        # a local placeholder stops that, and is dropped right after.
        tokenizer=tokenizer if tokenizer is not None else _placeholder_tokenizer(),
    )
    if tokenizer is None:
        bridge.tokenizer = None  # an absent tokenizer stays absent: never mis-tokenise text
    return bridge.eval()


def _placeholder_tokenizer() -> Any:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab={"<unk>": 0}, unk_token="<unk>")),
        unk_token="<unk>",
    )


# ----------------------------------------------------------------------------- Hugging Face


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    return sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth"))


def _read_hf_dir(
    path: Path, device: torch.device, dtype: torch.dtype, trust_pickle: bool, strict: bool = True
) -> nn.Module:
    """The Hugging Face model of a directory, its weights checked against the config."""
    from probekit.models import agreement

    files = _weight_files(path)
    if not files:
        raise CheckpointError(
            f"{path}: no weights (*.safetensors, *.bin, *.pt) next to config.json"
        )
    for file in files:
        _check_weights_file(file, trust_pickle)
    where = files[0] if len(files) == 1 else f"{path} (weights)"
    _check_hf_agreement(path, files, where, strict)
    model, info = _from_pretrained(
        path, files, attn_implementation="eager", dtype=dtype, ignore_mismatched_sizes=True
    )
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    agreement.check_loading_info(info, shapes, where, strict=strict)
    return model.to(device=device).eval()


def _from_pretrained(path: Path, files: list[Path], **kwargs: Any) -> tuple[nn.Module, dict]:
    """``AutoModelForCausalLM.from_pretrained`` of a local directory with its loading report,
    transformers' logging and "Loading weights" bar silenced (they would leak into every
    command's output); any failure becomes one :class:`CheckpointError` naming the directory."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(
            path,
            local_files_only=True,
            output_loading_info=True,
            use_safetensors=files[0].suffix == ".safetensors",
            **kwargs,
        )
    except Exception as err:  # transformers and huggingface_hub raise many types for a bad config
        message = str(err).strip().replace("\n", " ")
        raise CheckpointError(
            f"{path}: cannot be loaded as a Hugging Face model: {message}"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_hf_agreement(path: Path, files: list[Path], where: Any, strict: bool) -> None:
    """Config and weight headers agree before anything is allocated (see
    :mod:`probekit.models.agreement`): the model is built on the meta device to compare."""
    from probekit.models import agreement

    raw = read_json(path / "config.json")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path / 'config.json'}: expected a JSON object")
    headers = agreement.weight_headers(files)
    agreement.check_weight_dtypes(headers, where)
    agreement.check_config_sizes(raw, headers, path / "config.json")
    skeleton, info = _from_pretrained(path, files, device_map="meta", ignore_mismatched_sizes=True)
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    agreement.check_loading_info(info, shapes, where, strict=strict)


def _load_hf_dir(
    path: Path, device: torch.device, dtype: torch.dtype, trust_pickle: bool, strict: bool = True
) -> nn.Module:
    model = _read_hf_dir(path, device, dtype, trust_pickle, strict)
    return _bridge_from_hf_model(model, device, dtype, _maybe_tokenizer(path))


def load_hf_plain(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str | None = None,
    trust_pickle: bool = False,
) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` of a Hugging Face directory without a bridge: for scoring and
    decoding, which need no hooks (booting a bridge costs seconds per checkpoint). Used by
    :func:`probekit.models.runner.runner`; the same checks as :func:`load`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = Path(path)
    model = _read_hf_dir(path, resolve_device(device), _resolve_dtype(dtype), trust_pickle)
    return model, _maybe_tokenizer(path)


def _check_weights_file(file: Path, trust_pickle: bool) -> None:
    """Fail early, naming the file, on a corrupt file or an unsafe pickle."""
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(
                f"{file}: not a readable safetensors file (truncated or corrupt?): {err}"
            ) from err
    else:
        load_pickle_checkpoint(file, trust_pickle=trust_pickle)


# ----------------------------------------------------------------------------- TransformerLens legacy


def tl_legacy_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Expected HookedTransformer state-dict shapes for a TransformerLens config."""
    d_model, d_head, n_heads = cfg["d_model"], cfg["d_head"], cfg["n_heads"]
    n_kv = cfg.get("n_key_value_heads") or n_heads
    d_vocab, n_ctx, d_mlp = cfg["d_vocab"], cfg["n_ctx"], cfg.get("d_mlp")
    d_vocab_out = cfg.get("d_vocab_out") or d_vocab
    if d_vocab_out == -1:
        d_vocab_out = d_vocab
    shapes: dict[str, tuple[int, ...]] = {
        "embed.W_E": (d_vocab, d_model),
        "pos_embed.W_pos": (n_ctx, d_model),
        "unembed.W_U": (d_model, d_vocab_out),
        "unembed.b_U": (d_vocab_out,),
        "ln_final.w": (d_model,),
        "ln_final.b": (d_model,),
    }
    for i in range(cfg["n_layers"]):
        b = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            shapes[f"{b}{ln}.w"] = (d_model,)
            shapes[f"{b}{ln}.b"] = (d_model,)
        shapes[f"{b}attn.W_Q"] = (n_heads, d_model, d_head)
        shapes[f"{b}attn.b_Q"] = (n_heads, d_head)
        for kv in ("K", "V"):
            shapes[f"{b}attn.W_{kv}"] = (n_kv, d_model, d_head)
            shapes[f"{b}attn.b_{kv}"] = (n_kv, d_head)
            shapes[f"{b}attn._W_{kv}"] = (n_kv, d_model, d_head)
            shapes[f"{b}attn._b_{kv}"] = (n_kv, d_head)
        shapes[f"{b}attn.W_O"] = (n_heads, d_head, d_model)
        shapes[f"{b}attn.b_O"] = (d_model,)
        if d_mlp:
            shapes[f"{b}mlp.W_in"] = (d_model, d_mlp)
            shapes[f"{b}mlp.W_gate"] = (d_model, d_mlp)
            shapes[f"{b}mlp.b_in"] = (d_mlp,)
            shapes[f"{b}mlp.W_out"] = (d_mlp, d_model)
            shapes[f"{b}mlp.b_out"] = (d_model,)
    return shapes


def _tl_weights_file(path: Path) -> Path:
    preferred = path / "model.safetensors"
    if preferred.is_file():
        return preferred
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".pth", ".pt", ".bin"))
    candidates += sorted(path.glob("*.safetensors"))
    if not candidates:
        raise CheckpointError(
            f"{path}: no weights (model.safetensors or *.pth) next to config.json"
        )
    return candidates[0]


def _load_tl_legacy(
    path: Path, device: torch.device, dtype: torch.dtype, trust_pickle: bool
) -> nn.Module:
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    config_path = path / "config.json"
    raw = read_json(config_path)
    if raw.get("positional_embedding_type", "standard") not in ("standard",):
        raise CheckpointError(
            f"{config_path}: positional_embedding_type "
            f"{raw['positional_embedding_type']!r} is not supported for legacy checkpoints "
            "(only 'standard')"
        )
    if raw.get("shortformer_pos", False):
        raise CheckpointError(f"{config_path}: shortformer positional embeddings are not supported")
    weights = _tl_weights_file(path)
    state_dict = read_state_dict(weights, trust_pickle=trust_pickle)
    state_dict = {k: v for k, v in state_dict.items() if not k.endswith((".mask", ".IGNORE"))}
    from probekit.models import agreement

    headers = {k: (tuple(v.shape), agreement.dtype_code(v.dtype)) for k, v in state_dict.items()}
    agreement.check_weight_dtypes(headers, weights)
    agreement.check_config_sizes(raw, headers, config_path)
    expected = tl_legacy_shapes(raw)
    for key, tensor in state_dict.items():
        if key not in expected:
            raise CheckpointError(
                f"{weights}: tensor {key!r} is not a HookedTransformer parameter for this "
                "config (a rotary or unusual architecture?)"
            )
        check_shape(weights, key, expected[key], tuple(tensor.shape))
    if "embed.W_E" not in state_dict:
        raise CheckpointError(
            f"{weights}: missing tensor 'embed.W_E' (expected {expected['embed.W_E']})"
        )
    fields = {
        "d_model": raw["d_model"],
        "n_layers": raw["n_layers"],
        "d_mlp": raw.get("d_mlp") or (None if raw.get("attn_only") else 4 * raw["d_model"]),
        "d_head": raw["d_head"],
        "n_heads": raw["n_heads"],
        "n_ctx": raw["n_ctx"],
        "d_vocab": raw["d_vocab"],
        "act_fn": raw["act_fn"],
        "attn_only": bool(raw.get("attn_only", False)),
        "normalization_type": raw.get("normalization_type", "LN"),
        "final_rms": bool(raw.get("final_rms", False)),
        "gated_mlp": bool(raw.get("gated_mlp", False)),
        "positional_embedding_type": "standard",
        "architecture": "TransformerLensNative",
    }
    if raw.get("d_vocab_out", -1) not in (-1, None):
        fields["d_vocab_out"] = raw["d_vocab_out"]
    if raw.get("n_key_value_heads"):
        fields["n_key_value_heads"] = raw["n_key_value_heads"]
    for optional in ("eps", "use_attn_scale", "attn_scale", "original_architecture", "seed"):
        if optional in raw:
            fields[optional] = raw[optional]
    cfg = TransformerBridgeConfig(**fields)
    tokenizer = _maybe_tokenizer(path)
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, device=device, dtype=dtype)
    try:
        converted = convert_tl_checkpoint(state_dict, cfg)
    except ValueError as err:
        raise CheckpointError(f"{weights}: {err}") from err
    own = bridge.state_dict()
    # HookedTransformer dropped zero biases in some exports; the legacy loader zero-filled.
    for key, value in own.items():
        if key not in converted and (key.endswith("bias") or key.endswith(".b")):
            converted[key] = torch.zeros_like(value)
    missing = sorted(set(own) - set(converted))
    if missing:
        raise CheckpointError(f"{weights}: missing tensors for this config: {missing[:6]}")
    converted = {k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in converted.items()}
    bridge.load_state_dict(converted, strict=True)
    if tokenizer is None:
        bridge.tokenizer = None
    return bridge.eval()


def _maybe_tokenizer(path: Path) -> Any:
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: tokenizer files present but unreadable: {err}") from err


# ----------------------------------------------------------------------------- nanoGPT


def nanogpt_to_hf(ckpt: Mapping[str, Any], file: Path | str = "ckpt.pt") -> tuple[Any, dict]:
    """Translate a nanoGPT checkpoint dict into a GPT-2 config and HF state dict.

    nanoGPT stores ``nn.Linear`` weights ``[out, in]``; GPT-2's ``Conv1D`` wants ``[in, out]``.
    nanoGPT's GELU is exact (``nn.GELU()``), so the config says ``activation_function="gelu"``;
    ``bias=False`` models get zero biases.
    """
    from transformers import GPT2Config

    if not isinstance(ckpt, Mapping) or "model_args" not in ckpt or "model" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(
            f"{file}: not a nanoGPT checkpoint: expected a dict with 'model_args' and "
            f"'model', found {keys}"
        )
    args = ckpt["model_args"]
    need = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    if any(k not in args for k in need):
        raise CheckpointError(f"{file}: model_args lacks {[k for k in need if k not in args]}")
    sd = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    from probekit.models import agreement

    headers = {
        k: (tuple(v.shape), agreement.dtype_code(v.dtype))
        for k, v in sd.items()
        if isinstance(v, torch.Tensor)
    }
    agreement.check_weight_dtypes(headers, file)
    sizes = {k: args[k] for k in need}
    sizes["n_positions"] = sizes.pop("block_size")
    agreement.check_config_sizes(sizes, headers, f"{file} model_args")
    d, n_layer = args["n_embd"], args["n_layer"]
    config = GPT2Config(
        n_layer=n_layer,
        n_head=args["n_head"],
        n_embd=d,
        n_positions=args["block_size"],
        vocab_size=args["vocab_size"],
        activation_function="gelu",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    shapes = {
        "transformer.wte.weight": (args["vocab_size"], d),
        "transformer.wpe.weight": (args["block_size"], d),
        "transformer.ln_f.weight": (d,),
    }
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        shapes |= {
            h + "ln_1.weight": (d,),
            h + "attn.c_attn.weight": (3 * d, d),
            h + "attn.c_proj.weight": (d, d),
            h + "ln_2.weight": (d,),
            h + "mlp.c_fc.weight": (4 * d, d),
            h + "mlp.c_proj.weight": (d, 4 * d),
        }
    for key, shape in shapes.items():
        if key not in sd:
            raise CheckpointError(f"{file}: missing tensor {key!r} (expected shape {shape})")
        check_shape(file, key, shape, tuple(sd[key].shape))
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(".attn.bias") or key.endswith(".attn.masked_bias"):
            continue  # nanoGPT's causal-mask buffer
        if key == "lm_head.weight":
            continue  # tied to wte
        if key.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            value = value.t().contiguous()
        out[key] = value
    # Zero biases where nanoGPT had bias=False.
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        for key, size in (
            ("ln_1.bias", d),
            ("ln_2.bias", d),
            ("attn.c_attn.bias", 3 * d),
            ("attn.c_proj.bias", d),
            ("mlp.c_fc.bias", 4 * d),
            ("mlp.c_proj.bias", d),
        ):
            out.setdefault(h + key, torch.zeros(size))
    out.setdefault("transformer.ln_f.bias", torch.zeros(d))
    if "lm_head.weight" in sd and not torch.equal(
        sd["lm_head.weight"], sd["transformer.wte.weight"]
    ):
        config.tie_word_embeddings = False
        out["lm_head.weight"] = sd["lm_head.weight"]
    return config, out


def _load_nanogpt(
    file: Path, device: torch.device, dtype: torch.dtype, trust_pickle: bool
) -> nn.Module:
    from transformers import GPT2LMHeadModel

    ckpt = load_pickle_checkpoint(file, trust_pickle=trust_pickle)
    config, state_dict = nanogpt_to_hf(ckpt, file)
    model = GPT2LMHeadModel(config)
    model.load_state_dict(state_dict, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.config._attn_implementation = "eager"
    tokenizer = _maybe_tokenizer(file.parent)
    return _bridge_from_hf_model(model, device, dtype, tokenizer)
