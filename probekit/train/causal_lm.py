"""A deterministic next-token training loop for small causal language models on the CPU.

Which checkpoint does a recipe produce, and would it produce the same one again? This loop is
the answer for the transformers shipped under ``checkpoints/``: plain AdamW with a linear warmup
and a cosine decay, on next-token cross-entropy, with every random draw taken from the ``seed``
(batches from a ``torch.Generator``; dropout, if the model has any, from a forked global RNG), and
``torch.use_deterministic_algorithms(True)`` while it runs. Run twice with the same seed on the
same machine and thread count, it gives bit-identical weights.

The loss is the mean cross-entropy over the target positions selected by ``loss_mask`` (all of
them by default): the standard causal-LM objective, so the trained model is an ordinary language
model for likelihood-based analyses (``probekit.memorization``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from probekit.validation import check_positive_int

EvalFn = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class LMSettings:
    """Model depth and the optimisation every causal-LM recipe sets (AdamW with weight decay on
    matrices, linear warmup then cosine decay); each recipe subclasses it, overriding only the
    defaults it changes."""

    n_layer: int = 2
    n_head: int = 4
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 100


@dataclass
class TrainResult:
    """What a training run did.

    ``losses``: the training loss of every step, ``[steps]`` floats (before that step's update);
    ``evals``: ``(step, metrics)`` from ``eval_fn``, after every ``eval_every`` steps and at the
    end; ``seconds``: wall-clock time of the loop.
    """

    losses: list[float]
    evals: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seconds: float = 0.0

    def loss_curve(self, points: int = 10) -> list[tuple[int, float]]:
        """``points`` (last step, mean loss) pairs over equal windows of the run."""
        n = len(self.losses)
        if n == 0:
            return []
        bounds = [round(i * n / points) for i in range(points + 1)]
        return [
            (hi, sum(self.losses[lo:hi]) / (hi - lo))
            for lo, hi in zip(bounds[:-1], bounds[1:])
            if hi > lo
        ]


def cosine_lr_factor(step: int, steps: int, warmup: int, floor: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``steps``.

    Linear warmup ``(step + 1) / warmup`` over the first ``warmup`` steps, then a half cosine
    from 1 down to ``floor`` at the last step.
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(steps - 1 - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Turn on ``torch.use_deterministic_algorithms`` inside the block, restore it after."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices (weights, embeddings) but not biases or LayerNorm gains: the usual GPT choice.
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _check_args(
    train_tokens: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    loss_mask: torch.Tensor | None,
) -> None:
    if train_tokens.ndim != 2 or train_tokens.shape[1] < 2 or train_tokens.shape[0] < 1:
        raise ValueError(
            f"train_tokens must be [N >= 1, L >= 2] token ids, got shape "
            f"{tuple(train_tokens.shape)}"
        )
    if train_tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"train_tokens must be integer ids, got dtype {train_tokens.dtype}")
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not isinstance(warmup, int) or not 0 <= warmup < steps:
        raise ValueError(f"warmup must be an integer in 0..steps-1, got {warmup!r}")
    if loss_mask is not None:
        length = train_tokens.shape[1] - 1
        if loss_mask.dtype != torch.bool or tuple(loss_mask.shape) != (length,):
            raise ValueError(
                f"loss_mask must be a bool tensor [L - 1] = [{length}] over target positions, "
                f"got {loss_mask.dtype} {tuple(loss_mask.shape)}"
            )
        if not bool(loss_mask.any()):
            raise ValueError("loss_mask selects no position")


def next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, loss_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``tokens[:, 1:]`` under ``logits[:, :-1]``.

    ``logits [B, L, vocab]``, ``tokens [B, L]``; ``loss_mask [L - 1]`` (bool) keeps only the
    target positions where it is True (target ``j`` is token ``j + 1``).
    """
    pred = logits[:, :-1]
    target = tokens[:, 1:]
    if loss_mask is not None:
        pred = pred[:, loss_mask]
        target = target[:, loss_mask]
    return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1))


def train_causal_lm(
    model: nn.Module,
    train_tokens: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    seed: int,
    eval_fn: EvalFn | None = None,
    eval_every: int | None = None,
    log_every: int = 100,
    progress: bool = True,
    loss_mask: torch.Tensor | None = None,
    min_lr_factor: float = 0.0,
) -> TrainResult:
    """Train ``model`` in place on next-token prediction over ``train_tokens [N, L]``.

    ``model(input_ids)`` must return logits ``[B, L, vocab]`` (a tensor, or an object with
    ``.logits`` such as a Hugging Face causal-LM output). Each step draws ``batch_size`` rows
    uniformly with replacement from a ``torch.Generator`` seeded with ``seed``; the optimizer is
    AdamW (betas 0.9, 0.98; decay on matrices only) with :func:`cosine_lr_factor`. ``eval_fn``
    is called on the model in eval mode every ``eval_every`` steps (if given) and at the end.
    ``log_every`` sets how often the progress bar shows the mean recent loss.

    Deterministic: the same model initialisation, data and seed give bit-identical weights on
    the same machine and thread count. Returns a :class:`TrainResult`.
    """
    train_tokens = torch.as_tensor(train_tokens)
    _check_args(train_tokens, steps, batch_size, lr, weight_decay, warmup, loss_mask)
    device = next(model.parameters()).device
    data = train_tokens.to(device=device, dtype=torch.long)
    mask = None if loss_mask is None else loss_mask.to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        _param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-8
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr_factor(s, steps, warmup, min_lr_factor)
    )
    result = TrainResult(losses=[])

    def run_eval(step: int) -> None:
        if eval_fn is None:
            return
        model.eval()
        with torch.no_grad():
            result.evals.append((step, dict(eval_fn(model))))
        model.train()

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc="train", disable=not progress, leave=False)
    start = time.perf_counter()
    with deterministic_algorithms(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for step in range(steps):
            rows = torch.randint(len(data), (batch_size,), generator=generator)
            batch = data[rows.to(device)]
            out = model(batch)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = next_token_loss(logits, batch, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            result.losses.append(float(loss.detach()))
            bar.update(1)
            if log_every and (step + 1) % log_every == 0:
                recent = result.losses[-log_every:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
                run_eval(step + 1)
        run_eval(steps)
        model.eval()
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def small_gpt2(
    vocab_size: int,
    n_positions: int,
    recipe: Any,
    seed: int,
    bos_id: int | None,
    pad_id: int,
    eos_id: int | None = None,
) -> nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` (init drawn from ``seed``) of the recipe's
    ``n_embd``, ``n_layer`` and ``n_head``: MLP 4 x d_model, no dropout (the synthetic tasks have
    no noise to regularise against), tied embeddings, eager attention so hooks see patterns."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        n_inner=4 * recipe.n_embd,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def train_recipe_lm(
    model: nn.Module,
    train_tokens: torch.Tensor,
    recipe: Any,
    *,
    steps: int,
    warmup: int,
    seed: int,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
    loss_mask: torch.Tensor | None = None,
) -> TrainResult:
    """:func:`train_causal_lm` with a recipe's ``batch_size``, ``lr``, ``weight_decay`` and
    ``eval_every`` (the settings every causal-LM recipe dataclass has)."""
    return train_causal_lm(
        model,
        train_tokens,
        steps=steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup=warmup,
        seed=seed,
        eval_fn=eval_fn,
        eval_every=recipe.eval_every,
        progress=progress,
        loss_mask=loss_mask,
    )
