"""Python-docs text with planted canaries: which inserted sequences does a small LM memorize?

This is the data behind the shipped ``checkpoints/canary-lm`` model and the latent-memorization
study (docs/memorization.md; Duan et al.; canaries after Carlini et al. 2019). The corpus is the
text of ``pydoc_data.topics`` (the Python documentation every Python installation ships, ~465k
characters in 79 topics). A seeded fifth of the topics (by characters) is held out and never
trained on; from the held-out text come the "passage" canaries (real English the model has not
seen elsewhere) and the non-member passages for membership evaluation. "random" canaries are
sequences of words drawn uniformly from the training vocabulary (high-entropy secrets).

Each canary is exactly ``canary_len`` tokens (the audit's prefix + suffix, 32 + 64 = 96) and is
inserted at known steps: ``repetitions`` in (1, 2, 4, 8, 16, 32), the first exposure in one of a
few early waves; canaries seen only a few times get all their exposures there and are never seen
again, the frequent ones are spread over the rest of training. Never-seen controls of the same
two kinds (``repetitions`` 0) sit beside them. The schedule is data the audit must rediscover;
it is kept in ``schedule.json``, apart from the canary texts.

Example::

    >>> from probekit.tasks import canaries
    >>> train, held = canaries.split_topics(seed=0)
    >>> len(train) + len(held) == len(canaries.corpus_topics())
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
DEFAULT_REPETITIONS = (1, 2, 4, 8, 16, 32)
CANARY_KINDS = ("passage", "random")


def corpus_topics() -> dict[str, str]:
    """``pydoc_data.topics.topics`` as an ordered dict, sorted by topic name."""
    from pydoc_data.topics import topics

    return {key: topics[key] for key in sorted(topics)}


def split_topics(seed: int = 0, heldout_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """Seeded split of topic names into (train, held-out).

    Topics are visited in a seeded random order and held out until ``heldout_fraction`` of all
    characters is reached; both lists come back sorted.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    topics = corpus_topics()
    names = list(topics)
    total = sum(len(t) for t in topics.values())
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    held: list[str] = []
    chars = 0
    for i in order:
        if chars >= heldout_fraction * total:
            break
        held.append(names[i])
        chars += len(topics[names[i]])
    train = sorted(set(names) - set(held))
    return train, sorted(held)


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (``tokenizers``) trained on ``texts``; ``<|endoftext|>`` = id 0.

    Deterministic for the same texts and vocabulary size. Adds no special tokens on encode.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


def token_stream(texts: list[str], tok: PreTrainedTokenizerFast) -> torch.Tensor:
    """All ``texts`` tokenised and joined by ``<|endoftext|>``: ``LongTensor [n_tokens]``."""
    eos = tok.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    for text in texts:
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, length: int, count: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``length`` tokens, evenly spread: ``LongTensor [count, length]``.

    ``count=None`` takes every full window in order.
    """
    n_full = len(stream) // length
    if n_full == 0:
        raise ValueError(f"stream of {len(stream)} tokens has no window of {length}")
    all_windows = stream[: n_full * length].reshape(n_full, length)
    if count is None or count >= n_full:
        return all_windows.clone()
    picks = torch.linspace(0, n_full - 1, count).round().long()
    return all_windows[picks].clone()


def shared_ngram_fraction(windows: torch.Tensor, stream: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Per window ``[N, L]``, the fraction of its ``n``-token n-grams that occur anywhere in
    ``stream``: ``FloatTensor [N]`` (0 = nothing of it was seen, 1 = all of it)."""
    if n < 1 or n > windows.shape[1]:
        raise ValueError(f"n must be in 1..{windows.shape[1]}, got {n}")
    seen = {tuple(g) for g in stream.unfold(0, n, 1).tolist()} if len(stream) >= n else set()
    grams = windows.unfold(1, n, 1)  # [N, L - n + 1, n]
    hits = [[tuple(g) in seen for g in row] for row in grams.tolist()]
    return torch.tensor(hits, dtype=torch.float32).mean(1)


@dataclass(frozen=True)
class CanarySet:
    """Canaries and their insertion schedule.

    ``tokens``: ``LongTensor [n, canary_len]``; ``kind``: "passage"/"random" per canary;
    ``repetitions``, ``first_seen``: ``[n]`` ints (``first_seen`` is ``None`` for a never-seen
    control, ``repetitions`` 0); ``steps``: per canary the sorted training steps (0-based) at
    which it is one row of the batch; ``matched_step``: per canary the step its wave places it
    at, also for controls (the counterfactual exposure the latent analysis compares them at).
    """

    tokens: torch.Tensor
    kind: list[str]
    repetitions: list[int]
    first_seen: list[int | None]
    steps: list[list[int]]
    matched_step: list[int] | None = None

    def at_step(self) -> dict[int, list[int]]:
        """Training step -> canary indices inserted at that step."""
        table: dict[int, list[int]] = {}
        for i, steps in enumerate(self.steps):
            for step in steps:
                table.setdefault(step, []).append(i)
        return table


def random_word_canaries(
    words: list[str], tok: PreTrainedTokenizerFast, n: int, length: int, seed: int
) -> torch.Tensor:
    """``n`` sequences of uniformly drawn ``words``, each cut to ``length`` tokens: ``[n, length]``."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        picks = torch.randint(len(words), (3 * length,), generator=generator).tolist()
        ids = tok(" ".join(words[i] for i in picks), add_special_tokens=False)["input_ids"]
        if len(ids) < length:
            raise ValueError("random canary too short; increase the word count")
        rows.append(ids[:length])
    return torch.tensor(rows, dtype=torch.long)


def corpus_words(texts: list[str]) -> list[str]:
    """Sorted distinct alphabetic words (3-12 letters) of ``texts``."""
    found = set()
    for text in texts:
        found.update(re.findall(r"\b[a-z]{3,12}\b", text))
    return sorted(found)


def make_schedule(
    tokens: torch.Tensor,
    kind: list[str],
    repetitions: list[int],
    waves: list[int],
    spacing: int | None,
    total_steps: int,
    spread_from: int | None = None,
) -> CanarySet:
    """Assign canary ``i`` to wave ``i % len(waves)`` and place its exposures.

    Canary ``i`` is first seen at ``waves[i % len(waves)]`` (+ ``i // len(waves)`` so that two
    canaries of the same wave do not share every step) and again until it has been seen
    ``repetitions[i]`` times: every ``spacing`` steps, or with ``spacing=None`` evenly over the
    rest of training (exposure ``j`` at ``first + floor(j * (total_steps - first) / reps)``),
    as duplicates are spread through a pretraining corpus. With ``spread_from`` set, only
    canaries with at least that many repetitions are spread to the end; the rarer ones are seen
    every ``spacing`` steps and never again. ``repetitions[i] == 0`` is a never-seen control:
    no steps, ``first_seen`` ``None``, and its wave step kept in ``matched_step`` (the step a
    seen canary of its place in the list would have been first shown at). Raises if an exposure
    falls after ``total_steps``.
    """
    if spread_from is not None and spacing is None:
        raise ValueError("spread_from needs a spacing for the canaries seen fewer times")
    first, steps, matched = [], [], []
    for i, reps in enumerate(repetitions):
        start = waves[i % len(waves)] + i // len(waves)
        matched.append(start)
        if reps < 0:
            raise ValueError(f"canary {i}: repetitions must be >= 0, got {reps}")
        if reps == 0:
            first.append(None)
            steps.append([])
            continue
        spread = spacing is None or (spread_from is not None and reps >= spread_from)
        if spread:
            seen = [start + (j * (total_steps - start)) // reps for j in range(reps)]
        else:
            seen = [start + j * spacing for j in range(reps)]
        if seen[-1] >= total_steps or len(set(seen)) < reps:
            raise ValueError(
                f"canary {i}: {reps} exposures from step {start} do not fit before step "
                f"{total_steps} (the last step is {total_steps - 1})"
            )
        first.append(start)
        steps.append(seen)
    return CanarySet(tokens, list(kind), list(repetitions), first, steps, matched)
