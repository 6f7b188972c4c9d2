"""The velocity-conditioned recurrent network of the self-supervised grid-cell framework.

Which question this module answers: *do multi-module grid cells emerge in a recurrent network
that is never told where it is?* Schaeffer, Khona, Ma, Eyzaguirre, Koyejo and Fiete (NeurIPS
2023; method in ``docs/grid.md``) train a network whose recurrent matrix is a function of the
velocity, with no readout and no position target, on self-supervised losses alone
(:mod:`probekit.tasks.navigation`). The network:

    g_t = normalise(ReLU(W(v_t) g_{t-1})),   normalise(r) = r / ||r||,

with ``W(v)`` a small MLP from the velocity ``v_t`` (R^2) to an ``N x N`` matrix and ``g_0`` a
learned state (``normalise(ReLU(g0))``), shared by every trajectory: all trajectories of the
framework start at the same place.

:class:`HookedSSLGrid` is a :class:`~probekit.models.HookedRNN` (so ``pk.load``, ``pk.cache``, the
runner and the analyses treat it like any other RNN), with its own parameters and forward pass.
Hook points (``B`` batch, ``T`` time, ``N`` units):

============  =====================  ==========================================================
name          called                 value
============  =====================  ==========================================================
hook_input    once, ``[B, T, 2]``    the velocities
hook_pre      per step, ``[B, N]``   ``W(v_t) g_{t-1}``
hook_hidden   per step, ``[B, N]``   the new state ``g_t``
hook_output   once, ``[B, T, N]``    the states (there is no readout)
============  =====================  ==========================================================

As in :class:`~probekit.models.HookedRNN`, a per-step hook is called inside the recurrence (what
it returns changes every later step) and ``run_with_cache`` stores it as ``[batch, time, N]``.

Saved as ``config.json`` (``"format": "probekit-ssl-grid"``) + ``model.safetensors``;
``pk.load(path)`` loads it.

Example:
    >>> import torch
    >>> from probekit.models.ssl_grid import HookedSSLGrid, SSLGridConfig
    >>> model = HookedSSLGrid(SSLGridConfig(hidden_size=16, mlp_hidden=(8, 8)))
    >>> _, cache = model.run_with_cache(torch.zeros(3, 5, 2), names_filter="hook_hidden")
    >>> tuple(cache["hook_hidden"].shape)
    (3, 5, 16)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformer_lens.HookedRootModule import HookedRootModule

from probekit.fileio import CheckpointError, check_shape, read_json, read_safetensors
from probekit.models.rnn import CONFIG_FILE, WEIGHTS_FILE, HookedRNN, RNNHookPoint
from probekit.validation import check_positive_int, resolve_device

__all__ = ["FORMAT", "HookedSSLGrid", "SSLGridConfig", "is_ssl_grid_dir", "normalise_relu"]

FORMAT = "probekit-ssl-grid"
FORMAT_VERSION = 1
STEP_HOOKS = ("hook_pre", "hook_hidden")


def normalise_relu(pre: Tensor, eps: float = 1e-12) -> Tensor:
    """``ReLU(pre) / ||ReLU(pre)||`` over the last axis (a state on the unit sphere's
    non-negative part; an all-negative ``pre`` gives the zero state)."""
    r = torch.relu(pre)
    return r / r.norm(dim=-1, keepdim=True).clamp_min(eps)


@dataclass
class SSLGridConfig:
    """The architecture of a :class:`HookedSSLGrid`; stored as ``config.json``.

    Args:
        hidden_size: units ``N`` of the state ``g``.
        mlp_hidden: widths of the MLP's hidden layers (ReLU between layers); the MLP maps the
            velocity (2) through them to ``N * N`` outputs, reshaped row-major to ``W(v)``.
        identity_init: added to the MLP's output bias at initialisation (``W(v) = identity_init
            I + ...``), so that an untrained network keeps part of its state from step to step.
        output_init_scale: multiplies the MLP's last layer (weight and bias) at initialisation,
            before the identity is added: small values start ``W(v)`` near ``identity_init I``,
            so that an untrained network's state drifts slowly with the path.
        extra: free-form JSON metadata (the task's settings: arena box, sequence length, speed),
            preserved on save and load.
    """

    hidden_size: int = 128
    mlp_hidden: tuple[int, ...] = (64, 64)
    identity_init: float = 1.0
    output_init_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    # What the rest of probekit reads off an RNN's config.
    kind: ClassVar[str] = "ssl-grid"
    input_size: ClassVar[int] = 2
    output_size: ClassVar[None] = None
    vocab_size: ClassVar[None] = None

    def __post_init__(self) -> None:
        check_positive_int("SSLGridConfig.hidden_size", self.hidden_size)
        if isinstance(self.mlp_hidden, int) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in self.mlp_hidden
        ):
            raise ValueError(
                f"SSLGridConfig.mlp_hidden must be a list of positive ints, got {self.mlp_hidden!r}"
            )
        self.mlp_hidden = tuple(self.mlp_hidden)
        for name in ("identity_init", "output_init_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(
                    f"SSLGridConfig.{name} must be finite, got {getattr(self, name)!r}"
                )
        if not isinstance(self.extra, dict):
            raise ValueError(f"SSLGridConfig.extra must be a JSON object, got {self.extra!r}")
        self.extra_tensors: dict[str, tuple[int, ...]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``config.json``."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "mlp_hidden": list(self.mlp_hidden),
            "identity_init": self.identity_init,
            "output_init_scale": self.output_init_scale,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> SSLGridConfig:
        """Parse a ``config.json`` dict (``ValueError`` naming what is wrong)."""
        if obj.get("format") != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}, got {obj.get('format')!r}")
        if obj.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(
                f"format_version {obj.get('format_version')!r} is not supported "
                f"(this probekit reads {FORMAT_VERSION})"
            )
        known = {"format", "format_version", "kind", "input_size", "hidden_size", "mlp_hidden"}
        known |= {"identity_init", "output_init_scale", "extra"}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}")
        if obj.get("input_size", 2) != 2:
            raise ValueError(f"input_size must be 2 (velocity), got {obj.get('input_size')!r}")
        return cls(
            hidden_size=obj["hidden_size"],
            mlp_hidden=tuple(obj.get("mlp_hidden", (64, 64))),
            identity_init=float(obj.get("identity_init", 1.0)),
            output_init_scale=float(obj.get("output_init_scale", 1.0)),
            extra=dict(obj.get("extra", {})),
        )


class HookedSSLGrid(HookedRNN):
    """``g_t = normalise(ReLU(W(v_t) g_{t-1}))``, ``W(v)`` an MLP, ``g_0`` learned; no readout.

    Args:
        cfg: an :class:`SSLGridConfig` or its dict form.
        seed: seed of the initialisation: each linear layer's weight and bias
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (torch's default range) from one generator,
            the last layer's then multiplied by ``output_init_scale`` and ``identity_init`` added
            to the diagonal entries of its bias; ``g0 ~ U(0, 1)``.

    Parameters: ``mlp.{0,2,...}.weight/bias`` (the MLP's linear layers) and ``g0 [N]``.
    """

    cfg: SSLGridConfig  # type: ignore[assignment]

    def __init__(self, cfg: SSLGridConfig | Mapping[str, Any], *, seed: int = 0) -> None:
        # HookedRNN's own parameters are not built; only its hooking and caching are inherited.
        HookedRootModule.__init__(self)
        if isinstance(cfg, SSLGridConfig):
            cfg = SSLGridConfig.from_dict(cfg.to_dict())  # a private copy, validated
        else:
            cfg = SSLGridConfig.from_dict(cfg)
        self.cfg = cfg
        self.fused = False
        self._last_path = None
        self.embedding = None
        n = cfg.hidden_size
        widths = (cfg.input_size, *cfg.mlp_hidden, n * n)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)
        self.g0 = nn.Parameter(torch.empty(n))
        self.hook_input = RNNHookPoint(per_step=False)
        self.hook_pre = RNNHookPoint(per_step=True)
        self.hook_hidden = RNNHookPoint(per_step=True)
        self.hook_output = RNNHookPoint(per_step=False)
        self._step_points = {name: getattr(self, name) for name in STEP_HOOKS}
        self._reset_parameters(seed)
        self.setup()

    def _reset_parameters(self, seed: int) -> None:
        if self.g0.is_meta:
            return
        gen = torch.Generator().manual_seed(seed)
        n = self.cfg.hidden_size
        with torch.no_grad():
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    k = 1.0 / math.sqrt(layer.in_features)
                    for p in (layer.weight, layer.bias):
                        p.copy_(torch.empty(p.shape).uniform_(-k, k, generator=gen))
            last = self.mlp[-1]
            last.weight.mul_(self.cfg.output_init_scale)
            last.bias.mul_(self.cfg.output_init_scale)
            last.bias.view(n, n).diagonal().add_(self.cfg.identity_init)
            self.g0.copy_(torch.rand(n, generator=gen))

    # ------------------------------------------------------------------ files

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> HookedSSLGrid:
        """Load a directory written by :meth:`save` (``config.json`` + ``model.safetensors``).

        Raises:
            CheckpointError: naming the file, for a bad config, a missing or unexpected tensor,
                or a tensor whose shape differs from the config.
        """
        path = Path(path)
        cfg_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        try:
            cfg = SSLGridConfig.from_dict(read_json(cfg_path))
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{cfg_path}: {err}") from err
        tensors = read_safetensors(weights_path)
        with torch.device("meta"):
            model = cls(cfg)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing = [k for k in expected if k not in tensors]
        unexpected = sorted(k for k in tensors if k not in expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{weights_path}: missing tensor(s) {missing}, unexpected {unexpected} for the "
                f"config in {CONFIG_FILE}"
            )
        for name, shape in expected.items():
            check_shape(weights_path, name, shape, tuple(tensors[name].shape))
        model.load_state_dict(tensors, strict=True, assign=True)
        return model.to(device=None if device is None else resolve_device(device), dtype=dtype)

    @classmethod
    def from_torch(cls, *args: Any, **kwargs: Any) -> HookedRNN:
        raise TypeError("HookedSSLGrid is built from an SSLGridConfig, not from a torch RNN")

    # ------------------------------------------------------------------ convenience

    @property
    def step_hook_names(self) -> tuple[str, ...]:
        return STEP_HOOKS

    @property
    def device(self) -> torch.device:
        return self.g0.device

    @property
    def dtype(self) -> torch.dtype:
        return self.g0.dtype

    @property
    def W_in(self) -> Tensor:
        raise AttributeError("an ssl-grid network has no input weights: W(v) is an MLP of v")

    @property
    def W_rec(self) -> Tensor:
        raise AttributeError(
            "an ssl-grid network has no fixed recurrent weights: use recurrent_weights(v)"
        )

    def extra_repr(self) -> str:
        c = self.cfg
        return f"kind='ssl-grid', hidden_size={c.hidden_size}, mlp_hidden={list(c.mlp_hidden)}"

    def add_extra_tensor(self, name: str, tensor: Tensor) -> None:
        raise TypeError("an ssl-grid network keeps its task settings in cfg.extra, not tensors")

    # ------------------------------------------------------------------ forward

    def recurrent_weights(self, velocity: Tensor) -> Tensor:
        """``W(v)``: velocities ``[..., 2]`` -> matrices ``[..., N, N]`` (row = output unit)."""
        n = self.cfg.hidden_size
        return self.mlp(velocity).unflatten(-1, (n, n))

    def initial_state(self, batch: int) -> Tensor:
        """``g_0 = normalise(ReLU(g0))`` repeated ``[batch, N]``."""
        return normalise_relu(self.g0).expand(batch, -1)

    def forward(
        self,
        x: Tensor,
        h0: Tensor | None = None,
        *,
        order: Tensor | None = None,
        return_state: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the recurrence.

        Args:
            x: velocities ``[batch, time, 2]``; or, with ``order``, the distinct velocities
                ``[K, 2]`` that every trajectory draws from.
            h0: initial state ``[batch, N]`` (or ``[N]``); default the learned ``g_0``.
            order: ``[batch, time]`` long: step ``t`` of trajectory ``b`` uses
                ``x[order[b, t]]``. ``W`` is then computed once per distinct velocity (``K``
                MLP calls instead of ``batch * time``) and gathered per step; ``hook_input``
                sees the gathered ``[batch, time, 2]`` velocities (read-only in this mode).
            return_state: also return ``g_T``.

        Returns:
            the states ``[batch, time, N]`` (there is no readout); with ``return_state``,
            ``(states, g_T)``.
        """
        if order is None:
            x = self.hook_input(self._prepare_input(x))
            table = None
            steps = x.unbind(1)
        else:
            if not isinstance(order, Tensor) or order.ndim != 2 or order.dtype != torch.long:
                raise ValueError(f"order must be a long tensor [batch, time], got {order!r}")
            if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[-1] != 2:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"with order, x must be velocities [K, 2], got {shape}")
            if order.numel() and (int(order.min()) < 0 or int(order.max()) >= len(x)):
                raise ValueError(f"order must index the {len(x)} velocities of x")
            x = x.to(device=self.device, dtype=self.dtype)
            order = order.to(self.device)
            self.hook_input(x[order])
            table = self.recurrent_weights(x)  # [K, N, N]
            steps = order.unbind(1)
        batch = len(steps[0])
        if h0 is None:
            g = self.initial_state(batch)
        else:
            g = self._state_tensor(h0, batch, "h0")
        n_steps = len(steps)
        for point in self._step_points.values():
            point.n_steps = n_steps
        states = []
        try:
            for t, step in enumerate(steps):
                for point in self._step_points.values():
                    point.step = t
                w = self.recurrent_weights(step) if table is None else table[step]
                # vecdot, not bmm: a batched matrix-vector product is ~4x faster forward this
                # way on the CPU, and as fast backward
                pre = self.hook_pre(torch.linalg.vecdot(w, g.unsqueeze(-2)))
                g = self.hook_hidden(normalise_relu(pre))
                states.append(g)
        finally:
            for point in self._step_points.values():
                point.step = None
        self._last_path = "loop"
        out = self.hook_output(torch.stack(states, dim=1))
        return (out, g) if return_state else out


def is_ssl_grid_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory whose ``config.json`` declares the ssl-grid format."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        return False
    try:
        return read_json(cfg_path).get("format") == FORMAT
    except CheckpointError:
        return False
