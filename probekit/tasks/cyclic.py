"""Arithmetic progressions modulo P: does a transformer infer a step from two numbers and continue?

A sequence starts at ``a`` in Z_P, moves by a step ``k`` in ``{1..K}`` and runs for ``T`` numbers,
``x_t = (a + t * k) mod P`` for ``t = 0..T-1``. Once the first two numbers are seen the rest is
determined (``k = x_1 - x_0 mod P`` is unique because ``0 < k < P``), so a model that is right on
pairs ``(a, k)`` it never trained on has learned the rule (continue with ``x_t + (x_t - x_{t-1})``)
rather than the sequences. This is the task behind the shipped ``checkpoints/cyclic-lm`` model:
the questions it serves are whether the running value ``x_t`` and the step ``k`` can be read off
the residual stream (``probekit.probes``), which layers and heads carry them
(``probekit.ablation``, seeds/abstracts.md §8 on attention layers and composition), and whether
training pairs are told apart from held-out ones (``probekit.memorization``, §2).

Token ids. The number ``n`` is the token ``str(n)`` with id ``n`` (so a number token's id *is* its
value, which keeps labels and logits simple); then ``<bos>`` = ``P``, ``<pad>`` = ``P + 1`` and
``<unk>`` = ``P + 2``. Every sequence is ``[<bos>, x_0, ..., x_{T-1}]``: ``T + 1`` tokens.

BOS convention. The tokenizer never adds ``<bos>`` by itself: the text ``"<bos> 3 7 11"``
tokenizes to ``[P, 3, 7, 11]``, exactly the ids :func:`progressions` writes, and ``"3 7 11"`` to
``[3, 7, 11]``. Text for the model should therefore start with ``<bos>``; :func:`as_text` writes it
that way.

Positions. With tokens ``[<bos>, x_0, x_1, ...]`` the logits at token position ``i`` predict token
``i + 1`` = ``x_i``. The next token is determined by the prefix from ``i = 2`` on (``x_2`` needs
``x_0`` and ``x_1``), so accuracy is measured at positions ``2..T-1`` (:func:`determined_positions`).

Example::

    >>> from probekit.tasks import cyclic
    >>> cyclic.progressions(7, 3, 4, starts=[5], steps=[3]).tolist()
    [[7, 5, 1, 4, 0]]
    >>> cyclic.as_text(cyclic.progressions(7, 3, 4, starts=[5], steps=[3]), 7)
    ['<bos> 5 1 4 0']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from probekit.validation import as_generator, check_int

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

#: Defaults of the shipped ``cyclic-lm`` task: modulus, largest step, numbers per sequence.
DEFAULT_P = 53
DEFAULT_MAX_STEP = 12
DEFAULT_LENGTH = 16

BOS = "<bos>"
PAD = "<pad>"
UNK = "<unk>"
SPECIAL_TOKENS = (BOS, PAD, UNK)


class CyclicSplit(NamedTuple):
    """Train and held-out ``(a, k)`` pairs; each ``LongTensor [n, 2]`` with columns (start, step)."""

    train: torch.Tensor
    heldout: torch.Tensor


# ----------------------------------------------------------------------------- validation


def _check_task(p: int, max_step: int, length: int | None = None) -> None:
    check_int("p", p, low=3)
    if not isinstance(max_step, int) or not 1 <= max_step < p:
        raise ValueError(
            f"max_step must be an integer in 1..p-1 = 1..{p - 1} (so the step is identifiable "
            f"from two numbers), got {max_step!r}"
        )
    if length is not None and (not isinstance(length, int) or length < 2):
        raise ValueError(f"length must be an integer >= 2 (numbers per sequence), got {length!r}")


# ----------------------------------------------------------------------------- vocabulary


def vocabulary(p: int) -> list[str]:
    """Token strings indexed by id: ``["0", ..., str(p-1), "<bos>", "<pad>", "<unk>"]``."""
    check_int("p", p, low=3)
    return [str(n) for n in range(p)] + list(SPECIAL_TOKENS)


def bos_id(p: int) -> int:
    """Id of ``<bos>``: ``p``."""
    return p


def pad_id(p: int) -> int:
    """Id of ``<pad>``: ``p + 1``."""
    return p + 1


def unk_id(p: int) -> int:
    """Id of ``<unk>``: ``p + 2``."""
    return p + 2


def tokenizer(p: int, length: int | None = None) -> PreTrainedTokenizerFast:
    """A ``transformers`` fast tokenizer over :func:`vocabulary`.

    A ``tokenizers`` WordLevel model behind a whitespace split: ``"<bos> 3 7 11"`` ->
    ``[p, 3, 7, 11]``. No token is added automatically (see the module docstring); a word outside
    the vocabulary becomes ``<unk>``. ``length``, when given, sets ``model_max_length = length+1``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary(p))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {} if length is None else {"model_max_length": length + 1}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def as_text(tokens: torch.Tensor, p: int) -> list[str]:
    """Space-separated text of each row of ``tokens [N, L]``, e.g. ``"<bos> 3 7 11"``."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [N, L], got shape {tuple(tokens.shape)}")
    words = vocabulary(p)
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= len(words)):
        raise ValueError(f"tokens must be ids in 0..{len(words) - 1} for p={p}")
    return [" ".join(words[i] for i in row) for row in tokens.tolist()]


# ----------------------------------------------------------------------------- sequences


def all_pairs(p: int, max_step: int) -> torch.Tensor:
    """Every ``(a, k)``: ``LongTensor [p * max_step, 2]``, ordered by start, then step."""
    _check_task(p, max_step)
    starts = torch.arange(p).repeat_interleave(max_step)
    steps = torch.arange(1, max_step + 1).repeat(p)
    return torch.stack([starts, steps], dim=1)


def progressions(
    p: int,
    max_step: int,
    length: int,
    starts: Sequence[int] | torch.Tensor | None = None,
    steps: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token ids of progressions ``x_t = (a + t k) mod p``: ``LongTensor [N, length + 1]``.

    Column 0 is ``<bos>`` (id ``p``), column ``t + 1`` is ``x_t``. ``starts`` and ``steps`` are
    paired element-wise (both ``[N]``); when both are None, all ``p * max_step`` pairs of
    :func:`all_pairs` in its order. Deterministic; no randomness involved.
    """
    _check_task(p, max_step, length)
    if (starts is None) != (steps is None):
        raise ValueError("give both starts and steps (paired, [N] each) or neither")
    if starts is None:
        pairs = all_pairs(p, max_step)
        a, k = pairs[:, 0], pairs[:, 1]
    else:
        a = torch.as_tensor(starts, dtype=torch.long).reshape(-1)
        k = torch.as_tensor(steps, dtype=torch.long).reshape(-1)
        if a.shape != k.shape:
            raise ValueError(
                f"starts and steps must have the same length, got {a.numel()} and {k.numel()}"
            )
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= p):
            raise ValueError(f"starts must lie in 0..{p - 1}")
        if k.numel() and (int(k.min()) < 1 or int(k.max()) > max_step):
            raise ValueError(f"steps must lie in 1..{max_step}")
    t = torch.arange(length)
    values = (a[:, None] + t[None, :] * k[:, None]) % p
    bos = torch.full((a.numel(), 1), bos_id(p), dtype=torch.long)
    return torch.cat([bos, values], dim=1)


def split(
    p: int, max_step: int, holdout_fraction: float, seed: int | torch.Generator
) -> CyclicSplit:
    """Hold out a random ``holdout_fraction`` of all ``(a, k)`` pairs.

    Returns :class:`CyclicSplit` of two disjoint ``LongTensor [n, 2]`` whose union is
    :func:`all_pairs`; each sorted by (start, step). The held-out count is
    ``round(holdout_fraction * p * max_step)``. Same seed, same split.
    """
    _check_task(p, max_step)
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    pairs = all_pairs(p, max_step)
    order = torch.randperm(len(pairs), generator=as_generator(seed))
    n_held = round(holdout_fraction * len(pairs))
    held = order[:n_held].sort().values
    train = order[n_held:].sort().values
    return CyclicSplit(train=pairs[train], heldout=pairs[held])


# ----------------------------------------------------------------------------- labels


def determined_positions(length: int) -> torch.Tensor:
    """``BoolTensor [length + 1]``: True at token positions whose next token is determined.

    Those are positions ``2..length-1`` (the logits there predict ``x_2..x_{length-1}``).
    """
    check_int("length", length, low=2)
    mask = torch.zeros(length + 1, dtype=torch.bool)
    mask[2:length] = True
    return mask


def labels(tokens: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    """Per-position labels of progressions ``tokens [N, T + 1]`` for probing.

    Returns ``LongTensor [N, T + 1]`` each, aligned with the tokens:

    - ``"value"``: the number ``x_t`` at that position (``-1`` at ``<bos>``);
    - ``"time"``: ``t`` (``-1`` at ``<bos>``);
    - ``"step"``: ``k = (x_1 - x_0) mod p``, the same along the row;
    - ``"start"``: ``a = x_0``, the same along the row;
    - ``"next"``: the next token id (``-1`` at the last position).
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if tokens.ndim != 2 or tokens.shape[1] < 3:
        raise ValueError(f"tokens must be [N, T + 1] with T >= 2, got shape {tuple(tokens.shape)}")
    if bool((tokens[:, 0] != bos_id(p)).any()):
        raise ValueError(f"every row must start with <bos> (id {bos_id(p)})")
    values = tokens[:, 1:]
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= p):
        raise ValueError(f"number tokens must be ids in 0..{p - 1}")
    n, width = tokens.shape
    minus_one = torch.full((n, 1), -1, dtype=torch.long)
    step = (values[:, 1] - values[:, 0]) % p
    return {
        "value": torch.cat([minus_one, values], dim=1),
        "time": torch.arange(-1, width - 1).expand(n, width).clone(),
        "step": step[:, None].expand(n, width).clone(),
        "start": values[:, :1].expand(n, width).clone(),
        "next": torch.cat([tokens[:, 1:], minus_one], dim=1),
    }


def next_token_accuracy(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Exact greedy next-token accuracy over the determined positions.

    ``logits [N, T + 1, vocab]`` from a causal LM run on ``tokens [N, T + 1]``; the fraction of
    the ``N * (T - 2)`` predictions at :func:`determined_positions` whose argmax is the true next
    token.
    """
    if logits.ndim != 3 or tokens.ndim != 2 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits must be [N, T + 1, vocab] and tokens [N, T + 1], got shapes "
            f"{tuple(logits.shape)} and {tuple(tokens.shape)}"
        )
    mask = determined_positions(tokens.shape[1] - 1)
    predicted = logits[:, :-1].argmax(dim=-1)
    correct = (predicted == tokens[:, 1:])[:, mask[:-1]]
    return float(correct.float().mean())
