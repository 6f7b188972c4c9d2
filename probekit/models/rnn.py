"""Hooked single-layer RNNs whose hook points see every time step.

Which question this module answers: *what does each recurrent unit do at each time step, and
what happens to the rest of the trajectory when we change it?* The RNN studies probekit serves
(``seeds/abstracts.md`` §9, grid cells in path-integrating RNNs, and §10, functional and
anatomical modularity of CTRNNs trained with BIMT) cache hidden states over whole trials and
silence clusters of units inside the recurrence. :class:`HookedRNN` gives them one
TransformerLens ``HookedRootModule`` for Elman RNNs, continuous-time RNNs, GRUs and LSTMs.

Hook points (TransformerLens-style names; ``B`` batch, ``T`` time, ``H`` hidden units):

============  =====================  ==========================================================
name          called                 value
============  =====================  ==========================================================
hook_input    once, ``[B, T, in]``   the input after the optional token embedding
hook_pre      per step, ``[B, H]``   rnn / ctrnn "yang2019": ``W_in u_t + W_rec h_{t-1} + b``;
                                     ctrnn "neurogym": ``(1-a) h_{t-1} + a (W_in u_t + W_rec
                                     h_{t-1} + b)`` (the argument of f); gru: the candidate's
                                     pre-activation ``W_in x + b_in + r * (W_hn h + b_hn)``;
                                     lstm: none
hook_gate_*   per step, ``[B, H]``   gru: ``r, z, n``; lstm: ``i, f, g, o`` (after their
                                     sigmoid / tanh)
hook_cell     per step, ``[B, H]``   lstm cell state ``c_t``
hook_hidden   per step, ``[B, H]``   the new hidden state ``h_t``
hook_output   once, ``[B, T, out]``  the readout, or the hidden states when there is none
============  =====================  ==========================================================

A per-step hook point is called once per step inside the recurrence, so what a hook returns
replaces that step's value and changes every later step; ``hook.step`` holds ``t`` and
``hook.n_steps`` holds ``T`` while it runs. ``run_with_cache`` (and ``get_caching_hooks`` /
``add_caching_hooks``) store a per-step hook as ``[batch, time, ...]`` holding every step,
where plain TransformerLens would keep only the last one.

When nothing but the cache looks at per-step hook points and the cache asks only for
``hook_hidden`` of an rnn / gru / lstm, the sequence runs in torch's fused kernel
(``torch._VF``), so caching hidden states costs no more than running ``nn.GRU`` itself.

Example:
    >>> import torch
    >>> from probekit.models.rnn import HookedRNN, RNNConfig
    >>> model = HookedRNN(RNNConfig(kind="gru", input_size=3, hidden_size=8))
    >>> x = torch.randn(2, 5, 3)
    >>> out, cache = model.run_with_cache(x, names_filter="hook_hidden")
    >>> tuple(cache["hook_hidden"].shape)
    (2, 5, 8)
    >>> def silence_unit_0(h, hook):
    ...     h = h.clone()
    ...     h[:, 0] = 0.0
    ...     return h
    >>> out = model.run_with_hooks(x, fwd_hooks=[("hook_hidden", silence_unit_0)])
    >>> float(out[:, :, 0].abs().max().detach())
    0.0
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.hook_points import HookPoint
from transformer_lens.HookedRootModule import HookedRootModule
from transformer_lens.utilities import Slice
from transformer_lens.utilities import remove_batch_dim as drop_batch_dim

from probekit.fileio import (
    CheckpointError,
    check_shape,
    read_json,
    read_safetensors,
    save_safetensors_atomic,
    write_json_atomic,
)
from probekit.validation import (
    check_choice,
    check_positive_float,
    check_positive_int,
    resolve_device,
)

__all__ = ["HookedRNN", "RNNConfig", "RNNHookPoint", "is_rnn_dir"]

FORMAT = "probekit-rnn"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

KINDS = ("rnn", "ctrnn", "gru", "lstm")
N_GATES = {"rnn": 1, "ctrnn": 1, "gru": 3, "lstm": 4}
NONLINEARITIES = {
    "rnn": ("tanh", "relu"),
    "ctrnn": ("relu", "softplus", "tanh", "identity"),
    "gru": ("tanh",),
    "lstm": ("tanh",),
}
CONVENTIONS = ("yang2019", "neurogym")
STEP_HOOKS = {
    "rnn": ("hook_pre", "hook_hidden"),
    "ctrnn": ("hook_pre", "hook_hidden"),
    "gru": ("hook_gate_r", "hook_gate_z", "hook_pre", "hook_gate_n", "hook_hidden"),
    "lstm": (
        "hook_gate_i",
        "hook_gate_f",
        "hook_gate_g",
        "hook_gate_o",
        "hook_cell",
        "hook_hidden",
    ),
}
# Tensor names the format defines; extra tensors may not reuse them.
RESERVED_TENSOR_NAMES = frozenset(
    {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "mask_hh", "ei_sign", "embedding", "readout"}
)

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": F.softplus,
    "identity": lambda v: v,
}


# ----------------------------------------------------------------------------- config


@dataclass
class RNNConfig:
    """The architecture of a :class:`HookedRNN`; stored as ``config.json`` next to the weights.

    Args:
        kind: ``"rnn"`` (Elman), ``"ctrnn"`` (continuous-time, leaky), ``"gru"`` or ``"lstm"``.
        input_size: features per time step fed to the recurrence (the embedding width when
            ``vocab_size`` is set).
        hidden_size: recurrent units ``H``.
        output_size: width of the linear readout ``[out, H]``, or ``None`` for no readout (the
            model then outputs its hidden states).
        vocab_size: size of the token embedding ``[vocab, input_size]`` in front, or ``None``.
        nonlinearity: rnn: ``"tanh" | "relu"``; ctrnn: ``"relu" | "softplus" | "tanh" |
            "identity"`` (softplus with beta 1); gru / lstm: ``"tanh"`` only.
        bias: whether ``bias_ih`` and ``bias_hh`` exist (the readout always has a bias).
        dt, tau: ctrnn only, both required: time step and time constant (same unit);
            ``alpha = dt / tau`` must lie in ``(0, 1]``.
        convention: ctrnn only, required. ``"yang2019"``:
            ``h' = (1 - a) h + a f(W_in u + b_ih + W_rec h + b_hh)``; ``"neurogym"``:
            ``h' = f((1 - a) h + a (W_in u + b_ih + W_rec h + b_hh))``.
        mask_hh: whether a fixed ``[H, H]`` connectivity mask multiplies the recurrent weights
            (stored tensor ``mask_hh``; applied to every gate block).
        ei_sign: whether a Dale's-law sign ``[H]`` of +1 / -1 per presynaptic unit is stored
            (tensor ``ei_sign``); the effective recurrent weight is then
            ``|W_hh| * mask_hh * ei_sign[None, :]``.
        extra: free-form JSON metadata, preserved on save and load.
        extra_tensors: additional tensors stored with the weights, ``{name: shape}`` (e.g. BIMT
            unit positions ``{"positions": [H, 2]}``); kept as buffers of the model.
    """

    kind: str
    input_size: int
    hidden_size: int
    output_size: int | None = None
    vocab_size: int | None = None
    nonlinearity: str = "tanh"
    bias: bool = True
    dt: float | None = None
    tau: float | None = None
    convention: str | None = None
    mask_hh: bool = False
    ei_sign: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    extra_tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("RNNConfig.kind", self.kind, KINDS)
        check_positive_int("RNNConfig.input_size", self.input_size)
        check_positive_int("RNNConfig.hidden_size", self.hidden_size)
        check_positive_int("RNNConfig.output_size", self.output_size, optional=True)
        check_positive_int("RNNConfig.vocab_size", self.vocab_size, optional=True)
        check_choice(
            "RNNConfig.nonlinearity",
            self.nonlinearity,
            NONLINEARITIES[self.kind],
            f" for kind {self.kind!r}",
        )
        for flag in ("bias", "mask_hh", "ei_sign"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(
                    f"RNNConfig.{flag} must be true or false, got {getattr(self, flag)!r}"
                )
        if self.kind == "ctrnn":
            self.dt = check_positive_float("RNNConfig.dt", self.dt)
            self.tau = check_positive_float("RNNConfig.tau", self.tau)
            if self.dt > self.tau:
                raise ValueError(
                    f"RNNConfig.dt / RNNConfig.tau must lie in (0, 1], got dt={self.dt}, "
                    f"tau={self.tau}"
                )
            check_choice("RNNConfig.convention", self.convention, CONVENTIONS, " for kind 'ctrnn'")
        else:
            for name in ("dt", "tau", "convention"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"RNNConfig.{name} applies only to kind 'ctrnn'; set it to null for "
                        f"kind {self.kind!r}, got {getattr(self, name)!r}"
                    )
        if not isinstance(self.extra, dict):
            raise ValueError(
                f"RNNConfig.extra must be a JSON object, got {type(self.extra).__name__}"
            )
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as err:
            raise ValueError(f"RNNConfig.extra must be JSON-serialisable: {err}") from err
        self.extra_tensors = self._checked_extra_tensors(self.extra_tensors)

    @staticmethod
    def _checked_extra_tensors(value: Any) -> dict[str, tuple[int, ...]]:
        if not isinstance(value, Mapping):
            raise ValueError(
                "RNNConfig.extra_tensors must map tensor names to shapes, e.g. "
                f'{{"positions": [64, 2]}}, got {type(value).__name__}'
            )
        out: dict[str, tuple[int, ...]] = {}
        for name, shape in value.items():
            if (
                not isinstance(name, str)
                or not name.isidentifier()
                or name.startswith(("_", "hook_"))
            ):
                raise ValueError(
                    f"RNNConfig.extra_tensors: {name!r} is not a valid tensor name (a Python "
                    "identifier not starting with '_' or 'hook_')"
                )
            if name in RESERVED_TENSOR_NAMES:
                raise ValueError(
                    f"RNNConfig.extra_tensors: {name!r} is a tensor name the format already "
                    f"defines ({', '.join(sorted(RESERVED_TENSOR_NAMES))})"
                )
            if not isinstance(shape, (list, tuple)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise ValueError(
                    f"RNNConfig.extra_tensors[{name!r}] must be a list of non-negative ints, "
                    f"got {shape!r}"
                )
            out[name] = tuple(shape)
        return out

    @property
    def n_gates(self) -> int:
        """Gate blocks stacked in ``weight_ih`` / ``weight_hh``: 1 (rnn, ctrnn), 3 (gru), 4."""
        return N_GATES[self.kind]

    @property
    def alpha(self) -> float | None:
        """``dt / tau`` for a ctrnn, else ``None``."""
        if self.kind != "ctrnn":
            return None
        return self.dt / self.tau  # type: ignore[operator]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a checkpoint of this config holds, with its shape."""
        gh, h = self.n_gates * self.hidden_size, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {
            "weight_ih": (gh, self.input_size),
            "weight_hh": (gh, h),
        }
        if self.bias:
            shapes["bias_ih"] = (gh,)
            shapes["bias_hh"] = (gh,)
        if self.mask_hh:
            shapes["mask_hh"] = (h, h)
        if self.ei_sign:
            shapes["ei_sign"] = (h,)
        if self.vocab_size is not None:
            shapes["embedding.weight"] = (self.vocab_size, self.input_size)
        if self.output_size is not None:
            shapes["readout.weight"] = (self.output_size, h)
            shapes["readout.bias"] = (self.output_size,)
        shapes.update(self.extra_tensors)
        return shapes

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``config.json`` (keys sorted on write)."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
            "vocab_size": self.vocab_size,
            "nonlinearity": self.nonlinearity,
            "bias": self.bias,
            "dt": self.dt,
            "tau": self.tau,
            "convention": self.convention,
            "mask_hh": self.mask_hh,
            "ei_sign": self.ei_sign,
            "extra": copy.deepcopy(self.extra),
            "extra_tensors": {k: list(v) for k, v in self.extra_tensors.items()},
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> RNNConfig:
        """Validate and build a config from its JSON object (``format``/``version`` optional).

        Raises:
            ValueError: naming the field, for a missing or unknown key, a wrong format or
                version, or a value outside the allowed set.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"an RNN config must be a JSON object, got {type(obj).__name__}")
        data = dict(obj)
        fmt = data.pop("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"RNNConfig.format must be {FORMAT!r}, got {fmt!r}")
        version = data.pop("version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise ValueError(
                f"RNNConfig.version must be {FORMAT_VERSION} (this probekit reads version "
                f"{FORMAT_VERSION}), got {version!r}"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown RNNConfig field(s) {unknown}; allowed: {sorted(known | {'format', 'version'})}"
            )
        missing = [k for k in ("kind", "input_size", "hidden_size") if k not in data]
        if missing:
            raise ValueError(f"RNNConfig is missing required field(s) {missing}")
        return cls(**data)


# ----------------------------------------------------------------------------- hooks


class RNNHookPoint(HookPoint):
    """A :class:`HookPoint` that knows whether it fires once per time step.

    While a per-step point runs, ``step`` is the time index ``t`` (0-based) and ``n_steps``
    the sequence length ``T``; both are ``None`` for the sequence-level points
    (``hook_input``, ``hook_output``) and ``step`` is ``None`` outside a forward pass.
    """

    def __init__(self, per_step: bool) -> None:
        super().__init__()
        self.per_step = per_step
        self.step: int | None = None
        self.n_steps: int | None = None


class _StepCacheHook:
    """Caching hook for a per-step point: assembles ``[batch, time, ...]`` from T calls.

    Forward: step ``t`` is written at ``hook.step``. Backward: gradients of a chain arrive in
    reverse step order, so call ``k`` is step ``T - 1 - k``. The fused path hands the whole
    ``[batch, time, ...]`` tensor to :meth:`fill` instead.
    """

    def __init__(
        self,
        cache: dict[str, Tensor],
        key: str,
        device: str | torch.device | None,
        remove_batch_dim: bool,
        pos_slice: Slice,
        backward: bool = False,
    ) -> None:
        self.cache = cache
        self.key = key
        self.device = device
        self.remove_batch_dim = remove_batch_dim
        self.pos_slice = pos_slice
        self.backward = backward
        self._buffer: Tensor | None = None
        self._calls = 0

    def __call__(self, tensor: Tensor, hook: RNNHookPoint) -> None:
        n = hook.n_steps
        if n is None:
            raise RuntimeError(f"{hook.name} fired outside a HookedRNN forward pass")
        if self.backward:
            t = n - 1 - self._calls
            self._calls += 1
        else:
            t = hook.step
        if self._buffer is None or t == (n - 1 if self.backward else 0):
            shape = (tensor.shape[0], n, *tensor.shape[1:])
            device = tensor.device if self.device is None else self.device
            self._buffer = torch.empty(shape, dtype=tensor.dtype, device=device)
        self._buffer[:, t] = tensor.detach()
        if t == (0 if self.backward else n - 1):
            self._store(self._buffer)
            self._buffer = None
            self._calls = 0

    def fill(self, sequence: Tensor) -> None:
        """Store a whole ``[batch, time, ...]`` sequence at once (the fused path)."""
        sequence = sequence.detach()
        self._store(sequence if self.device is None else sequence.to(self.device))

    def _store(self, value: Tensor) -> None:
        if self.remove_batch_dim:
            value = drop_batch_dim(value)
        self.cache[self.key] = self.pos_slice.apply(value, dim=-2)


# ----------------------------------------------------------------------------- model


class HookedRNN(HookedRootModule):
    """A single-layer RNN (Elman, CTRNN, GRU, LSTM) with per-step TransformerLens hooks.

    Args:
        cfg: an :class:`RNNConfig` or its dict form.
        seed: seed of the parameter initialisation (torch's RNN init: every weight and bias
            ``U(-1/sqrt(H), 1/sqrt(H))``; embedding ``N(0, 1)``; readout ``U(-1/sqrt(H),
            1/sqrt(H))``; ``mask_hh`` all ones; ``ei_sign`` +1 for the first ``round(0.8 H)``
            units, -1 for the rest).

    Parameters use torch's layout: ``weight_ih [G*H, in]``, ``weight_hh [G*H, H]``,
    ``bias_ih``, ``bias_hh [G*H]`` with gates stacked in torch's order (gru ``r, z, n``; lstm
    ``i, f, g, o``). Optional ``embedding`` (``nn.Embedding``), ``readout`` (``nn.Linear``),
    buffers ``mask_hh``, ``ei_sign`` and any ``cfg.extra_tensors``.

    Attributes:
        cfg: the :class:`RNNConfig`.
        fused: when True (default) the fused torch kernel runs whenever no hook needs the loop;
            set False to always run the Python loop.
    """

    cfg: RNNConfig

    def __init__(self, cfg: RNNConfig | Mapping[str, Any], *, seed: int = 0) -> None:
        super().__init__()
        if isinstance(cfg, RNNConfig):
            cfg = RNNConfig.from_dict(cfg.to_dict())  # a private copy, validated
        else:
            cfg = RNNConfig.from_dict(cfg)
        self.cfg = cfg
        self.fused = True
        self._last_path: Literal["fused", "loop"] | None = None
        h, gh = cfg.hidden_size, cfg.n_gates * cfg.hidden_size

        self.embedding: nn.Embedding | None = None
        if cfg.vocab_size is not None:
            # An explicit _weight skips nn.Embedding's own init (_reset_parameters draws it from
            # the seeded generator); its normal_ on the meta device costs seconds.
            weight = torch.empty(cfg.vocab_size, cfg.input_size)
            self.embedding = nn.Embedding(cfg.vocab_size, cfg.input_size, _weight=weight)
        self.weight_ih = nn.Parameter(torch.empty(gh, cfg.input_size))
        self.weight_hh = nn.Parameter(torch.empty(gh, h))
        if cfg.bias:
            self.bias_ih = nn.Parameter(torch.empty(gh))
            self.bias_hh = nn.Parameter(torch.empty(gh))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.register_buffer("mask_hh", torch.ones(h, h) if cfg.mask_hh else None)
        self.register_buffer("ei_sign", torch.ones(h) if cfg.ei_sign else None)
        self.readout = nn.Linear(h, cfg.output_size) if cfg.output_size is not None else None
        for name, shape in cfg.extra_tensors.items():
            if hasattr(self, name):
                raise ValueError(
                    f"RNNConfig.extra_tensors: {name!r} clashes with a HookedRNN attribute"
                )
            self.register_buffer(name, torch.zeros(shape))

        self.hook_input = RNNHookPoint(per_step=False)
        for name in STEP_HOOKS[cfg.kind]:
            setattr(self, name, RNNHookPoint(per_step=True))
        self.hook_output = RNNHookPoint(per_step=False)
        self._step_points: dict[str, RNNHookPoint] = {
            name: getattr(self, name) for name in STEP_HOOKS[cfg.kind]
        }
        self._reset_parameters(seed)
        self.setup()

    # ------------------------------------------------------------------ construction helpers

    def _reset_parameters(self, seed: int) -> None:
        if self.weight_ih.is_meta:
            return
        gen = torch.Generator().manual_seed(seed)
        k = 1.0 / math.sqrt(self.cfg.hidden_size)
        with torch.no_grad():
            if self.embedding is not None:
                self.embedding.weight.copy_(torch.randn(self.embedding.weight.shape, generator=gen))
            for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
                if p is not None:
                    p.copy_(torch.empty(p.shape).uniform_(-k, k, generator=gen))
            if self.readout is not None:
                for p in (self.readout.weight, self.readout.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-k, k, generator=gen))
            if self.ei_sign is not None:
                n_exc = round(0.8 * self.cfg.hidden_size)
                self.ei_sign.fill_(1.0)
                self.ei_sign[n_exc:] = -1.0

    @classmethod
    def _from_tensors(cls, cfg: RNNConfig, tensors: Mapping[str, Tensor]) -> HookedRNN:
        """Build a model whose parameters *are* ``tensors`` (dtype and device kept)."""
        with torch.device("meta"):
            model = cls(cfg)
        model.load_state_dict(dict(tensors), strict=True, assign=True)
        return model

    @classmethod
    def from_torch(
        cls,
        module: nn.RNN | nn.GRU | nn.LSTM,
        *,
        embedding: nn.Embedding | None = None,
        readout: nn.Linear | None = None,
    ) -> HookedRNN:
        """Wrap a single-layer torch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``; weights copied exactly.

        ``batch_first`` may be either: a :class:`HookedRNN` is always batch-first
        (``[batch, time, ...]``). An ``embedding`` in front (``embedding_dim == input_size``) and
        a linear ``readout`` after (``in_features == hidden_size``; no bias reads as zero bias)
        may be attached. dtype and device follow the module.

        Raises:
            TypeError: for any other module type.
            ValueError: for ``num_layers > 1``, ``bidirectional=True``, an LSTM with
                ``proj_size > 0``, or a mismatched embedding / readout.
        """
        if isinstance(module, nn.LSTM):
            kind, nonlinearity = "lstm", "tanh"
        elif isinstance(module, nn.GRU):
            kind, nonlinearity = "gru", "tanh"
        elif isinstance(module, nn.RNN):
            kind, nonlinearity = "rnn", module.nonlinearity
        else:
            raise TypeError(
                "HookedRNN.from_torch expects torch.nn.RNN, nn.GRU or nn.LSTM, got "
                f"{type(module).__name__}"
            )
        name = type(module).__name__
        if module.num_layers != 1:
            raise ValueError(
                f"HookedRNN is single-layer; this {name} has num_layers={module.num_layers}. "
                "Only num_layers=1 modules can be converted."
            )
        if module.bidirectional:
            raise ValueError(
                f"HookedRNN runs forward in time only; this {name} has bidirectional=True, "
                "which cannot be converted."
            )
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"HookedRNN does not support LSTM projections; this LSTM has "
                f"proj_size={module.proj_size}"
            )
        if embedding is not None:
            if not isinstance(embedding, nn.Embedding):
                raise TypeError(f"embedding must be nn.Embedding, got {type(embedding).__name__}")
            if embedding.embedding_dim != module.input_size:
                raise ValueError(
                    f"embedding has embedding_dim={embedding.embedding_dim}, but the {name} "
                    f"expects input_size={module.input_size}"
                )
            if embedding.max_norm is not None:
                raise ValueError("embedding with max_norm renormalises on lookup; not supported")
        if readout is not None:
            if not isinstance(readout, nn.Linear):
                raise TypeError(f"readout must be nn.Linear, got {type(readout).__name__}")
            if readout.in_features != module.hidden_size:
                raise ValueError(
                    f"readout has in_features={readout.in_features}, but the {name} has "
                    f"hidden_size={module.hidden_size}"
                )
        cfg = RNNConfig(
            kind=kind,
            input_size=module.input_size,
            hidden_size=module.hidden_size,
            output_size=readout.out_features if readout is not None else None,
            vocab_size=embedding.num_embeddings if embedding is not None else None,
            nonlinearity=nonlinearity,
            bias=module.bias,
        )
        tensors = {
            "weight_ih": module.weight_ih_l0,
            "weight_hh": module.weight_hh_l0,
        }
        if module.bias:
            tensors["bias_ih"] = module.bias_ih_l0
            tensors["bias_hh"] = module.bias_hh_l0
        if embedding is not None:
            tensors["embedding.weight"] = embedding.weight
        if readout is not None:
            tensors["readout.weight"] = readout.weight
            tensors["readout.bias"] = (
                readout.bias
                if readout.bias is not None
                else readout.weight.new_zeros(readout.out_features)
            )
        return cls._from_tensors(cfg, {k: v.detach().clone() for k, v in tensors.items()})

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> HookedRNN:
        """Load a probekit RNN directory (``config.json`` + ``model.safetensors``).

        Args:
            path: the directory.
            device: where to put the model (``None``: CPU; ``"auto"``: CUDA when present).
            dtype: floating dtype to cast to (``None``: as stored).

        Raises:
            CheckpointError: naming the file, for a missing / corrupt file, an invalid config
                field, a missing or unexpected tensor, or a tensor whose shape differs from the
                config (naming the tensor, expected and found shape).
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(
                f"{path}: not a directory (expected {CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        raw = read_json(cfg_path)
        try:
            cfg = RNNConfig.from_dict(raw)
        except ValueError as err:
            raise CheckpointError(f"{cfg_path}: {err}") from err
        tensors = read_safetensors(weights_path)
        expected = cfg.tensor_shapes()
        missing = [k for k in expected if k not in tensors]
        if missing:
            raise CheckpointError(
                f"{weights_path}: missing tensor(s) {missing} that {CONFIG_FILE} requires"
            )
        unexpected = sorted(k for k in tensors if k not in expected)
        if unexpected:
            raise CheckpointError(
                f"{weights_path}: unexpected tensor(s) {unexpected} that {CONFIG_FILE} does not "
                "declare (list additional tensors under 'extra_tensors')"
            )
        for name, shape in expected.items():
            check_shape(weights_path, name, shape, tuple(tensors[name].shape))
        core = [k for k in expected if k not in cfg.extra_tensors]
        dtypes = {tensors[k].dtype for k in core}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            found = {k: str(tensors[k].dtype) for k in core}
            raise CheckpointError(
                f"{weights_path}: model tensors must share one floating dtype, found {found}"
            )
        if cfg.ei_sign and not bool(((tensors["ei_sign"] == 1) | (tensors["ei_sign"] == -1)).all()):
            raise CheckpointError(f"{weights_path}: tensor 'ei_sign' must hold only +1 and -1")
        model = cls._from_tensors(cfg, tensors)
        return model.to(device=None if device is None else resolve_device(device), dtype=dtype)

    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path``, atomically.

        Each file is written to a temporary name and renamed into place; the weights go first,
        so ``config.json`` (which :func:`is_rnn_dir` reads) never announces weights not yet
        written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {}
        seen: set[int] = set()
        for name, tensor in self.state_dict().items():
            tensor = tensor.detach()
            ptr = tensor.untyped_storage().data_ptr()
            # safetensors refuses tensors that share memory (e.g. tied embedding / readout).
            tensors[name] = tensor.clone() if ptr in seen else tensor
            seen.add(ptr)
        save_safetensors_atomic(tensors, path / WEIGHTS_FILE, metadata={"format": FORMAT})
        write_json_atomic(path / CONFIG_FILE, self.config_dict())
        return path

    def config_dict(self) -> dict[str, Any]:
        """The JSON-able config (what ``config.json`` holds; used for the model fingerprint)."""
        return self.cfg.to_dict()

    def add_extra_tensor(self, name: str, tensor: Tensor) -> None:
        """Keep ``tensor`` as buffer ``name`` and declare it in ``cfg.extra_tensors``.

        For data that belongs with the weights, e.g. BIMT unit positions ``[H, 2]``.
        """
        shapes = RNNConfig._checked_extra_tensors({name: list(tensor.shape)})
        if name not in self.cfg.extra_tensors and hasattr(self, name):
            raise ValueError(f"extra tensor name {name!r} clashes with a HookedRNN attribute")
        self.register_buffer(name, tensor.detach().clone())
        self.cfg.extra_tensors.update(shapes)

    # ------------------------------------------------------------------ convenience

    @property
    def kind(self) -> str:
        return self.cfg.kind

    @property
    def input_size(self) -> int:
        return self.cfg.input_size

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def output_size(self) -> int | None:
        return self.cfg.output_size

    @property
    def vocab_size(self) -> int | None:
        return self.cfg.vocab_size

    @property
    def step_hook_names(self) -> tuple[str, ...]:
        """Names of the hook points called once per time step."""
        return STEP_HOOKS[self.cfg.kind]

    @property
    def device(self) -> torch.device:
        return self.weight_ih.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weight_ih.dtype

    @property
    def W_in(self) -> Tensor:
        """Input weights ``[G*H, in]`` (``weight_ih``)."""
        return self.weight_ih

    @property
    def W_rec(self) -> Tensor:
        """Effective recurrent weights ``[G*H, H]``: ``weight_hh``, or with a mask / Dale's law
        ``|weight_hh| * mask_hh * ei_sign[None, :]`` (mask and sign repeated per gate block)."""
        w = self.weight_hh
        if self.ei_sign is None and self.mask_hh is None:
            return w
        g, h = self.cfg.n_gates, self.cfg.hidden_size
        w = w.view(g, h, h)
        if self.ei_sign is not None:
            w = w.abs() * self.ei_sign
        if self.mask_hh is not None:
            w = w * self.mask_hh
        return w.reshape(g * h, h)

    def extra_repr(self) -> str:
        c = self.cfg
        bits = [f"kind={c.kind!r}", f"input_size={c.input_size}", f"hidden_size={c.hidden_size}"]
        if c.kind in ("rnn", "ctrnn"):
            bits.append(f"nonlinearity={c.nonlinearity!r}")
        if c.kind == "ctrnn":
            bits += [f"alpha={c.alpha:g}", f"convention={c.convention!r}"]
        return ", ".join(bits)

    # ------------------------------------------------------------------ caching

    def _names_predicate(self, names_filter: Any) -> Callable[[str], bool]:
        """TransformerLens's names_filter (None, str, list of str, callable), checked."""
        if names_filter is None:
            return lambda name: True
        if isinstance(names_filter, str):
            names = [names_filter]
        elif callable(names_filter):
            return names_filter
        elif isinstance(names_filter, (list, tuple, set, frozenset)) and all(
            isinstance(n, str) for n in names_filter
        ):
            names = list(names_filter)
        else:
            raise TypeError(
                "names_filter must be None, a hook name, a list of hook names, or a callable "
                f"name -> bool, got {names_filter!r}"
            )
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            raise ValueError(
                f"names_filter names hook point(s) {unknown} that this {self.cfg.kind} model "
                f"does not have; it has {list(self.hook_dict)}"
            )
        allowed = set(names)
        return lambda name: name in allowed

    def get_caching_hooks(
        self,
        names_filter: Any = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
        pos_slice: Any = None,
    ) -> tuple[dict, list, list]:
        """TransformerLens's ``get_caching_hooks``, but per-step points cache every step.

        A per-step point's entry is ``[batch, time, ...]`` (gradients: ``name + "_grad"``, same
        shape); ``pos_slice`` slices the time axis.
        """
        predicate = self._names_predicate(names_filter)
        cache, fwd, bwd = super().get_caching_hooks(
            predicate, incl_bwd, device, remove_batch_dim, cache, pos_slice
        )
        time_slice = Slice.unwrap(pos_slice)

        def per_step(name: str, fn: Callable, backward: bool) -> Callable:
            if name not in self._step_points:
                return fn
            key = name + "_grad" if backward else name
            return _StepCacheHook(cache, key, device, remove_batch_dim, time_slice, backward)

        fwd = [(name, per_step(name, fn, False)) for name, fn in fwd]
        bwd = [(name, per_step(name, fn, True)) for name, fn in bwd]
        return cache, fwd, bwd

    def add_caching_hooks(
        self,
        names_filter: Any = None,
        incl_bwd: bool = False,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
    ) -> dict:
        """TransformerLens's ``add_caching_hooks`` with per-step points cached as
        ``[batch, time, ...]``; the hooks stay until ``reset_hooks()``."""
        cache, fwd, bwd = self.get_caching_hooks(
            names_filter, incl_bwd, device, remove_batch_dim, cache
        )
        for name, fn in fwd:
            self.hook_dict[name].add_hook(fn, dir="fwd")
        for name, fn in bwd:
            self.hook_dict[name].add_hook(fn, dir="bwd")
        return cache

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: Any = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        pos_slice: Any = None,
        return_cache_object: bool = True,
        **model_kwargs: Any,
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Run the model and return ``(output, cache)``.

        Every per-step hook point is cached as ``[batch, time, ...]`` holding all steps; hooks
        already active (``with model.hooks(...)``) run first, so the cache holds the intervened
        values. ``cache`` is a ``transformer_lens.ActivationCache`` (``cache["hook_hidden"]``,
        ``.keys()``, ``.to()``), or a plain dict with ``return_cache_object=False``. Other
        arguments are TransformerLens's.
        """
        out, cache_dict = super().run_with_cache(
            *model_args,
            names_filter=names_filter,
            device=device,
            remove_batch_dim=remove_batch_dim,
            incl_bwd=incl_bwd,
            reset_hooks_end=reset_hooks_end,
            clear_contexts=clear_contexts,
            pos_slice=pos_slice,
            **model_kwargs,
        )
        if return_cache_object:
            return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict

    # ------------------------------------------------------------------ forward

    def _prepare_input(self, x: Any) -> Tensor:
        """``x`` as float ``[batch, time, input_size]`` on the model's device and dtype."""
        cfg = self.cfg
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        expected = f"float [batch, time, input_size={cfg.input_size}]"
        if cfg.vocab_size is not None:
            expected += f" or integer token ids [batch, time] (vocab_size={cfg.vocab_size})"
        if not x.is_floating_point():
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(f"x must be {expected}, got dtype {x.dtype}")
            if cfg.vocab_size is None:
                raise TypeError(
                    f"x has integer dtype {x.dtype}, but this model has no token embedding "
                    f"(vocab_size is null); x must be {expected}"
                )
            if x.ndim != 2:
                raise ValueError(f"token ids x must be [batch, time], got shape {tuple(x.shape)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
                raise ValueError(
                    f"token ids x must lie in [0, {cfg.vocab_size}), found values in "
                    f"[{int(x.min())}, {int(x.max())}]"
                )
            x = self.embedding(x.to(self.device))  # type: ignore[misc]
        elif x.ndim != 3 or x.shape[-1] != cfg.input_size:
            raise ValueError(f"x must be {expected}, got shape {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(
                f"x must hold at least one sequence and one step, got {tuple(x.shape)}"
            )
        return x.to(device=self.device, dtype=self.dtype)

    def _state_tensor(self, value: Any, batch: int, what: str) -> Tensor:
        h = self.cfg.hidden_size
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"{what} must be a float tensor [batch, hidden={h}], got {value!r}")
        if value.ndim == 3 and value.shape[0] == 1:  # torch's [num_layers=1, batch, hidden]
            value = value[0]
        if value.ndim == 1 and value.shape[0] == h:
            value = value.expand(batch, h)
        if tuple(value.shape) != (batch, h):
            raise ValueError(
                f"{what} must be [batch={batch}, hidden={h}] (or [hidden] or [1, batch, hidden]),"
                f" got shape {tuple(value.shape)}"
            )
        return value.to(device=self.device, dtype=self.dtype)

    def _initial_state(self, h0: Any, batch: int) -> tuple[Tensor, Tensor | None]:
        """``(h, c)`` at t = -1; ``c`` is None except for an LSTM."""
        h = self.cfg.hidden_size
        zeros = torch.zeros(batch, h, device=self.device, dtype=self.dtype)
        if self.cfg.kind == "lstm":
            if h0 is None:
                return zeros, zeros.clone()
            if not isinstance(h0, (tuple, list)) or len(h0) != 2:
                raise TypeError(
                    f"h0 for an lstm must be a pair (h0, c0), each [batch, hidden={h}], got "
                    f"{type(h0).__name__}"
                )
            return self._state_tensor(h0[0], batch, "h0[0]"), self._state_tensor(
                h0[1], batch, "h0[1] (c0)"
            )
        if h0 is None:
            return zeros, None
        return self._state_tensor(h0, batch, "h0"), None

    def _fused_plan(self) -> list[_StepCacheHook] | None:
        """The cache hooks to fill from torch's fused kernel, or None when the loop must run.

        Fused only when every hook on every per-step point is a forward caching hook on
        ``hook_hidden`` (so no hook could change a state and nothing needs a gate or cell).
        """
        if not self.fused or self.cfg.kind == "ctrnn":
            return None
        plan: list[_StepCacheHook] = []
        for name, point in self._step_points.items():
            if point._forward_pre_hooks or point._backward_hooks or point.bwd_hooks:
                return None
            if len(point._forward_hooks) != len(point.fwd_hooks):
                return None  # a hook registered behind TransformerLens's back
            for handle in point.fwd_hooks:
                fn = handle.user_hook
                if name != "hook_hidden" or not isinstance(fn, _StepCacheHook) or fn.backward:
                    return None
                plan.append(fn)
        return plan

    def _run_fused(
        self, x: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        cfg = self.cfg
        weights = [self.weight_ih, self.W_rec]
        if cfg.bias:
            weights += [self.bias_ih, self.bias_hh]
        args = (weights, cfg.bias, 1, 0.0, self.training, False, True)
        if x.is_cuda:
            # cuDNN wants one flat weight buffer and warns otherwise; these weights are separate
            # parameters (or an effective W_rec computed per call), so it copies them once per
            # call, a cost that is small next to the sequence itself.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*single contiguous chunk of memory")
                return self._call_kernel(x, h, c, args)
        return self._call_kernel(x, h, c, args)

    def _call_kernel(
        self, x: Tensor, h: Tensor, c: Tensor | None, args: tuple
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        cfg = self.cfg
        if cfg.kind == "lstm":
            out, h_n, c_n = torch._VF.lstm(x, (h[None], c[None]), *args)
            return out, h_n[0], c_n[0]
        if cfg.kind == "gru":
            kernel = torch._VF.gru
        else:
            kernel = torch._VF.rnn_tanh if cfg.nonlinearity == "tanh" else torch._VF.rnn_relu
        out, h_n = kernel(x, h[None], *args)
        return out, h_n[0], None

    def _run_loop(
        self, x: Tensor, h: Tensor, c: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        cfg = self.cfg
        n_steps = x.shape[1]
        w_hh, b_hh = self.W_rec, self.bias_hh
        # One matmul for all steps, then per-step views: unbind's backward stacks the step
        # gradients once, where indexing xw[t] would write a full [B, T, G*H] zero-padded
        # gradient at every step (3-4x slower backward through a long loop).
        xw = F.linear(x, self.weight_ih, self.bias_ih).unbind(1)  # T x [B, G*H]
        points = tuple(self._step_points.values())
        for point in points:
            point.n_steps = n_steps
        hidden = self.hook_hidden
        states = []
        try:
            if cfg.kind in ("rnn", "ctrnn"):
                f = _ACTIVATIONS[cfg.nonlinearity]
                a = cfg.alpha
                pre_point = self.hook_pre
                for t in range(n_steps):
                    for point in points:
                        point.step = t
                    rec = xw[t] + F.linear(h, w_hh, b_hh)
                    if cfg.kind == "rnn":
                        h = hidden(f(pre_point(rec)))
                    elif cfg.convention == "yang2019":
                        h = hidden((1.0 - a) * h + a * f(pre_point(rec)))
                    else:  # neurogym: f of the leaky mixture
                        h = hidden(f(pre_point((1.0 - a) * h + a * rec)))
                    states.append(h)
            elif cfg.kind == "gru":
                gate_r, gate_z, gate_n, pre_point = (
                    self.hook_gate_r,
                    self.hook_gate_z,
                    self.hook_gate_n,
                    self.hook_pre,
                )
                for t in range(n_steps):
                    for point in points:
                        point.step = t
                    xr, xz, xn = xw[t].chunk(3, dim=-1)
                    hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
                    r = gate_r(torch.sigmoid(xr + hr))
                    z = gate_z(torch.sigmoid(xz + hz))
                    n = gate_n(torch.tanh(pre_point(xn + r * hn)))
                    h = hidden((1.0 - z) * n + z * h)
                    states.append(h)
            else:  # lstm
                gate_i, gate_f, gate_g, gate_o, cell = (
                    self.hook_gate_i,
                    self.hook_gate_f,
                    self.hook_gate_g,
                    self.hook_gate_o,
                    self.hook_cell,
                )
                for t in range(n_steps):
                    for point in points:
                        point.step = t
                    gi, gf, gg, go = (xw[t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
                    i = gate_i(torch.sigmoid(gi))
                    fg = gate_f(torch.sigmoid(gf))
                    g = gate_g(torch.tanh(gg))
                    o = gate_o(torch.sigmoid(go))
                    c = cell(fg * c + i * g)
                    h = hidden(o * torch.tanh(c))
                    states.append(h)
        finally:
            for point in points:
                point.step = None
        return torch.stack(states, dim=1), h, c

    def forward(
        self,
        x: Tensor,
        h0: Tensor | tuple[Tensor, Tensor] | None = None,
        *,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
        """Run the RNN over a batch of sequences.

        Args:
            x: float ``[batch, time, input_size]`` (moved to the model's device and dtype), or
                integer token ids ``[batch, time]`` when the model has an embedding.
            h0: initial hidden state ``[batch, hidden]`` (``[hidden]`` and torch's
                ``[1, batch, hidden]`` are accepted too); for an lstm a pair ``(h0, c0)``.
                Default zeros.
            return_state: also return the final state (``h_T``, or ``(h_T, c_T)`` for an lstm).

        Returns:
            ``[batch, time, output_size]`` readout, or ``[batch, time, hidden]`` hidden states
            when there is no readout; with ``return_state``, ``(output, final_state)``.
        """
        x = self.hook_input(self._prepare_input(x))
        h, c = self._initial_state(h0, x.shape[0])
        plan = self._fused_plan()
        if plan is not None:
            self._last_path = "fused"
            states, h, c = self._run_fused(x, h, c)
            for cache_hook in plan:
                cache_hook.fill(states)
        else:
            self._last_path = "loop"
            states, h, c = self._run_loop(x, h, c)
        out = self.hook_output(self.readout(states) if self.readout is not None else states)
        if return_state:
            return out, ((h, c) if self.cfg.kind == "lstm" else h)
        return out


def is_rnn_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory whose ``config.json`` declares the probekit RNN format."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        return False
    try:
        return read_json(cfg_path).get("format") == FORMAT
    except CheckpointError:
        return False
