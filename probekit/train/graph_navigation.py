"""The ``graphnav-stepwise`` and ``graphnav-direct`` recipes: small GPT-2s that navigate one DAG.

Which checkpoints does ``pk.stepwise`` (stepwise inference on graph navigation, Khona et al.
2024; ``docs/graph_navigation.md``) study, and how were they made? Both recipes draw the same
hierarchical DAG and the same split from :mod:`probekit.tasks.graph_navigation` (training pairs
capped at a path length, a fraction of the pairs under the cap and every longer pair held out),
and train a 2-layer GPT-2 from scratch with next-token cross-entropy on everything after the
prompt ``goal start``:

- stepwise: ``goal start n1 ... goal <yes> <eos>`` (a uniformly drawn path; for an unconnected
  pair a walk that never climbs past the goal's layer, then ``<no> <eos>``);
- direct: ``goal start <yes|no> <eos>``.

Half of the training rows are unconnected pairs. Scores are measured with greedy decoding:
the stepwise model's path accuracy (every step an edge, ends at the goal and stops) on held-out
connected pairs is its ``heldout_accuracy``; the direct model's is its balanced accuracy on the
path-exists question over held-out pairs (mean of the accuracy on connected and on unconnected
pairs). The stepwise recipe also saves a few training snapshots (``snapshots/step-N``) for the
failure split over training.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probekit.tasks import graph_navigation as gn
from probekit.train.causal_lm import LMSettings, TrainResult, small_gpt2, train_recipe_lm
from probekit.train.recipes import (
    _hf_progress_bars,
    atomic_directory,
    sha256_file,
    training_record,
)


@dataclass(frozen=True)
class GraphNavRecipe(LMSettings):
    """Everything that defines a ``graphnav-*`` checkpoint (graph, split, model, optimisation)."""

    # format and graph (hierarchical: layers x width nodes; random: n_nodes)
    fmt: str = "stepwise"
    kind: str = "hierarchical"
    n_nodes: int = 25
    layers: int = 6
    width: int = 10
    p: float = 0.4  # edge probability between adjacent layers (or any ordered pair: random)
    graph_seed: int = 0
    # the split: training paths capped at max_train_length edges, some pairs held out
    max_train_length: int = 3
    heldout_fraction: float = 0.2
    split_seed: int = 0
    unconnected_fraction: float = 0.5
    n_train_sequences: int = 200_000
    data_seed: int = 1
    # GPT-2 width (depth and optimisation: LMSettings unless set here)
    n_embd: int = 64
    # training length and evaluation
    steps: int = 3000
    warmup: int = 200
    eval_every: int = 250

    def graph(self):
        if self.kind == "random":
            return gn.random_dag(self.n_nodes, self.p, self.graph_seed)
        return gn.hierarchical_dag(self.layers, self.width, self.p, self.graph_seed)

    def split(self, graph=None) -> gn.Split:
        graph = self.graph() if graph is None else graph
        return gn.make_split(graph, self.max_train_length, self.heldout_fraction, self.split_seed)


STEPWISE_RECIPE = GraphNavRecipe()
DIRECT_RECIPE = GraphNavRecipe(fmt="direct")
#: A random-order DAG, where the paths of one pair differ in length (the simplicity-bias test);
#: no length cap (10 edges is more than its longest path).
RANDOM_RECIPE = GraphNavRecipe(kind="random", n_nodes=25, p=0.2, max_train_length=10)


def graphnav_model(recipe: GraphNavRecipe, seed: int, n_nodes: int, length: int):
    """A fresh ``GPT2LMHeadModel`` (init from ``seed``): no dropout, eager attention, tied
    embeddings, a context of ``length + 2`` positions (room to overrun a path)."""
    return small_gpt2(
        len(gn.vocabulary(n_nodes)),
        length + 2,
        recipe,
        seed,
        bos_id=None,
        pad_id=gn.token_id(gn.PAD, n_nodes),
        eos_id=gn.token_id(gn.EOS, n_nodes),
    )


def measure(model, graph, split: gn.Split, fmt: str, max_pairs: int | None = None) -> dict:
    """Greedy scores of ``model`` on the split's pairs (the first ``max_pairs`` of each group
    when given): path accuracy, missteps and planning failures on connected pairs, and the
    path-exists answer on connected and unconnected pairs, overall and by pair length."""
    groups = {
        "train": (split.train_connected, split.train_unconnected),
        "heldout": (split.heldout_connected, split.heldout_unconnected),
    }
    out: dict[str, Any] = {}
    for name, (conn, unconn) in groups.items():
        if max_pairs is not None:
            # an evenly spaced subset, so every layer of starts is represented
            conn = conn[:: max(1, len(conn) // max_pairs)][:max_pairs]
            unconn = unconn[:: max(1, len(unconn) // max_pairs)][:max_pairs]
        pairs = np.concatenate([conn, unconn])
        connected = np.r_[np.ones(len(conn), bool), np.zeros(len(unconn), bool)]
        steps = 1 if fmt == "direct" else None
        r = gn.rollout(model, graph, pairs, steps=steps)
        if fmt == "direct":
            right = gn.answer_correct(connected, r["answers"], np.ones(len(pairs), bool))
        else:
            right = gn.answer_correct(connected, r["answers"], r["correct"])
        lengths = gn.pair_lengths(graph, pairs)
        c = connected
        res = {
            "n_connected": int(c.sum()),
            "n_unconnected": int((~c).sum()),
            "answer_accuracy_connected": float(right[c].mean()),
            "answer_accuracy_unconnected": float(right[~c].mean()) if (~c).any() else None,
        }
        parts = [res["answer_accuracy_connected"], res["answer_accuracy_unconnected"]]
        res["balanced_answer_accuracy"] = float(np.mean([x for x in parts if x is not None]))
        if fmt == "stepwise":
            res["path_accuracy"] = float(r["correct"][c].mean())
            res["misstep_rate"] = float((~r["valid"][c]).mean())
            res["planning_failure_rate"] = float((r["valid"][c] & ~r["reached_goal"][c]).mean())
        by_length = {}
        for k in sorted(set(lengths.tolist())):
            sel = lengths == k
            row = {
                "n_connected": int((sel & c).sum()),
                "n_unconnected": int((sel & ~c).sum()),
                "answer_accuracy_connected": float(right[sel & c].mean())
                if (sel & c).any()
                else None,
                "answer_accuracy_unconnected": float(right[sel & ~c].mean())
                if (sel & ~c).any()
                else None,
            }
            if fmt == "stepwise" and (sel & c).any():
                row["path_accuracy"] = float(r["correct"][sel & c].mean())
            by_length[str(k)] = row
        res["by_length"] = by_length
        out[name] = res
    return out


def _headline(fmt: str, res: dict) -> float:
    held = res["heldout"]
    return held["path_accuracy"] if fmt == "stepwise" else held["balanced_answer_accuracy"]


def _card(name: str, recipe: GraphNavRecipe, seed: int, metrics: dict, config_text: str) -> str:
    r = recipe
    res = metrics["results"]
    evals = "\n".join(
        f"| {e['step']} | "
        + " | ".join(f"{e[k]:.3f}" if e.get(k) is not None else "-" for k in metrics["eval_keys"])
        + " |"
        for e in metrics["evals"]
    )
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in metrics["loss_curve"])
    rows = []
    for split_name in ("train", "heldout"):
        for k, row in res[split_name]["by_length"].items():

            def cell(x):
                return "-" if x is None else f"{x:.3f}"

            rows.append(
                f"| {split_name} | {k} | {row['n_connected']} | {row['n_unconnected']} | "
                f"{cell(row.get('path_accuracy'))} | {cell(row['answer_accuracy_connected'])} | "
                f"{cell(row['answer_accuracy_unconnected'])} |"
            )
    table = "\n".join(rows)
    fmt_text = (
        "`goal start n1 ... goal <yes> <eos>` (connected pairs; a uniformly drawn path) and "
        "`goal start n1 ... nk <no> <eos>` (unconnected pairs; a walk that never climbs past the "
        "goal's level)"
        if r.fmt == "stepwise"
        else "`goal start <yes> <eos>` / `goal start <no> <eos>` (the answer at once)"
    )
    twin = "graphnav-direct" if r.fmt == "stepwise" else "graphnav-stepwise"
    twin_text = f"Its twin `{twin}` was trained on the same graph and split."
    if r.kind == "random":
        twin_text = (
            "It navigates a random-order DAG, where the paths of one pair differ in length "
            "(the simplicity-bias test)."
        )
    graph_text = (
        f"A hierarchical DAG of {r.layers} layers x {r.width} nodes (node `layer * {r.width} + "
        f"i`), each edge between adjacent layers present with probability {r.p}"
        if r.kind == "hierarchical"
        else f"A random-order DAG of {r.n_nodes} nodes, each edge `i -> j` (i < j) present "
        f"with probability {r.p}"
    )
    snapshots = ""
    if metrics.get("snapshots"):
        snapshots = (
            "\n- `snapshots/step-N/`: the model after N training steps (config + weights), for "
            "the failure split over training: " + ", ".join(map(str, metrics["snapshots"]))
        )
    held = res["heldout"]
    headline = (
        f"held-out path accuracy {held['path_accuracy']:.3f} (missteps "
        f"{held['misstep_rate']:.3f}, planning failures {held['planning_failure_rate']:.3f})"
        if r.fmt == "stepwise"
        else f"held-out balanced accuracy {held['balanced_answer_accuracy']:.3f}"
    )
    return f"""# {name}

A {r.n_layer}-layer GPT-2 trained from scratch to navigate one directed acyclic graph in the
{r.fmt} format (stepwise inference on graph navigation, Khona et al. 2024; see
`docs/graph_navigation.md`). {twin_text} Shipped for `pk.stepwise` and
`analyses/graph_navigation.py`.

## The task (`probekit.tasks.graph_navigation`)

{graph_text} (graph seed {r.graph_seed}): {metrics["n_edges"]} edges. A question is `(start, goal)` with the goal at a later level (layer, or node id). Sequences:
{fmt_text}. The prompt is `goal start`; the loss covers every later token.

Split (seed {r.split_seed}): pairs whose path (or walk) is at most {r.max_train_length} edges are
trained on, except {r.heldout_fraction:.0%} of them held out; every longer pair is held out too.
{metrics["n_train_pairs"]} training pairs, {metrics["n_heldout_pairs"]} held-out pairs
(`graph.json` holds the graph and the split). {r.n_train_sequences} training rows, half of them
unconnected pairs (data seed {r.data_seed}).

## Results ({headline})

Greedy decoding. Path accuracy: every step an edge and the path ends at the goal and stops
(connected pairs). Answer accuracy: the path-exists token right (for the stepwise model, a
`<yes>` counts only after a correct path).

| pairs | path length | connected | unconnected | path accuracy | answer, connected | answer, unconnected |
|---|---|---|---|---|---|---|
{table}

During training (greedy, an evenly spaced subset of up to {metrics["eval_pairs"]} pairs of
each group):

| step | {" | ".join(metrics["eval_keys"])} |
|---|{"---|" * len(metrics["eval_keys"])}
{evals}

Training loss (mean over windows of the run):

| up to step | loss |
|---|---|
{curve}

## Architecture

`GPT2LMHeadModel`: {r.n_layer} layers, d_model {r.n_embd}, {r.n_head} heads, MLP {4 * r.n_embd},
context {metrics["n_positions"]}, vocabulary {metrics["vocab_size"]}, tied embeddings, no dropout,
{metrics["n_parameters"]:,} parameters (float32).

```json
{config_text}
```

## Recipe

- optimizer: AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay} on matrices only,
  {metrics["settings"]["warmup"]} warmup steps then cosine decay to 0
- steps {metrics["steps"]}, batch size {r.batch_size} rows sampled with replacement
- seed {seed} (model init and batch order)
- wall-clock training time {metrics["train_seconds"]:.1f} s on {metrics["machine"]}
  (a 2-core machine shared with other jobs)
- deterministic: the same seed on the same machine and thread count gives the same weights

Rebuild with `probekit train {name}` or `probekit.train.RECIPES["{name}"](out_dir)`.

## Files

- `model.safetensors` sha256 `{metrics["model_sha256"]}`
- `config.json`, `generation_config.json`, `tokenizer.json`, `tokenizer_config.json`
- `graph.json`: the graph (levels, edges, settings) and the split; read it with
  `probekit.tasks.graph_navigation.load_graph` / `heldout_pairs`
- `metrics.json`: the numbers above{snapshots}

It was trained and evaluated with eager attention; pass `attn_implementation="eager"` to
`from_pretrained` to get attention weights back.
"""


def build_graphnav(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: GraphNavRecipe = STEPWISE_RECIPE,
    name: str = "graphnav-stepwise",
    snapshot_steps: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Train a ``graphnav-*`` checkpoint from ``recipe`` and write it to ``out_dir`` atomically.

    ``steps`` overrides the recipe's step count (quick tests); ``seed`` sets model init and
    batch order. ``snapshot_steps`` are saved under ``snapshots/step-N`` (they must be
    multiples of ``eval_every``). Returns the metrics written to ``metrics.json``.
    """
    steps = recipe.steps if steps is None else steps
    warmup = min(recipe.warmup, max(steps // 10, 0))
    eval_every = min(recipe.eval_every, steps)
    graph = recipe.graph()
    split = recipe.split(graph)
    n = graph.number_of_nodes()
    length = gn.max_sequence_length(graph)
    tokens = gn.training_sequences(
        graph,
        split,
        recipe.fmt,
        recipe.n_train_sequences,
        recipe.data_seed,
        recipe.unconnected_fraction,
    )
    if recipe.fmt == "direct":
        tokens = tokens[:, :4]
    model = graphnav_model(recipe, seed, n, length)
    eval_pairs = 200
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    calls = [0]

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        calls[0] += 1
        step = min(calls[0] * eval_every, steps)
        if step in snapshot_steps:
            snapshots[step] = {k: v.detach().clone() for k, v in m.state_dict().items()}
        res = measure(m, graph, split, recipe.fmt, max_pairs=eval_pairs)
        out = {
            "train_answer": res["train"]["balanced_answer_accuracy"],
            "heldout_answer": res["heldout"]["balanced_answer_accuracy"],
        }
        if recipe.fmt == "stepwise":
            out |= {
                "train_path": res["train"]["path_accuracy"],
                "heldout_path": res["heldout"]["path_accuracy"],
                "heldout_missteps": res["heldout"]["misstep_rate"],
                "heldout_planning": res["heldout"]["planning_failure_rate"],
            }
        return out

    # an eval_every past the last step evaluates only at the end, as min(eval_every, steps) did
    result: TrainResult = train_recipe_lm(
        model,
        tokens,
        recipe,
        steps=steps,
        warmup=warmup,
        seed=seed,
        eval_fn=eval_fn,
        progress=progress,
        loss_mask=gn.loss_mask(tokens.shape[1]),
    )
    results = measure(model, graph, split, recipe.fmt)
    eval_keys = [k for k in result.evals[-1][1]] if result.evals else []
    metrics: dict[str, Any] = {
        "recipe": name,
        "format": recipe.fmt,
        "heldout_accuracy": _headline(recipe.fmt, results),
        "heldout_accuracy_means": (
            "path accuracy on held-out connected pairs (greedy)"
            if recipe.fmt == "stepwise"
            else "balanced accuracy of the path-exists answer on held-out pairs (greedy)"
        ),
        "heldout_balanced_answer_accuracy": results["heldout"]["balanced_answer_accuracy"],
        "results": results,
        "eval_keys": eval_keys,
        "eval_pairs": eval_pairs,
        "snapshots": sorted(snapshots),
        "n_edges": graph.number_of_edges(),
        "n_train_pairs": len(split.train_connected) + len(split.train_unconnected),
        "n_heldout_pairs": len(split.heldout_connected) + len(split.heldout_unconnected),
        "n_positions": model.config.n_positions,
        "vocab_size": model.config.vocab_size,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seed": seed,
        **training_record(result, asdict(recipe) | {"steps": steps, "warmup": warmup}),
    }
    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        gn.tokenizer(n, model.config.n_positions).save_pretrained(tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        gn.save_graph(graph, tmp, split, recipe=name)
        for step, state in sorted(snapshots.items()):
            snap = graphnav_model(recipe, seed, n, length)
            snap.load_state_dict(state)
            snap.save_pretrained(Path(tmp) / "snapshots" / f"step-{step}")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_card(name, recipe, seed, metrics, config_text))
    return metrics


def build_graphnav_stepwise(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``graphnav-stepwise`` (the path, then the answer), saving snapshots after 250,
    500, 1000 and 2000 steps."""
    total = STEPWISE_RECIPE.steps if steps is None else steps
    every = min(STEPWISE_RECIPE.eval_every, total)
    marks = tuple(every * k for k in (1, 2, 4, 8) if every * k < total)
    return build_graphnav(
        out_dir, steps, seed, progress, STEPWISE_RECIPE, "graphnav-stepwise", marks
    )


def build_graphnav_random(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``graphnav-random``: the stepwise format on a random-order DAG of 25 nodes."""
    return build_graphnav(out_dir, steps, seed, progress, RANDOM_RECIPE, "graphnav-random")


@dataclass(frozen=True)
class InContextRecipe(LMSettings):
    """The ``graphnav-incontext`` checkpoint: paths through motifs given in the context."""

    n_nodes: int = 30
    motif_length: int = 2
    train_motifs: tuple[int, ...] = (1, 2, 3)
    n_train_sequences: int = 100_000
    data_seed: int = 1
    # the in-context GPT-2: width, context and evaluation seed
    n_embd: int = 64
    steps: int = 3000
    warmup: int = 200
    eval_every: int = 1000
    n_positions: int = 40
    eval_seed: int = 7


INCONTEXT_RECIPE = InContextRecipe()


def _incontext_scores(model, recipe: InContextRecipe, n: int = 200) -> dict[str, float]:
    out = {}
    for k in range(1, max(recipe.train_motifs) + 3):
        batch = gn.incontext_sequences(
            recipe.n_nodes, n, k, recipe.motif_length, seed=recipe.eval_seed + k
        )
        conts = gn.incontext_continuations(model, batch, k * recipe.motif_length + 1)
        out[f"motifs_{k}"] = float(gn.incontext_correct(conts, batch, recipe.n_nodes).mean())
    batch = gn.incontext_sequences(
        recipe.n_nodes, n, 2, recipe.motif_length, conflicting=True, seed=recipe.eval_seed
    )
    first = torch.tensor([c[0] for c in gn.incontext_continuations(model, batch, 1)])
    f, s = (first == batch.first_choice).sum(), (first == batch.second_choice).sum()
    out["conflict_follows_first"] = float(f / max(int(f + s), 1))
    return out


def build_graphnav_incontext(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    recipe: InContextRecipe = INCONTEXT_RECIPE,
) -> dict[str, Any]:
    """Train ``graphnav-incontext``: fresh node labels per sequence, a chain of 1-3 motifs
    (2-edge path segments) shown in the context in shuffled order, then ``<q> goal start`` and
    the path through them. Never trained on conflicting motifs or on more than 3 motifs."""

    steps = recipe.steps if steps is None else steps
    warmup = min(recipe.warmup, max(steps // 10, 0))
    n = recipe.n_nodes
    data = gn.incontext_sequences(
        n, recipe.n_train_sequences, recipe.train_motifs, recipe.motif_length, seed=recipe.data_seed
    )
    tokens = data.tokens
    model = small_gpt2(
        len(gn.vocabulary(n)),
        recipe.n_positions,
        recipe,
        seed,
        bos_id=None,
        pad_id=gn.token_id(gn.PAD, n),
        eos_id=gn.token_id(gn.EOS, n),
    )
    result: TrainResult = train_recipe_lm(
        model,
        tokens,
        recipe,
        steps=steps,
        warmup=warmup,
        seed=seed,
        eval_fn=lambda m: _incontext_scores(m, recipe, 100),
        progress=progress,
    )
    scores = _incontext_scores(model, recipe, 400)
    within = [scores[f"motifs_{k}"] for k in recipe.train_motifs]
    metrics: dict[str, Any] = {
        "recipe": "graphnav-incontext",
        "heldout_accuracy": float(np.mean(within)),
        "heldout_accuracy_means": "greedy whole-path accuracy on fresh in-context sequences with "
        "1-3 motifs (every sequence has new node labels, so none was trained on)",
        "scores": scores,
        "train_length_tokens": int(tokens.shape[1]),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "seed": seed,
        **training_record(result, asdict(recipe) | {"steps": steps, "warmup": warmup}),
    }
    with atomic_directory(out_dir) as tmp, _hf_progress_bars(progress):
        model.save_pretrained(tmp)
        gn.tokenizer(n, recipe.n_positions).save_pretrained(tmp)
        metrics["model_sha256"] = sha256_file(tmp / "model.safetensors")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        config_text = (tmp / "config.json").read_text().strip()
        (tmp / "card.md").write_text(_incontext_card(recipe, seed, metrics, config_text))
    return metrics


def _incontext_card(r: InContextRecipe, seed: int, metrics: dict, config_text: str) -> str:
    s = metrics["scores"]
    rows = "\n".join(
        f"| {k.split('_')[1]} | {v:.3f} |" for k, v in s.items() if k.startswith("motifs_")
    )
    evals = "\n".join(
        f"| {e['step']} | " + " | ".join(f"{e[k]:.3f}" for k in s) + " |" for e in metrics["evals"]
    )
    curve = "\n".join(f"| {step} | {loss:.4f} |" for step, loss in metrics["loss_curve"])
    return f"""# graphnav-incontext

A {r.n_layer}-layer GPT-2 trained from scratch to navigate a graph given in its context by
exemplars (the in-context part of stepwise inference on graph navigation, Khona et al. 2024; see
`docs/graph_navigation.md`). Shipped for `pk.stepwise.incontext_accuracy` and
`pk.stepwise.primacy`.

## The task (`probekit.tasks.graph_navigation.incontext_sequences`)

Every sequence draws fresh labels among {r.n_nodes} node tokens, chains {", ".join(map(str, r.train_motifs))}
motifs (paths of {r.motif_length} edges; motif i ends where motif i+1 starts), shows them in
shuffled order as `<ex> a b c`, then asks `<q> goal start` (the chain's ends) and writes the
path through the chain, `<yes> <eos>`. {r.n_train_sequences} training sequences (data seed
{r.data_seed}), next-token loss on every token. Training never shows more than
{max(r.train_motifs)} motifs (sequences of at most {metrics["train_length_tokens"]} tokens) nor
two motifs leaving the same node.

## Results (greedy; fresh sequences)

| motifs chained | whole-path accuracy |
|---|---|
{rows}

With two conflicting motifs leaving the start node (shown in a random order), the first step
follows the motif shown first in {s["conflict_follows_first"]:.3f} of the cases where it follows
either.

During training (100 sequences each):

| step | {" | ".join(s)} |
|---|{"---|" * len(s)}
{evals}

Training loss:

| up to step | loss |
|---|---|
{curve}

## Architecture and recipe

`GPT2LMHeadModel`: {r.n_layer} layers, d_model {r.n_embd}, {r.n_head} heads, context
{r.n_positions} (positions past {metrics["train_length_tokens"]} are never trained), vocabulary
{r.n_nodes + len(gn.SPECIAL_TOKENS)}, {metrics["n_parameters"]:,} parameters.

```json
{config_text}
```

AdamW (betas 0.9, 0.98), lr {r.lr}, weight decay {r.weight_decay}, {metrics["settings"]["warmup"]}
warmup steps then cosine decay; {metrics["steps"]} steps of batch {r.batch_size}; seed {seed};
{metrics["train_seconds"]:.1f} s on {metrics["machine"]} (shared). Rebuild with
`probekit train graphnav-incontext`. `model.safetensors` sha256 `{metrics["model_sha256"]}`.
"""


#: The training caps of the cap sweep (the shipped pair has cap 3).
SWEEP_CAPS = (1, 2)


def sweep_recipe(cap: int, fmt: str) -> GraphNavRecipe:
    """The shipped recipe of ``fmt`` with the training cap set to ``cap`` (same graph, same
    held-out fraction and seeds)."""
    base = STEPWISE_RECIPE if fmt == "stepwise" else DIRECT_RECIPE
    return replace(base, max_train_length=cap)


def build_graphnav_cap_sweep(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``graphnav-cap-sweep``: the stepwise and direct recipes again with the longest
    training path capped at 1 and at 2 edges (the shipped pair has 3), each model in its own
    checkpoint directory ``cap{c}-{fmt}`` under ``out_dir``, for the stepwise gap as a function
    of the cap. Returns ``{"cap1-stepwise": metrics, ...}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for cap in SWEEP_CAPS:
        for fmt in FORMATS_TRAINED:
            name = f"cap{cap}-{fmt}"
            results[name] = build_graphnav(
                out / name, steps, seed, progress, sweep_recipe(cap, fmt), f"graphnav-{name}"
            )
    write_sweep_summary(out, results)
    return results


def write_sweep_summary(out_dir: str | os.PathLike, results: dict[str, dict]) -> None:
    """``metrics.json`` and ``card.md`` of the cap-sweep directory, from its models' metrics."""
    out = Path(out_dir)
    rows = []
    for cap in SWEEP_CAPS:
        s, d = results[f"cap{cap}-stepwise"], results[f"cap{cap}-direct"]
        rows.append(
            {
                "cap": cap,
                "stepwise_path_accuracy": s["heldout_accuracy"],
                "stepwise_balanced_answer_accuracy": s["heldout_balanced_answer_accuracy"],
                "direct_balanced_answer_accuracy": d["heldout_balanced_answer_accuracy"],
                "train_seconds": [s["train_seconds"], d["train_seconds"]],
            }
        )
    metrics = {
        "recipe": "graphnav-cap-sweep",
        "heldout_accuracy": {k: v["heldout_accuracy"] for k, v in results.items()},
        "by_cap": rows,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    table = "\n".join(
        f"| {r['cap']} | {r['stepwise_path_accuracy']:.3f} | "
        f"{r['stepwise_balanced_answer_accuracy']:.3f} | "
        f"{r['direct_balanced_answer_accuracy']:.3f} | {r['train_seconds'][0]:.0f} + "
        f"{r['train_seconds'][1]:.0f} |"
        for r in rows
    )
    (out / "card.md").write_text(
        f"""# graphnav-cap-sweep

The `graphnav-stepwise` and `graphnav-direct` recipes again (same graph, split seeds, model and
optimisation) with the longest training path capped at {", ".join(map(str, SWEEP_CAPS))} edges
instead of 3, one checkpoint directory per model (`cap{{c}}-stepwise`, `cap{{c}}-direct`, each with
its own `card.md`, `metrics.json` and `graph.json`). Shipped for the stepwise gap as a function
of the longest training path (`analyses/graph_navigation.py`; `docs/graph_navigation.md`).

| cap | stepwise path accuracy | stepwise balanced answer | direct balanced answer | train s |
|---|---|---|---|---|
{table}

Held-out pairs of each model: 20% of the pairs under its cap and every longer pair. Rebuild
with `probekit train graphnav-cap-sweep` (the models one after another).
"""
    )


FORMATS_TRAINED = ("stepwise", "direct")


def build_graphnav_direct(
    out_dir: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``graphnav-direct``: the same graph, split and model, answering at once."""
    return build_graphnav(out_dir, steps, seed, progress, DIRECT_RECIPE, "graphnav-direct")


__all__ = [
    "DIRECT_RECIPE",
    "STEPWISE_RECIPE",
    "GraphNavRecipe",
    "build_graphnav",
    "build_graphnav_cap_sweep",
    "build_graphnav_direct",
    "build_graphnav_incontext",
    "build_graphnav_random",
    "build_graphnav_stepwise",
    "graphnav_model",
    "measure",
]
