"""What an edit asks for, and the pieces ROME, MEMIT and fine-tuning share.

An :class:`EditRequest` names a subject, the relation context that follows it and the new
object; :func:`prepare` turns it into token ids, the subject's position and the target id,
checking each against the model's vocabulary. :func:`mlp_out_proj` finds a layer's MLP output
projection (the matrix the editors change) through the bridge, whatever the architecture;
:func:`key_covariance` estimates the uncentred key covariance ``C = E[k k^T]`` of its inputs;
:func:`optimise_output_shift` finds the shift of a layer's MLP output at the subject that
makes the model say the new object (the ``v*`` of Meng et al. 2022, docs/shattering.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from probekit.models.runner import runner, tapping_runner


@dataclass(frozen=True)
class EditRequest:
    """One fact to write: ``prefix + subject + context`` should be followed by ``target``.

    - ``subject``: text (tokenized with the model's tokenizer) or token ids; the edit is keyed on
      the subject's last token, e.g. ``"e12"``;
    - ``context``: the relation context after the subject, e.g. ``"I_C2"`` (text or ids; may
      be empty, then the target is the token right after the subject);
    - ``target``: the new object, one token (text or id), e.g. ``"e40"``;
    - ``prefix``: optional tokens before the subject (text or ids).

    Text parts are tokenized separately and concatenated, so for BPE vocabularies give the
    context its leading space (``" is located in"``).
    """

    subject: str | Sequence[int]
    context: str | Sequence[int]
    target: str | int
    prefix: str | Sequence[int] = ()


@dataclass(frozen=True)
class PreparedRequest:
    """``prompt``: ``LongTensor [L]``; ``subject_position``: index of the subject's last token;
    ``position``: the token whose MLP key is edited (the subject's last token, or the prompt's
    last token for ``position="last"``)."""

    prompt: torch.Tensor
    subject_position: int
    target: int
    position: int


# ----------------------------------------------------------------------------- validation


def _vocab_size(model: Any) -> int:
    return int(model.cfg.d_vocab)


def _ids(model: Any, part: str | Sequence[int], what: str, allow_empty: bool) -> list[int]:
    vocab = _vocab_size(model)
    if isinstance(part, str):
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise ValueError(f"{what} is text ({part!r}) but the model has no tokenizer; give ids")
        ids = list(tok(part, add_special_tokens=False)["input_ids"]) if part else []
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None and unk in ids:
            raise ValueError(
                f"{what} {part!r} is not in the model's vocabulary (it tokenizes to "
                f"{tok.unk_token!r})"
            )
    else:
        if isinstance(part, torch.Tensor):
            part = part.reshape(-1).tolist()
        ids = [int(i) for i in part]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise ValueError(f"{what} token ids must lie in 0..{vocab - 1}, got {bad}")
    if not ids and not allow_empty:
        raise ValueError(f"{what} must name at least one token, got {part!r}")
    return ids


EDIT_POSITIONS = ("subject", "last")


def prepare(model: Any, request: EditRequest, position: str = "subject") -> PreparedRequest:
    """Token ids of ``request`` for ``model``, with clear errors for anything out of vocabulary.

    ``position``: which token's MLP key the edit rewrites: ``"subject"`` (the subject's last
    token, as in ROME and MEMIT) or ``"last"`` (the prompt's last token, for models that look a
    fact up at the relation token rather than at the subject; see the kg-ring study).
    """
    if position not in EDIT_POSITIONS:
        raise ValueError(f"position must be 'subject' or 'last', got {position!r}")
    if not isinstance(request, EditRequest):
        raise ValueError(
            f"request must be a probekit.edit.EditRequest, got {type(request).__name__}"
        )
    prefix = _ids(model, request.prefix, "prefix", allow_empty=True)
    subject = _ids(model, request.subject, "subject", allow_empty=False)
    context = _ids(model, request.context, "context", allow_empty=True)
    target = request.target
    if isinstance(target, str):
        ids = _ids(model, target, "target", allow_empty=False)
        if len(ids) != 1:
            raise ValueError(f"target must be a single token, {target!r} tokenizes to {ids}")
        target_id = ids[0]
    elif isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < _vocab_size(model):
            raise ValueError(
                f"target token id must lie in 0..{_vocab_size(model) - 1}, got {target}"
            )
        target_id = target
    else:
        raise ValueError(f"target must be a token (str) or token id (int), got {target!r}")
    prompt = torch.tensor(prefix + subject + context, dtype=torch.long)
    n_ctx = int(model.cfg.n_ctx)
    if len(prompt) > n_ctx:
        raise ValueError(f"the request's prompt has {len(prompt)} tokens, the model takes {n_ctx}")
    subject_position = len(prefix) + len(subject) - 1
    edit_position = subject_position if position == "subject" else len(prompt) - 1
    return PreparedRequest(prompt, subject_position, target_id, edit_position)


def check_layer(model: Any, layer: int, what: str = "layer") -> int:
    n_layers = int(model.cfg.n_layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"{what} must be an integer in 0..{n_layers - 1}, got {layer!r}")
    return layer


# ----------------------------------------------------------------------------- the MLP matrix


def mlp_out_proj(model: Any, layer: int) -> nn.Module:
    """The module computing layer ``layer``'s MLP output projection (``Linear`` or ``Conv1D``).

    Found through the bridge (``blocks[layer].mlp.out``), so GPT-2, GPT-NeoX, Llama... all work.
    """
    check_layer(model, layer)
    out = model.blocks[layer].mlp.out
    return getattr(out, "original_component", out)


def weight_view(module: nn.Module) -> torch.Tensor:
    """The projection's weight as ``[d_out, d_in]`` (a view: writes go to the module).

    GPT-2's ``Conv1D`` stores ``[d_in, d_out]``; ``nn.Linear`` stores ``[d_out, d_in]``.
    """
    if type(module).__name__ == "Conv1D":
        return module.weight.data.T
    return module.weight.data


def key_hook(model: Any, layer: int) -> str:
    """Hook name of the MLP keys of ``layer``: the input of its output projection."""
    name = f"blocks.{layer}.mlp.out.hook_in"
    return name if name in model.hook_dict else f"blocks.{layer}.mlp.hook_post"


def mlp_out_hook(model: Any, layer: int) -> str:
    name = f"blocks.{layer}.hook_mlp_out"
    return name if name in model.hook_dict else f"blocks.{layer}.mlp.hook_out"


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def key_covariance(
    model: Any, tokens: torch.Tensor, layers: Sequence[int] | int, batch_size: int = 256
) -> dict[int, torch.Tensor]:
    """Uncentred key covariance ``C_l = E[k k^T]`` over every token position of ``tokens``.

    ``tokens``: ``LongTensor [N, L]`` drawn from the training distribution (the source uses
    Wikipedia text; for kg-ring, training walks). Returns ``{layer: [d_mlp, d_mlp]}`` (float32,
    on the model's device), averaged over ``N * L`` keys.
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    for layer in layers:
        check_layer(model, layer, "layers")
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 2 or tokens.numel() == 0:
        raise ValueError(f"tokens must be non-empty [N, L] ids, got shape {tuple(tokens.shape)}")
    names = {key_hook(model, layer): layer for layer in layers}
    sums: dict[int, torch.Tensor] = {}
    count = 0
    device = _device(model)
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size].to(device)
        cache = _activations(model, batch, list(names))
        for name, layer in names.items():
            keys = cache[name].reshape(-1, cache[name].shape[-1]).float()
            sums[layer] = sums.get(layer, 0) + keys.T @ keys
        count += batch.numel()
    return {layer: sums[layer] / count for layer in layers}


def _activations(model: Any, tokens: torch.Tensor, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{hook: activation}`` for one batch: through the plain model where it serves the hooks,
    else the bridge's ``run_with_cache``."""
    run = tapping_runner(model, hooks)
    if run is None:
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
        return {hook: cache[hook] for hook in hooks}
    return run.tap_activations(tokens, hooks)[1]


@torch.no_grad()
def subject_keys(model: Any, prepared: Sequence[PreparedRequest], layer: int) -> torch.Tensor:
    """MLP keys of ``layer`` at each request's edit position: ``[n_requests, d_mlp]``."""
    name = key_hook(model, layer)
    keys = []
    for item in prepared:
        cache = _activations(model, item.prompt[None].to(_device(model)), [name])
        keys.append(cache[name][0, item.position].float())
    return torch.stack(keys)


@torch.no_grad()
def residual_at_subject(model: Any, prepared: Sequence[PreparedRequest], hook: str) -> torch.Tensor:
    """Activation at ``hook`` at each request's edit position: ``[n_requests, d]``."""
    rows = []
    for item in prepared:
        cache = _activations(model, item.prompt[None].to(_device(model)), [hook])
        rows.append(cache[hook][0, item.position].float())
    return torch.stack(rows)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter, restoring it afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def optimise_output_shift(
    model: Any,
    prepared: PreparedRequest,
    layer: int,
    steps: int = 40,
    lr: float = 0.2,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.01,
    stop_prob: float = 0.98,
) -> torch.Tensor:
    """Shift ``delta [d_model]`` of layer ``layer``'s MLP output at the edit position.

    Minimises ``-log p(target | prompt)`` + ``kl_weight`` * KL(original || shifted) of the
    next-token distribution at the subject position (ROME's "essence" term: the subject
    itself should keep meaning what it meant) + ``weight_decay * ||delta||^2 / ||h||^2`` with
    ``h`` the residual stream after the layer there. Adam, at most ``steps`` steps, stopping once
    ``p(target) >= stop_prob``. The model's weights are not touched. For many requests at once,
    :func:`optimise_output_shifts`.
    """
    return optimise_output_shifts(
        model, [prepared], layer, steps, lr, kl_weight, weight_decay, stop_prob
    )[0]


def optimise_output_shifts(
    model: Any,
    prepared: Sequence[PreparedRequest],
    layer: int,
    steps: int = 40,
    lr: float = 0.2,
    kl_weight: float = 0.0625,
    weight_decay: float = 0.01,
    stop_prob: float = 0.98,
) -> torch.Tensor:
    """:func:`optimise_output_shift` for every request, ``[n, d_model]``, batched.

    Requests whose prompts have the same length run as one batch: each row has its own shift,
    its own loss (the batch's loss is their sum, and rows do not interact, so each row's
    gradient is its own), its own Adam moments (Adam is elementwise) and its own stop: a row
    that reaches ``stop_prob`` keeps its shift while the others go on. The same optimisation
    as one call per request, up to the float rounding of batched products.
    """
    device = _device(model)
    d_model = int(model.cfg.d_model)
    out = torch.zeros(len(prepared), d_model, device=device)
    lengths = torch.tensor([len(p.prompt) for p in prepared])
    for length in lengths.unique().tolist():
        rows = torch.nonzero(lengths == length).flatten()
        group = [prepared[int(i)] for i in rows]
        out[rows.to(device)] = _shift_batch(
            model, group, layer, steps, lr, kl_weight, weight_decay, stop_prob
        )
    return out


def _shift_batch(
    model: Any,
    prepared: Sequence[PreparedRequest],
    layer: int,
    steps: int,
    lr: float,
    kl_weight: float,
    weight_decay: float,
    stop_prob: float,
) -> torch.Tensor:
    """The shifts ``[n, d_model]`` of requests whose prompts have equal length."""
    device = _device(model)
    prompts = torch.stack([p.prompt for p in prepared]).to(device)
    n = len(prompts)
    rows = torch.arange(n, device=device)
    pos = torch.tensor([p.position for p in prepared], device=device)
    subject = torch.tensor([p.subject_position for p in prepared], device=device)
    target = torch.tensor([p.target for p in prepared], device=device)
    hook = mlp_out_hook(model, layer)
    resid = f"blocks.{layer}.hook_resid_post"
    delta = torch.zeros(n, int(model.cfg.d_model), device=device, requires_grad=True)
    mask = torch.zeros(n, prompts.shape[1], 1, device=device)
    mask[rows, pos] = 1.0
    opt = torch.optim.Adam([delta], lr=lr)

    def add_shift(tensor: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return tensor + mask * delta[:, None, :].to(tensor.dtype)

    run = tapping_runner(model, [hook, resid])
    if run is not None:  # the plain model with torch hooks: same tensors, no bridge components
        plain = run.plain_module()
        logits, got = run.tap_activations(prompts, [resid])
        state = got[resid]

        @contextmanager
        def shifted() -> Iterator[Any]:
            with run.tapped(edits={hook: add_shift}):
                yield lambda: plain(input_ids=prompts, use_cache=False).logits

    else:
        with torch.no_grad():
            logits, cache = model.run_with_cache(prompts, names_filter=lambda n: n == resid)
            state = cache[resid]

        @contextmanager
        def shifted() -> Iterator[Any]:
            yield lambda: model.run_with_hooks(prompts, fwd_hooks=[(hook, add_shift)])

    with torch.no_grad():
        base_logp = torch.log_softmax(logits[rows, subject].float(), dim=-1)  # [n, V]
        scale = state[rows, pos].float().pow(2).sum(-1).clamp_min(1e-12)  # [n]
    active = torch.ones(n, dtype=torch.bool, device=device)
    with frozen(model), shifted() as forward:
        for _ in range(steps):
            logits = forward()
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll = -logp[rows, -1, target]
            # a row stops before its update once its target is likely enough
            active &= torch.exp(-nll.detach()) < stop_prob
            if not bool(active.any()):
                break
            kl = torch.sum(base_logp.exp() * (base_logp - logp[rows, subject]), dim=-1)
            loss = nll + kl_weight * kl + weight_decay * delta.pow(2).sum(-1) / scale
            opt.zero_grad()
            loss[active].sum().backward()
            kept = delta.detach().clone()
            opt.step()
            with torch.no_grad():  # stopped rows keep their shift (Adam's momentum would move it)
                delta[~active] = kept[~active]
    return delta.detach()


@torch.no_grad()
def mlp_weights(model: Any, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Copies of the MLP output projections' weights ``{layer: [d_out, d_mlp]}`` (what every
    editor here changes), to put back later with :func:`set_mlp_weights`."""
    return {layer: weight_view(mlp_out_proj(model, layer)).clone() for layer in layers}


@torch.no_grad()
def set_mlp_weights(model: Any, weights: dict[int, torch.Tensor]) -> None:
    """Write ``{layer: [d_out, d_mlp]}`` into the MLP output projections, in place."""
    for layer, weight in weights.items():
        weight_view(mlp_out_proj(model, layer)).copy_(weight)


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy (weights, hooks, tokenizer): editing it leaves ``model`` unchanged.

    Tensors a module kept from its last forward pass with a gradient graph (the bridge's
    attention keeps its pattern) are copied detached: ``deepcopy`` refuses graph tensors.
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


@torch.no_grad()
def success(model: Any, requests: Sequence[EditRequest]) -> Any:
    """How well ``model`` states each request: a DataFrame, one row per request.

    Columns: ``target`` (id), ``predicted`` (argmax id at the prompt's last position),
    ``target_prob``, ``success`` (predicted == target).
    """
    import pandas as pd

    run = runner(model)
    rows = []
    for request in requests:
        item = prepare(model, request)
        logits = run.logits(item.prompt[None])[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        predicted = int(logits.argmax())
        rows.append(
            {
                "target": item.target,
                "predicted": predicted,
                "target_prob": float(probs[item.target]),
                "success": predicted == item.target,
            }
        )
    return pd.DataFrame(rows)
