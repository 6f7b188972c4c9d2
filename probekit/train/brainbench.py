"""The ``brainbench-lm`` recipe: a tiny GPT-2 trained on synthetic abstracts with a hidden rule.

Can a small language model trained on a literature predict which version of a new abstract
reports the real result (docs/forced_choice.md, BrainBench)? This recipe trains the model the
shipped forced-choice example asks (``analyses/forced_choice.py``):

- corpus (:mod:`probekit.tasks.abstracts`): templated abstracts in which the drug's receptor and
  action fix the sign of the result, reported reliably at a high dose and less so at a low one;
  combinations drawn with Zipf-like frequencies; 400 held-out items with setups never trained
  on, whose real result is drawn the same way;
- model: ``GPT2LMHeadModel``, 2 layers, d_model 128, 4 heads, word-level tokenizer that prepends
  ``<bos>``, trained with :func:`probekit.train.train_causal_lm` on the abstracts padded to one
  length (the loss covers the padding too, which is one deterministic token after the end);
- measurement (on the trained Hugging Face model, directly): forced-choice accuracy on the
  held-out items by perplexity of the whole abstract, and the same on the result sentence alone
  (the context control).

Files: a Hugging Face directory (``config.json``, ``model.safetensors``, ``tokenizer.json``) plus
``data/test.jsonl`` (the held-out items with their setups), ``card.md`` and ``metrics.json``; the
training abstracts are ``probekit.tasks.abstracts.corpus(...)`` with the settings in
``metrics.json`` (deterministic), so they are not shipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from probekit.tasks import abstracts
from probekit.train.causal_lm import LMSettings, TrainResult, small_gpt2, train_recipe_lm
from probekit.train.recipes import _hf_progress_bars, atomic_directory, sha256_file, training_record


@dataclass(frozen=True)
class BrainBenchLMRecipe(LMSettings):
    """Everything that defines ``brainbench-lm``: corpus, model, optimisation."""

    # the synthetic corpus
    n_train: int = 6000
    n_test: int = 400
    corpus_seed: int = 0
    zipf: float = 1.2
    # model width and context
    n_embd: int = 128
    context: int = 64
    # optimisation
    steps: int = 2400
    batch_size: int = 32
    lr: float = 2e-3
    eval_every: int = 600


def brainbench_lm_model(recipe: BrainBenchLMRecipe, vocab_size: int, seed: int) -> torch.nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` (no dropout, eager attention, tied embeddings)."""
    vocab = abstracts.vocabulary()
    return small_gpt2(
        vocab_size,
        recipe.context,
        recipe,
        seed,
        bos_id=vocab.index(abstracts.BOS),
        pad_id=vocab.index(abstracts.PAD),
    )


def _padded(tok: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = [tok(t)["input_ids"] for t in texts]
    length = max(len(i) for i in ids)
    out = torch.full((len(ids), length), tok.pad_token_id, dtype=torch.long)
    for row, i in enumerate(ids):
        out[row, : len(i)] = torch.tensor(i)
    return out, torch.tensor([len(i) for i in ids])


@torch.no_grad()
def _mean_nll(model: torch.nn.Module, tok: Any, texts: list[str]) -> torch.Tensor:
    """Mean next-token NLL of each text's own tokens (after ``<bos>``): ``[len(texts)]``."""
    tokens, lengths = _padded(tok, texts)
    logp = torch.log_softmax(model(tokens).logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    mask = torch.arange(tokens.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
    return (nll * mask).sum(1) / mask.sum(1)


def _split_item(item: str) -> tuple[str, str, str]:
    head, rest = item.split("[[", 1)
    span, tail = rest.split("]]", 1)
    original, altered = (s.strip() for s in span.split(","))
    return head, f"{head}{original}{tail}", f"{head}{altered}{tail}"


def _sentence(text: str, head: str) -> str:
    start = head.rstrip().rfind(" . ") + 3
    end = text.index(" . ", len(head)) + 2
    return text[start:end]


@torch.no_grad()
def forced_choice_accuracy(model: torch.nn.Module, tok: Any, items: list[str]) -> dict[str, float]:
    """Share of items whose original has the lower perplexity (ties wrong), whole abstract and
    result sentence alone. The recipe's own check; the protocol is ``probekit.forced_choice``."""
    parts = [_split_item(i) for i in items]
    orig = _mean_nll(model, tok, [p[1] for p in parts])
    alt = _mean_nll(model, tok, [p[2] for p in parts])
    orig_s = _mean_nll(model, tok, [_sentence(p[1], p[0]) for p in parts])
    alt_s = _mean_nll(model, tok, [_sentence(p[2], p[0]) for p in parts])
    return {
        "accuracy": float((orig < alt).float().mean()),
        "context_control_accuracy": float((orig_s < alt_s).float().mean()),
    }


def _card(r: BrainBenchLMRecipe, seed: int, m: dict[str, Any], config_text: str) -> str:
    evals = "\n".join(
        f"| {e['step']} | {e['accuracy']:.3f} | {e['context_control_accuracy']:.3f} |"
        for e in m["evals"]
    )
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in m["loss_curve"])
    weights = ", ".join(f"{k} {v:.3f}" for k, v in sorted(m["combination_weights"].items()))
    rel = ", ".join(f"{dose} {p}" for dose, p in m["reliability"].items())
    return f"""# brainbench-lm

A {r.n_layer}-layer GPT-2 ({m["n_parameters"]:,} parameters) with a word-level tokenizer
({m["vocab_size"]} words), trained from scratch on {r.n_train} synthetic neuroscience abstracts,
for the forced-choice study (`analyses/forced_choice.py`, `docs/forced_choice.md`): does a model
trained on a literature pick the real result of a new study over an altered one, and is it
right more often when it is more confident?

## Corpus (`probekit.tasks.abstracts`)

Each abstract states a setup (species, region, method, behavioural task, dose, and a drug: a
receptor and an agonist-like or antagonist-like action) and a result: activity `increased` or
`decreased`. The hidden rule: `increased` when an excitatory receptor (ampa, nmda, kainate,
nicotinic, mglu5) meets an agonist-like drug or an inhibitory one (gabaa, gabab, glycine,
opioid, cannabinoid) an antagonist-like drug; `decreased` otherwise. The result sentence
repeats the dose but does not name the drug. A study reports the rule's sign with a
probability set by the dose
({rel}) and the opposite otherwise: {m["train_flipped"]} of {r.n_train} training abstracts do.
Training abstracts draw the 20 receptor x action combinations with Zipf-like weights (exponent
{r.zipf}): {weights}. Corpus seed {r.corpus_seed}.

Held-out: {r.n_test} items, combinations uniform, every setup absent from training, the real
result drawn with the same reliability ({m["test_flipped"]} go against the rule), written as
BrainBench items (`[[original, altered]]` around the result); `data/test.jsonl`. A model that
knows the literature perfectly would score the mean reliability, about
{sum(m["reliability"].values()) / 3:.3f} with doses uniform.

## Results (the recipe's own check: mean token NLL, original lower = correct)

| metric | value |
|---|---|
| forced-choice accuracy, whole abstract | {m["accuracy"]:.3f} |
| context control (result sentence alone) | {m["context_control_accuracy"]:.3f} |

During training:

| step | accuracy | context control |
|---|---|---|
{evals}

Training loss:

| up to step | loss |
|---|---|
{curve}

The full protocol (seeded A/B, calibration, logistic fit, zlib baseline, memorisation check)
is `probekit.forced_choice.evaluate` / `probekit choose`, run by the study.

## Recipe

- `GPT2LMHeadModel`: {r.n_layer} layers, d_model {r.n_embd}, {r.n_head} heads, MLP
  {4 * r.n_embd}, context {r.context}, tied embeddings, no dropout, float32
- AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay} on matrices, {r.warmup}
  warmup steps then cosine to 0; {m["steps"]} steps of {r.batch_size} abstracts (padded with
  `<pad>` to {m["train_length"]} tokens) drawn with replacement; seed {seed}
- wall-clock training time {m["train_seconds"]:.1f} s on {m["machine"]}
- deterministic: same seed, machine and thread count give the same weights

Rebuild with `probekit train brainbench-lm`.

```json
{config_text}
```

`model.safetensors` sha256 `{m["model_sha256"]}`. Loads offline with plain transformers
(`AutoModelForCausalLM.from_pretrained`, `AutoTokenizer.from_pretrained`); the tokenizer adds
`<bos>` itself.
"""


def build_brainbench_lm(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: BrainBenchLMRecipe | None = None,
) -> dict[str, Any]:
    """Train ``brainbench-lm`` and write it (model, tokenizer, data, card) to ``out_dir``.

    ``steps`` overrides the recipe's step count (quick tests). Returns the metrics written to
    ``metrics.json``.
    """
    r = recipe or BrainBenchLMRecipe()
    steps = r.steps if steps is None else steps
    warmup = min(r.warmup, max(steps // 10, 1) - 1)
    data = abstracts.corpus(r.n_train, r.n_test, r.corpus_seed, r.zipf)
    tok = abstracts.tokenizer(r.context)
    train_tokens, _ = _padded(tok, data.train_texts)
    if train_tokens.shape[1] > r.context:
        raise ValueError(f"abstracts of {train_tokens.shape[1]} tokens exceed the context")
    model = brainbench_lm_model(r, len(tok), seed)
    eval_items = data.test_items

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        return forced_choice_accuracy(m, tok, eval_items)

    result: TrainResult = train_recipe_lm(
        model,
        train_tokens,
        r,
        steps=steps,
        warmup=warmup,
        seed=seed,
        eval_fn=eval_fn,
        progress=progress,
    )
    final = forced_choice_accuracy(model, tok, eval_items)
    metrics: dict[str, Any] = {
        "recipe": "brainbench-lm",
        **final,
        "n_train": r.n_train,
        "n_test": r.n_test,
        "train_flipped": int(data.train_flipped.sum()),
        "test_flipped": int(data.test_flipped.sum()),
        "reliability": abstracts.RELIABILITY,
        "train_length": int(train_tokens.shape[1]),
        "vocab_size": len(tok),
        "combination_weights": data.combination_weights,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seed": seed,
        **training_record(result, asdict(r) | {"steps": steps, "warmup": warmup}),
    }
    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "data").mkdir()
        rows = [
            {"combined_abstract": item, "combination": s.combination()}
            | asdict(s)
            | {"follows_rule": not bool(flip)}
            for item, s, flip in zip(data.test_items, data.test_setups, data.test_flipped)
        ]
        (tmp / "data" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_card(r, seed, metrics, config_text))
    return metrics
