"""Representation shattering: how far does one knowledge edit distort the entity geometry?

Source: docs/shattering.md (a transformer trained on a cyclic knowledge graph; ROME/MEMIT
edits distort the ring-shaped entity representations well beyond the edited entity, and the
distortion tracks the loss of recall and inference). Method: docs/shattering.md.

- :func:`distortion`: ``R(D*) = ||D* - D0||_F / ||D0||_F`` over pairwise Euclidean distances of
  entity representations before (``D0``) and after (``D*``) an edit; ``normalize=True`` first
  divides each matrix by its mean off-diagonal entry, so a global rescaling gives 0.
- :func:`entity_representations`: the activation at a hook at each entity's token, averaged
  over a fixed set of prefix contexts.
- :func:`measure`: one edit: R overall and per subgraph, accuracy before/after, Isomap / PCA /
  UMAP pictures of the representations before and after.
- :func:`sweep`: many counterfactual edits of ``kg-ring``-style models at cyclic distance
  d = 1..4 with several editors; R per d, accuracy drops and the correlation (r, r^2) between
  R and the drop.

Example::

    >>> import torch
    >>> from probekit.shattering import distortion
    >>> x = torch.randn(10, 4)
    >>> distortion(x, x), distortion(x, 3 * x, normalize=True) < 1e-6
    (0.0, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from probekit.report.figures.shattering import project, projection_figure, sweep_figures
from probekit.report.page import Rendered
from probekit.stats.shattering import correlation, distortion, mean_ci, pairwise_distances

__all__ = [
    "KGEdit",
    "ShatteringResult",
    "SweepResult",
    "accuracy",
    "correct",
    "correlation",
    "distortion",
    "entity_prompts",
    "entity_representations",
    "kg_contexts",
    "kg_edits",
    "measure",
    "pairwise_distances",
    "project",
    "sweep",
]

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from probekit.tasks.knowledge_graph import EvalSet, KnowledgeGraph


# ----------------------------------------------------------------------------- representations


def _contexts_tensor(contexts: Any, n_entities: int) -> torch.Tensor:
    if contexts is None:
        return torch.zeros(n_entities, 1, 0, dtype=torch.long)
    contexts = torch.as_tensor(contexts, dtype=torch.long)
    if contexts.ndim == 2:
        contexts = contexts[None].expand(n_entities, -1, -1)
    if contexts.ndim != 3 or contexts.shape[0] != n_entities or contexts.shape[1] < 1:
        raise ValueError(
            "contexts must be prefixes [n_contexts, prefix_len] shared by all entities or "
            f"[entities, n_contexts, prefix_len] = [{n_entities}, ...], got shape "
            f"{tuple(contexts.shape)}"
        )
    return contexts


def entity_prompts(
    entities: Sequence[int] | torch.Tensor, contexts: torch.Tensor | None = None
) -> torch.Tensor:
    """The prompts :func:`entity_representations` reads: prefix + entity, ``[n * c, L + 1]``
    (entity-major: the ``c`` contexts of entity 0 first). Cache them with
    ``pk.cache(model, entity_prompts(...), hook, positions=-1)`` to analyse from a store."""
    entities = torch.as_tensor(entities, dtype=torch.long).reshape(-1)
    ctx = _contexts_tensor(contexts, len(entities))
    n, c, _ = ctx.shape
    return torch.cat([ctx, entities[:, None, None].expand(n, c, 1)], dim=2).reshape(n * c, -1)


@torch.no_grad()
def entity_representations(
    model: Any,
    entities: Sequence[int] | torch.Tensor,
    hook: str,
    contexts: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Mean activation at ``hook`` at each entity's token: ``[entities, d]`` (float32, CPU).

    ``model``: a hooked model, or an :class:`~probekit.ActivationStore` (or its path) holding
    ``hook`` for :func:`entity_prompts` of the same entities and contexts (all positions, or
    ``positions=-1``). ``entities``: token ids ``[n]``; ``contexts``: prefixes placed before
    the entity, ``[n_contexts, prefix_len]`` (shared) or ``[n, n_contexts, prefix_len]`` (per
    entity), or None for the entity alone. Prompt = prefix + entity; the representation is read
    at the entity's position and averaged over the contexts.
    """
    from probekit.activations import ActivationStore, open_store

    entities = torch.as_tensor(entities, dtype=torch.long).reshape(-1)
    prompts = entity_prompts(entities, contexts)
    n, c = len(entities), len(prompts) // len(entities)
    if isinstance(model, (ActivationStore, str, os.PathLike)):
        store = open_store(model)
        if hook not in store:
            raise ValueError(f"hook {hook!r} is not in the store (it holds {store.names})")
        if "tokens" in store and not torch.equal(store["tokens"].long(), prompts):
            raise ValueError(
                "the store holds other prompts than entity_prompts(entities, contexts); cache "
                "those prompts to read entity representations from it"
            )
        acts = store[hook].float()
        if acts.dim() == 3:  # all positions cached: the entity is the last token
            acts = acts[:, -1]
        return acts.reshape(n, c, -1).mean(1)
    if hook not in model.hook_dict:
        raise ValueError(f"hook {hook!r} is not a hook of this model (see model.hook_dict)")
    length = prompts.shape[1] - 1
    device = next(model.parameters()).device
    layer = _residual_index(model, hook)
    if layer is not None:  # a residual stream: the plain model's hidden states, no hooks
        from probekit.models.runner import runner

        run = runner(model)
        rows = [
            run.residual(prompts[start : start + batch_size], layer)[:, length].float().cpu()
            for start in range(0, len(prompts), batch_size)
        ]
        return torch.cat(rows).reshape(n, c, -1).mean(1)
    from probekit.models.runner import tapping_runner

    plain = tapping_runner(model, [hook])
    if plain is not None:  # a hook the plain model serves (e.g. the last block's output)
        rows = [
            plain.tap_activations(prompts[start : start + batch_size], [hook])[1][hook][:, length]
            .float()
            .cpu()
            for start in range(0, len(prompts), batch_size)
        ]
        return torch.cat(rows).reshape(n, c, -1).mean(1)
    # Nothing after the hook's block matters: stop the forward pass there.
    parts = hook.split(".")
    stop = int(parts[1]) + 1 if parts[0] == "blocks" and parts[1].isdigit() else None
    rows = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(
            batch, names_filter=lambda name: name == hook, stop_at_layer=stop
        )
        rows.append(cache[hook][:, length].float().cpu())
    return torch.cat(rows).reshape(n, c, -1).mean(1)


def _residual_index(model: Any, hook: str) -> int | None:
    """The hidden-state index of a residual-stream hook (``blocks.{l}.hook_resid_pre`` -> l,
    ``blocks.{l}.hook_resid_post`` -> l + 1) when it is not after the last block; else None."""
    import re

    from probekit.models.runner import is_bridge

    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
    if match is None or not is_bridge(model):
        return None
    n_layers = model.cfg.n_layers
    index = int(match.group(1)) + (match.group(2) == "post")
    return index if index < int(n_layers) else None


@torch.no_grad()
def correct(
    model: Any,
    prompts: torch.Tensor,
    targets: torch.Tensor,
    candidates: torch.Tensor | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """``BoolTensor [n]``: greedy prediction at the last position of ``prompts [n, L]`` is right.

    With ``candidates [k]`` (token ids, e.g. the entities) the argmax runs over those tokens only.
    Runs without hooks through :func:`probekit.models.runner.runner` (faster).
    """
    from probekit.models.runner import runner

    run = runner(model)
    hits = []
    for start in range(0, len(prompts), batch_size):
        logits = run.logits(prompts[start : start + batch_size])[:, -1].float().cpu()
        if candidates is not None:
            predicted = candidates[logits[:, candidates].argmax(-1)]
        else:
            predicted = logits.argmax(-1)
        hits.append(predicted == targets[start : start + batch_size])
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


def accuracy(
    model: Any,
    prompts: torch.Tensor,
    targets: torch.Tensor,
    candidates: torch.Tensor | None = None,
) -> float:
    """Fraction of :func:`correct` predictions."""
    return (
        float(correct(model, prompts, targets, candidates).float().mean()) if len(targets) else 0.0
    )


# ----------------------------------------------------------------------------- projections


@dataclass
class ShatteringResult(Rendered):
    """One edit. ``frame``: one row per subgraph (R, R normalised); ``accuracy``: one row per
    evaluation (before, after, drop); ``summary``: the headline numbers."""

    frame: pd.DataFrame
    accuracy: pd.DataFrame
    summary: dict[str, Any]
    before: torch.Tensor
    after: torch.Tensor
    figs: list[go.Figure] = field(default_factory=list)
    title: str = "Representation shattering of one edit"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        return self.figs


def measure(
    model: Any,
    edited: Any,
    entities: Sequence[int] | torch.Tensor,
    hook: str,
    contexts: torch.Tensor | None = None,
    *,
    subgraphs: Mapping[str, torch.Tensor] | None = None,
    evaluations: Mapping[str, EvalSet | tuple[torch.Tensor, torch.Tensor]] | None = None,
    positions: Sequence[int] | None = None,
    edited_entity: int | None = None,
    projections: Sequence[str] = ("isomap", "pca", "umap"),
    seed: int = 0,
) -> ShatteringResult:
    """Entity geometry and accuracy of ``model`` before and ``edited`` after one edit.

    - ``entities``: token ids ``[n]``; ``hook``: e.g. ``"blocks.0.hook_resid_post"`` (after the
      edited layer); ``contexts``: prefixes for :func:`entity_representations` (overall R).
    - ``subgraphs``: ``{name: contexts}``; R is also reported for representations read in each
      subgraph's contexts (for kg-ring: edit / retain / test orders, :func:`kg_contexts`).
    - ``evaluations``: ``{name: EvalSet or (prompts [m, L], targets [m])}``; accuracy is greedy
      over the entity tokens.
    - ``positions``: cyclic position of each entity (colour); ``edited_entity``: its index in
      ``entities`` (marked in the pictures); ``projections``: any of isomap, pca, umap (empty:
      no pictures).
    """
    import pandas as pd

    entities = torch.as_tensor(entities, dtype=torch.long).reshape(-1)
    if len(entities) < 3:
        raise ValueError(f"entities must hold at least 3 token ids, got {len(entities)}")
    if edited_entity is not None and not 0 <= edited_entity < len(entities):
        raise ValueError(f"edited_entity must be an index into entities (0..{len(entities) - 1})")
    rows = []
    before = entity_representations(model, entities, hook, contexts)
    after = entity_representations(edited, entities, hook, contexts)
    rows.append(_r_row("all", before, after))
    for name, ctx in (subgraphs or {}).items():
        b = entity_representations(model, entities, hook, ctx)
        a = entity_representations(edited, entities, hook, ctx)
        rows.append(_r_row(name, b, a))
    frame = pd.DataFrame(rows)
    acc_rows = []
    for name, items in (evaluations or {}).items():
        prompts, targets = (items.prompts, items.targets) if hasattr(items, "prompts") else items
        a0 = accuracy(model, prompts, targets, entities)
        a1 = accuracy(edited, prompts, targets, entities)
        acc_rows.append(
            {"evaluation": name, "n": len(targets), "before": a0, "after": a1, "drop": a0 - a1}
        )
    acc = pd.DataFrame(acc_rows, columns=["evaluation", "n", "before", "after", "drop"])
    summary: dict[str, Any] = {"R": rows[0]["R"], "R_normalized": rows[0]["R_normalized"]}
    for row in rows[1:]:
        summary[f"R_{row['subgraph']}"] = row["R"]
    for row in acc_rows:
        summary[f"accuracy_{row['evaluation']}"] = {"before": row["before"], "after": row["after"]}
    figs = []
    if projections:
        labels = [f"token {int(e)}" for e in entities]
        figs.append(
            projection_figure(before, after, positions, labels, edited_entity, projections, seed)
        )
    return ShatteringResult(frame, acc, summary, before, after, figs)


def _r_row(name: str, before: torch.Tensor, after: torch.Tensor) -> dict[str, Any]:
    return {
        "subgraph": name,
        "R": distortion(before, after),
        "R_normalized": distortion(before, after, normalize=True),
    }


# ----------------------------------------------------------------------------- kg-ring helpers


def kg_contexts(graph: KnowledgeGraph, order: int | None = None) -> torch.Tensor:
    """Per-entity prefixes ``[E, n_contexts, 2]`` that lead to the entity by a true fact.

    For entity ``e`` and each relation ``r`` (on ring ``order``, or on all rings when None), the
    prefix is ``[x, r]`` with ``x`` the head whose ``r``-tail is ``e``; so ``e`` is read where the
    model expects it. 8 contexts per ring.
    """
    from probekit.tasks import knowledge_graph as kg

    orders = range(kg.N_ORDERS) if order is None else [order]
    rels = torch.tensor([o * 2 * kg.MAX_HOPS + j for o in orders for j in range(2 * kg.MAX_HOPS)])
    e_count = graph.n_entities
    ents = torch.arange(e_count)[:, None].expand(-1, len(rels))
    heads = graph.tail(ents, kg.inverse_relation(rels)[None, :].expand(e_count, -1))
    return torch.stack([heads, (e_count + rels)[None, :].expand(e_count, -1)], dim=2)


@dataclass(frozen=True)
class KGEdit:
    """A kg edit: fact ``(head, relation, old)`` rewritten to ``new``, ``distance`` apart."""

    head: int
    relation: int
    old: int
    new: int
    distance: int
    n_entities: int

    @property
    def relation_token(self) -> int:
        return self.n_entities + self.relation

    def request(self) -> Any:
        from probekit.edit import EditRequest

        return EditRequest(subject=[self.head], context=[self.relation_token], target=self.new)


def kg_edits(
    graph: KnowledgeGraph,
    model: Any,
    distance: int,
    n: int,
    order: int = 0,
    kind: str = "counterfactual",
    seed: int = 0,
) -> list[KGEdit]:
    """``n`` edits at cyclic distance ``distance`` on ring ``order`` (seeded).

    ``counterfactual``: a seen fact the model gets right, rewritten to the entity ``distance``
    steps from the true tail (random side). ``corrective``: a fact the model gets wrong whose
    prediction lies ``distance`` from the true tail, rewritten to the true tail. Fewer than ``n``
    are returned when fewer exist.
    """
    from probekit.tasks import knowledge_graph as kg

    if kind not in ("counterfactual", "corrective"):
        raise ValueError(f"kind must be 'counterfactual' or 'corrective', got {kind!r}")
    if not isinstance(distance, int) or not 1 <= distance <= graph.n_entities // 2:
        raise ValueError(
            f"distance must be an integer in 1..{graph.n_entities // 2}, got {distance!r}"
        )
    facts = graph.facts(heldout=False)
    facts = facts[kg.relation_parts(facts[:, 1])[0] == order]
    items = kg.fact_prompts(graph, facts)
    entities = torch.arange(graph.n_entities)
    from probekit.models.runner import runner

    logits = runner(model).logits(items.prompts)[:, -1, entities]
    predicted = logits.argmax(-1).cpu()
    gen = torch.Generator().manual_seed(seed)
    e_count = graph.n_entities
    if kind == "counterfactual":
        pool = (predicted == items.targets).nonzero().reshape(-1)
        pool = pool[torch.randperm(len(pool), generator=gen)][:n]
        side = torch.randint(0, 2, (len(pool),), generator=gen) * 2 - 1
        tails = facts[pool, 2]
        place = (graph.positions[order, tails] + side * distance) % e_count
        new = graph.orders[order, place]
        chosen = zip(pool.tolist(), new.tolist(), strict=True)
    else:
        wrong = predicted != items.targets
        dist = graph.distance(predicted, items.targets, order)
        pool = (wrong & (dist == distance)).nonzero().reshape(-1)
        pool = pool[torch.randperm(len(pool), generator=gen)][:n]
        chosen = ((i, int(facts[i, 2])) for i in pool.tolist())
    edits = []
    for i, new_tail in chosen:
        head, rel, tail = (int(v) for v in facts[i])
        old = tail if kind == "counterfactual" else int(predicted[i])
        edits.append(KGEdit(head, rel, old, new_tail, distance, e_count))
    return edits


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult(Rendered):
    """Many edits. ``frame``: one row per edit; ``summary``: R per (method, d), r and r^2."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    title: str = "Representation shattering over edit distance and editing method"
    description: str = ""

    def figures(self) -> list[go.Figure]:
        return sweep_figures(self.frame)


def summarise_sweep(frame: pd.DataFrame) -> dict[str, Any]:
    """R and accuracy drop per (method, d), each mean with its 95% t interval over the edits
    (``*_ci95_by_d``: ``[low, high]``) and the edit count per d; r, r^2 between R and the mean
    accuracy drop."""
    summary: dict[str, Any] = {"edits": len(frame)}
    for method, part in frame.groupby("method", sort=False):
        per_d = part.groupby("distance")
        summary[method] = {
            "edits_by_d": {int(d): int(v) for d, v in per_d.size().items()},
            "R_ci95_by_d": {int(d): list(mean_ci(g["R"])[1:]) for d, g in per_d},
            "drop_ci95_by_d": {int(d): list(mean_ci(g["drop"])[1:]) for d, g in per_d},
            "R_mean_by_d": {int(d): float(v) for d, v in per_d["R"].mean().items()},
            "R_normalized_mean_by_d": {
                int(d): float(v) for d, v in per_d["R_normalized"].mean().items()
            },
            "drop_mean_by_d": {int(d): float(v) for d, v in per_d["drop"].mean().items()},
            "success_rate": float(part["success"].mean()),
        }
        r, r2 = correlation(part["R"], part["drop"])
        summary[method]["r_R_vs_drop"] = r
        summary[method]["r2_R_vs_drop"] = r2
        r_d, _ = correlation(part["distance"], part["R"])
        summary[method]["r_distance_vs_R"] = r_d
    r, r2 = correlation(frame["R"], frame["drop"])
    summary["r_R_vs_drop"] = r
    summary["r2_R_vs_drop"] = r2
    return summary


def sweep(
    model: Any,
    graph: KnowledgeGraph,
    cov_tokens: torch.Tensor,
    methods: Sequence[str] = ("rome", "memit"),
    distances: Sequence[int] = (1, 2, 3, 4),
    edits_per_distance: int = 20,
    layer: int = 0,
    memit_layers: Sequence[int] = (0, 1),
    hook: str | None = None,
    edit_order: int = 0,
    retain_order: int = 1,
    eval_items: int = 256,
    seed: int = 0,
    progress: bool = True,
    edit_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    position: str = "subject",
) -> SweepResult:
    """Counterfactual edits of a kg-ring-style model at each distance, with each method.

    For every method in ``methods`` (``"rome"`` at ``layer``, ``"memit"`` over
    ``memit_layers``, ``"finetune"`` of ``layer``'s MLP output projection) and every ``d`` in
    ``distances``, ``edits_per_distance`` single edits (:func:`kg_edits` on ring
    ``edit_order``; the same edits for every method). Per edit: success, R and R normalised of
    the entity representations at ``hook`` (default: ``blocks.{layer}.hook_resid_post``, over
    all :func:`kg_contexts`), R per subgraph (edit / retain / test ring contexts), accuracy
    before and after on direct recall of the edit and retain rings (edited fact excluded),
    logical and compositional inference (``eval_items`` prompts each), and the drop (mean over
    the four). The model is edited in place on one working copy and restored after each edit.
    ``model`` itself is never changed. ``position``: the token whose MLP key ROME / MEMIT
    rewrite (``"subject"`` or ``"last"``, see :func:`probekit.edit.prepare`).
    """
    import pandas as pd

    from probekit import edit as pk_edit
    from probekit.tasks import knowledge_graph as kg

    known = {"rome", "memit", "finetune"}
    if not set(methods) <= known or not methods:
        raise ValueError(f"methods must be a non-empty subset of {sorted(known)}, got {methods}")
    test_order = ({0, 1, 2} - {edit_order, retain_order}).pop()
    hook = hook or f"blocks.{layer}.hook_resid_post"
    edit_kwargs = dict(edit_kwargs or {})
    all_layers = sorted({layer, *memit_layers})
    cov = pk_edit.key_covariance(model, cov_tokens, all_layers)
    entities = torch.arange(graph.n_entities)
    subgraphs = {
        "edit": kg_contexts(graph, edit_order),
        "retain": kg_contexts(graph, retain_order),
        "test": kg_contexts(graph, test_order),
    }
    evals = {
        "direct_edit": kg.evaluation_sets(graph, eval_items, seed, orders=[edit_order])["direct"],
        "direct_retain": kg.evaluation_sets(graph, eval_items, seed, orders=[retain_order])[
            "direct"
        ],
    }
    both = kg.evaluation_sets(graph, eval_items, seed)
    evals["logical"], evals["compositional"] = both["logical"], both["compositional"]

    def reps(m: Any) -> dict[str, torch.Tensor]:
        out = {
            name: entity_representations(m, entities, hook, ctx) for name, ctx in subgraphs.items()
        }
        # kg_contexts(graph) is the union of the three rings' 8 contexts each, so its mean is
        # the mean of the three per-ring means.
        out["all"] = torch.stack(list(out.values())).mean(0)
        return out

    def hits(m: Any) -> dict[str, torch.Tensor]:
        return {
            name: correct(m, items.prompts, items.targets, entities)
            for name, items in evals.items()
        }

    def accs(h: dict[str, torch.Tensor], skip: tuple[int, int]) -> dict[str, float]:
        # The edited fact itself is excluded from every evaluation.
        res = {}
        for name, items in evals.items():
            keep = ~((items.prompts[:, 0] == skip[0]) & (items.prompts[:, -1] == skip[1]))
            res[name] = float(h[name][keep].float().mean())
        return res

    base_reps = reps(model)
    base_hits = hits(model)
    work = pk_edit.copy_model(model)
    edits = {
        d: kg_edits(graph, model, d, edits_per_distance, edit_order, seed=seed + d)
        for d in distances
    }
    saved = pk_edit.mlp_weights(work, all_layers)
    # Every ROME / MEMIT edit's output shift is optimised on the unedited model (the working
    # copy is restored after each edit), so they are all found up front in one batch per
    # (layer, settings); ROME at layer L and MEMIT ending at L with the same settings share them.
    all_edits = [e for items in edits.values() for e in items]
    prepared = [pk_edit.prepare(work, e.request(), position) for e in all_edits]
    found: dict[tuple, torch.Tensor] = {}

    def shifts_for(method: str, kwargs: Mapping[str, Any]) -> torch.Tensor:
        shift_layer = layer if method == "rome" else max(memit_layers)
        settings = {k: v for k, v in kwargs.items() if k != "mom2_weight"}
        key = (shift_layer, tuple(sorted(settings.items())))
        if key not in found:
            found[key] = pk_edit.optimise_output_shifts(work, prepared, shift_layer, **settings)
        return found[key]

    rows = []
    from probekit.progress import bar as progress_bar

    total = sum(len(v) for v in edits.values()) * len(methods)
    bar = progress_bar(total=total, desc="shatter", unit="edit", enabled=progress)
    for method in methods:
        kwargs = dict(edit_kwargs.get(method, {}))
        shifts = shifts_for(method, kwargs) if method in ("rome", "memit") else None
        index = 0
        for d, items in edits.items():
            for e in items:
                request = e.request()
                skip = (e.head, e.relation_token)
                base_acc = accs(base_hits, skip)
                if method == "rome":
                    deltas = pk_edit.rome_deltas(
                        work, request, layer, cov[layer], position, shift=shifts[index]
                    )
                    pk_edit.apply_deltas(work, deltas)
                elif method == "memit":
                    mom2 = kwargs.get("mom2_weight", 10.0)
                    deltas = pk_edit.memit_deltas(
                        work,
                        [request],
                        memit_layers,
                        cov,
                        mom2,
                        position,
                        shifts=shifts[index : index + 1],
                    )
                    pk_edit.apply_deltas(work, deltas)
                else:
                    tuned = pk_edit.finetune(work, request, layers=[layer], **kwargs)
                    pk_edit.set_mlp_weights(work, pk_edit.mlp_weights(tuned, [layer]))
                    del tuned
                ok = pk_edit.success(work, [request])
                new_reps = reps(work)
                new_acc = accs(hits(work), skip)
                row = {
                    "method": method,
                    "distance": d,
                    "head": e.head,
                    "relation": kg.relation_name(e.relation),
                    "old": e.old,
                    "new": e.new,
                    "success": bool(ok.success[0]),
                    "target_prob": float(ok.target_prob[0]),
                    "R": distortion(base_reps["all"], new_reps["all"]),
                    "R_normalized": distortion(base_reps["all"], new_reps["all"], normalize=True),
                }
                for name in subgraphs:
                    row[f"R_{name}"] = distortion(base_reps[name], new_reps[name])
                for name in evals:
                    row[f"before_{name}"] = base_acc[name]
                    row[f"after_{name}"] = new_acc[name]
                row["acc_before"] = float(np.mean(list(base_acc.values())))
                row["acc_after"] = float(np.mean(list(new_acc.values())))
                row["drop"] = row["acc_before"] - row["acc_after"]
                rows.append(row)
                pk_edit.set_mlp_weights(work, saved)
                bar.update(1)
                index += 1
    bar.close()
    frame = pd.DataFrame(rows)
    return SweepResult(frame, summarise_sweep(frame))
