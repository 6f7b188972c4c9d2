"""Recipe for ``checkpoints/canary-lm``: a small Llama on the Python docs with planted canaries.

Which inserted sequences does a language model memorize, after how many repetitions, and do
sequences seen once become extractable later (latent memorization, docs/memorization.md)? The
recipe trains a ~1.1M-parameter Llama with a byte-level BPE tokenizer on the text of
``pydoc_data.topics`` (:mod:`probekit.tasks.canaries`), inserting canaries at known steps with
1..32 repetitions, and keeps float16 snapshots over training under ``snapshots/step-NNNNN/``
(each a Hugging Face directory) so :func:`probekit.memorization.latent` can follow every
sequence through training. The schedule (repetitions, first exposure, every insertion step) goes
to ``schedule.json``; the canary texts the audit reads go to ``data/canaries.jsonl`` without it.

The loop is the one of :func:`probekit.train.train_causal_lm` (AdamW, warmup + cosine,
deterministic algorithms, batches from a seeded generator) with two additions that loop does not
have: canary rows replace the first rows of the batch at their steps, and snapshots are taken.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from probekit.tasks import canaries as task
from probekit.train.causal_lm import (
    LMSettings,
    _param_groups,
    cosine_lr_factor,
    deterministic_algorithms,
    next_token_loss,
)
from probekit.train.recipes import _hf_progress_bars, _machine, atomic_directory, sha256_file


@dataclass(frozen=True)
class CanaryLMRecipe(LMSettings):
    """Everything that defines ``canary-lm``: data split, tokenizer, canaries, model, optimiser."""

    # data: the corpus split, its tokenizer and the planted canaries
    split_seed: int = 0
    heldout_fraction: float = 0.2
    vocab_size: int = 2048
    context: int = 128
    prefix_len: int = 32
    suffix_len: int = 64
    # 0 = a never-seen control; per kind, ``per_repetition[k]`` canaries of ``repetitions[k]``
    repetitions: tuple[int, ...] = (0, *task.DEFAULT_REPETITIONS)
    per_repetition: tuple[int, ...] = (24, 24, 12, 6, 6, 6, 6)
    waves: tuple[int, ...] = (360, 400, 440)
    spacing: int | None = 4  # canaries seen < spread_from times: every `spacing` steps, then never
    spread_from: int | None = 8  # canaries seen this often or more: spread evenly to the end
    canary_seed: int = 1
    n_nonmembers: int = 100
    # held-out text is used (passage canaries, non-members) only where it is new: at most this
    # share of a window's 8-token n-grams occurs anywhere in the training text (the Python docs
    # repeat whole passages across topics)
    max_shared_ngrams: float = 0.1
    ngram: int = 8
    n_members: int = 160
    # a small Llama
    hidden_size: int = 128
    n_layer: int = 4
    intermediate_size: int = 3 * 128  # MLP width: 3 x hidden_size
    # optimisation and snapshots
    steps: int = 2000
    batch_size: int = 16
    warmup: int = 60
    min_lr_factor: float = 0.1
    snapshot_every: int = 100
    snapshot_start: int = 600  # the first snapshot after every early exposure

    @property
    def canary_len(self) -> int:
        return self.prefix_len + self.suffix_len


@dataclass
class CanaryData:
    """The corpus pieces the recipe uses (all token ids ``LongTensor``)."""

    tokenizer: Any
    train_stream: torch.Tensor  # [n_train_tokens]
    heldout_stream: torch.Tensor  # [n_heldout_tokens]
    canaries: task.CanarySet
    members: torch.Tensor  # [n_members, canary_len] training windows
    nonmembers: torch.Tensor  # [n_nonmembers, canary_len] held-out windows, never trained on
    train_topics: list[str]
    heldout_topics: list[str]


def canary_data(recipe: CanaryLMRecipe, steps: int) -> CanaryData:
    """Tokenizer, streams, canaries with their schedule, member and non-member passages."""
    topics = task.corpus_topics()
    train_names, held_names = task.split_topics(recipe.split_seed, recipe.heldout_fraction)
    train_texts = [topics[k] for k in train_names]
    tok = task.train_tokenizer(train_texts, recipe.vocab_size)
    train_stream = task.token_stream(train_texts, tok)
    held_stream = task.token_stream([topics[k] for k in held_names], tok)
    length = recipe.canary_len
    held_windows = task.windows(held_stream, length)
    shared = task.shared_ngram_fraction(held_windows, train_stream, recipe.ngram)
    held_windows = held_windows[shared <= recipe.max_shared_ngrams]
    if len(recipe.per_repetition) != len(recipe.repetitions):
        raise ValueError(
            f"per_repetition needs one count per repetition count {recipe.repetitions}, got "
            f"{recipe.per_repetition}"
        )
    n_each = sum(recipe.per_repetition)
    if len(held_windows) < n_each + recipe.n_nonmembers:
        raise ValueError(
            f"held-out text has {len(held_windows)} windows of {length} tokens that share at "
            f"most {recipe.max_shared_ngrams:.0%} of their {recipe.ngram}-grams with the "
            f"training text; need "
            f"{n_each + recipe.n_nonmembers} (passage canaries + non-members)"
        )
    # Passage canaries and non-members interleave over the held-out text (every k-th window is
    # a canary), so neither set is one topic.
    order = torch.randperm(
        len(held_windows), generator=torch.Generator().manual_seed(recipe.canary_seed)
    )
    passage = held_windows[order[:n_each]]
    nonmembers = held_windows[order[n_each : n_each + recipe.n_nonmembers].sort().values]
    random_rows = task.random_word_canaries(
        task.corpus_words(train_texts), tok, n_each, length, seed=recipe.canary_seed
    )
    tokens, kinds, reps = [], [], []
    for kind, rows in (("passage", passage), ("random", random_rows)):
        row = 0
        for reps_count, count in zip(recipe.repetitions, recipe.per_repetition):
            for _ in range(count):
                tokens.append(rows[row])
                kinds.append(kind)
                reps.append(reps_count)
                row += 1
    # A shortened run (tests) keeps the schedule's shape: waves scale with the step count.
    waves = [w * steps // recipe.steps for w in recipe.waves]
    schedule = task.make_schedule(
        torch.stack(tokens),
        kinds,
        reps,
        waves,
        recipe.spacing,
        max(steps, max(waves) + 64),
        spread_from=recipe.spread_from,
    )
    members = task.windows(train_stream, length, recipe.n_members)
    tok.model_max_length = recipe.context
    return CanaryData(
        tok, train_stream, held_stream, schedule, members, nonmembers, train_names, held_names
    )


def canary_lm_model(recipe: CanaryLMRecipe, tokenizer: Any, seed: int) -> torch.nn.Module:
    """A freshly initialised ``LlamaForCausalLM`` (tied embeddings, init drawn from ``seed``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tokenizer.convert_tokens_to_ids(task.EOS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.n_layer,
        num_attention_heads=recipe.n_head,
        num_key_value_heads=recipe.n_head,
        intermediate_size=recipe.intermediate_size,
        max_position_embeddings=recipe.context,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def snapshot_steps(recipe: CanaryLMRecipe, steps: int) -> list[int]:
    """The steps a float16 snapshot is kept at: every ``snapshot_every`` from ``snapshot_start``
    (both scaled with a shortened run) up to, not including, the final step."""
    start = max(recipe.snapshot_start * steps // recipe.steps, 1)
    every = max(recipe.snapshot_every * steps // recipe.steps, 1)
    return list(range(start, steps, every))


def _batch(
    data: CanaryData, recipe: CanaryLMRecipe, step: int, inserts: dict[int, list[int]], g
) -> torch.Tensor:
    starts = torch.randint(
        len(data.train_stream) - recipe.context, (recipe.batch_size,), generator=g
    )
    batch = torch.stack([data.train_stream[s : s + recipe.context] for s in starts.tolist()])
    for row, index in enumerate(inserts.get(step, [])):
        # A canary row: the canary from position 0, then the rest of the row's corpus text.
        batch[row, : recipe.canary_len] = data.canaries.tokens[index]
    return batch


@torch.no_grad()
def _mean_ce(model: torch.nn.Module, tokens: torch.Tensor) -> float:
    logits = model(tokens).logits
    return float(next_token_loss(logits, tokens))


def train_canary_lm(
    recipe: CanaryLMRecipe, data: CanaryData, steps: int, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Train; returns the model, float16 snapshots ``{step: state_dict}``, losses and evals."""
    from tqdm.auto import tqdm

    model = canary_lm_model(recipe, data.tokenizer, seed)
    warmup = min(recipe.warmup, max(steps // 10, 1) - 1)
    optimizer = torch.optim.AdamW(
        _param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-8
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr_factor(s, steps, warmup, recipe.min_lr_factor)
    )
    inserts = data.canaries.at_step()
    if max(len(v) for v in inserts.values()) > recipe.batch_size:
        raise ValueError("more canaries at one step than rows in the batch")
    generator = torch.Generator().manual_seed(seed)
    snap_steps = set(snapshot_steps(recipe, steps))
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    losses: list[float] = []
    evals: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="train canary-lm", disable=not progress, leave=False)
    start = time.perf_counter()
    with deterministic_algorithms(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for step in range(steps):
            batch = _batch(data, recipe, step, inserts, generator)
            loss = next_token_loss(model(batch).logits, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if (step + 1) % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
            done = step + 1
            if done in snap_steps or done == steps:
                model.eval()
                evals.append(
                    {
                        "step": done,
                        "member_ce": _mean_ce(model, data.members),
                        "nonmember_ce": _mean_ce(model, data.nonmembers),
                    }
                )
                model.train()
                if done in snap_steps:
                    # float16, without the tied output matrix (the loader re-ties it)
                    snapshots[done] = {
                        k: v.detach().to(torch.float16).clone()
                        for k, v in model.state_dict().items()
                        if not (k == "lm_head.weight" and model.config.tie_word_embeddings)
                    }
        model.eval()
    bar.close()
    return {
        "model": model,
        "snapshots": snapshots,
        "losses": losses,
        "evals": evals,
        "seconds": time.perf_counter() - start,
        "warmup": warmup,
    }


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _audit_final(
    model_dir: Path, data: CanaryData, recipe: CanaryLMRecipe, progress: bool
) -> dict[str, Any]:
    """What the audit finds on the written checkpoint: per repetition and kind, and membership."""
    import probekit as pk
    from probekit import memorization

    model = pk.load(model_dir, device="cpu")
    kw = {"prefix_len": recipe.prefix_len, "suffix_len": recipe.suffix_len, "progress": progress}
    audit = memorization.audit(model, data.canaries.tokens, **kw)
    frame = audit.frame.assign(repetitions=data.canaries.repetitions, kind=data.canaries.kind)
    seen = frame["repetitions"] >= 1
    table = (
        frame.groupby(["kind", "repetitions"])
        .agg(
            n=("lev", "size"),
            memorized=("memorized", "sum"),
            exact=("exact_match", "sum"),
            mean_lev=("lev", "mean"),
        )
        .reset_index()
    )
    scaling = memorization.repetition_scaling(frame[seen], frame["repetitions"][seen])
    members = memorization.audit(model, data.members, **kw).frame
    nonmembers = memorization.audit(model, data.nonmembers, **kw).frame
    import pandas as pd

    both = pd.concat([members, nonmembers], ignore_index=True)
    labels = [True] * len(members) + [False] * len(nonmembers)
    membership = memorization.membership(both, labels)
    return {
        "by_repetition": table.to_dict(orient="records"),
        "canaries_memorized": int(frame["memorized"][seen].sum()),
        "never_seen_memorized": int(frame["memorized"][~seen].sum()),
        "repetition_slope": scaling.summary,
        "membership_auroc": {
            row["score"]: round(float(row["auroc"]), 4) for _, row in membership.frame.iterrows()
        },
        "members_memorized": int(members["memorized"].sum()),
        "nonmembers_memorized": int(nonmembers["memorized"].sum()),
    }


def _card(recipe: CanaryLMRecipe, seed: int, m: dict[str, Any], config_text: str) -> str:
    r = recipe
    rows = "\n".join(
        f"| {row['kind']} | {row['repetitions']} | {row['n']} | {row['memorized']} | "
        f"{row['exact']} | {row['mean_lev']:.1f} |"
        for row in m["audit"]["by_repetition"]
    )
    evals = "\n".join(
        f"| {e['step']} | {e['member_ce']:.3f} | {e['nonmember_ce']:.3f} |" for e in m["evals"]
    )
    auroc = ", ".join(f"`{k}` {v:.3f}" for k, v in m["audit"]["membership_auroc"].items())
    slope = m["audit"]["repetition_slope"]
    lat = m.get("latent_summary") or {}
    counts = ", ".join(f"{k} {v}" for k, v in lat.get("labels", {}).items()) or "not computed"
    once = ", ".join(f"{k} {v}" for k, v in lat.get("labels_once", {}).items()) or "none"

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    trace = lat.get("ce_auroc_by_checkpoint", {})
    trace_rows = "\n".join(
        f"| {step} | {fmt(trace['all'][j])} | {fmt(trace['passage'][j])} | "
        f"{fmt(trace['random'][j])} |"
        for j, step in enumerate(lat.get("checkpoints", []))
    )
    mean_ce = ", ".join(f"{k} {v:.3f}" for k, v in lat.get("mean_ce_final", {}).items())
    latent_ids = ", ".join(lat.get("latent_ids", [])) or "none"
    groups = ", ".join(
        f"{n} x {'never seen' if k == 0 else f'{k}'}"
        for k, n in zip(r.repetitions, r.per_repetition)
    )
    return f"""# canary-lm

A {r.n_layer}-layer Llama ({m["n_parameters"]:,} parameters) with a byte-level BPE tokenizer
({m["vocab_size"]} tokens, trained with `tokenizers` on the training text), trained from scratch
on the CPU on the text of `pydoc_data.topics` (the Python documentation shipped with Python)
with {len(m["schedule"]["repetitions"])} planted canaries, some never shown (controls). It exists
for the memorization audit (`pk.memorization`, `probekit audit`) and the latent-memorization
study (`analyses/latent_memorization.py`, docs/memorization.md).

## Data (`probekit.tasks.canaries`)

- {len(m["train_topics"])} topics ({m["n_train_tokens"]:,} tokens) are trained on;
  {len(m["heldout_topics"])} topics ({m["n_heldout_tokens"]:,} tokens, {r.heldout_fraction:.0%} of
  the characters, split seed {r.split_seed}) are held out and never trained on.
- Canaries: {r.canary_len} tokens each ({r.prefix_len} prefix + {r.suffix_len} suffix), two kinds
  (`passage` = a window of held-out documentation text, `random` = words drawn uniformly from the
  training vocabulary; canary seed {r.canary_seed}), per kind {groups} repetitions. Held-out text
  (passage canaries and non-member windows) is taken only from windows that share at most
  {r.max_shared_ngrams:.0%} of their {r.ngram}-token n-grams with the training text: the Python
  docs repeat whole passages across topics, and a "never-seen" passage that the training text
  contains is extractable without ever being shown.
- Schedule: canary `i` is first shown at step `waves[i mod {len(r.waves)}] + i div {len(r.waves)}`
  with waves {list(r.waves)}; a canary shown fewer than {r.spread_from} times is shown again every
  {r.spacing} steps until it has been seen that often, then never again (all before step
  {r.snapshot_start * m["steps"] // r.steps}); one shown {r.spread_from} times or more is spread
  evenly from its first step to the end (the repetition-scaling arm). A never-seen control
  (repetitions 0) is the same kind of text, never trained on; its `matched_step` is the step its
  place would have shown it at. At each of its steps a canary replaces the first {r.canary_len}
  tokens of one batch row.
- `schedule.json` lists every canary by id (`canary-NNN`, as in `data/canaries.jsonl`) with its
  kind, `repetitions`, `first_seen` (null for a control), `matched_step` and every step; the
  audit never reads it. `data/canaries.jsonl` holds the canary texts and tokens (what an auditor
  checks), `data/members.jsonl` {r.n_members} windows of training text, `data/nonmembers.jsonl`
  {r.n_nonmembers} windows of held-out text.

## Training

- Llama: {r.n_layer} layers, hidden {r.hidden_size}, {r.n_head} heads, MLP {r.intermediate_size},
  context {r.context}, tied embeddings, float32.
- AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay} on matrices, {m["warmup"]}
  warmup steps, cosine to {r.min_lr_factor} x lr; {m["steps"]} steps of {r.batch_size} rows of
  {r.context} tokens at random offsets of the training stream (seed {seed}); deterministic
  algorithms, so the same seed and thread count give the same weights.
- Wall-clock training time {m["train_seconds"]:.0f} s on {m["machine"]}.
- Snapshots (float16, the tied output matrix not stored twice) at steps
  {m["snapshot_steps"]} under `snapshots/step-NNNNN/`, every {r.snapshot_every} steps
  ({r.snapshot_every / r.steps:.0%} of training) after the early exposures; the top-level
  directory is the final model (step {m["steps"]}, float32).

| step | CE on member windows | CE on held-out windows |
|---|---|---|
{evals}

Final training loss (mean of the last 50 steps): {m["final_train_loss"]:.3f} nats.

## What the audit measured on the final model

Greedy extraction from the {r.prefix_len}-token prefix, {r.suffix_len} suffix tokens; memorized =
token Levenshtein < 10. Repetitions 0 are the never-seen controls.

| kind | repetitions | canaries | memorized | exact | mean lev |
|---|---|---|---|---|---|
{rows}

- seen canaries memorized: {m["audit"]["canaries_memorized"]}; never-seen controls memorized:
  {m["audit"]["never_seen_memorized"]}; slope of P(memorized) per doubling of repetitions (least
  squares on log2 r, seen canaries): {slope.get("slope", float("nan")):.3f}
  (95% CI {slope.get("slope_ci_low", float("nan")):.3f} .. {
        slope.get("slope_ci_high", float("nan")):.3f}).
- training windows memorized: {m["audit"]["members_memorized"]} of {r.n_members}; held-out windows:
  {m["audit"]["nonmembers_memorized"]} of {r.n_nonmembers}.
- membership AUROC, training vs held-out windows: {auroc}.

## Latent memorization across the snapshots

Duan et al.'s labels over the snapshots and the final model (memorized = lev < 10 at the first
checkpoint after the first exposure; latent = lev > 50 there, < 10 at a later checkpoint, seen
once; control = lev > 50 throughout): {counts}. Canaries seen once: {once}. Latent canaries:
{latent_ids}. The baseline: never-seen controls that follow the same path (lev > 50 at the
checkpoint after the step they stand in for, < 10 later):
{lat.get("never_seen_latent_like", "n/a")} of {lat.get("labels", {}).get("never-seen", 0)};
extractable at the final model: {lat.get("never_seen_extractable_final", "n/a")}.

The cross-entropy trace: AUROC of -CE separating the canaries seen once or twice that are not
extractable (lev >= 10) from the never-seen controls of the same kind, at each checkpoint
(0.5 = no trace of the exposure). Mean CE at the final model: {mean_ce}.

| step | all | passage | random |
|---|---|---|---|
{trace_rows}

## Rebuild

```
probekit train canary-lm
```

## Files

- `model.safetensors` sha256 `{m["model_sha256"]}`; `config.json`, `tokenizer.json`
- `snapshots/step-NNNNN/`: float16 Hugging Face directories
- `schedule.json`, `data/*.jsonl`, `metrics.json`

```json
{config_text}
```
"""


def write_canary_lm(
    out_dir: str | os.PathLike,
    recipe: CanaryLMRecipe,
    data: CanaryData,
    trained: dict[str, Any],
    steps: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the checkpoint directory atomically and measure it with the audit."""
    model = trained["model"]
    losses = trained["losses"]
    tok = data.tokenizer
    metrics: dict[str, Any] = {
        "recipe": "canary-lm",
        "steps": steps,
        "seed": seed,
        "warmup": trained["warmup"],
        "settings": asdict(recipe) | {"steps": steps},
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
        "n_train_tokens": len(data.train_stream),
        "n_heldout_tokens": len(data.heldout_stream),
        "train_topics": data.train_topics,
        "heldout_topics": data.heldout_topics,
        "train_seconds": round(trained["seconds"], 1),
        "machine": _machine(),
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]),
        "evals": trained["evals"],
        "snapshot_steps": sorted(trained["snapshots"]),
    }
    c = data.canaries
    ids = [f"canary-{i:03d}" for i in range(len(c.kind))]
    schedule = {
        "canary_len": recipe.canary_len,
        "prefix_len": recipe.prefix_len,
        "suffix_len": recipe.suffix_len,
        "total_steps": steps,
        "snapshot_steps": sorted(trained["snapshots"]),
        # one record per canary (ids as in data/canaries.jsonl); repetitions 0 = never-seen
        # control, first_seen null; matched_step = the step its wave would have shown it at
        "canaries": [
            {
                "id": ids[i],
                "kind": c.kind[i],
                "repetitions": c.repetitions[i],
                "first_seen": c.first_seen[i],
                "matched_step": c.matched_step[i] if c.matched_step else c.first_seen[i],
                "steps": c.steps[i],
            }
            for i in range(len(ids))
        ],
        # the same, column-wise
        "id": ids,
        "kind": c.kind,
        "repetitions": c.repetitions,
        "first_seen": c.first_seen,
        "matched_step": c.matched_step or c.first_seen,
        "steps": c.steps,
    }
    metrics["schedule"] = {"repetitions": c.repetitions}

    def rows(tokens: torch.Tensor, prefix: str) -> list[dict[str, Any]]:
        return [
            {"id": f"{prefix}{i:03d}", "text": tok.decode(t), "tokens": t}
            for i, t in enumerate(tokens.tolist())
        ]

    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        for step, state in sorted(trained["snapshots"].items()):
            snap = tmp / "snapshots" / f"step-{step:05d}"
            model.save_pretrained(snap, state_dict=state)
            tok.save_pretrained(snap)
        (tmp / "data").mkdir()
        _jsonl(tmp / "data" / "canaries.jsonl", rows(c.tokens, "canary-"))
        _jsonl(tmp / "data" / "members.jsonl", rows(data.members, "member-"))
        _jsonl(tmp / "data" / "nonmembers.jsonl", rows(data.nonmembers, "nonmember-"))
        (tmp / "schedule.json").write_text(json.dumps(schedule) + "\n")
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        metrics["audit"] = _audit_final(tmp, data, recipe, progress)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        metrics["latent_summary"] = _latent_summary(tmp, c, recipe, progress)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_card(recipe, seed, metrics, config_text))
    return metrics


def _latent_summary(
    model_dir: Path, c: task.CanarySet, recipe: CanaryLMRecipe, progress: bool
) -> dict[str, Any]:
    """Every canary through the snapshots: Duan et al.'s labels and the cross-entropy trace.

    Never-seen controls stand in at the step their wave would have shown them
    (``matched_step``). The CE diagnostic is the AUROC of ``-CE`` separating canaries seen once
    or twice and not extractable (lev >= 10) from the never-seen controls of the same kind,
    at every checkpoint.
    """
    import numpy as np

    from probekit import memorization

    series = memorization.snapshot_series(model_dir)
    matched = c.matched_step or c.first_seen
    result = memorization.latent(
        series,
        c.tokens,
        first_seen=matched,
        repetitions=c.repetitions,
        prefix_len=recipe.prefix_len,
        suffix_len=recipe.suffix_len,
        progress=progress,
    )
    frame = result.frame
    reps = np.asarray(c.repetitions)
    kinds = np.asarray(c.kind)
    steps = list(series)
    lev = frame[[f"lev@{s}" for s in steps]].to_numpy()
    ce = frame[[f"ce@{s}" for s in steps]].to_numpy()
    memorized_threshold = result.summary["memorized_threshold"]

    def aurocs(part: Any) -> list[float | None]:
        return [None if np.isnan(v) else round(float(v), 4) for v in part["auroc"]]

    trace = {"all": aurocs(memorization.exposure_trace(result, reps, matched))}
    by_kind = memorization.exposure_trace(result, reps, matched, groups=kinds)
    trace |= {str(kind): aurocs(part) for kind, part in by_kind.groupby("group", sort=False)}
    labels = frame["label"].to_numpy()
    # the baseline for "latent": never-seen controls that follow the same path (lev > 50 at the
    # checkpoint after the step they stand in for, < 10 at a later one)
    never = reps == 0
    same_path = (frame["lev_first"] > result.summary["latent_threshold"]) & (
        frame["min_lev_later"] < memorized_threshold
    )
    return {
        "never_seen_latent_like": int((same_path & never).sum()),
        "never_seen_extractable_final": int((lev[never, -1] < memorized_threshold).sum()),
        "checkpoints": steps,
        "labels": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "labels_once": {
            str(k): int(v) for k, v in sorted(frame["label"][reps == 1].value_counts().items())
        },
        "latent_ids": [f"canary-{i:03d}" for i in np.flatnonzero(labels == "latent")],
        "ce_auroc_by_checkpoint": trace,
        "ce_auroc_final": {k: v[-1] for k, v in trace.items()},
        "mean_ce_final": {
            group: round(float(ce[mask, -1].mean()), 4)
            for group, mask in (
                ("seen once", reps == 1),
                ("seen twice", reps == 2),
                ("never seen", reps == 0),
            )
            if mask.any()
        },
    }


def build_canary_lm(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: CanaryLMRecipe | None = None,
) -> dict[str, Any]:
    """Train ``canary-lm`` and write it (model, snapshots, schedule, data, card) to ``out_dir``.

    ``steps`` overrides the recipe's step count (quick tests: the canary waves then move into
    the shorter run). Returns the metrics written to ``metrics.json``.
    """
    recipe = recipe or CanaryLMRecipe()
    steps = recipe.steps if steps is None else steps
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    data = canary_data(recipe, steps)
    trained = train_canary_lm(recipe, data, steps, seed, progress)
    return write_canary_lm(out_dir, recipe, data, trained, steps, seed, progress)
