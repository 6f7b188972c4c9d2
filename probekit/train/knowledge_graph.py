"""Recipe for ``checkpoints/kg-ring``: a 3-layer GPT-2 trained on the cyclic knowledge graph.

What model does the representation-shattering study (docs/shattering.md) edit? This recipe
answers in code: the graph and its held-out facts come from
:func:`probekit.tasks.knowledge_graph.make_graph`, the training walks from
:func:`~probekit.tasks.knowledge_graph.walks`, training is
:func:`probekit.train.train_causal_lm` (deterministic AdamW + cosine), and the checkpoint is a
Hugging Face directory with a WordLevel tokenizer, ``graph.json`` (the three orders and the
held-out sets), ``card.md`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from probekit.tasks import knowledge_graph as kg
from probekit.tasks.knowledge_graph import save_graph
from probekit.train.causal_lm import LMSettings, TrainResult, small_gpt2, train_recipe_lm
from probekit.train.recipes import (
    _hf_progress_bars,
    atomic_directory,
    sha256_file,
    training_record,
)


@dataclass(frozen=True)
class KGRingRecipe(LMSettings):
    """Everything that defines the ``kg-ring`` checkpoint (graph, walks, model, optimisation)."""

    # the graph, its held-out facts and the training walks
    n_entities: int = kg.DEFAULT_ENTITIES
    heldout_fraction: float = 0.1
    composition_heldout_fraction: float = 0.1
    graph_seed: int = 0
    length: int = kg.DEFAULT_LENGTH
    skip_prob: float = 0.2
    n_walks: int = 200_000
    walk_seed: int = 1
    # model
    n_layer: int = 3
    n_embd: int = 128
    # optimisation and evaluation
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 200
    eval_every: int = 500
    eval_items: int = 1024


def kg_ring_model(recipe: KGRingRecipe, seed: int) -> torch.nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` for the recipe (init drawn from ``seed``)."""
    return small_gpt2(
        recipe.n_entities + kg.N_RELATIONS + 2,
        recipe.length,
        recipe,
        seed,
        bos_id=None,
        pad_id=kg.pad_id(recipe.n_entities),
    )


def graph_from_recipe(recipe: KGRingRecipe) -> kg.KnowledgeGraph:
    return kg.make_graph(
        recipe.n_entities,
        recipe.heldout_fraction,
        recipe.composition_heldout_fraction,
        seed=recipe.graph_seed,
    )


def _accuracies(model: torch.nn.Module, sets: dict[str, kg.EvalSet], e_count: int) -> dict:
    return {name: kg.evaluate(model, items, e_count) for name, items in sets.items()}


def _inference_note(metrics: dict[str, Any]) -> str:
    acc, chance = metrics["accuracy"], metrics["chance"]
    parts = []
    for name, label in (("logical", "Logical"), ("compositional", "Compositional")):
        ratio = acc[name] / chance
        if ratio < 3:
            parts.append(
                f"{label} inference is near chance ({acc[name]:.4f}, {ratio:.1f}x chance): the model "
                "memorised the seen facts without learning that relation from them."
            )
        else:
            parts.append(f"{label} inference is {ratio:.1f}x chance ({acc[name]:.4f}).")
    return (
        " ".join(parts)
        + " The source study trains far longer; this is what the CPU budget of this recipe "
        "reached, and the shattering study reports its numbers on this model as it is."
    )


def _card(recipe: KGRingRecipe, seed: int, metrics: dict[str, Any], config_text: str) -> str:
    r = recipe
    evals = "\n".join(
        f"| {e['step']} | {e['direct']:.4f} | {e['logical']:.4f} | {e['compositional']:.4f} |"
        for e in metrics["evals"]
    )
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in metrics["loss_curve"])
    acc, n = metrics["accuracy"], metrics["eval_sizes"]
    return f"""# kg-ring

A {r.n_layer}-layer GPT-2 trained from scratch on random walks over a synthetic knowledge graph:
{r.n_entities} entities on three independent random cyclic orders, 24 relations (clockwise /
anticlockwise neighbour at 1-4 hops on each order). It is the model the representation-shattering
study (`analyses/representation_shattering.py`) edits with ROME, MEMIT
and fine-tuning.

## The task (`probekit.tasks.knowledge_graph`)

Walks of {r.length} tokens alternate entities and relations (`e37 I_A4 e113 I_C1 e82 ...`); with
probability {r.skip_prob} a step composes two relations and omits the intermediate entity
(`e37 I_A4 III_C3 e113`). {metrics["n_heldout_facts"]} facts ({r.heldout_fraction:.0%}) never occur
in a walk, and at most one of each inverse pair is held out, so each held-out fact is implied by
a seen one (logical inference). {metrics["n_heldout_compositions"]} two-hop compositions whose
facts are both seen ({r.composition_heldout_fraction:.0%}) never occur in a walk (compositional
inference). `graph.json` lists the orders and both held-out sets (graph seed {r.graph_seed}).
Entity `e{{i}}` is token id i, relation r (`I_C1`=0 .. `III_A4`=23) is id {r.n_entities}+r.

## Results

Greedy accuracy over entity tokens at the last prompt position, prompts out of walk context
(`[head, relation]` or `[head, r1, r2]` from position 0). Chance is 1/{r.n_entities}.

| evaluation | prompts | accuracy |
|---|---|---|
| direct recall (seen facts) | {n["direct"]} | {acc["direct"]:.4f} |
| logical inference (held-out facts, inverse seen) | {n["logical"]} | {acc["logical"]:.4f} |
| compositional inference (held-out two-hop) | {n["compositional"]} | {acc["compositional"]:.4f} |

{_inference_note(metrics)}

Accuracy during training (on at most {r.eval_items} prompts per set):

| step | direct | logical | compositional |
|---|---|---|---|
{evals}

Training loss (next-token cross-entropy over every position, including the random relation
choices, so it cannot reach 0):

| up to step | loss |
|---|---|
{curve}

## Architecture

`GPT2LMHeadModel`: {r.n_layer} layers, d_model {r.n_embd}, {r.n_head} heads, MLP {4 * r.n_embd},
context {r.length}, vocabulary {r.n_entities + kg.N_RELATIONS + 2}, tied embeddings, no dropout,
{metrics["n_parameters"]:,} parameters (float32).

```json
{config_text}
```

## Recipe

- {r.n_walks} walks (walk seed {r.walk_seed}); each step draws {r.batch_size} of them with
  replacement
- optimizer: AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay} on matrices only,
  {metrics["settings"]["warmup"]} warmup steps then cosine decay to 0, {metrics["steps"]} steps
- seed {seed} (model init and batch order)
- wall-clock training time {metrics["train_seconds"]:.1f} s on {metrics["machine"]}
  (a 2-core machine shared with other jobs; that is the CPU budget this run had)
- deterministic: the same seed on the same machine and thread count gives the same weights

Rebuild with `probekit train kg-ring` or `probekit.train.RECIPES["kg-ring"](out_dir)`.

## Files

- `model.safetensors` sha256 `{metrics["model_sha256"]}`
- `config.json`, `generation_config.json`, `tokenizer.json`, `tokenizer_config.json`
- `graph.json`: the graph (`probekit.tasks.knowledge_graph.load_graph`)
- `metrics.json`: the numbers above
"""


def build_kg_ring(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: KGRingRecipe | None = None,
) -> dict[str, Any]:
    """Train the ``kg-ring`` checkpoint and write it to ``out_dir`` atomically.

    ``steps`` overrides the recipe's step count (for quick tests); ``seed`` sets model init and
    batch order. Returns the metrics written to ``metrics.json``: direct / logical /
    compositional accuracy, evaluation-set sizes, loss curve, timing, weights sha256.
    """
    recipe = recipe or KGRingRecipe()
    steps = recipe.steps if steps is None else steps
    warmup = min(recipe.warmup, max(steps // 10, 0))
    graph = graph_from_recipe(recipe)
    train_tokens = kg.walks(
        graph, recipe.n_walks, recipe.length, recipe.skip_prob, seed=recipe.walk_seed
    )
    full_sets = kg.evaluation_sets(graph)
    quick_sets = kg.evaluation_sets(graph, max_items=recipe.eval_items, seed=0)
    model = kg_ring_model(recipe, seed)

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        return _accuracies(m, quick_sets, graph.n_entities)

    result: TrainResult = train_recipe_lm(
        model,
        train_tokens,
        recipe,
        steps=steps,
        warmup=warmup,
        seed=seed,
        eval_fn=eval_fn,
        progress=progress,
    )
    model.eval()
    accuracy = _accuracies(model, full_sets, graph.n_entities)
    metrics: dict[str, Any] = {
        "recipe": "kg-ring",
        "accuracy": accuracy,
        "eval_sizes": {name: len(items) for name, items in full_sets.items()},
        "chance": 1 / graph.n_entities,
        "n_heldout_facts": int(graph.heldout.sum()),
        "n_heldout_compositions": int(graph.heldout_composition.sum()),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seed": seed,
        **training_record(result, asdict(recipe) | {"steps": steps, "warmup": warmup}),
    }
    tok = kg.tokenizer(graph.n_entities, recipe.length)
    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_graph(graph, tmp / "graph.json")
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_card(recipe, seed, metrics, config_text))
    return metrics
