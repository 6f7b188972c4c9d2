"""Can a language model tell the real result of a study from an altered one?

BrainBench (Luo et al. 2024, seeds/abstracts.md §5) gives a model two versions of a
neuroscience abstract, the published one and one whose result was altered, and counts the
model right when the published one has the lower perplexity. Confident choices (a large
perplexity difference) are more often right, which is what makes the model useful to a human
expert. This module runs that protocol, as the benchmark's own code does, on any causal LM
:func:`probekit.load` accepts (``docs/forced_choice.md``):

- items are abstracts with the edit written ``[[original, altered]]`` (a list of texts, or the
  benchmark's CSV with a ``combined_abstract`` column, or JSONL); :func:`parse_items`;
- a coin seeded with 42 puts the original as choice A or B; each full text (optionally inside a
  prompt template) is scored by perplexity ``PPL = exp(-(1/(T-1)) sum_{t>=2} log p(x_t|x_<t))``
  with the model's own tokenizer; the lower PPL is the prediction and a tie counts as wrong;
- confidence ``|PPL_A - PPL_B|``; calibration over 20 equal-count confidence bins and the slope
  of a line through accuracy per bin (:func:`calibration`); a logistic fit of correct on
  confidence over 5 random 80/20 splits (:func:`logistic_calibration`);
- baselines and controls: the zlib-entropy baseline (the version that compresses smaller), the
  context control (the edited sentence alone, without the rest of the abstract), and a
  memorisation check of each original with :mod:`probekit.memorization`'s scores (Min-K% Prob,
  the zlib ratio).

Example::

    >>> import probekit as pk
    >>> model = pk.load("checkpoints/brainbench-lm")                        # doctest: +SKIP
    >>> result = pk.forced_choice.evaluate(model, ["mice [[ran, flew]] home ."])  # doctest: +SKIP
    >>> result.frame[["ppl_a", "ppl_b", "label", "correct", "confidence"]]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probekit.validation import check_choice, check_int, check_positive_int

__all__ = [
    "ForcedChoiceResult",
    "Item",
    "calibration",
    "choose",
    "evaluate",
    "from_perplexities",
    "logistic_calibration",
    "parse_items",
    "perplexities",
    "read_items",
]

SPAN = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
#: Columns / keys an items file may use for the combined abstract, in order of preference.
TEXT_KEYS = ("combined_abstract", "text", "item", "abstract")


# ============================================================================ items


@dataclass(frozen=True)
class Item:
    """One forced-choice item: the two full versions and where the edits sit.

    ``source`` is the combined text; ``spans`` the ``(original, altered)`` pairs in order;
    ``sentences`` the sentence(s) holding an edit, as ``(original, altered)`` (the context
    control scores these alone).
    """

    source: str
    original: str
    altered: str
    spans: tuple[tuple[str, str], ...]
    sentences: tuple[str, str]


def _sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by whitespace (or the end), never
    inside a ``[[...]]`` span; each sentence stripped."""
    out, start, depth, i = [], 0, 0, 0
    while i < len(text):
        if text.startswith("[[", i):
            depth, i = depth + 1, i + 2
            continue
        if text.startswith("]]", i):
            depth, i = max(depth - 1, 0), i + 2
            continue
        if not depth and text[i] in ".!?" and (i + 1 == len(text) or text[i + 1].isspace()):
            out.append(text[start : i + 1])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _versions(text: str) -> tuple[str, str]:
    """``text`` with every span replaced by its original, and by its altered side."""
    return (
        SPAN.sub(lambda m: _split_span(m.group(1))[0], text),
        SPAN.sub(lambda m: _split_span(m.group(1))[1], text),
    )


def _split_span(inner: str) -> tuple[str, str]:
    parts = inner.split(",")
    return parts[0].strip(), ",".join(parts[1:]).strip()


def _parse_one(text: Any, where: str) -> Item:
    if not isinstance(text, str):
        raise ValueError(f"{where} must be a text, got {type(text).__name__}")
    matches = list(SPAN.finditer(text))
    opens, closes = text.count("[["), text.count("]]")
    if not matches:
        raise ValueError(f"{where} has no [[original, altered]] span")
    if opens != len(matches) or closes != len(matches):
        raise ValueError(
            f"{where} has unbalanced or nested brackets: {opens} '[[' and {closes} ']]' for "
            f"{len(matches)} complete span(s)"
        )
    spans = []
    for k, match in enumerate(matches, start=1):
        inner = match.group(1)
        commas = inner.count(",")
        if commas != 1:
            raise ValueError(
                f"{where}, span {k} [[{inner}]] must hold 'original, altered' separated by one "
                f"comma, found {commas}"
            )
        original, altered = _split_span(inner)
        if not original or not altered:
            raise ValueError(f"{where}, span {k} [[{inner}]] has an empty side")
        if original == altered:
            raise ValueError(f"{where}, span {k} [[{inner}]]: original and altered are identical")
        spans.append((original, altered))
    original, altered = _versions(text)
    edited = " ".join(s for s in _sentences(text) if "[[" in s)
    return Item(text, original, altered, tuple(spans), _versions(edited))


def read_items(path: str | os.PathLike) -> list[str]:
    """The combined abstracts of an items file, in file order.

    ``.csv``: a header with a ``combined_abstract`` column (BrainBench's test cases; ``text``,
    ``item`` or ``abstract`` also work). ``.jsonl``: one JSON object a line with one of those
    keys, or one JSON string a line. A ``ValueError`` names the row / line that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"items file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    texts: list[str] = []
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            key = next((k for k in TEXT_KEYS if k in columns), None)
            if key is None:
                raise ValueError(
                    f"{path}: no column {' / '.join(TEXT_KEYS)} in the header, got {columns}"
                )
            for row_number, row in enumerate(reader, start=2):
                value = row.get(key)
                if not value:
                    raise ValueError(f"{path} line {row_number}: empty {key!r}")
                texts.append(value)
    elif suffix in (".jsonl", ".json"):
        for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {line_number}: not JSON ({err.msg})") from None
            if isinstance(value, dict):
                key = next((k for k in TEXT_KEYS if k in value), None)
                if key is None:
                    raise ValueError(
                        f"{path} line {line_number}: no key {' / '.join(TEXT_KEYS)}, got "
                        f"{sorted(value)}"
                    )
                value = value[key]
            if not isinstance(value, str):
                raise ValueError(
                    f"{path} line {line_number}: the item must be a text, got {type(value).__name__}"
                )
            texts.append(value)
    else:
        raise ValueError(f"items file must be .csv or .jsonl, got {path.name!r}")
    if not texts:
        raise ValueError(f"{path} holds no items")
    return texts


def parse_items(items: Any) -> list[Item]:
    """Items from a list of combined texts or an items file (:func:`read_items`).

    Each text holds at least one ``[[original, altered]]`` span (exactly one comma inside,
    neither side empty, the sides different, brackets balanced); anything else is a
    ``ValueError`` naming the item (``items[3]``, or the file and line) and what is wrong.
    """
    if isinstance(items, (str, os.PathLike)) and not (isinstance(items, str) and "[[" in items):
        path = Path(items)
        texts = read_items(path)
        where = [f"{path} item {i + 1}" for i in range(len(texts))]
    elif isinstance(items, str):
        raise ValueError("items must be a list of texts or a file path, got one text")
    else:
        if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
            raise ValueError(f"items must be a list of texts or a path, got {type(items).__name__}")
        texts = list(items)
        where = [f"items[{i}]" for i in range(len(texts))]
    if not texts:
        raise ValueError("items is empty")
    return [_parse_one(text, w) for text, w in zip(texts, where)]


# ============================================================================ formulas


def choose(ppl_a: np.ndarray, ppl_b: np.ndarray) -> np.ndarray:
    """Prediction per item: 0 = A (lower PPL), 1 = B, -1 = tie (counted wrong)."""
    a, b = np.asarray(ppl_a, dtype=float), np.asarray(ppl_b, dtype=float)
    return np.where(a < b, 0, np.where(b < a, 1, -1))


def calibration(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 20
) -> tuple[pd.DataFrame, float, float]:
    """Accuracy in equal-count confidence bins and the slope of a line through it.

    Items are ranked by ``confidence`` (stable sort; ties keep input order) and split into
    ``bins`` groups of equal size (sizes differ by at most one, the larger ones first, as
    ``numpy.array_split``). Returns ``(frame, slope, intercept)``: one row per bin (``bin``
    1..bins, ``n``, ``mean_confidence``, ``accuracy``), and the least-squares fit
    ``accuracy ~ slope * bin + intercept`` (BrainBench's calibration; a positive slope = more
    confident choices are more often right).
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    check_positive_int("bins", bins)
    if len(confidence) < bins:
        raise ValueError(f"calibration needs at least bins={bins} items, got {len(confidence)}")
    order = np.argsort(confidence, kind="stable")
    groups = np.array_split(order, bins)
    frame = pd.DataFrame(
        {
            "bin": np.arange(1, bins + 1),
            "n": [len(g) for g in groups],
            "mean_confidence": [float(confidence[g].mean()) for g in groups],
            "accuracy": [float(correct[g].mean()) for g in groups],
        }
    )
    slope, intercept = np.polyfit(frame["bin"].to_numpy(float), frame["accuracy"].to_numpy(), 1)
    return frame, float(slope), float(intercept)


def logistic_calibration(
    confidence: np.ndarray, correct: np.ndarray, splits: int = 5, seed: int = 42
) -> dict[str, float]:
    """Logistic regression of correct on (standardised) confidence over random 80/20 splits.

    Returns the mean over splits of the coefficient (per standard deviation of confidence; > 0 =
    confidence predicts correctness), the test accuracy and the test AUROC, and how many splits
    could be fitted (a split whose training part holds one class only is skipped).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x = np.asarray(confidence, dtype=float)
    y = np.asarray(correct, dtype=int)
    rng = np.random.default_rng(seed)
    coefs, accs, aucs = [], [], []
    for _ in range(splits):
        order = rng.permutation(len(x))
        n_test = max(1, round(0.2 * len(x)))
        test, train = order[:n_test], order[n_test:]
        if len(np.unique(y[train])) < 2:
            continue
        mu, sd = x[train].mean(), x[train].std() or 1.0
        fit = LogisticRegression().fit(((x[train] - mu) / sd)[:, None], y[train])
        xt = ((x[test] - mu) / sd)[:, None]
        coefs.append(float(fit.coef_[0, 0]))
        accs.append(float(fit.score(xt, y[test])))
        if len(np.unique(y[test])) == 2:
            aucs.append(float(roc_auc_score(y[test], fit.predict_proba(xt)[:, 1])))
    nan = float("nan")
    return {
        "logistic_coef": float(np.mean(coefs)) if coefs else nan,
        "logistic_test_accuracy": float(np.mean(accs)) if accs else nan,
        "logistic_test_auroc": float(np.mean(aucs)) if aucs else nan,
        "logistic_splits": len(coefs),
    }


def ab_labels(n: int, seed: int = 42) -> np.ndarray:
    """The A/B assignment: ``[n]`` ints, 0 = the original is A, 1 = it is B.

    ``numpy.random.seed(seed)`` then one ``randint(0, 2)`` per item, as BrainBench's runner.
    """
    state = np.random.RandomState(seed)
    return np.array([state.randint(0, 2) for _ in range(n)], dtype=int)


# ============================================================================ results


@dataclass
class ForcedChoiceResult:
    """Forced-choice results.

    ``frame``: one row per item in input order: ``ppl_a``, ``ppl_b``, ``label`` (0 when A is
    the original), ``prediction`` (0 = A, 1 = B, -1 = tie), ``correct``, ``tie``,
    ``confidence`` = ``|ppl_a - ppl_b|``, and where computed ``zlib_a``, ``zlib_b``,
    ``zlib_correct``, ``control_ppl_a``, ``control_ppl_b``, ``control_correct``,
    ``min_k_prob`` and ``zlib_ratio`` (of the original); ``calibration``: one row per bin;
    ``summary``: accuracy, ties, calibration slope, logistic fit, baselines, controls.
    """

    frame: pd.DataFrame
    summary: dict[str, Any]
    calibration: pd.DataFrame | None = None
    title: str = "Forced choice: original vs altered result"
    description: str = field(default="")

    def figures(self) -> list[Any]:
        from probekit.report.figures import forced_choice as figs

        out = [figs.perplexity_scatter(self.frame)]
        if self.calibration is not None:
            out.append(figs.calibration(self.calibration, self.summary))
        if "zlib_ratio" in self.frame:
            out.append(figs.memorization(self.frame))
        return out


def from_perplexities(
    ppl_a: Any, ppl_b: Any, labels: Any, bins: int = 20, seed: int = 42
) -> ForcedChoiceResult:
    """The protocol's scoring from perplexities ``[n]`` of choices A and B and ``labels [n]``.

    ``labels``: 0 when A is the original, 1 when B is. Prediction = the lower PPL, a tie is
    wrong; confidence ``|PPL_A - PPL_B|``; :func:`calibration` with ``bins`` (when there are at
    least that many items) and :func:`logistic_calibration` with ``seed``.
    """
    a = np.asarray(ppl_a, dtype=float).reshape(-1)
    b = np.asarray(ppl_b, dtype=float).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if not (len(a) == len(b) == len(y)) or len(a) == 0:
        raise ValueError(
            f"ppl_a, ppl_b and labels must be [n] with the same n >= 1, got {len(a)}, {len(b)}, "
            f"{len(y)}"
        )
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0 (A is the original) or 1 (B is the original)")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("perplexities must be finite")
    prediction = choose(a, b)
    correct = prediction == y
    confidence = np.abs(a - b)
    frame = pd.DataFrame(
        {
            "item": np.arange(len(a)),
            "ppl_a": a,
            "ppl_b": b,
            "label": y.astype(int),
            "prediction": prediction,
            "correct": correct,
            "tie": prediction == -1,
            "confidence": confidence,
        }
    )
    summary: dict[str, Any] = {
        "n_items": len(a),
        "accuracy": float(correct.mean()),
        "ties": int((prediction == -1).sum()),
        "chance": 0.5,
        "share_original_b": float(y.mean()),
    }
    table = None
    if len(a) >= bins:
        table, slope, intercept = calibration(confidence, correct, bins)
        summary |= {"calibration_bins": bins, "calibration_slope": slope,
                    "calibration_intercept": intercept}  # fmt: skip
    if len(a) >= 10:
        summary |= logistic_calibration(confidence, correct, seed=seed)
    return ForcedChoiceResult(frame, summary, table)


# ============================================================================ model scoring


def perplexities(
    model: Any,
    texts: Sequence[str],
    tokenizer: Any = None,
    score_from: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "perplexity",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Perplexity of each text under a causal LM, with the model's own tokenizer.

    ``PPL = exp(-(1/(T-1)) sum_{t>=2} log p(x_t | x_<t))`` over the text's tokens as the
    tokenizer writes them (special tokens it adds included, so a ``<bos>`` makes the first word
    count); log-probabilities in float32 (float64 if the model computes in it), texts batched
    by length and right-padded (a causal LM's logits at real tokens do not see the padding).
    ``score_from``: per text, a character offset; only tokens starting at or after it are scored
    (a template's abstract). Returns ``(ppl [n], per-token log-probs [n] arrays)``.
    """
    from probekit.models.runner import runner as runner_of
    from probekit.progress import bar as progress_bar
    from probekit.stats.memorization import token_scores

    check_positive_int("batch_size", batch_size)
    runner = runner_of(model)
    tok = tokenizer if tokenizer is not None else runner.tokenizer
    if tok is None:
        raise ValueError(
            "the model has no tokenizer; pass tokenizer= (the one it was trained with)"
        )
    encoded = []
    for i, text in enumerate(texts):
        if score_from is None:
            ids = tok(text)["input_ids"]
            keep = np.ones(len(ids), dtype=bool)
        else:
            enc = tok(text, return_offsets_mapping=True)
            ids = enc["input_ids"]
            keep = np.array([s >= score_from[i] and e > s for s, e in enc["offset_mapping"]])
        if len(ids) < 2:
            raise ValueError(f"text {i} has {len(ids)} token(s); perplexity needs at least 2")
        limit = getattr(runner, "max_length", None)
        if limit is not None and len(ids) > limit:
            raise ValueError(f"text {i} is {len(ids)} tokens, longer than the context {limit}")
        encoded.append((ids, keep))
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    pad = getattr(tok, "pad_token_id", None) or 0
    ppl = np.empty(len(encoded))
    logps: list[np.ndarray] = [np.empty(0)] * len(encoded)
    bar = progress_bar(total=len(encoded), desc=desc, unit="text", enabled=progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        length = max(len(encoded[i][0]) for i in rows)
        tokens = torch.full((len(rows), length), pad, dtype=torch.long)
        for r, i in enumerate(rows):
            tokens[r, : len(encoded[i][0])] = torch.tensor(encoded[i][0])
        logits = runner.logits(tokens)
        logp, _ = token_scores(logits, tokens)
        logp = logp.cpu().numpy()
        for r, i in enumerate(rows):
            ids, keep = encoded[i]
            values = logp[r, : len(ids) - 1][keep[1:]]
            if values.size == 0:
                raise ValueError(f"text {i}: no token to score after the template's prefix")
            logps[i] = values
            ppl[i] = math.exp(-float(values.mean()))
        bar.update(len(rows))
    bar.close()
    return ppl, logps


def _fill(template: str | None, text: str) -> tuple[str, int]:
    if template is None:
        return text, 0
    start = template.index("{text}")
    return template.replace("{text}", text), start


def evaluate(
    model: Any,
    items: Any,
    template: str | None = None,
    *,
    tokenizer: Any = None,
    score: str = "text",
    seed: int = 42,
    bins: int = 20,
    batch_size: int = 8,
    context_control: bool = True,
    memorization: bool = True,
    progress: bool = True,
) -> ForcedChoiceResult:
    """Run the forced-choice protocol of BrainBench on ``items`` with a causal LM.

    ``model``: anything :func:`probekit.load` returns for a causal LM, a Hugging Face model, or
    a path. ``items``: texts with ``[[original, altered]]`` span(s), or a CSV / JSONL path
    (:func:`parse_items`). ``template``: a prompt with ``{text}`` where the abstract goes;
    ``score="text"`` scores every token of the filled prompt (the benchmark's choice),
    ``"abstract"`` only the abstract's. ``seed`` fixes the A/B coin (:func:`ab_labels`).
    ``tokenizer`` overrides the model's own. ``context_control`` also scores the edited
    sentence(s) alone; ``memorization`` adds Min-K% Prob and the zlib ratio of each original.

    Returns a :class:`ForcedChoiceResult` whose ``frame`` has, per item in input order,
    ``ppl_a``, ``ppl_b``, ``label`` (0 when A is the original), ``correct``, ``confidence``.
    """
    parsed = parse_items(items)
    check_choice("score", score, ("text", "abstract"))
    check_int("seed", seed)
    check_positive_int("bins", bins)
    if template is not None and (not isinstance(template, str) or "{text}" not in template):
        raise ValueError(f"template must be a text containing '{{text}}', got {template!r}")
    from probekit.models.runner import runner as runner_of

    runner = runner_of(model)
    n = len(parsed)
    labels = ab_labels(n, seed)
    texts_a = [p.original if y == 0 else p.altered for p, y in zip(parsed, labels)]
    texts_b = [p.altered if y == 0 else p.original for p, y in zip(parsed, labels)]
    filled = [_fill(template, t) for t in texts_a + texts_b]
    score_from = [start for _, start in filled] if score == "abstract" else None
    kw = {"tokenizer": tokenizer, "batch_size": batch_size, "progress": progress}
    ppl, logps = perplexities(runner, [f for f, _ in filled], score_from=score_from, **kw)
    result = from_perplexities(ppl[:n], ppl[n:], labels, bins=bins, seed=seed)
    frame, summary = result.frame, result.summary

    from probekit.stats.memorization import zlib_length

    zlib_a = np.array([zlib_length(t) for t in texts_a])
    zlib_b = np.array([zlib_length(t) for t in texts_b])
    zlib_pick = choose(zlib_a, zlib_b)
    frame["zlib_a"], frame["zlib_b"] = zlib_a, zlib_b
    frame["zlib_correct"] = zlib_pick == labels
    summary["zlib_baseline_accuracy"] = float(frame["zlib_correct"].mean())
    summary["zlib_baseline_ties"] = int((zlib_pick == -1).sum())

    if context_control:
        sent_a = [p.sentences[0] if y == 0 else p.sentences[1] for p, y in zip(parsed, labels)]
        sent_b = [p.sentences[1] if y == 0 else p.sentences[0] for p, y in zip(parsed, labels)]
        control, _ = perplexities(runner, sent_a + sent_b, desc="context control", **kw)
        frame["control_ppl_a"], frame["control_ppl_b"] = control[:n], control[n:]
        frame["control_correct"] = choose(control[:n], control[n:]) == labels
        summary["context_control_accuracy"] = float(frame["control_correct"].mean())

    if memorization:
        from probekit.stats.memorization import min_k_prob, zlib_ratio

        original_logp = [logps[i] if y == 0 else logps[n + i] for i, y in enumerate(labels)]
        original_ppl = np.where(labels == 0, ppl[:n], ppl[n:])
        frame["min_k_prob"] = [
            float(min_k_prob(torch.as_tensor(lp)[None])[0]) for lp in original_logp
        ]
        # Carlini et al. 2021: mean token cross-entropy (log PPL) over zlib-compressed bytes.
        frame["zlib_ratio"] = [
            zlib_ratio(math.log(p), item.original) for p, item in zip(original_ppl, parsed)
        ]
        summary["median_zlib_ratio"] = float(frame["zlib_ratio"].median())
        summary["mean_min_k_prob"] = float(frame["min_k_prob"].mean())

    summary["mean_ppl_original"] = float(np.where(labels == 0, ppl[:n], ppl[n:]).mean())
    summary["mean_ppl_altered"] = float(np.where(labels == 0, ppl[n:], ppl[:n]).mean())
    summary |= {"seed": seed, "score": score, "template": template}
    return result
