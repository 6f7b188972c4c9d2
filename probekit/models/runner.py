"""The one place that runs a model: family, logits, decoding and activations.

Every analysis, the activation store and the CLI ask a :class:`Runner` for what they need from a
model instead of reaching into it. ``runner(model)`` accepts whatever :func:`probekit.load`
returns (a TransformerLens ``TransformerBridge`` or a :class:`probekit.models.HookedRNN`), an
in-memory Hugging Face ``PreTrainedModel``, or a checkpoint path::

    r = runner(model)
    r.family                    # "transformer" | "rnn"
    r.architecture              # config model_type ("gpt2", "gpt_neox", "llama") or RNN kind
    r.logits(tokens)            # [B, T] -> [B, T, V]
    r.logits(tokens, stop_at="blocks.0.hook_resid_post")   # that activation, rest not run
    r.generate(prefix, 20)      # greedy, KV cache: the tokens one-at-a-time decoding gives
    r.activations(tokens, ["blocks.1.hook_resid_post"])
    with r.tapped(reads=["blocks.1.hook_resid_post"]) as got:   # torch hooks on the plain
        r.plain_module()(input_ids=tokens)                       # model, for editing loops

Logits and decoding of a bridge run on a plain Hugging Face model that *shares the bridge's
weight tensors* (no copy): the bridge's own components drop the KV cache under transformers
5.x, so cached decoding through them would ignore the prompt, and hooks are not needed there.
An in-place weight edit of the bridge (ROME, MEMIT) is therefore seen by the runner at once.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import MethodType, SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

_ATTRIBUTE = "_probekit_runner"


class _Stop(Exception):
    """Raised by the last capture hook: nothing after it is needed, so the pass stops."""


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``TransformerBridge`` (checked by type, without
    importing transformer_lens when it was never imported)."""
    import sys

    bridge_module = sys.modules.get("transformer_lens.model_bridge")
    if bridge_module is None:
        return False
    return isinstance(model, bridge_module.TransformerBridge)


def is_hooked_rnn(model: Any) -> bool:
    """Whether ``model`` is a :class:`probekit.models.HookedRNN` (checked without importing
    the RNN module, and with it TransformerLens, when no RNN was ever built)."""
    import sys

    rnn_module = sys.modules.get("probekit.models.rnn")
    return rnn_module is not None and isinstance(model, rnn_module.HookedRNN)


def hf_model_of(model: nn.Module) -> nn.Module | None:
    """The Hugging Face model a bridge wraps (its components swapped in), or None."""
    if is_bridge(model):
        return model.original_model
    return None


def _is_hf(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers comes with transformer-lens
        return False
    return isinstance(model, PreTrainedModel)


def preallocate_kv(cache: Any, extra: int) -> bool:
    """Give each layer of a Hugging Face ``DynamicCache`` room for ``extra`` more positions, so
    that decoding writes each new key and value in place instead of concatenating.

    A ``DynamicLayer`` grows by ``torch.cat`` at every step: decoding ``m`` tokens after a
    ``k``-token prefix copies the whole cache ``m`` times, O((k + m)^2) memory traffic per
    sequence; on a small model that copying is most of a greedy decode's time (measured: 2/3
    on canary-lm). Here each layer's keys and values live in one buffer and the cache holds
    views of its first positions, which the attention reads as it would the concatenated
    tensors (same values, same shapes). Layers of another type, or a cache that is not a
    ``DynamicCache``, are left alone (returns False). A layer that outgrows its buffer falls
    back to concatenation.
    """
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers 4.x
        return False
    layers = getattr(cache, "layers", None)
    if not layers or extra < 1 or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    if any(not layer.is_initialized or layer.keys.ndim != 4 for layer in layers):
        return False
    for layer in layers:
        keys, values = layer.keys, layer.values
        length = keys.shape[-2]
        kbuf = keys.new_empty(*keys.shape[:-2], length + extra, keys.shape[-1])
        vbuf = values.new_empty(*values.shape[:-2], length + extra, values.shape[-1])
        kbuf[..., :length, :] = keys
        vbuf[..., :length, :] = values
        layer.keys, layer.values = kbuf[..., :length, :], vbuf[..., :length, :]
        layer._probekit_buffers = (kbuf, vbuf)
        layer.update = MethodType(_update_in_place, layer)
    return True


def _update_in_place(
    self: Any, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
):
    kbuf, vbuf = self._probekit_buffers
    length, new = self.keys.shape[-2], key_states.shape[-2]
    if length + new > kbuf.shape[-2]:  # out of room: concatenate as DynamicLayer does
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        return self.keys, self.values
    kbuf[..., length : length + new, :] = key_states
    vbuf[..., length : length + new, :] = value_states
    self.keys = kbuf[..., : length + new, :]
    self.values = vbuf[..., : length + new, :]
    return self.keys, self.values


class Runner:
    """Runs one model. Build it with :func:`runner` (cached per model object)."""

    def __init__(self, model: Any, tokenizer: Any = None) -> None:

        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        self._plain: nn.Module | None = None
        self._bare: bool | None = None
        if is_hooked_rnn(model):
            self.family = "rnn"
            self.architecture = model.cfg.kind
            self.vocab_size = model.cfg.vocab_size
            self.max_length: int | None = None
            return
        if is_bridge(model):
            config = model.original_model.config
        elif _is_hf(model):
            config = model.config
            self._plain = model.eval()
        else:
            raise TypeError(
                "model must be a model from pk.load (a TransformerBridge or a HookedRNN), a "
                f"Hugging Face PreTrainedModel, or a path to one; got {type(model).__name__}"
            )
        self.family = "transformer"
        self.architecture = str(config.model_type)
        self.vocab_size = int(config.vocab_size)
        self.max_length = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )

    def __repr__(self) -> str:
        return f"Runner({self.family}, {self.architecture}, vocab_size={self.vocab_size})"

    # -- description
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def is_language_model(self) -> bool:
        """Token ids in, logits over the same vocabulary out."""
        if self.family == "transformer":
            return True
        cfg = self.model.cfg
        return cfg.vocab_size is not None and cfg.output_size == cfg.vocab_size

    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The model's parameters in the order of the underlying module (Hugging Face order for
        transformers); the very tensors the model computes with, so editing them edits it."""
        if self.family == "rnn":
            return self.model.named_parameters()
        return self._plain_model().named_parameters()

    def hook_names(self) -> list[str]:
        """Every hook point the model has."""
        return sorted(self.hooked.hook_dict)

    @property
    def hooked(self) -> nn.Module:
        """The hooked model (bridge or HookedRNN) for activations and interventions."""
        if self.family == "rnn" or is_bridge(self.model):
            return self.model
        from probekit.models.loading import load

        # An in-memory Hugging Face model: a bridge is built only when hooks are asked for.
        self.model = load(self.model, device=self.device, dtype=self.dtype)
        return self.model

    # -- running
    @torch.no_grad()
    def logits(
        self, tokens: Tensor, stop_at: str | None = None, batch_size: int | None = None
    ) -> Tensor:
        """Logits ``[B, T, V]`` for token ids ``[B, T]`` (or an RNN's ``[B, T, in]`` inputs).

        With ``stop_at`` a hook name, the activation there is returned instead and the forward
        pass stops right after it. ``batch_size`` splits the batch (results concatenated).
        """
        if batch_size is not None and len(tokens) > batch_size:
            parts = tokens.split(batch_size)
            return torch.cat([self.logits(p, stop_at=stop_at) for p in parts])
        if stop_at is not None:
            return self.activations(tokens, [stop_at])[stop_at]
        tokens = tokens.to(self.device)
        if self.family == "rnn":
            return self.model(tokens)
        return self._plain_model()(input_ids=tokens, use_cache=False).logits

    @torch.no_grad()
    def generate(
        self,
        prefix: Tensor,
        steps: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The next ``steps`` tokens ``[B, steps]`` after equal-length ``prefix [B, k]``.

        Temperature 0 is greedy (argmax; token for token what one-at-a-time decoding with
        ``generate(do_sample=False)`` gives); above 0 each token is drawn from
        ``softmax(logits / temperature)`` with ``generator`` (a CPU ``torch.Generator``).
        Transformers reuse the KV cache (the prefix is encoded once); RNNs carry their state.
        No EOS stop.
        """
        if not self.is_language_model:
            raise ValueError("model must be a language model (token ids in, logits out)")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        prefix = prefix.to(self.device)
        out = torch.empty(prefix.shape[0], steps, dtype=torch.long, device=self.device)

        def pick(logits: Tensor) -> Tensor:
            if temperature == 0:
                return logits.argmax(-1)
            probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)[:, 0].to(self.device)

        if self.family == "rnn":
            logits, state = self.model(prefix, return_state=True)
            for t in range(steps):
                out[:, t] = pick(logits[:, -1])
                if t + 1 < steps:
                    logits, state = self.model(out[:, t : t + 1], state, return_state=True)
            return out
        result = self._forward_cached(prefix, last_only=True)
        return self._decode(result, out, steps, pick)

    def _forward_cached(self, tokens: Tensor, last_only: bool = False) -> Any:
        """One forward pass of the plain model that keeps its KV cache; with ``last_only``
        the unembedding runs on the last position only (what decoding needs)."""
        module = self._plain_model()
        params = inspect.signature(module.forward).parameters
        kwargs: dict[str, Any] = {"input_ids": tokens, "use_cache": True}
        if last_only and "logits_to_keep" in params:
            kwargs["logits_to_keep"] = 1
        return module(**kwargs)

    def _decode(
        self, result: Any, out: Tensor, steps: int, pick: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """Greedy / sampled decoding from a cached forward ``result`` whose last logits
        predict ``out[:, 0]``; fills ``out [B, steps]`` one token per step, reusing the cache."""
        module = self._plain_model()
        # transformers 5.x names the cache argument and output field ``cache``; 4.x
        # ``past_key_values``.
        params = inspect.signature(module.forward).parameters
        cache_arg = "cache" if "cache" in params else "past_key_values"
        stepper = None
        if steps > 1:
            past = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
            if preallocate_kv(past, steps - 1):
                from probekit.models.fastdecode import llama_stepper

                # the same operations without the framework's per-step cost, where it applies
                stepper = llama_stepper(module, past)
        logits = result.logits[:, -1]
        for t in range(steps):
            out[:, t] = pick(logits)
            if t + 1 == steps:
                break
            if stepper is not None:
                logits = stepper(out[:, t])
                continue
            past = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
            if past is None:
                raise RuntimeError(f"{type(module).__name__} returned no KV cache")
            result = module(input_ids=out[:, t : t + 1], use_cache=True, **{cache_arg: past})
            logits = result.logits[:, -1]
        return out

    @torch.no_grad()
    def residual(self, tokens: Tensor, layer: int) -> Tensor:
        """The residual stream entering block ``layer`` (``blocks.{layer}.hook_resid_pre``, =
        ``blocks.{layer - 1}.hook_resid_post``), ``[B, T, d_model]``, from the plain model's
        hidden states: no hooks, so several times faster than a bridge's cache on small
        inputs. ``layer`` in ``0..n_layers - 1`` (the last hidden state is after the final
        norm, not a residual stream)."""
        if self.family != "transformer":
            raise ValueError("residual() is for transformers")
        module = self._plain_model()
        n_layers = int(module.config.num_hidden_layers)
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer must be in 0..{n_layers - 1}, got {layer}")
        out = module(input_ids=tokens.to(self.device), use_cache=False, output_hidden_states=True)
        return out.hidden_states[layer]

    @torch.no_grad()
    def logits_and_generate(
        self, tokens: Tensor, prefix_len: int, steps: int
    ) -> tuple[Tensor, Tensor]:
        """``(logits [B, T, V] of tokens [B, T], greedy continuation [B, steps] of its first
        prefix_len tokens)`` from one forward pass over ``tokens`` plus the decoding steps.

        A causal transformer's keys and values at the first ``prefix_len`` positions do not
        depend on what follows, so the teacher-forced pass over ``tokens`` also encodes the
        prefix: its cache is cut back to ``prefix_len`` positions and decoding starts from the
        logits at position ``prefix_len - 1``. Same tokens as :meth:`generate` on the prefix
        (up to float rounding in the attention sums). RNNs run the two separately.
        """
        if not 1 <= prefix_len <= tokens.shape[1]:
            raise ValueError(f"prefix_len must be in 1..{tokens.shape[1]}, got {prefix_len}")
        tokens = tokens.to(self.device)
        if self.family == "rnn" or steps < 1:
            return self.logits(tokens), self.generate(tokens[:, :prefix_len], steps)
        result = self._forward_cached(tokens)
        logits = result.logits
        past = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
        if past is None or not hasattr(past, "crop"):
            return logits, self.generate(tokens[:, :prefix_len], steps)
        if tokens.shape[1] > prefix_len:
            # a negative length removes that many positions (transformers 4.x and 5.x alike)
            past.crop(prefix_len - tokens.shape[1])
        start = SimpleNamespace(
            logits=logits[:, prefix_len - 1 : prefix_len], cache=past, past_key_values=past
        )
        out = torch.empty(tokens.shape[0], steps, dtype=torch.long, device=self.device)
        return logits, self._decode(start, out, steps, lambda lg: lg.argmax(-1))

    @torch.no_grad()
    def activations(self, inputs: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Activations at hook ``names`` for one batch (``run_with_cache`` semantics).

        On a bridge the forward pass stops as soon as every requested hook has fired, so asking
        for early layers skips the rest of the model, the unembedding included. A HookedRNN
        caches every step (``[B, T, ...]``) through its own ``run_with_cache``.
        """
        names = list(names)
        model = self.hooked
        unknown = [n for n in names if n not in model.hook_dict]
        if unknown:
            raise ValueError(f"names: no hook point {unknown[0]!r} in this model")
        if self.family == "rnn":
            _, cache = model.run_with_cache(inputs, names_filter=names)
            return {name: cache[name] for name in names}
        captured: dict[str, Tensor] = {}

        def capture(name: str) -> Callable:
            def hook(tensor: Tensor, hook: Any) -> None:
                captured.setdefault(name, tensor.detach())
                if len(captured) == len(names):
                    raise _Stop

            return hook

        try:
            with model.hooks(fwd_hooks=[(name, capture(name)) for name in names]):
                model(inputs.to(self.device))
        except _Stop:
            pass
        missing = [name for name in names if name not in captured]
        if missing:
            raise ValueError(f"names: hooks {missing} never fired in a forward pass of this model")
        return {name: captured[name] for name in names}

    # -- hooks served by the plain model
    def tap(self, hook: str) -> tuple[nn.Module, bool] | None:
        """``(module of the plain model, reads its input)`` computing hook ``hook``, for the
        hooks editing loops need: ``blocks.{l}.hook_resid_post`` (the block's output),
        ``blocks.{l}.hook_mlp_out`` (the MLP's output) and ``blocks.{l}.mlp.out.hook_in`` (the
        MLP keys, the output projection's input). None for any other hook, for a model that is
        not a bridge, or when the bridge's component has no plain counterpart.

        Those hooks fire at module boundaries the plain Hugging Face model has too, so a torch
        hook on that module sees the same tensor without the bridge's wrapped components
        (several times faster on small models; :meth:`tapped`).
        """
        if self.family != "transformer" or not is_bridge(self.model):
            return None
        # Cached by hook name (module references, which a deepcopy of the model remaps to the
        # copy's own modules, unlike ids).
        taps = self.__dict__.setdefault("_taps", {})
        if hook not in taps:
            taps[hook] = self._find_tap(hook)
        return taps[hook]

    def _find_tap(self, hook: str) -> tuple[nn.Module, bool] | None:
        import re

        match = re.fullmatch(
            r"blocks\.(\d+)\.(hook_resid_post|hook_mlp_out|mlp\.hook_out|mlp\.out\.hook_in)", hook
        )
        blocks = getattr(self.model, "blocks", None)
        if match is None or blocks is None or int(match.group(1)) >= len(blocks):
            return None
        block = blocks[int(match.group(1))]
        kind = match.group(2)
        mlp = getattr(block, "mlp", None)
        component = {
            "hook_resid_post": block,
            "hook_mlp_out": mlp,
            "mlp.hook_out": mlp,
            "mlp.out.hook_in": getattr(mlp, "out", None),
        }[kind]
        original = getattr(component, "original_component", None)
        if not isinstance(original, nn.Module):
            return None
        found = self._counterpart(original)
        return None if found is None else (found, kind == "mlp.out.hook_in")

    def _counterpart(self, original: nn.Module) -> nn.Module | None:
        name = next(
            (n for n, m in self.model.original_model.named_modules() if m is original), None
        )
        if name is None:
            return None
        name = name.replace("._original_component", "")
        try:
            found = self._plain_model().get_submodule(name)
        except AttributeError:
            return None
        return found if type(found) is type(original) else None

    @contextlib.contextmanager
    def tapped(
        self,
        reads: Sequence[str] = (),
        edits: dict[str, Callable[[Tensor], Tensor]] | None = None,
    ) -> Iterator[dict[str, Tensor]]:
        """Torch hooks on the plain model for the hooks in ``reads`` (captured into the yielded
        dict on every forward pass of :meth:`plain_module`, the last pass's value kept) and
        ``edits`` (``hook -> fn(tensor) -> tensor``, the output replaced, gradients flowing).
        Raises ValueError for a hook :meth:`tap` cannot serve; the hooks are removed on exit.
        """
        edits = dict(edits or {})
        found = {name: self.tap(name) for name in [*reads, *edits]}
        missing = [name for name, where in found.items() if where is None]
        if missing:
            raise ValueError(f"hook {missing[0]!r} cannot be served by the plain model")
        captured: dict[str, Tensor] = {}
        handles = []

        def reader(name: str) -> Callable:
            def on_input(module: nn.Module, args: tuple) -> None:
                captured[name] = args[0]

            def on_output(module: nn.Module, args: tuple, output: Any) -> None:
                captured[name] = output[0] if isinstance(output, tuple) else output

            return on_input if found[name][1] else on_output

        def editor(name: str, fn: Callable[[Tensor], Tensor]) -> Callable:
            def on_output(module: nn.Module, args: tuple, output: Any) -> Any:
                if isinstance(output, tuple):
                    return (fn(output[0]), *output[1:])
                return fn(output)

            return on_output

        try:
            for name, fn in edits.items():
                module, reads_input = found[name]
                if reads_input:
                    raise ValueError(f"hook {name!r} reads a module's input and cannot be edited")
                handles.append(module.register_forward_hook(editor(name, fn)))
            for name in reads:
                module, reads_input = found[name]
                if reads_input:
                    handles.append(module.register_forward_pre_hook(reader(name)))
                else:
                    handles.append(module.register_forward_hook(reader(name)))
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def tap_activations(
        self, tokens: Tensor, hooks: Sequence[str]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(logits, {hook: activation})`` of one forward pass of the plain model with the
        torch hooks of :meth:`tapped` reading ``hooks`` (ValueError for one it cannot serve)."""
        with self.tapped(reads=hooks) as got:
            logits = self._plain_model()(input_ids=tokens.to(self.device), use_cache=False).logits
        return logits, dict(got)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (the model's tokenizer), or the space-joined ids without one."""
        if self.tokenizer is not None:
            return self.tokenizer.decode([int(i) for i in ids])
        return " ".join(str(int(i)) for i in ids)

    # -- the block list, for sweeps that replay a cached residual stream
    def shareable_blocks(self) -> nn.ModuleList | None:
        """The bridge's ``blocks`` if they are the very ``ModuleList`` its Hugging Face model
        loops over and every ``blocks.{l}.hook_resid_pre`` exists, else None.

        :func:`probekit.ablation.sweep` swaps entries of this list, for one call, for stand-ins
        that replay a recorded residual stream (its documented prefix-sharing optimisation).
        """
        if self.family != "transformer" or not is_bridge(self.model):
            return None
        blocks = getattr(self.model, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            return None
        if not any(m is blocks for m in self.model.original_model.modules()):
            return None
        if any(
            f"blocks.{i}.hook_resid_pre" not in self.model.hook_dict for i in range(len(blocks))
        ):
            return None
        return blocks

    def blocks_return_tensors(self) -> bool:
        """Whether block 0 returns a bare tensor (not a tuple, as older transformers do), found
        by one forward pass of a single token."""
        if self._bare is None:
            blocks = self.shareable_blocks()
            if blocks is None:
                return False
            seen: list[bool] = []
            probe = blocks[0].register_forward_hook(
                lambda module, args, output: seen.append(isinstance(output, Tensor))
            )
            try:
                with torch.no_grad():
                    self.model(torch.zeros(1, 1, dtype=torch.long, device=self.device))
            finally:
                probe.remove()
            self._bare = bool(seen) and all(seen)
        return self._bare

    # -- the plain Hugging Face path
    def plain_module(self) -> nn.Module:
        """The module logits and decoding run on: for a bridge, a plain Hugging Face model
        sharing the bridge's weight tensors (its state dict has Hugging Face names); for an RNN
        or a Hugging Face model, the model itself."""
        return self.model if self.family == "rnn" else self._plain_model()

    def _plain_model(self) -> nn.Module:
        if self._plain is None:
            self._plain = _plain_hf_copy(self.model.original_model)
        return self._plain


def _plain_hf_copy(wrapped: nn.Module) -> nn.Module:
    """A plain Hugging Face model of ``wrapped``'s class whose parameters *are* the bridge's
    tensors (``assign=True``: no copy, so later in-place edits are seen).

    Key paths lose the bridge's ``._original_component`` wrapper segments.
    """
    weights: dict[str, Tensor] = {}
    for key, value in wrapped.state_dict(keep_vars=True).items():
        weights.setdefault(key.replace("._original_component", ""), value)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        fresh = type(wrapped)(wrapped.config)
    wanted = fresh.state_dict()
    missing = [k for k in wanted if k not in weights]
    if missing:
        raise RuntimeError(
            f"cannot run {type(wrapped).__name__} without the bridge: no weight for {missing[0]!r}"
        )
    fresh.load_state_dict({k: weights[k] for k in wanted}, assign=True)
    # Buffers that are not in the state dict (rotary inverse frequencies, causal masks) were
    # made on the meta device: take the wrapped model's own.
    own = dict(wrapped.named_buffers())
    for name, buf in list(fresh.named_buffers()):
        if buf.is_meta:
            source = own.get(name) if name in own else own.get(_wrapped_name(name, own))
            if source is None:
                raise RuntimeError(f"cannot run {type(wrapped).__name__}: no buffer {name!r}")
            _set_buffer(fresh, name, source)
    return fresh.eval()


def _wrapped_name(name: str, own: dict[str, Tensor]) -> str | None:
    for key in own:
        if key.replace("._original_component", "") == name:
            return key
    return None


def _set_buffer(module: nn.Module, name: str, value: Tensor) -> None:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    module._buffers[leaf] = value


_PLAIN_TAPS = [True]


@contextlib.contextmanager
def bridge_hooks_only() -> Iterator[None]:
    """Inside this block :func:`tapping_runner` answers None, so the loops that would run on
    the plain model with torch hooks (editing, entity representations) go through the bridge's
    own hooks instead: for comparisons and benchmarks of the two paths."""
    _PLAIN_TAPS.append(False)
    try:
        yield
    finally:
        _PLAIN_TAPS.pop()


def tapping_runner(model: Any, hooks: Sequence[str]) -> Runner | None:
    """``model``'s runner when it is a bridge whose plain Hugging Face model serves every hook in
    ``hooks`` (:meth:`Runner.tap`; use it with :meth:`Runner.tapped`), else None."""
    if not _PLAIN_TAPS[-1] or not is_bridge(model):
        return None
    run = runner(model)
    return run if all(run.tap(hook) is not None for hook in hooks) else None


def runner(model: Any) -> Runner:
    """The :class:`Runner` of ``model`` (a pk.load result, an HF model, or a checkpoint path).

    A Hugging Face directory is read without booting a bridge (scoring and decoding need no
    hooks; the bridge is built only if hooks are asked for); any other path goes through
    :func:`probekit.load`. A runner is kept on its model object, so asking again is free.
    """
    if isinstance(model, Runner):
        return model
    if isinstance(model, (str, os.PathLike)):
        from probekit.models.loading import detect_format, load, load_hf_plain

        path = Path(model)
        if path.is_dir() and detect_format(path) == "hf":
            plain, tokenizer = load_hf_plain(path)
            return _remember(plain, Runner(plain, tokenizer))
        model = load(path)
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a model from pk.load (a TransformerBridge or a HookedRNN), a Hugging "
            f"Face PreTrainedModel, or a path to one; got {type(model).__name__}"
        )
    found = model.__dict__.get(_ATTRIBUTE)
    if found is None:
        found = _remember(model, Runner(model))
    return found


def _remember(model: nn.Module, found: Runner) -> Runner:
    # A plain attribute (not a submodule): the model<->runner cycle is collected with the model.
    model.__dict__[_ATTRIBUTE] = found
    return found
