"""Which layers and heads does a capability depend on? Ablation sweeps over a hooked model.

The method of docs/ablation.md (compositional capabilities of autoregressive
transformers: "the attention layers in the latter half of the model are critical to
compositionality"). :func:`sweep` knocks out one component at a
time - a whole attention or MLP layer (its output added to the residual stream), one attention
head (its slice of ``z``, the input of ``W_O``), or, in a :class:`~probekit.models.HookedRNN`, a
group of hidden units inside the recurrence - and scores the model with each knocked out.

Methods (applied at every position, and at every decoding step in generation mode):

- ``"zero"``: the activation becomes 0 (for a head: the same as zeroing its rows of ``W_O``);
- ``"mean"``: its mean over the ``reference`` inputs at the same position (time step);
- ``"resample"``: the activation the same component had on another input (input ``i`` takes
  reference input ``src[i]``, drawn from ``seed``; with no ``reference``, another row of
  ``inputs``, never itself).

Batched: the variants (one per ablated component, plus the clean model) are laid out along the
batch dimension - the inputs repeated once per variant, in chunks of ``batch_size`` rows - and
one hook per hook point replaces, row by row, the ablated slice (``torch.where`` on a per-row
mask, so the ablated values are exactly those of a one-variant ``run_with_hooks``). One
forward pass then scores many variants. Prefix sharing (``share_prefix``, teacher-forced
sweeps of a ``TransformerBridge``): an ablation at layer ``l`` changes nothing before block
``l``, so the clean rows run first and record the residual stream entering each layer, and a
variant of layer ``l`` runs from block ``l`` on, with that stream replayed in place of blocks
``0..l-1`` (swapped for stand-ins for the duration of the call). For L layers of H heads that
is ``L + H L (L + 1) / 2`` block-rows per input instead of ``(H L + 1) L``: 1.67x less compute
for 6 x 4 heads, 1.84x for 12 x 12. No exact sweep can save much more: every variant still
runs from its layer to the output. Layers with few rows share
one forward from the first of them, so a handful of inputs still costs a few calls.
``batched=False`` runs the naive loop (one ``run_with_hooks`` per variant) for comparison;
scores agree up to float rounding (different batch shapes). Batching removes per-call
overhead, prefix sharing removes compute; ``benchmarks/ablation_bench.py`` measures both.

Example::

    >>> result = pk.ablation.sweep(model, tokens, "accuracy", level="head", method="mean")
    >>> result.frame.sort_values("delta").head()       # the heads whose loss hurts most
    >>> result.summary["clean"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from probekit.models.runner import runner
from probekit.report.page import Rendered

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["AblationResult", "sweep", "LEVELS", "COMPONENTS", "METHODS", "METRICS", "ESTIMATES"]

LEVELS = ("layer", "head")
COMPONENTS = ("attn", "mlp")
METHODS = ("zero", "mean", "resample")
METRICS = ("loss", "accuracy", "logprob")
ESTIMATES = ("exact", "attribution")

# Prefix sharing: merge layers into one forward until it holds this many rows (a forward call
# has a fixed cost, worth about this many rows of a small model's layers on a CPU), and keep at
# most this many bytes of clean residual streams to replay.
_MIN_ROWS = 32
_RESID_BUDGET = 512 * 2**20

Metric = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AblationResult(Rendered):
    """One row per ablated component.

    ``frame`` columns: ``layer``, ``head`` (``<NA>`` for whole-layer ablations; the group index
    for RNN unit groups), ``component``, ``method``, ``score`` (the metric's mean over the
    inputs with that component ablated), ``delta`` (score minus the clean score), ``n_units``.
    ``summary``: ``clean`` (the unablated score), ``metric``, ``higher_is_better``, ``level``,
    ``component``, ``method``, ``n_inputs``, ``n_variants``, and ``most_damaging`` (the row
    whose ablation hurts the score most). ``scores``: per-input scores ``[n_variants + 1,
    n_inputs]``, the clean model in row 0.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    scores: torch.Tensor = field(repr=False)
    title: str = "Ablation sweep"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        from probekit.report.figures.ablation import sweep_figures

        return sweep_figures(self.frame, self.summary)


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class _Variant:
    layer: int
    head: int | None
    hook: str  # hook point name
    mask: torch.Tensor  # bool over the trailing dims of the hook's activation


def _is_rnn(model: Any) -> bool:
    from probekit.models.rnn import HookedRNN

    return isinstance(model, HookedRNN)


def _check_model(model: Any) -> None:
    if not (hasattr(model, "hook_dict") and hasattr(model, "hooks")):
        raise ValueError(
            "model must be a hooked model (pk.load(...): a TransformerBridge or a HookedRNN), "
            f"got {type(model).__name__}"
        )


def _transformer_variants(
    model: Any, level: str, component: str, layers: Sequence[int] | None
) -> list[_Variant]:
    cfg = model.cfg
    n_layers = cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {bad}")
    variants = []
    for layer in layers:
        if level == "layer":
            hook = f"blocks.{layer}.hook_{component}_out"
            variants.append(_Variant(layer, None, hook, torch.ones(cfg.d_model, dtype=torch.bool)))
        else:
            hook = f"blocks.{layer}.attn.hook_z"
            for head in range(cfg.n_heads):
                mask = torch.zeros(cfg.n_heads, cfg.d_head, dtype=torch.bool)
                mask[head] = True
                variants.append(_Variant(layer, head, hook, mask))
    for v in variants:
        if v.hook not in model.hook_dict:
            raise ValueError(f"the model has no hook point {v.hook!r} to ablate")
    return variants


def _rnn_variants(model: Any, groups: Any) -> list[_Variant]:
    n_units = model.hidden_size
    if groups is None:
        groups = n_units
    if isinstance(groups, int) and not isinstance(groups, bool):
        if not 1 <= groups <= n_units:
            raise ValueError(f"groups must be an int in 1..hidden_size={n_units}, got {groups}")
        groups = [chunk.tolist() for chunk in torch.arange(n_units).tensor_split(groups)]
    variants = []
    for g, units in enumerate(groups):
        units = torch.as_tensor(units, dtype=torch.long).reshape(-1)
        if units.numel() == 0 or int(units.min()) < 0 or int(units.max()) >= n_units:
            raise ValueError(
                f"groups[{g}] must be a non-empty list of unit indices in 0..{n_units - 1}"
            )
        mask = torch.zeros(n_units, dtype=torch.bool)
        mask[units] = True
        variants.append(_Variant(0, g, "hook_hidden", mask))
    if not variants:
        raise ValueError("groups must hold at least one group of hidden units")
    return variants


# ----------------------------------------------------------------------------- metrics


def _teacher_forced_scores(
    metric: Metric, logits: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor | None
) -> torch.Tensor:
    if callable(metric):
        return metric(logits, tokens)
    pred, target = logits[:, :-1].float(), tokens[:, 1:]
    mask = torch.ones_like(target, dtype=torch.bool) if positions is None else positions
    mask = mask.expand_as(target).float()
    if metric in ("loss", "logprob"):
        per_token = torch.nn.functional.cross_entropy(
            pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none"
        ).reshape(target.shape)
        if metric == "logprob":
            per_token = -per_token
    else:
        per_token = (pred.argmax(-1) == target).float()
    return (per_token * mask).sum(1) / mask.sum(1)


def _generation_scores(
    metric: Metric, generated: torch.Tensor, tokens: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    if callable(metric):
        return metric(generated, tokens)
    return (generated[:, prompt_len:] == tokens[:, prompt_len:]).all(1).float()


def _attribution_scores(
    model: Any,
    inputs: torch.Tensor,
    variants: list[_Variant],
    metric: Metric,
    positions: torch.Tensor | None,
    method: str,
    ref_acts: dict[str, torch.Tensor],
    src: torch.Tensor | None,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """First-order estimates of every variant's scores ``[n_variants + 1, n]`` (clean first)
    from one clean forward and one backward pass per chunk of inputs (attribution patching):

        delta_v(x) ~= sum over positions and the ablated slice of (a_abl - a) * d m(x) / d a

    at the variant's hook point, ``m`` the metric (differentiable: loss, logprob or a
    callable), ``a`` the clean activation and ``a_abl`` its replacement (0, the reference mean
    at that position, or the resampled input's activation). Row 0 holds the clean scores."""
    from probekit.progress import bar as progress_bar

    hooks = sorted({v.hook for v in variants})
    n = len(inputs)
    contrib: dict[str, torch.Tensor] = {}  # hook -> [n, *trailing], summed over positions
    clean = torch.empty(n)
    device = inputs.device
    for rows in progress_bar(torch.arange(n).split(batch_size), desc="attribute", enabled=progress):
        captured: dict[tuple[str, int | None], torch.Tensor] = {}
        # adding a zero that requires grad puts every hooked activation on the autograd graph
        # without asking for the weights' gradients
        leaf = torch.zeros((), device=device, requires_grad=True)

        def capturer(
            name: str, leaf: torch.Tensor, captured: dict[tuple[str, int | None], torch.Tensor]
        ) -> Callable[[torch.Tensor, Any], torch.Tensor]:
            # keyed by the requested name: a bridge calls hooks with their canonical name
            def capture(act: torch.Tensor, hook: Any) -> torch.Tensor:
                act = act + leaf.to(act.dtype)
                captured[(name, getattr(hook, "step", None))] = act
                return act

            return capture

        batch = inputs[rows.to(device)]
        rows_positions = positions
        if positions is not None and positions.ndim == 2:
            rows_positions = positions[rows.to(device)]
        with (
            torch.enable_grad(),
            model.hooks(fwd_hooks=[(h, capturer(h, leaf, captured)) for h in hooks]),
        ):
            out = model(batch)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            # the metric itself: attribution accepts only differentiable ones (loss, logprob, callables)
            scores_now = _teacher_forced_scores(metric, logits, batch, rows_positions)
            keys = list(captured)
            grads = torch.autograd.grad(
                scores_now.sum(), [captured[k] for k in keys], allow_unused=True
            )
        with torch.no_grad():
            clean[rows] = scores_now.detach().float().cpu()
            for (name, step), grad in zip(keys, grads, strict=True):
                if grad is None:
                    continue
                act = captured[(name, step)].detach()
                if method == "zero":
                    value = torch.zeros((), dtype=act.dtype, device=act.device)
                elif method == "mean":
                    mean = ref_acts[name].mean(0)
                    value = mean[step] if step is not None else mean[: act.shape[1]]
                else:
                    assert src is not None
                    picked = ref_acts[name][src[rows]]
                    value = picked[:, step] if step is not None else picked[:, : act.shape[1]]
                term = (value.to(act.dtype) - act) * grad
                if step is None:
                    term = term.sum(1)  # over positions
                term = term.float().cpu()
                if name not in contrib:
                    contrib[name] = torch.zeros(n, *term.shape[1:])
                contrib[name][rows] += term
    scores = torch.empty(len(variants) + 1, n)
    scores[0] = clean
    for i, v in enumerate(variants):
        delta = contrib[v.hook][:, v.mask] if v.hook in contrib else torch.zeros(n, 1)
        scores[i + 1] = clean + delta.sum(1)
    return scores


# ----------------------------------------------------------------------------- running


def _reference_activations(
    model: Any, reference: torch.Tensor, hooks: list[str], batch_size: int
) -> dict[str, torch.Tensor]:
    """Clean activations of ``reference`` at ``hooks``: ``[m, pos (or time), ...]`` each."""
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    wanted = set(hooks)
    with torch.no_grad():
        for chunk in reference.split(batch_size):
            _, cache = model.run_with_cache(chunk, names_filter=lambda n: n in wanted)
            for h in hooks:
                parts[h].append(cache[h].detach())
    return {h: torch.cat(v) for h, v in parts.items()}


class _AblationHook:
    """Replaces, in each row of a batch, the slice its variant ablates.

    ``row_mask [rows, *trailing]`` (bool) says which entries of each row are replaced;
    ``value`` is the replacement: ``None`` (zeros), ``[pos, *trailing]`` (a per-position mean,
    the same for every row) or ``[rows, pos, *trailing]`` (per-row resampled activations). For
    a per-step RNN hook the activation is ``[rows, *trailing]`` at step ``hook.step``.
    """

    def __init__(self, row_mask: torch.Tensor, value: torch.Tensor | None, per_row: bool):
        self.row_mask = row_mask
        self.value = value
        self.per_row = per_row

    def __call__(self, act: torch.Tensor, hook: Any) -> torch.Tensor:
        step = getattr(hook, "step", None)
        if step is not None:  # HookedRNN per-step point: act [rows, H]
            mask = self.row_mask
            if self.value is None:
                value = torch.zeros((), dtype=act.dtype, device=act.device)
            else:
                value = self.value[:, step] if self.per_row else self.value[step]
        else:  # [rows, pos, *trailing]
            pos = act.shape[1]
            mask = self.row_mask.unsqueeze(1)
            if self.value is None:
                value = torch.zeros((), dtype=act.dtype, device=act.device)
            else:
                value = self.value[:, :pos] if self.per_row else self.value[:pos]
        return torch.where(mask.to(act.device), value.to(act.dtype), act)


def _forward_rows(
    model: Any,
    rows_variant: torch.Tensor,
    rows_input: torch.Tensor,
    inputs: torch.Tensor,
    variants: list[_Variant],
    method: str,
    ref_acts: dict[str, torch.Tensor],
    src: torch.Tensor | None,
    score_fn: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    blocks: torch.nn.ModuleList | None = None,
    start: int = 0,
    replay: torch.Tensor | None = None,
    capture: dict[int, list[torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Scores ``[rows]`` of one chunk: row ``r`` runs input ``rows_input[r]`` with variant
    ``rows_variant[r]`` ablated (``-1``: clean).

    Prefix sharing: with ``start > 0`` blocks ``0..start-1`` of ``blocks`` are swapped for
    :class:`_Replay` stand-ins and ``replay [rows, pos, d_model]`` (the clean residual stream
    entering block ``start``) is fed to block ``start``. ``capture`` maps layers to lists that
    receive the clean rows' ``blocks.{l}.hook_resid_pre``."""
    fwd_hooks: list[tuple[str, Callable[..., Any]]] = []
    if capture:
        clean = rows_variant == -1

        def keep(act: torch.Tensor, hook: Any) -> None:
            capture[int(hook.name.split(".")[1])].append(act[clean].detach().clone())

        fwd_hooks += [(f"blocks.{layer}.hook_resid_pre", keep) for layer in capture]
    for hook in sorted({variants[int(v)].hook for v in rows_variant.unique() if v >= 0}):
        at_hook = [i for i, v in enumerate(variants) if v.hook == hook]
        trailing = variants[at_hook[0]].mask.shape
        table = torch.zeros(len(variants) + 1, *trailing, dtype=torch.bool)
        for i in at_hook:
            table[i] = variants[i].mask
        row_mask = table[rows_variant]  # index -1 is the all-False last row
        if method == "zero":
            value, per_row = None, False
        elif method == "mean":
            value, per_row = ref_acts[hook].mean(0), False
        else:
            value, per_row = ref_acts[hook][src[rows_input]], True
        fwd_hooks.append((hook, _AblationHook(row_mask, value, per_row)))
    batch = inputs[rows_input]
    originals = [blocks[j] for j in range(start)] if blocks is not None else []
    try:
        for j in range(len(originals)):
            blocks[j] = _Replay(replay if j == start - 1 else None)
        with torch.no_grad():
            if fwd_hooks:
                with model.hooks(fwd_hooks=fwd_hooks):
                    return score_fn(model, batch, rows_input).float().cpu()
            return score_fn(model, batch, rows_input).float().cpu()
    finally:
        for j, block in enumerate(originals):
            blocks[j] = block


def _prefix_shared_scores(
    model: Any,
    blocks: torch.nn.ModuleList,
    inputs: torch.Tensor,
    variants: list[_Variant],
    batch_size: int,
    progress: bool,
    **forward: Any,
) -> torch.Tensor:
    """Scores ``[n_variants + 1, n]`` (clean first), each variant run only from its layer on.

    Inputs go in chunks small enough that their clean residual streams at every variant layer
    fit in ``_RESID_BUDGET`` bytes; within a chunk the first group (the clean rows, plus any
    merged early layers) runs from the embedding and records those residual streams, and each
    later group replays them into its start block. A block that returns a tuple (older
    transformers) cannot be stood in for by a tensor: then every group runs from the
    embedding."""
    from probekit.progress import bar as progress_bar

    n, seq = inputs.shape
    n_layers = len({v.layer for v in variants})
    item = next(model.parameters()).element_size()
    chunk = max(1, min(n, _RESID_BUDGET // (seq * model.cfg.d_model * n_layers * item)))
    scores = torch.empty(len(variants) + 1, n)
    # A block that returns a tuple (older transformers) cannot be stood in for by a tensor.
    bare = runner(model).blocks_return_tensors()
    bar = progress_bar(total=scores.numel(), desc="ablate", unit="row", enabled=progress)
    try:
        for lo in range(0, n, chunk):
            idx = torch.arange(lo, min(lo + chunk, n))
            groups = _prefix_groups(variants, len(idx), _MIN_ROWS)
            resid: dict[int, list[torch.Tensor]] = {s: [] for s, _ in groups if s > 0}
            for start, members in groups:
                if start > 0 and not bare:
                    start = 0
                rows_variant = torch.tensor(members).repeat_interleave(len(idx))
                rows_input = idx.repeat(len(members))
                replay_all = torch.cat(resid[start]) if start > 0 else None
                for part in torch.arange(len(rows_variant)).split(batch_size):
                    rv, ri = rows_variant[part], rows_input[part]
                    scores[rv + 1, ri] = _forward_rows(
                        model,
                        rv,
                        ri,
                        inputs,
                        variants,
                        blocks=blocks,
                        start=start,
                        replay=None if replay_all is None else replay_all[ri - lo],
                        capture=resid if bool((rv == -1).any()) and resid else None,
                        **forward,
                    )
                    bar.update(len(part))
    finally:
        bar.close()
    return scores


class _Replay(torch.nn.Module):
    """Stands in for block ``j < start`` during a prefix-shared forward: the last one returns
    the cached clean residual stream entering block ``start`` for the chunk's rows, the others
    pass their input through untouched (nothing before ``start`` is computed)."""

    def __init__(self, value: torch.Tensor | None):
        super().__init__()
        self.value = value

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states if self.value is None else self.value


def _prefix_groups(
    variants: list[_Variant], n_inputs: int, min_rows: int
) -> list[tuple[int, list[int]]]:
    """Forward groups ``(start layer, variant indices)``, ``-1`` being the clean model (always
    in the first group, which starts at 0). A variant of layer ``l`` changes nothing before
    block ``l``, so its rows start there from the clean residual stream. Consecutive layers are
    merged (the group starts at its first layer) while a group holds fewer than ``min_rows``
    rows, so a few inputs do not pay one forward call per layer."""
    by_layer: dict[int, list[int]] = {}
    for i, v in enumerate(variants):
        by_layer.setdefault(v.layer, []).append(i)
    groups: list[tuple[int, list[int]]] = [(0, [-1])]
    for layer in sorted(by_layer):
        start, members = groups[-1]
        if len(members) * n_inputs < min_rows:
            groups[-1] = (start, members + by_layer[layer])
        else:
            groups.append((layer, by_layer[layer]))
    return groups


def _check_inputs(model: Any, inputs: Any, name: str) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(inputs).__name__}")
    if _is_rnn(model):
        if inputs.is_floating_point() and inputs.ndim == 3:
            return inputs
        if not inputs.is_floating_point() and inputs.ndim == 2:
            return inputs.long()
        raise ValueError(
            f"{name} must be float [batch, time, input_size] (or token ids [batch, time]) for a "
            f"HookedRNN, got {inputs.dtype} {tuple(inputs.shape)}"
        )
    if inputs.is_floating_point() or inputs.ndim != 2 or inputs.shape[1] < 2:
        raise ValueError(
            f"{name} must be integer token ids [batch, seq >= 2], got {inputs.dtype} "
            f"{tuple(inputs.shape)}"
        )
    return inputs.long()


def _stacked_scores(
    model: Any,
    inputs: torch.Tensor,
    variants: list[_Variant],
    batch_size: int,
    batched: bool,
    progress: bool,
    forward: dict[str, Any],
) -> torch.Tensor:
    """Scores ``[n_variants + 1, n]`` (clean first), every row run from the embedding: the
    variants stacked along the batch in chunks of ``batch_size`` rows (``batched``), or one
    variant per forward (the naive loop)."""
    from probekit.progress import bar as progress_bar

    n = len(inputs)
    n_var = len(variants) + 1
    rows_variant = torch.arange(-1, len(variants)).repeat_interleave(n)
    rows_input = torch.arange(n).repeat(n_var)
    if batched:
        chunks = list(torch.arange(n_var * n).split(batch_size))
    else:
        chunks = [
            part
            for v in range(n_var)
            for part in torch.arange(v * n, (v + 1) * n).split(batch_size)
        ]
    scores = torch.empty(n_var * n)
    for rows in progress_bar(chunks, desc="ablate", enabled=progress):
        rv, ri = rows_variant[rows], rows_input[rows]
        scores[rows] = _forward_rows(model, rv, ri, inputs, variants, **forward)
    return scores.reshape(n_var, n)


def sweep(
    model: Any,
    inputs: torch.Tensor,
    metric: Metric = "accuracy",
    level: str = "head",
    component: str = "attn",
    method: str = "zero",
    reference: torch.Tensor | None = None,
    *,
    layers: Sequence[int] | None = None,
    groups: int | Sequence[Sequence[int]] | None = None,
    prompt_len: int | None = None,
    positions: torch.Tensor | None = None,
    batch_size: int = 128,
    batched: bool = True,
    share_prefix: bool = True,
    estimate: str = "exact",
    confirm: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> AblationResult:
    """Score ``model`` on ``inputs`` with each component ablated in turn.

    Args:
        model: a hooked model from :func:`probekit.load` (``TransformerBridge`` or
            ``HookedRNN``).
        inputs: token ids ``[n, seq]`` (transformers), or ``[n, time, input_size]`` floats
            (RNNs).
        metric: ``"loss"`` (mean next-token cross-entropy; lower is better), ``"accuracy"``
            (next-token argmax accuracy), ``"logprob"`` (mean log-probability of the next
            token; higher is better), all teacher-forced over ``positions``; or a callable
            ``metric(logits, inputs) -> [batch]`` scores, higher is better. With
            ``prompt_len`` (generation mode), ``"accuracy"`` is the exact match of every
            generated token and a callable gets ``(generated [batch, seq], inputs)``.
        level: ``"layer"`` (a whole layer's output) or ``"head"`` (one attention head's ``z``).
            Ignored for a ``HookedRNN``, whose variants are ``groups`` of hidden units.
        component: ``"attn"`` or ``"mlp"`` (``"mlp"`` only at ``level="layer"``).
        method: ``"zero"``, ``"mean"`` (mean over ``reference`` per position) or
            ``"resample"`` (another input's activation).
        reference: inputs the mean / resampled activations come from, at least as long as
            ``inputs``; default ``inputs``.
        layers: which layers to sweep (default all).
        groups: RNN only: an int ``k`` (``k`` contiguous groups; default one group per unit) or
            a list of unit-index lists.
        prompt_len: generation mode: the first ``prompt_len`` tokens are the prompt and the rest
            is generated greedily with the ablation active at every decoding step.
        positions: teacher-forced metrics only: bool ``[seq - 1]`` or ``[n, seq - 1]`` over
            target positions (target ``j`` is token ``j + 1``) to score; default all.
        batch_size: rows (input x variant) per forward pass.
        batched: False runs one ``run_with_hooks`` per variant (the naive loop).
        share_prefix: batched teacher-forced sweeps of a ``TransformerBridge`` run each
            variant only from its layer on, replaying the clean residual stream entering it
            (nothing before layer ``l`` depends on an ablation at ``l``); False runs every
            variant from the embedding. Same scores up to float rounding either way.
        estimate: ``"exact"`` (every variant run) or ``"attribution"``: the first-order
            estimate of every variant's effect from one clean forward and one backward pass
            (attribution patching: ``(a_ablated - a_clean) . d metric / d a`` at the hook,
            summed over positions and the ablated slice). Needs a differentiable metric:
            ``"loss"``, ``"logprob"`` or a differentiable callable (argmax accuracy has no
            gradient). Teacher-forced only (no ``prompt_len``).
        confirm: with ``estimate="attribution"``, run the exact ablation for this many
            variants, those the estimate ranks most damaging; the frame's ``exact_delta`` and
            ``error`` (estimate minus exact) are filled for them (NaN elsewhere).
        seed: for ``"resample"``'s choice of source inputs.

    Returns:
        :class:`AblationResult`.
    """
    _check_model(model)
    rnn = _is_rnn(model)
    inputs = _check_inputs(model, inputs, "inputs")
    n = inputs.shape[0]
    if n < 1:
        raise ValueError("inputs must hold at least one sequence")
    if not (callable(metric) or metric in METRICS):
        raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if component not in COMPONENTS:
        raise ValueError(f"component must be one of {COMPONENTS}, got {component!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
    if isinstance(confirm, bool) or not isinstance(confirm, int) or confirm < 0:
        raise ValueError(f"confirm must be a non-negative integer, got {confirm!r}")
    if confirm and estimate != "attribution":
        raise ValueError('confirm needs estimate="attribution" (an exact sweep is exact already)')
    if estimate == "attribution" and metric == "accuracy":
        raise ValueError(
            'estimate="attribution" needs a differentiable metric ("loss", "logprob" or a '
            'differentiable callable): argmax "accuracy" has no gradient'
        )
    if estimate == "attribution" and prompt_len is not None:
        raise ValueError(
            'estimate="attribution" is teacher-forced: greedy decoding (prompt_len) has no '
            'gradient; use estimate="exact"'
        )
    if not rnn and level == "head" and component == "mlp":
        raise ValueError('component="mlp" needs level="layer" (an MLP layer has no heads)')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    seq = inputs.shape[1]
    if prompt_len is not None:
        if rnn:
            raise ValueError("prompt_len (generation mode) is for transformers, not a HookedRNN")
        if not isinstance(prompt_len, int) or not 1 <= prompt_len < seq:
            raise ValueError(f"prompt_len must be an integer in 1..{seq - 1}, got {prompt_len!r}")
        if metric in ("loss", "logprob"):
            raise ValueError(f'metric="{metric}" is teacher-forced; use "accuracy" or a callable')
        if positions is not None:
            raise ValueError("positions applies to teacher-forced metrics, not generation mode")
    if rnn and not callable(metric) and inputs.is_floating_point():
        raise ValueError(
            "for a HookedRNN on float inputs, metric must be a callable metric(outputs, inputs)"
        )
    if positions is not None:
        positions = torch.as_tensor(positions)
        if positions.dtype != torch.bool or positions.shape not in (
            (seq - 1,),
            (n, seq - 1),
        ):
            raise ValueError(
                f"positions must be bool [seq - 1] = [{seq - 1}] or [n, seq - 1], got "
                f"{positions.dtype} {tuple(positions.shape)}"
            )

    variants = (
        _rnn_variants(model, groups)
        if rnn
        else _transformer_variants(model, level, component, layers)
    )
    # everything the forward passes touch lives on the model's device; scores come back on CPU
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    if positions is not None:
        positions = positions.to(device)

    ref_acts: dict[str, torch.Tensor] = {}
    src = None
    if method != "zero":
        ref = inputs if reference is None else _check_inputs(model, reference, "reference")
        ref = ref.to(device)
        if ref.shape[1] < seq:
            raise ValueError(
                f"reference must be at least as long as inputs ({seq}), got {ref.shape[1]}"
            )
        if method == "resample":
            g = torch.Generator().manual_seed(seed)
            if reference is None:
                if n < 2:
                    raise ValueError('method="resample" without a reference needs >= 2 inputs')
                src = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
            else:
                src = torch.randint(ref.shape[0], (n,), generator=g)
        hooks = sorted({v.hook for v in variants})
        ref_acts = _reference_activations(model, ref[:, :seq], hooks, batch_size)

    def score_fn(m: Any, batch: torch.Tensor, rows_input: torch.Tensor) -> torch.Tensor:
        if prompt_len is None:
            out = m(batch)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            rows_positions = positions
            if positions is not None and positions.ndim == 2:
                rows_positions = positions[rows_input]
            return _teacher_forced_scores(metric, logits, batch, rows_positions)
        tokens = batch[:, :prompt_len]
        while tokens.shape[1] < seq:
            out = m(tokens)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return _generation_scores(metric, tokens, batch, prompt_len)

    forward = {"method": method, "ref_acts": ref_acts, "src": src, "score_fn": score_fn}
    blocks = None
    if batched and share_prefix and prompt_len is None and not rnn:
        blocks = runner(model).shareable_blocks()

    def exact_scores(chosen: list[_Variant]) -> torch.Tensor:
        if blocks is not None:
            return _prefix_shared_scores(
                model, blocks, inputs, chosen, batch_size, progress, **forward
            )
        return _stacked_scores(model, inputs, chosen, batch_size, batched, progress, forward)

    if estimate == "attribution":
        scores = _attribution_scores(
            model, inputs, variants, metric, positions, method, ref_acts, src, batch_size, progress
        )
    else:
        scores = exact_scores(variants)
    means = scores.mean(1)
    clean = float(means[0])

    import pandas as pd

    component_name = "hidden" if rnn else component
    frame = pd.DataFrame(
        {
            "layer": [v.layer for v in variants],
            "head": pd.array([v.head for v in variants], dtype="Int64"),
            "component": component_name,
            "method": method,
            "score": means[1:].tolist(),
            "delta": (means[1:] - clean).tolist(),
            "n_units": [int(v.mask.sum()) for v in variants],
        }
    )
    higher_is_better = metric != "loss"
    confirmed: list[int] = []
    if estimate == "attribution":
        frame["exact_delta"] = float("nan")
        if confirm:
            harm = frame["delta"] if higher_is_better else -frame["delta"]
            confirmed = [int(i) for i in harm.sort_values(kind="stable").index[:confirm]]
            exact = exact_scores([variants[i] for i in confirmed]).mean(1)
            frame.loc[confirmed, "exact_delta"] = (exact[1:] - exact[0]).tolist()
        frame["error"] = frame["delta"] - frame["exact_delta"]
    worst = int(frame["delta"].idxmin() if higher_is_better else frame["delta"].idxmax())
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    if prompt_len is not None and metric == "accuracy":
        metric_name = "exact_match"
    summary = {
        "clean": clean,
        "metric": metric_name,
        "higher_is_better": higher_is_better,
        "level": "units" if rnn else level,
        "component": component_name,
        "method": method,
        "n_inputs": n,
        "n_variants": len(variants),
        "generation": prompt_len is not None,
        "estimate": estimate,
        "most_damaging": {
            "layer": int(frame.loc[worst, "layer"]),
            "head": None if pd.isna(frame.loc[worst, "head"]) else int(frame.loc[worst, "head"]),
            "delta": float(frame.loc[worst, "delta"]),
        },
    }
    if estimate == "attribution":
        summary["confirmed"] = len(confirmed)
        if len(confirmed) >= 3:
            sub = frame.loc[confirmed]
            summary["rank_correlation_confirmed"] = float(
                sub["delta"].rank().corr(sub["exact_delta"].rank())
            )
            summary["max_abs_error_confirmed"] = float(sub["error"].abs().max())
    return AblationResult(frame=frame, summary=summary, scores=scores)
