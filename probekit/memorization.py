"""Which training sequences has a language model memorized, and which are latently memorized?

An auditor gives a causal LM and sequences it may have seen; :func:`audit` says per sequence how
extractable it is (greedy continuation of a ``prefix_len``-token prefix compared with the true
``suffix_len``-token suffix) and how likely a training member it looks (loss-based scores).
:func:`latent` follows sequences over a series of training checkpoints and labels them
memorized / latent / control, and :func:`perturbation_recovery` tests whether small Gaussian
weight noise recovers a sequence the model no longer reproduces. :func:`membership` turns every
score into a membership-inference attack when members and non-members are known, and
:func:`repetition_scaling` fits P(memorized) against log(repetitions).

Source study: seeds/abstracts.md §2 (latent memorization, Duan et al., Pythia-1B). Scores:
k-extractability (Carlini et al. 2022), the Pythia memorization score (Biderman et al. 2023),
Min-K% Prob (Shi et al. 2023), Min-K%++ (Zhang et al. 2024), the zlib ratio and reference-model
ratio (Carlini et al. 2021). Formulas: ``shared/specs/memorization.md``.

Works on any causal LM :func:`probekit.load` returns: a TransformerBridge (the Hugging Face model
underneath is called directly, with its KV cache, for speed), a Hugging Face ``PreTrainedModel``,
or a :class:`probekit.models.HookedRNN` language model (token embedding + readout over the
vocabulary), whose hidden state is carried while decoding.

Example::

    >>> import probekit as pk
    >>> model = pk.load("checkpoints/canary-lm")                      # doctest: +SKIP
    >>> result = pk.memorization.audit(model, tokens)                 # tokens [N, >= 96]
    >>> result.frame[["lev", "memorized", "min_k_pp"]].head()         # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

__all__ = [
    "AuditResult",
    "LatentResult",
    "MembershipResult",
    "PerturbationResult",
    "ScalingResult",
    "audit",
    "greedy_continuation",
    "latent",
    "latent_labels",
    "levenshtein",
    "membership",
    "min_k_pp",
    "min_k_prob",
    "perturbation_recovery",
    "repetition_scaling",
    "roc_points",
    "snapshot_series",
    "token_scores",
]

#: Score columns and their orientation for membership: +1 = higher means member.
SCORE_ORIENTATION: dict[str, int] = {
    "ce": -1,
    "suffix_ce": -1,
    "min_k_prob": 1,
    "min_k_pp": 1,
    "zlib_ratio": -1,
    "pythia_score": 1,
    "match_len": 1,
    "lev": -1,
    "ref_ratio": -1,
}


# ============================================================================ score formulas


def token_scores(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probability and Min-K%++ z-score of each next token.

    ``logits [N, L, V]`` from a causal LM on ``tokens [N, L]``; returns ``(logp, z)``, both
    ``[N, L - 1]``: ``logp[:, t] = log p(tokens[:, t+1] | tokens[:, :t+1])`` and
    ``z = (logp - mu) / sigma`` with ``mu = sum_v p(v) log p(v)`` and
    ``sigma^2 = sum_v p(v) (log p(v))^2 - mu^2`` under the same predictive distribution
    (Zhang et al. 2024). Computed in float32 (float64 if the logits are).
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logprobs = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1)
    target = tokens[:, 1:].to(logits.device)
    logp = logprobs.gather(-1, target[..., None])[..., 0]
    probs = logprobs.exp()
    mu = (probs * logprobs).sum(-1)
    var = (probs * logprobs.square()).sum(-1) - mu.square()
    z = (logp - mu) / var.clamp_min(1e-12).sqrt()
    return logp, z


def _lowest_k_mean(values: Tensor, k_percent: float) -> Tensor:
    n = values.shape[-1]
    count = max(1, math.floor(k_percent / 100.0 * n))
    return values.sort(dim=-1).values[..., :count].mean(-1)


def min_k_prob(logp: Tensor, k_percent: float = 20) -> Tensor:
    """Min-K% Prob (Shi et al. 2023): mean of the lowest ``floor(k% * n)`` (at least 1) values.

    ``logp [N, n]`` per-token log-probabilities -> ``[N]``; higher = more likely a member.
    """
    return _lowest_k_mean(logp, k_percent)


def min_k_pp(z: Tensor, k_percent: float = 20) -> Tensor:
    """Min-K%++ (Zhang et al. 2024): mean of the ``floor(k% * n)`` smallest z-scores -> ``[N]``.

    ``z [N, n]`` from :func:`token_scores`; higher = more likely a member.
    """
    return _lowest_k_mean(z, k_percent)


def levenshtein(a: Tensor, b: Tensor) -> Tensor:
    """Token-level edit distance between rows of ``a [N, m]`` and ``b [N, n]`` -> ``LongTensor [N]``.

    Unit-cost insertions, deletions and substitutions on token ids. One dynamic-programme row
    per token of ``a``, vectorised over the batch and over ``b``: the within-row insertion
    recurrence ``D[i, j] = min(t[j], D[i, j-1] + 1)`` is solved with a cumulative minimum,
    ``D[i, j] = j + cummin_k<=j (t[k] - k)``.
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must be [N, m] and [N, n] token ids, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    n_rows, n = b.shape
    b = b.to(a.device)
    offsets = torch.arange(n + 1, device=a.device)
    prev = offsets.expand(n_rows, n + 1)
    for i in range(a.shape[1]):
        cost = (a[:, i : i + 1] != b).long()  # [N, n]
        t = torch.empty_like(prev)
        t[:, 0] = i + 1
        t[:, 1:] = torch.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
        prev = offsets + torch.cummin(t - offsets, dim=1).values
    return prev[:, n].clone()


def _zlib_len(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


# ============================================================================ model backends


def _unwrapped_hf_model(wrapped: nn.Module) -> nn.Module:
    """A plain Hugging Face copy of a bridge's ``original_model``, with the same weights.

    TransformerBridge swaps its own components into the HF model, and with transformers 5.x
    those components drop the KV cache the decoder layers pass them (the argument is named
    ``cache`` there), so cached decoding through them ignores the prompt. A fresh model of the
    same class, given the bridge's weights (key paths with the ``._original_component`` wrapper
    segments removed), decodes correctly; its logits equal the bridge's.
    """
    weights: dict[str, Tensor] = {}
    for key, value in wrapped.state_dict().items():
        weights.setdefault(key.replace("._original_component", ""), value)
    with torch.random.fork_rng(devices=[]):
        fresh = type(wrapped)(wrapped.config)
    wanted = fresh.state_dict()
    missing = [k for k in wanted if k not in weights]
    if missing:
        raise RuntimeError(
            f"cannot rebuild {type(wrapped).__name__} from the bridge: no weight for {missing[0]!r}"
        )
    fresh.load_state_dict({k: weights[k] for k in wanted})
    param = next(wrapped.parameters())
    return fresh.to(device=param.device, dtype=param.dtype).eval()


class _CausalLM:
    """What the audit needs from a model: logits, greedy decoding, parameters, a tokenizer."""

    def __init__(self, model: Any) -> None:
        self.source = model
        self.kind, self.module = self._resolve(model)
        self.tokenizer = getattr(model, "tokenizer", None)
        if self.kind == "rnn":
            cfg = self.module.cfg
            if cfg.vocab_size is None or cfg.output_size != cfg.vocab_size:
                raise ValueError(
                    "an RNN model must be a language model: a token embedding (vocab_size) and "
                    f"a readout over the vocabulary (output_size == vocab_size), got vocab_size="
                    f"{cfg.vocab_size}, output_size={cfg.output_size}"
                )
            self.vocab_size = int(cfg.vocab_size)
            self.max_length = None
        else:
            config = self.module.config
            self.vocab_size = int(config.vocab_size)
            self.max_length = getattr(config, "max_position_embeddings", None) or getattr(
                config, "n_positions", None
            )

    @staticmethod
    def _resolve(model: Any) -> tuple[str, nn.Module]:
        from probekit.models.rnn import HookedRNN

        if isinstance(model, HookedRNN):
            return "rnn", model
        original = getattr(model, "original_model", None)
        if type(model).__name__ == "TransformerBridge" and original is not None:
            return "hf", _unwrapped_hf_model(original)
        try:
            from transformers import PreTrainedModel
        except ImportError:  # pragma: no cover
            PreTrainedModel = ()  # type: ignore[assignment]
        if isinstance(model, PreTrainedModel):
            return "hf", model
        raise TypeError(
            "model must be a causal LM from pk.load (a TransformerBridge or a HookedRNN language "
            f"model), a Hugging Face PreTrainedModel, or a path to one; got {type(model).__name__}"
        )

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def logits(self, tokens: Tensor) -> Tensor:
        """``tokens [B, L]`` -> float ``[B, L, V]``."""
        tokens = tokens.to(self.device)
        if self.kind == "rnn":
            return self.module(tokens)
        return self.module(input_ids=tokens, use_cache=False).logits

    @torch.no_grad()
    def greedy(self, prefix: Tensor, steps: int) -> Tensor:
        """Greedy continuation ``[B, steps]`` of ``prefix [B, k]``, no EOS stop, no sampling.

        Transformers reuse the KV cache (the prefix is encoded once); RNNs carry their state.
        """
        prefix = prefix.to(self.device)
        out = torch.empty(prefix.shape[0], steps, dtype=torch.long, device=self.device)
        if self.kind == "rnn":
            logits, state = self.module(prefix, return_state=True)
            for t in range(steps):
                nxt = logits[:, -1].argmax(-1)
                out[:, t] = nxt
                if t + 1 < steps:
                    logits, state = self.module(nxt[:, None], state, return_state=True)
            return out
        # transformers 5.x names the cache argument and output field ``cache``; 4.x
        # ``past_key_values``.
        params = inspect.signature(self.module.forward).parameters
        cache_arg = "cache" if "cache" in params else "past_key_values"
        result = self.module(input_ids=prefix, use_cache=True)
        for t in range(steps):
            nxt = result.logits[:, -1].argmax(-1)
            out[:, t] = nxt
            if t + 1 < steps:
                past = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
                if past is None:
                    raise RuntimeError(f"{type(self.module).__name__} returned no KV cache")
                result = self.module(input_ids=nxt[:, None], use_cache=True, **{cache_arg: past})
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (the model's tokenizer), or the space-joined ids without one."""
        if self.tokenizer is not None:
            return self.tokenizer.decode(list(ids))
        return " ".join(str(i) for i in ids)


def greedy_continuation(
    model: Any, prefixes: Tensor | np.ndarray, steps: int, batch_size: int = 64
) -> Tensor:
    """Batched greedy decode: ``prefixes [N, k]`` -> the next ``steps`` tokens ``[N, steps]``.

    Equal-length prefixes, so no padding; a KV cache (transformers) or the carried state (RNNs)
    means the prefix is never recomputed. Token for token the same as decoding one sequence at
    a time with ``generate(do_sample=False)``.
    """
    lm = model if isinstance(model, _CausalLM) else _CausalLM(model)
    prefixes = torch.as_tensor(prefixes, dtype=torch.long)
    parts = [
        lm.greedy(prefixes[i : i + batch_size], steps) for i in range(0, len(prefixes), batch_size)
    ]
    return torch.cat(parts).cpu()


# ============================================================================ inputs


def _load_if_path(model: Any) -> Any:
    """A model object for ``model``; a path to a Hugging Face directory loads without a bridge.

    Scoring and decoding need no hooks, and booting a TransformerBridge costs seconds per
    checkpoint (it adds up over a series of snapshots), so a Hugging Face directory is read
    with transformers directly (float32, tokenizer attached when present); any other path goes
    through :func:`probekit.load`.
    """
    if not isinstance(model, (str, os.PathLike)):
        return model
    from probekit.models.loading import detect_format, load

    path = Path(model)
    if path.is_dir() and detect_format(path) == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            hf = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=torch.float32
            ).eval()
            if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
                hf.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        finally:
            if was:
                hf_logging.enable_progress_bar()
        return hf
    return load(model)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def as_token_matrix(
    sequences: Any, length: int, vocab_size: int, tokenizer: Any = None, name: str = "sequences"
) -> Tensor:
    """``sequences`` (token ids ``[N, L]`` or a list of texts) -> ``LongTensor [N, length]``.

    Texts are tokenised without special tokens; every sequence needs at least ``length`` tokens
    (longer ones are cut to their first ``length``), and every id must lie in
    ``[0, vocab_size)``. Errors name the offending row.
    """
    if isinstance(sequences, str):
        raise ValueError(f"{name} must be a list of texts or token ids [N, L], got one string")
    if isinstance(sequences, (list, tuple)) and sequences and isinstance(sequences[0], str):
        if tokenizer is None:
            raise ValueError(
                f"{name} are texts but the model has no tokenizer; pass tokenizer= or token ids"
            )
        rows = []
        for i, text in enumerate(sequences):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) < length:
                raise ValueError(
                    f"{name}[{i}] has {len(ids)} tokens; prefix_len + suffix_len = {length} needed"
                )
            rows.append(ids[:length])
        tokens = torch.tensor(rows, dtype=torch.long)
    else:
        if (
            isinstance(sequences, (list, tuple))
            and sequences
            and not isinstance(sequences[0], (list, tuple, np.ndarray, Tensor))
        ):
            raise ValueError(f"{name} must be texts or token ids [N, L]")
        try:
            tokens = torch.as_tensor(
                np.asarray(sequences) if isinstance(sequences, list) else sequences
            )
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{name} must be texts or a rectangular [N, L] id array: {err}"
            ) from err
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise ValueError(f"{name} must be token ids [N, L], got shape {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
            raise ValueError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
        if tokens.shape[1] < length:
            raise ValueError(
                f"{name} has {tokens.shape[1]} tokens per row; prefix_len + suffix_len = {length}"
                " needed"
            )
        tokens = tokens[:, :length].long()
    if tokens.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0])
        raise ValueError(
            f"{name}[{row}] has token ids outside the vocabulary [0, {vocab_size}): "
            f"{tokens[row][bad[row]].tolist()[:5]}"
        )
    return tokens


# ============================================================================ audit


@dataclass
class AuditResult:
    """Per-sequence memorization scores.

    ``frame``: one row per input sequence, in input order (columns in the module docstring /
    the spec); ``summary``: counts and rates; ``generated``: the greedy suffixes ``[N, m]``;
    ``texts``: the decoded sequences (or None when redacted).
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    generated: Tensor | None = None
    title: str = "Memorization audit"
    description: str = ""

    def figures(self) -> list[Any]:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        f = self.frame
        scores = [c for c in ("ce", "min_k_prob", "min_k_pp", "zlib_ratio", "lev") if c in f]
        dist = make_subplots(rows=1, cols=len(scores), subplot_titles=scores)
        for j, col in enumerate(scores, start=1):
            dist.add_trace(go.Histogram(x=f[col], name=col, showlegend=False), row=1, col=j)
        dist.update_layout(title="Score distributions (one count per sequence)", height=320)
        scatter = go.Figure(
            go.Scatter(
                x=f["ce"],
                y=f["lev"],
                mode="markers",
                customdata=np.stack([f.index.to_numpy(), f["match_len"]], axis=1),
                hovertemplate="row %{customdata[0]}<br>ce %{x:.3f}<br>lev %{y}"
                "<br>match_len %{customdata[1]}<extra></extra>",
                marker={"color": f["memorized"].astype(int), "colorscale": "Viridis"},
            )
        )
        scatter.update_layout(
            title="Cross-entropy vs edit distance of the greedy suffix",
            xaxis_title="mean token cross-entropy (nats)",
            yaxis_title="token Levenshtein distance to the true suffix",
        )
        top = f.sort_values(["lev", "ce"]).head(20)
        label_col = "text" if "text" in top else None
        labels = [str(v)[:60] for v in top[label_col]] if label_col else [str(i) for i in top.index]
        bars = go.Figure(
            go.Bar(
                x=top["lev"],
                y=[f"{i}: {lab}" for i, lab in zip(top.index, labels)],
                orientation="h",
            )
        )
        bars.update_layout(
            title="Most extractable sequences (lowest edit distance)",
            xaxis_title="lev",
            yaxis={"autorange": "reversed"},
            height=max(300, 22 * len(top) + 120),
        )
        return [dist, scatter, bars]


@torch.no_grad()
def _score_batch(
    lm: _CausalLM,
    tokens: Tensor,
    prefix_len: int,
    suffix_len: int,
    k_percent: float,
    reference: _CausalLM | None,
    decode_texts: bool,
) -> tuple[dict[str, np.ndarray], Tensor, list[str]]:
    logits = lm.logits(tokens)
    logp, z = token_scores(logits, tokens.to(logits.device))
    ce = -logp.mean(-1)
    cols: dict[str, Any] = {
        "ce": ce,
        "suffix_ce": -logp[:, -suffix_len:].mean(-1),
        "min_k_prob": min_k_prob(logp, k_percent),
        "min_k_pp": min_k_pp(z, k_percent),
    }
    if reference is not None:
        ref_logp, _ = token_scores(reference.logits(tokens), tokens.to(reference.device))
        cols["ref_ratio"] = ce.cpu() - (-ref_logp.mean(-1)).cpu()
    generated = lm.greedy(tokens[:, :prefix_len], suffix_len).cpu()
    suffix = tokens[:, prefix_len:].cpu()
    equal = generated == suffix
    mismatch = ~equal
    cols["exact_match"] = equal.all(-1)
    cols["match_len"] = torch.where(
        mismatch.any(-1), mismatch.float().argmax(-1), torch.tensor(suffix_len)
    )
    cols["pythia_score"] = equal.float().mean(-1)
    cols["lev"] = levenshtein(generated, suffix)
    out = {k: v.detach().cpu().numpy() for k, v in cols.items()}
    texts, zlib_ratio, complexity = [], [], []
    for row, ce_value in zip(tokens.tolist(), out["ce"]):
        text = lm.decode(row)
        suffix_text = lm.decode(row[prefix_len:])
        zlib_ratio.append(float(ce_value) / _zlib_len(text))
        complexity.append(_zlib_len(suffix_text) / max(len(suffix_text.encode("utf-8")), 1))
        if decode_texts:
            texts.append(text)
    out["zlib_ratio"] = np.asarray(zlib_ratio)
    out["complexity"] = np.asarray(complexity)
    return out, generated, texts


_COLUMNS = (
    "ce",
    "suffix_ce",
    "min_k_prob",
    "min_k_pp",
    "zlib_ratio",
    "exact_match",
    "match_len",
    "pythia_score",
    "lev",
    "memorized",
    "complexity",
    "ref_ratio",
)


def audit(
    model: Any,
    sequences: Any,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    k_percent: float = 20,
    lev_threshold: int = 10,
    tokenizer: Any = None,
    reference: Any = None,
    progress: bool = False,
    include_text: bool = True,
) -> AuditResult:
    """Score every sequence for memorization (one frame row per sequence, in input order).

    Args:
        model: a causal LM from :func:`probekit.load` (or its path, or a Hugging Face model).
        sequences: token ids ``[N, L]`` (tensor, array, nested list) with
            ``L >= prefix_len + suffix_len`` (only the first ``prefix_len + suffix_len`` tokens
            are used), or a list of texts, tokenised with ``tokenizer`` or the model's own.
        prefix_len, suffix_len: ``k`` and ``m`` of the spec; the model sees ``k`` tokens and
            greedily writes ``m``.
        batch_size: sequences per forward pass / decode batch.
        k_percent: the ``k`` of Min-K% and Min-K%++ (percent of scored tokens).
        lev_threshold: ``memorized = lev < lev_threshold`` (Duan et al. use 10 for m = 64).
        tokenizer: used for texts and to decode ids for the zlib scores.
        reference: a second model (or path) on the same tokenizer; adds ``ref_ratio``.
        progress: show a progress bar.
        include_text: add a ``text`` column with each decoded sequence (off for private data).

    Returns:
        :class:`AuditResult`; ``frame`` columns ``ce, suffix_ce, min_k_prob, min_k_pp,
        zlib_ratio, exact_match, match_len, pythia_score, lev, memorized, complexity`` (+
        ``ref_ratio``, ``text``).
    """
    for name, value in (("prefix_len", prefix_len), ("suffix_len", suffix_len)):
        _check_positive_int(name, value)
    _check_positive_int("batch_size", batch_size)
    if not 0 < k_percent <= 100:
        raise ValueError(f"k_percent must be in (0, 100], got {k_percent!r}")
    if not isinstance(lev_threshold, (int, float)) or lev_threshold <= 0:
        raise ValueError(f"lev_threshold must be a positive number, got {lev_threshold!r}")
    lm = model if isinstance(model, _CausalLM) else _CausalLM(_load_if_path(model))
    if tokenizer is not None:
        lm.tokenizer = tokenizer
    length = prefix_len + suffix_len
    if lm.max_length is not None and length > lm.max_length:
        raise ValueError(
            f"prefix_len + suffix_len = {length} exceeds the model's context of {lm.max_length}"
        )
    tokens = as_token_matrix(sequences, length, lm.vocab_size, lm.tokenizer)
    ref = None
    if reference is not None:
        ref = _CausalLM(_load_if_path(reference))
        if ref.vocab_size < lm.vocab_size and int(tokens.max()) >= ref.vocab_size:
            raise ValueError(
                f"reference has a vocabulary of {ref.vocab_size}, smaller than the token ids "
                "used; it must share the model's tokenizer"
            )
    from tqdm.auto import tqdm

    parts: list[dict[str, np.ndarray]] = []
    generated: list[Tensor] = []
    texts: list[str] = []
    bar = tqdm(total=len(tokens), desc="audit", unit="seq", disable=not progress, leave=False)
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start : start + batch_size]
        cols, gen, batch_texts = _score_batch(
            lm, batch, prefix_len, suffix_len, k_percent, ref, include_text
        )
        parts.append(cols)
        generated.append(gen)
        texts.extend(batch_texts)
        bar.update(len(batch))
    bar.close()
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    data["memorized"] = data["lev"] < lev_threshold
    frame = pd.DataFrame({c: data[c] for c in _COLUMNS if c in data})
    frame["exact_match"] = frame["exact_match"].astype(bool)
    frame["match_len"] = frame["match_len"].astype(int)
    frame["lev"] = frame["lev"].astype(int)
    if include_text:
        frame["text"] = texts
    return AuditResult(
        frame=frame,
        summary=_audit_summary(frame, prefix_len, suffix_len, lev_threshold),
        generated=torch.cat(generated),
    )


def _audit_summary(
    frame: pd.DataFrame, prefix_len: int, suffix_len: int, lev_threshold: float
) -> dict[str, Any]:
    n = len(frame)
    return {
        "sequences": n,
        "prefix_len": prefix_len,
        "suffix_len": suffix_len,
        "lev_threshold": lev_threshold,
        "memorized": int(frame["memorized"].sum()),
        "memorized_rate": float(frame["memorized"].mean()),
        "exact_match": int(frame["exact_match"].sum()),
        "exact_match_rate": float(frame["exact_match"].mean()),
        "mean_pythia_score": float(frame["pythia_score"].mean()),
        "median_lev": float(frame["lev"].median()),
        "mean_ce": float(frame["ce"].mean()),
    }


# ============================================================================ membership


def _frame_of(result_or_frame: Any, name: str) -> pd.DataFrame:
    frame = getattr(result_or_frame, "frame", result_or_frame)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(
            f"{name} must be an AuditResult or a DataFrame, got {type(frame).__name__}"
        )
    return frame


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` for "higher score = positive", one point per distinct threshold.

    Starts at (0, 0) and ends at (1, 1); tied scores move together (one point).
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(y.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~y).sum(), 1)]
    return fpr, tpr


def _auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``scores [R, n]`` against ``labels [R, n]`` (Mann-Whitney, ties 1/2)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=-1)
    n_pos = labels.sum(-1)
    n_neg = labels.shape[-1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


@dataclass
class MembershipResult:
    """Membership-inference evaluation, one row per score (oriented so higher = member)."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    title: str = "Membership inference"
    description: str = (
        "Every score as a membership attack (oriented so higher = member): AUROC with a "
        "bootstrap 95% interval, TPR at 1% and 0.1% FPR (the highest TPR among ROC points with "
        "FPR at or below the target)."
    )

    def figures(self) -> list[Any]:
        import plotly.graph_objects as go

        fig = go.Figure()
        floor = 1e-4
        for name, (fpr, tpr) in self.curves.items():
            fig.add_trace(go.Scatter(x=np.maximum(fpr, floor), y=np.maximum(tpr, floor), name=name))
        fig.add_trace(
            go.Scatter(
                x=[floor, 1], y=[floor, 1], name="chance", line={"dash": "dot", "color": "gray"}
            )
        )
        fig.update_layout(
            title="ROC, log-log (values below 1e-4 drawn at 1e-4)",
            xaxis={"type": "log", "title": "false positive rate"},
            yaxis={"type": "log", "title": "true positive rate"},
        )
        return [fig]


def membership(
    audit_or_frame: Any,
    members: Sequence[bool] | np.ndarray,
    scores: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> MembershipResult:
    """Evaluate each score of an audit as a membership-inference attack.

    Args:
        audit_or_frame: an :class:`AuditResult` or its frame (one row per sequence).
        members: one bool per row: True for known training members, False for non-members.
        scores: columns to evaluate (default: every score column present).
        n_bootstrap: resamples of the rows for the AUROC 95% interval.
        seed: seed of the bootstrap.

    Returns:
        :class:`MembershipResult`; ``frame`` columns ``score, auroc, auroc_ci_low,
        auroc_ci_high, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr``. Warns under 1000 non-members.
    """
    frame = _frame_of(audit_or_frame, "audit_or_frame")
    labels = np.asarray(members)
    if labels.dtype != bool or labels.ndim != 1 or len(labels) != len(frame):
        raise ValueError(
            f"members must be one bool per row ({len(frame)}), got {labels.dtype} "
            f"shape {labels.shape}"
        )
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"members needs both classes, got {n_pos} members and {n_neg} non-members")
    names = [s for s in SCORE_ORIENTATION if s in frame] if scores is None else list(scores)
    for s in names:
        if s not in frame:
            raise ValueError(f"score {s!r} is not a column of the audit frame")
    if n_neg < 1000:
        warnings.warn(
            f"only {n_neg} non-members: TPR at 0.1% FPR rests on fewer than one false positive",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(labels), size=(n_bootstrap, len(labels)))
    boot_labels = labels[idx]
    rows, curves = [], {}
    for name in names:
        oriented = SCORE_ORIENTATION.get(name, 1) * frame[name].to_numpy(dtype=float)
        auc = float(_auroc_rows(oriented[None], labels[None])[0])
        boot = _auroc_rows(oriented[idx], boot_labels)
        boot = boot[np.isfinite(boot)]
        fpr, tpr = roc_points(oriented, labels)
        curves[name] = (fpr, tpr)
        rows.append(
            {
                "score": name,
                "auroc": auc,
                "auroc_ci_low": float(np.quantile(boot, 0.025)),
                "auroc_ci_high": float(np.quantile(boot, 0.975)),
                "tpr_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01),
                "tpr_at_0.1pct_fpr": _tpr_at(fpr, tpr, 0.001),
            }
        )
    table = pd.DataFrame(rows)
    best = table.loc[table["auroc"].idxmax()]
    return MembershipResult(
        frame=table,
        summary={
            "members": n_pos,
            "nonmembers": n_neg,
            "best_score": best["score"],
            "best_auroc": float(best["auroc"]),
            "bootstrap_resamples": n_bootstrap,
            "few_nonmembers_warning": n_neg < 1000,
        },
        curves=curves,
    )


# ============================================================================ repetition scaling


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Newton-Raphson logistic regression ``y ~ b0 + b1 x``; (coef, standard errors) or None."""
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(design @ beta)))
        w = p * (1 - p)
        hessian = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - p))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    if not np.all(np.isfinite(beta)) or np.abs(beta).max() > 50:
        return None  # separated data: no finite maximum-likelihood slope
    p = 1 / (1 + np.exp(-(design @ beta)))
    cov = np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))
    return beta, np.sqrt(np.diag(cov))


@dataclass
class ScalingResult:
    """P(memorized) against log2(repetitions): per-count table and fitted slopes."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Memorization vs repetitions"
    description: str = (
        "Fraction memorized per repetition count. 'slope' is the least-squares slope of "
        "memorized (0/1) on log2(repetitions): the change in P(memorized) per doubling, with a "
        "normal 95% interval; 'logistic_slope' is the same on the log-odds scale."
    )

    def figures(self) -> list[Any]:
        import plotly.graph_objects as go

        f = self.frame
        s = self.summary
        fig = go.Figure(
            go.Scatter(
                x=f["repetitions"],
                y=f["fraction_memorized"],
                mode="markers+lines",
                name="observed",
                error_y={"type": "data", "array": f["stderr"]},
            )
        )
        if np.isfinite(s["slope"]):
            xs = np.geomspace(f["repetitions"].min(), f["repetitions"].max(), 50)
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=s["intercept"] + s["slope"] * np.log2(xs),
                    name=f"fit: {s['slope']:.3f} per doubling",
                    line={"dash": "dash"},
                )
            )
        fig.update_layout(
            title="Fraction memorized vs repetitions",
            xaxis={"type": "log", "title": "repetitions in training"},
            yaxis={"title": "fraction memorized", "range": [-0.05, 1.05]},
        )
        return [fig]


def repetition_scaling(
    audit_or_frame: Any, repetitions: Sequence[int] | np.ndarray, column: str = "memorized"
) -> ScalingResult:
    """Fit P(memorized) against log(repetitions).

    ``repetitions``: one count >= 1 per row of the audit frame. Returns a :class:`ScalingResult`
    with a per-count table (``repetitions, n, memorized, fraction_memorized, stderr``) and the
    summary ``slope`` (per doubling, least squares on the rows), ``slope_ci_low/high``,
    ``intercept``, ``logistic_slope`` and its interval (NaN when the data are separated).
    """
    frame = _frame_of(audit_or_frame, "audit_or_frame")
    reps = np.asarray(repetitions, dtype=float)
    if reps.ndim != 1 or len(reps) != len(frame):
        raise ValueError(f"repetitions must be one count per row ({len(frame)}), got {reps.shape}")
    if np.any(reps < 1) or not np.all(np.isfinite(reps)):
        raise ValueError("repetitions must be counts >= 1")
    if column not in frame:
        raise ValueError(f"column {column!r} is not in the audit frame")
    y = frame[column].to_numpy(dtype=float)
    x = np.log2(reps)
    table = (
        pd.DataFrame({"repetitions": reps.astype(int), "m": y})
        .groupby("repetitions")["m"]
        .agg(n="size", memorized="sum", fraction_memorized="mean")
        .reset_index()
    )
    p = table["fraction_memorized"]
    table["stderr"] = np.sqrt(p * (1 - p) / table["n"])
    nan = float("nan")
    summary: dict[str, Any] = {"sequences": len(y), "distinct_counts": len(table)}
    if len(table) >= 2:
        xc = x - x.mean()
        slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
        intercept = float(y.mean() - slope * x.mean())
        resid = y - intercept - slope * x
        se = math.sqrt((resid**2).sum() / max(len(y) - 2, 1) / (xc**2).sum())
        summary |= {
            "slope": slope,
            "slope_ci_low": slope - 1.96 * se,
            "slope_ci_high": slope + 1.96 * se,
            "intercept": intercept,
        }
        fit = _logistic_fit(x, y) if 0 < y.sum() < len(y) else None
        if fit is None:
            summary |= {"logistic_slope": nan, "logistic_ci_low": nan, "logistic_ci_high": nan}
        else:
            (b0, b1), (_, se1) = fit
            summary |= {
                "logistic_slope": float(b1),
                "logistic_ci_low": float(b1 - 1.96 * se1),
                "logistic_ci_high": float(b1 + 1.96 * se1),
            }
    else:
        summary |= {"slope": nan, "slope_ci_low": nan, "slope_ci_high": nan, "intercept": nan}
        summary |= {"logistic_slope": nan, "logistic_ci_low": nan, "logistic_ci_high": nan}
    return ScalingResult(frame=table, summary=summary)


# ============================================================================ latent memorization


def snapshot_series(model_dir: str | os.PathLike) -> dict[int, Path]:
    """Step -> directory for a checkpoint with ``snapshots/step-NNNNN/`` (as canary-lm ships).

    The top-level directory is included as the last step when its ``metrics.json`` records
    ``steps``. Sorted by step.
    """
    root = Path(model_dir)
    series: dict[int, Path] = {}
    for path in sorted((root / "snapshots").glob("step-*")):
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and path.is_dir():
            series[int(match.group(1))] = path
    metrics = root / "metrics.json"
    if metrics.is_file():
        import json

        steps = json.loads(metrics.read_text()).get("steps")
        if isinstance(steps, int):
            series[steps] = root
    if not series:
        raise ValueError(f"{root}: no snapshots/step-NNNNN/ directories found")
    return dict(sorted(series.items()))


@dataclass
class LatentResult:
    """Per sequence: edit distance (and CE) at every checkpoint and the Duan et al. label.

    ``frame``: one row per sequence: ``label`` (memorized / latent / control / other /
    unseen), ``first_checkpoint`` (the step right after first exposure), ``lev_first``,
    ``min_lev_later``, ``ce_first``, then ``lev@STEP`` and ``ce@STEP`` per checkpoint.
    ``trajectories``: long table (sequence, step, lev, ce, label).
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    trajectories: pd.DataFrame
    title: str = "Latent memorization over training"
    description: str = ""

    def figures(self) -> list[Any]:
        import plotly.graph_objects as go

        t = self.trajectories
        traj = go.Figure()
        colors = {
            "memorized": "#d62728",
            "latent": "#9467bd",
            "control": "#1f77b4",
            "other": "#7f7f7f",
            "unseen": "#2ca02c",
        }
        for label, group in t.groupby("label"):
            med = group.groupby("step")["lev"].median()
            traj.add_trace(
                go.Scatter(
                    x=med.index,
                    y=med.values,
                    name=f"{label} (median, n={group['sequence'].nunique()})",
                    line={"color": colors.get(label, "#000"), "width": 3},
                )
            )
            for _seq, rows in list(group.groupby("sequence"))[:40]:
                traj.add_trace(
                    go.Scatter(
                        x=rows["step"],
                        y=rows["lev"],
                        mode="lines",
                        line={"color": colors.get(label, "#000"), "width": 0.5},
                        opacity=0.35,
                        showlegend=False,
                        hoverinfo="skip",
                    )
                )
        traj.update_layout(
            title="Edit distance of the greedy suffix over training checkpoints",
            xaxis_title="training step",
            yaxis_title="token Levenshtein distance",
        )
        hist = go.Figure()
        for label, group in self.frame.groupby("label"):
            hist.add_trace(go.Histogram(x=group["ce_first"], name=label, opacity=0.6))
        hist.update_layout(
            barmode="overlay",
            title="Cross-entropy at the checkpoint right after first exposure, by label",
            xaxis_title="mean token cross-entropy (nats)",
        )
        return [traj, hist]


def latent_labels(
    lev: np.ndarray,
    first_index: np.ndarray,
    repetitions: np.ndarray,
    memorized_threshold: float,
    latent_threshold: float,
) -> np.ndarray:
    """Duan et al. labels from edit distances ``lev [N, C]`` over ``C`` checkpoints.

    ``first_index [N]``: the index of each sequence's first-exposure checkpoint (``C`` or more
    = never followed by a checkpoint); ``repetitions [N]``. Returns an object array ``[N]`` of
    ``"memorized"`` (lev < memorized_threshold at first exposure), ``"latent"`` (lev >
    latent_threshold there, min lev over later checkpoints < memorized_threshold, seen once),
    ``"control"`` (lev > latent_threshold at every checkpoint from first exposure on),
    ``"unseen"`` or ``"other"``.
    """
    lev = np.asarray(lev, dtype=float)
    n, n_ckpt = lev.shape
    first_index = np.asarray(first_index)
    unseen = first_index >= n_ckpt
    safe = np.minimum(first_index, n_ckpt - 1)
    lev_first = lev[np.arange(n), safe]
    index = np.arange(n_ckpt)[None, :]
    min_later = np.where(index > safe[:, None], lev, np.inf).min(axis=1)
    min_from_first = np.where(index >= safe[:, None], lev, np.inf).min(axis=1)
    label = np.full(n, "other", dtype=object)
    label[min_from_first > latent_threshold] = "control"
    is_latent = (lev_first > latent_threshold) & (min_later < memorized_threshold)
    label[is_latent & (np.asarray(repetitions) == 1)] = "latent"
    label[lev_first < memorized_threshold] = "memorized"
    label[unseen] = "unseen"
    return label


def latent(
    checkpoints: Mapping[int, Any],
    sequences: Any,
    first_seen: Sequence[int] | None = None,
    repetitions: Sequence[int] | None = None,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    memorized_threshold: float | None = None,
    latent_threshold: float | None = None,
    tokenizer: Any = None,
    progress: bool = False,
) -> LatentResult:
    """Label sequences memorized / latent / control over a series of checkpoints (Duan et al.).

    Args:
        checkpoints: ordered mapping training step -> model (or path) (:func:`snapshot_series`).
        sequences: as for :func:`audit`.
        first_seen: per sequence, the 0-based training step of its first exposure; its
            "first-exposure checkpoint" is the first checkpoint with step > first_seen. Default:
            every sequence's first-exposure checkpoint is the first checkpoint.
        repetitions: per sequence, how often it was seen (latent requires 1). Default: 1.
        memorized_threshold, latent_threshold: lev thresholds; default ``10/64`` and ``50/64``
            of ``suffix_len``.

    Labels: memorized = lev < memorized_threshold at the first-exposure checkpoint; latent =
    lev > latent_threshold there, min lev over later checkpoints < memorized_threshold, and
    repetitions == 1; control = lev > latent_threshold at every checkpoint from the first-
    exposure one on; other = none of these; unseen = no checkpoint after first exposure.
    The CE diagnostic is the AUROC of ``-ce_first`` separating latent from control.
    """
    if not isinstance(checkpoints, Mapping) or len(checkpoints) == 0:
        raise ValueError("checkpoints must be a non-empty mapping step -> model or path")
    steps = list(checkpoints)
    if any(not isinstance(s, int) for s in steps) or steps != sorted(steps):
        raise ValueError(f"checkpoint steps must be increasing integers, got {steps}")
    mem_thr = 10 / 64 * suffix_len if memorized_threshold is None else memorized_threshold
    lat_thr = 50 / 64 * suffix_len if latent_threshold is None else latent_threshold
    levs, ces = [], []
    n = None
    for step in steps:
        model = _load_if_path(checkpoints[step])
        result = audit(
            model,
            sequences,
            prefix_len=prefix_len,
            suffix_len=suffix_len,
            batch_size=batch_size,
            tokenizer=tokenizer,
            include_text=False,
            progress=progress,
        )
        levs.append(result.frame["lev"].to_numpy())
        ces.append(result.frame["ce"].to_numpy())
        n = len(result.frame)
        del model
    lev = np.stack(levs, axis=1)  # [N, C]
    ce = np.stack(ces, axis=1)
    step_arr = np.asarray(steps)
    if first_seen is None:
        first_idx = np.zeros(n, dtype=int)
    else:
        seen = np.asarray(first_seen)
        if seen.shape != (n,):
            raise ValueError(f"first_seen must be one step per sequence ({n}), got {seen.shape}")
        first_idx = np.searchsorted(step_arr, seen, side="right")
    reps = np.ones(n, dtype=int) if repetitions is None else np.asarray(repetitions)
    if reps.shape != (n,):
        raise ValueError(f"repetitions must be one count per sequence ({n}), got {reps.shape}")
    n_ckpt = len(steps)
    unseen = first_idx >= n_ckpt
    safe = np.minimum(first_idx, n_ckpt - 1)
    rows = np.arange(n)
    lev_first = lev[rows, safe].astype(float)
    ce_first = ce[rows, safe]
    later = np.arange(n_ckpt)[None, :] > safe[:, None]
    min_later = np.where(later, lev, np.inf).min(axis=1)
    label = latent_labels(lev, first_idx, reps, mem_thr, lat_thr)
    frame = pd.DataFrame(
        {
            "label": label,
            "first_checkpoint": np.where(unseen, -1, step_arr[safe]),
            "repetitions": reps,
            "lev_first": lev_first,
            "min_lev_later": min_later,
            "ce_first": ce_first,
        }
    )
    for j, step in enumerate(steps):
        frame[f"lev@{step}"] = lev[:, j]
    for j, step in enumerate(steps):
        frame[f"ce@{step}"] = ce[:, j]
    traj = pd.DataFrame(
        {
            "sequence": np.repeat(rows, n_ckpt),
            "step": np.tile(step_arr, n),
            "lev": lev.reshape(-1),
            "ce": ce.reshape(-1),
            "label": np.repeat(label, n_ckpt),
        }
    )
    counts = {k: int((label == k).sum()) for k in ("memorized", "latent", "control", "other")}
    is_latent, is_control = label == "latent", label == "control"
    if is_latent.any() and is_control.any():
        both = is_latent | is_control
        ce_auroc = float(_auroc_rows(-ce_first[both][None], is_latent[both][None])[0])
    else:
        ce_auroc = float("nan")
    summary = {
        "checkpoints": steps,
        "sequences": n,
        **counts,
        "unseen": int(unseen.sum()),
        "memorized_threshold": mem_thr,
        "latent_threshold": lat_thr,
        "ce_auroc_latent_vs_control": ce_auroc,
        "mean_ce_first_latent": float(ce_first[is_latent].mean()) if is_latent.any() else None,
        "mean_ce_first_control": float(ce_first[is_control].mean()) if is_control.any() else None,
    }
    return LatentResult(frame=frame, summary=summary, trajectories=traj)


# ============================================================================ perturbation


@dataclass
class PerturbationResult:
    """Per sequence: lev without noise and the minimum lev over the weight-noise draws."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Weight-perturbation recovery"
    description: str = ""

    def figures(self) -> list[Any]:
        import plotly.graph_objects as go

        f = self.frame
        fig = go.Figure(
            go.Scatter(
                x=f["lev"],
                y=f["min_lev"],
                mode="markers",
                customdata=np.stack([f.index.to_numpy(), f["best_draw"]], axis=1),
                hovertemplate="row %{customdata[0]}<br>lev %{x}<br>min lev %{y}"
                "<br>draw %{customdata[1]}<extra></extra>",
            )
        )
        top = float(max(f["lev"].max(), 1))
        fig.add_trace(
            go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot"}, name="y = x")
        )
        fig.update_layout(
            title="Edit distance without noise vs best over weight-noise draws",
            xaxis_title="lev (unperturbed)",
            yaxis_title="min lev over draws",
        )
        return [fig]


def perturbation_recovery(
    model: Any,
    sequences: Any,
    sigma: float = 2e-3,
    draws: int = 8,
    seed: int = 0,
    prefix_len: int = 32,
    suffix_len: int = 64,
    batch_size: int = 64,
    lev_threshold: float = 10,
    tokenizer: Any = None,
    progress: bool = False,
) -> PerturbationResult:
    """Greedy-decode under seeded Gaussian weight noise; keep each sequence's minimum lev.

    Draw ``d`` adds ``eps ~ N(0, sigma^2)`` to every parameter (generator seeded with
    ``seed * 1_000_003 + d``, parameters in ``named_parameters`` order), re-decodes, and puts
    the original weights back exactly (copied, not subtracted) before the next draw, also on
    error. ``frame``: ``lev`` (no noise), ``min_lev``, ``best_draw`` (-1 if no draw beat the
    unperturbed lev), ``recovered`` (``min_lev < lev_threshold`` while ``lev >= lev_threshold``).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    _check_positive_int("draws", draws)
    _check_positive_int("prefix_len", prefix_len)
    _check_positive_int("suffix_len", suffix_len)
    lm = model if isinstance(model, _CausalLM) else _CausalLM(_load_if_path(model))
    if tokenizer is not None:
        lm.tokenizer = tokenizer
    tokens = as_token_matrix(sequences, prefix_len + suffix_len, lm.vocab_size, lm.tokenizer)
    prefixes, suffix = tokens[:, :prefix_len], tokens[:, prefix_len:]
    lev0 = levenshtein(greedy_continuation(lm, prefixes, suffix_len, batch_size), suffix)
    best = lev0.clone()
    best_draw = torch.full_like(lev0, -1)
    params = [p for _, p in lm.module.named_parameters()]
    originals = [p.detach().clone() for p in params]
    from tqdm.auto import tqdm

    try:
        for d in tqdm(range(draws), desc="perturb", disable=not progress, leave=False):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + d)
            with torch.no_grad():
                for p in params:
                    noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * sigma
                    p.add_(noise.to(device=p.device, dtype=p.dtype))
            lev = levenshtein(greedy_continuation(lm, prefixes, suffix_len, batch_size), suffix)
            with torch.no_grad():
                for p, orig in zip(params, originals):
                    p.copy_(orig)
            better = lev < best
            best = torch.where(better, lev, best)
            best_draw = torch.where(better, torch.full_like(best_draw, d), best_draw)
    finally:
        with torch.no_grad():
            for p, orig in zip(params, originals):
                p.copy_(orig)
    frame = pd.DataFrame(
        {
            "lev": lev0.numpy(),
            "min_lev": best.numpy(),
            "best_draw": best_draw.numpy(),
        }
    )
    frame["recovered"] = (frame["min_lev"] < lev_threshold) & (frame["lev"] >= lev_threshold)
    summary = {
        "sequences": len(frame),
        "sigma": sigma,
        "draws": draws,
        "seed": seed,
        "memorized_unperturbed": int((frame["lev"] < lev_threshold).sum()),
        "memorized_best_draw": int((frame["min_lev"] < lev_threshold).sum()),
        "recovered": int(frame["recovered"].sum()),
        "mean_lev": float(frame["lev"].mean()),
        "mean_min_lev": float(frame["min_lev"].mean()),
    }
    return PerturbationResult(frame=frame, summary=summary)
