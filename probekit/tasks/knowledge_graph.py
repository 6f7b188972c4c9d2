"""A synthetic knowledge graph of entities on three cyclic orders (representation shattering).

Which question does it serve? Representation shattering: a transformer trained from scratch on
this graph stores each entity's place on three rings; a knowledge edit changes one fact, and
``probekit.shattering`` measures how far the entity geometry is distorted. The construction
follows the source study (scaled down for a CPU):

- ``E`` entities ``e0 .. e{E-1}`` are arranged in three independent random cyclic orders
  I, II and III (``graph.orders[o]`` lists the entities around ring ``o``).
- Each order gives 8 relations: the clockwise (``C``) or anticlockwise (``A``) neighbour at
  1..4 hops, named ``I_C1 .. III_A4``: 24 relation tokens. Relation id ``r = 8 o + 4 a + (k-1)``
  for order ``o`` in 0..2, direction ``a`` (0 = C, 1 = A) and hops ``k`` in 1..4.
- A fact is ``(head, relation, tail)``; ``tail = orders[o][(pos_o(head) +/- k) mod E]``.

Training sequences (:func:`walks`) are random walks alternating entity and relation tokens,
``e1 I_C4 e3 III_A2 e7 ...``: each entity after a relation is the tail of that fact. With
probability ``skip_prob`` a step composes two relations and omits the intermediate entity,
``e1 I_C4 III_A2 e9``, which is what makes compositional inference learnable at all.

Held-out facts give the three evaluations (:func:`evaluation_sets`):

- **direct recall**: prompts ``[head, relation]`` for facts that occur in training walks;
- **logical inference**: facts never seen in a walk, whose inverse (``I_A2`` for ``I_C2``, tail
  and head swapped) is seen; one of each inverse pair at most is held out;
- **compositional inference**: prompts ``[head, r1, r2]`` whose two-hop composition never occurs
  in a walk, while both one-hop facts are seen.

A graph is stored as ``graph.json`` beside its checkpoint (:func:`save_graph`,
:func:`load_graph`): the orders and both held-out sets.

Ring geometry: :func:`projection_angles` projects entity representations to 2-D (PCA or
Isomap) and reads each entity's angle; :func:`circular_rank_correlation` says how well that
angular order matches the entities' true places on a ring (1 = exactly, up to rotation and
direction).

Token ids: entity ``e{i}`` is id ``i``; relation ``r`` is id ``E + r``; then ``<pad>`` and
``<unk>``. Accuracy is greedy over entity tokens only (:func:`entity_accuracy`): the question
is which entity the model recalls, not whether it would rather emit a relation token.

Example::

    >>> from probekit.tasks import knowledge_graph as kg
    >>> g = kg.make_graph(16, seed=0)
    >>> kg.relation_name(kg.relation_id(1, "A", 2))
    'II_A2'
    >>> int(g.tail(g.tail(3, kg.relation_id(0, "C", 2)), kg.relation_id(0, "A", 2)))
    3
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from probekit.validation import as_generator, check_int, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

N_ORDERS = 3
MAX_HOPS = 4
N_RELATIONS = N_ORDERS * 2 * MAX_HOPS
ORDER_NAMES = ("I", "II", "III")
DIRECTIONS = ("C", "A")
PAD = "<pad>"
UNK = "<unk>"

#: Defaults of the shipped ``kg-ring`` task.
DEFAULT_ENTITIES = 128
DEFAULT_LENGTH = 16


# ----------------------------------------------------------------------------- relations


def relation_id(order: int, direction: str, hops: int) -> int:
    """Relation id of ``order`` (0..2), ``direction`` ("C" or "A") and ``hops`` (1..4)."""
    if order not in range(N_ORDERS):
        raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'C' or 'A', got {direction!r}")
    if hops not in range(1, MAX_HOPS + 1):
        raise ValueError(f"hops must be in 1..{MAX_HOPS}, got {hops!r}")
    return order * 2 * MAX_HOPS + DIRECTIONS.index(direction) * MAX_HOPS + hops - 1


def relation_name(relation: int) -> str:
    """``"I_C1"`` .. ``"III_A4"`` for relation id 0..23."""
    if relation not in range(N_RELATIONS):
        raise ValueError(f"relation must be an id in 0..{N_RELATIONS - 1}, got {relation!r}")
    order, rest = divmod(relation, 2 * MAX_HOPS)
    direction, hops = divmod(rest, MAX_HOPS)
    return f"{ORDER_NAMES[order]}_{DIRECTIONS[direction]}{hops + 1}"


def relation_parts(relations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, signed_hops)`` of relation ids (any shape): clockwise +k, anticlockwise -k."""
    relations = torch.as_tensor(relations, dtype=torch.long)
    order, rest = relations // (2 * MAX_HOPS), relations % (2 * MAX_HOPS)
    direction, hops = rest // MAX_HOPS, rest % MAX_HOPS + 1
    return order, torch.where(direction == 0, hops, -hops)


def inverse_relation(relations: torch.Tensor) -> torch.Tensor:
    """The inverse relation id: ``I_C2`` <-> ``I_A2`` (same order and hops, other direction)."""
    relations = torch.as_tensor(relations, dtype=torch.long)
    order, rest = relations // (2 * MAX_HOPS), relations % (2 * MAX_HOPS)
    return order * 2 * MAX_HOPS + (rest + MAX_HOPS) % (2 * MAX_HOPS)


# ----------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class KnowledgeGraph:
    """Entities on three cyclic orders, and which facts / compositions are held out.

    - ``orders``: ``LongTensor [3, E]``, the entities around each ring;
    - ``positions``: ``LongTensor [3, E]``, ``positions[o, e]`` = place of entity ``e`` on ring o;
    - ``heldout``: ``BoolTensor [E, 24]``, True for facts never seen in training walks;
    - ``heldout_composition``: ``BoolTensor [E, 24, 24]``, True for two-hop compositions
      ``(head, r1, r2)`` never seen in training walks (their one-hop facts are all seen).
    """

    orders: torch.Tensor
    positions: torch.Tensor
    heldout: torch.Tensor
    heldout_composition: torch.Tensor

    @property
    def n_entities(self) -> int:
        return int(self.orders.shape[1])

    @property
    def vocab_size(self) -> int:
        return self.n_entities + N_RELATIONS + 2

    def tail(self, heads: torch.Tensor | int, relations: torch.Tensor | int) -> torch.Tensor:
        """Tail entity of ``(heads, relations)`` (broadcast; ids, relation ids 0..23)."""
        heads = torch.as_tensor(heads, dtype=torch.long)
        order, shift = relation_parts(relations)
        place = (self.positions[order, heads] + shift) % self.n_entities
        return self.orders[order, place]

    def distance(self, a: torch.Tensor | int, b: torch.Tensor | int, order: int) -> torch.Tensor:
        """Cyclic distance (0..E/2) between entities ``a`` and ``b`` on ring ``order``."""
        delta = (
            self.positions[order, torch.as_tensor(b)] - self.positions[order, torch.as_tensor(a)]
        )
        delta = delta % self.n_entities
        return torch.minimum(delta, self.n_entities - delta)

    def facts(self, heldout: bool | None = None) -> torch.Tensor:
        """Facts ``LongTensor [n, 3]`` (head, relation, tail), ordered by head then relation.

        ``heldout=None``: all ``E * 24``; True: only held-out facts; False: only seen ones.
        """
        heads = torch.arange(self.n_entities).repeat_interleave(N_RELATIONS)
        relations = torch.arange(N_RELATIONS).repeat(self.n_entities)
        keep = torch.ones_like(heads, dtype=torch.bool)
        if heldout is not None:
            keep = self.heldout.reshape(-1) == heldout
        heads, relations = heads[keep], relations[keep]
        return torch.stack([heads, relations, self.tail(heads, relations)], dim=1)


def make_graph(
    n_entities: int = DEFAULT_ENTITIES,
    heldout_fraction: float = 0.1,
    composition_heldout_fraction: float = 0.1,
    seed: int | torch.Generator = 0,
) -> KnowledgeGraph:
    """Draw the three random cyclic orders and the held-out facts and compositions.

    ``heldout_fraction`` of all ``E * 24`` facts is held out, never both members of an inverse
    pair (so each held-out fact is logically implied by a seen one). Of the two-hop compositions
    whose one-hop facts are both seen, ``composition_heldout_fraction`` is held out. Same seed,
    same graph.
    """
    if not isinstance(n_entities, int) or n_entities < 2 * MAX_HOPS + 1:
        raise ValueError(
            f"n_entities must be an integer >= {2 * MAX_HOPS + 1} (so the 4-hop neighbours on "
            f"each side are distinct), got {n_entities!r}"
        )
    if not 0.0 <= heldout_fraction <= 0.5:
        raise ValueError(f"heldout_fraction must be in [0, 0.5], got {heldout_fraction!r}")
    if not 0.0 <= composition_heldout_fraction < 1.0:
        raise ValueError(
            f"composition_heldout_fraction must be in [0, 1), got {composition_heldout_fraction!r}"
        )
    gen = as_generator(seed)
    orders = torch.stack([torch.randperm(n_entities, generator=gen) for _ in range(N_ORDERS)])
    positions = torch.empty_like(orders)
    positions.scatter_(1, orders, torch.arange(n_entities).expand(N_ORDERS, -1).contiguous())
    graph = KnowledgeGraph(orders, positions, torch.zeros(0), torch.zeros(0))

    # One clockwise fact per inverse pair; hold out either it or its anticlockwise inverse.
    clockwise = [relation_id(o, "C", k) for o in range(N_ORDERS) for k in range(1, MAX_HOPS + 1)]
    heads = torch.arange(n_entities).repeat_interleave(len(clockwise))
    rels = torch.tensor(clockwise).repeat(n_entities)
    n_held = round(heldout_fraction * n_entities * N_RELATIONS)
    chosen = torch.randperm(len(heads), generator=gen)[:n_held]
    flip = torch.randint(0, 2, (n_held,), generator=gen).bool()
    h, r = heads[chosen], rels[chosen]
    tails = graph.tail(h, r)
    held_heads = torch.where(flip, tails, h)
    held_rels = torch.where(flip, inverse_relation(r), r)
    heldout = torch.zeros(n_entities, N_RELATIONS, dtype=torch.bool)
    heldout[held_heads, held_rels] = True

    mids = graph.tail(
        torch.arange(n_entities)[:, None], torch.arange(N_RELATIONS)[None, :]
    )  # [E, 24]
    both_seen = ~heldout[:, :, None] & ~heldout[mids]  # [E, 24, 24]
    draw = torch.rand(both_seen.shape, generator=gen)
    heldout_composition = both_seen & (draw < composition_heldout_fraction)
    return KnowledgeGraph(orders, positions, heldout, heldout_composition)


# ----------------------------------------------------------------------------- tokens


def vocabulary(n_entities: int) -> list[str]:
    """Token strings by id: entities ``e0..``, then the 24 relations, ``<pad>``, ``<unk>``."""
    return (
        [f"e{i}" for i in range(n_entities)]
        + [relation_name(r) for r in range(N_RELATIONS)]
        + [PAD, UNK]
    )


def pad_id(n_entities: int) -> int:
    return n_entities + N_RELATIONS


def tokenizer(n_entities: int, length: int | None = None) -> PreTrainedTokenizerFast:
    """A WordLevel fast tokenizer over :func:`vocabulary`: ``"e3 I_C2"`` -> ``[3, E + 1]``.

    Nothing is added automatically; an unknown word becomes ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary(n_entities))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {} if length is None else {"model_max_length": length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def as_text(tokens: torch.Tensor, n_entities: int) -> list[str]:
    """Space-separated text of each row of ``tokens [N, L]``."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [N, L], got shape {tuple(tokens.shape)}")
    words = vocabulary(n_entities)
    return [" ".join(words[i] for i in row) for row in tokens.tolist()]


def walks(
    graph: KnowledgeGraph,
    n: int,
    length: int = DEFAULT_LENGTH,
    skip_prob: float = 0.2,
    seed: int | torch.Generator = 0,
) -> torch.Tensor:
    """``n`` random walks of exactly ``length`` tokens: ``LongTensor [n, length]``.

    Each walk starts at a uniform entity; each step draws a relation uniformly among those whose
    fact is not held out; with probability ``skip_prob`` the step is a composition ``r1 r2``
    (intermediate entity omitted, composition not held out). Token ids as in :func:`vocabulary`.
    """
    check_positive_int("n", n)
    check_int("length", length, low=3)
    if not 0.0 <= skip_prob < 1.0:
        raise ValueError(f"skip_prob must be in [0, 1), got {skip_prob!r}")
    gen = as_generator(seed)
    e_count = graph.n_entities
    steps = (length - 1) // 2 + 1
    pad = pad_id(e_count)

    def allowed_relation(heads: torch.Tensor) -> torch.Tensor:
        # Rejection sampling: at most a small fraction is held out, so few rounds are needed.
        rel = torch.randint(0, N_RELATIONS, heads.shape, generator=gen)
        bad = graph.heldout[heads, rel]
        while bool(bad.any()):
            rel[bad] = torch.randint(0, N_RELATIONS, (int(bad.sum()),), generator=gen)
            bad = graph.heldout[heads, rel]
        return rel

    current = torch.randint(0, e_count, (n,), generator=gen)
    slots = [current[:, None]]
    for _ in range(steps):
        r1 = allowed_relation(current)
        mid = graph.tail(current, r1)
        r2 = allowed_relation(mid)
        skip = torch.rand(n, generator=gen) < skip_prob
        skip &= ~graph.heldout_composition[current, r1, r2]
        nxt = torch.where(skip, graph.tail(mid, r2), mid)
        second = torch.where(skip, e_count + r2, nxt)
        third = torch.where(skip, nxt, torch.full_like(nxt, pad))
        slots.append(torch.stack([e_count + r1, second, third], dim=1))
        current = nxt
    raw = torch.cat(slots, dim=1)
    valid = raw != pad
    # Stable sort moves the kept tokens to the front in their original order.
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    return raw.gather(1, order)[:, :length].contiguous()


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class EvalSet:
    """Prompts ``LongTensor [n, L]`` (token ids) and target entity ids ``LongTensor [n]``."""

    prompts: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> EvalSet:
        return EvalSet(self.prompts[index], self.targets[index])


def fact_prompts(graph: KnowledgeGraph, facts: torch.Tensor) -> EvalSet:
    """Prompts ``[head, relation]`` and targets ``tail`` for ``facts [n, 3]``."""
    facts = torch.as_tensor(facts, dtype=torch.long).reshape(-1, 3)
    prompts = torch.stack([facts[:, 0], graph.n_entities + facts[:, 1]], dim=1)
    return EvalSet(prompts, facts[:, 2].clone())


def evaluation_sets(
    graph: KnowledgeGraph,
    max_items: int | None = None,
    seed: int | torch.Generator = 0,
    orders: Sequence[int] | None = None,
) -> dict[str, EvalSet]:
    """The three evaluations: ``"direct"``, ``"logical"`` and ``"compositional"``.

    ``direct`` prompts every seen fact, ``logical`` every held-out fact, ``compositional`` every
    held-out composition ``[head, r1, r2]``. ``orders`` keeps only facts whose relation (for
    compositions: both relations) lies on those rings. ``max_items`` subsamples each set
    (seeded) for speed.
    """
    gen = as_generator(seed)
    keep_orders = torch.tensor(list(range(N_ORDERS) if orders is None else orders))
    sets: dict[str, EvalSet] = {}
    for name, held in (("direct", False), ("logical", True)):
        facts = graph.facts(heldout=held)
        facts = facts[torch.isin(relation_parts(facts[:, 1])[0], keep_orders)]
        sets[name] = fact_prompts(graph, facts)
    h, r1, r2 = graph.heldout_composition.nonzero(as_tuple=True)
    on_rings = torch.isin(relation_parts(r1)[0], keep_orders) & torch.isin(
        relation_parts(r2)[0], keep_orders
    )
    h, r1, r2 = h[on_rings], r1[on_rings], r2[on_rings]
    e_count = graph.n_entities
    prompts = torch.stack([h, e_count + r1, e_count + r2], dim=1)
    sets["compositional"] = EvalSet(prompts, graph.tail(graph.tail(h, r1), r2))
    if max_items is not None:
        for name, items in sets.items():
            if len(items) > max_items:
                pick = torch.randperm(len(items), generator=gen)[:max_items].sort().values
                sets[name] = items.subset(pick)
    return sets


def entity_accuracy(logits: torch.Tensor, targets: torch.Tensor, n_entities: int) -> torch.Tensor:
    """``BoolTensor [n]``: argmax over entity tokens of ``logits [n, vocab]`` equals target."""
    return logits[:, :n_entities].argmax(dim=-1) == targets


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, eval_set: EvalSet, n_entities: int, batch_size: int = 1024
) -> float:
    """Accuracy of a causal LM on ``eval_set`` (a HF model or bridge returning logits)."""
    correct = 0
    for start in range(0, len(eval_set), batch_size):
        prompts = eval_set.prompts[start : start + batch_size]
        out = model(prompts)
        logits = out.logits if hasattr(out, "logits") else out
        hits = entity_accuracy(
            logits[:, -1], eval_set.targets[start : start + batch_size], n_entities
        )
        correct += int(hits.sum())
    return correct / max(len(eval_set), 1)


# ----------------------------------------------------------------------------- files


def save_graph(graph: KnowledgeGraph, path: str | os.PathLike) -> None:
    """Write ``graph.json``: the orders, held-out facts ``[head, relation]`` and compositions."""
    payload = {
        "n_entities": graph.n_entities,
        "orders": graph.orders.tolist(),
        "heldout_facts": graph.heldout.nonzero().tolist(),
        "heldout_compositions": graph.heldout_composition.nonzero().tolist(),
    }
    Path(path).write_text(json.dumps(payload) + "\n")


def load_graph(path: str | os.PathLike) -> KnowledgeGraph:
    """Read a ``graph.json`` (a checkpoint directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "graph.json"
    if not path.is_file():
        raise FileNotFoundError(f"no knowledge-graph description at {path} (graph.json)")
    data = json.loads(path.read_text())
    e_count = int(data["n_entities"])
    orders = torch.tensor(data["orders"], dtype=torch.long)
    positions = torch.empty_like(orders)
    positions.scatter_(1, orders, torch.arange(e_count).expand(N_ORDERS, -1).contiguous())
    heldout = torch.zeros(e_count, N_RELATIONS, dtype=torch.bool)
    facts = torch.tensor(data["heldout_facts"], dtype=torch.long).reshape(-1, 2)
    heldout[facts[:, 0], facts[:, 1]] = True
    comps = torch.zeros(e_count, N_RELATIONS, N_RELATIONS, dtype=torch.bool)
    triples = torch.tensor(data["heldout_compositions"], dtype=torch.long).reshape(-1, 3)
    comps[triples[:, 0], triples[:, 1], triples[:, 2]] = True
    return KnowledgeGraph(orders, positions, heldout, comps)


# ----------------------------------------------------------------------------- ring geometry


def circular_rank_correlation(angles: torch.Tensor, positions: torch.Tensor) -> float:
    """How well a recovered cyclic order matches the true one: Spearman correlation in [-1, 1].

    ``angles [E]``: each entity's angle in a 2-D projection of its representation;
    ``positions [E]``: its true place (0..E-1) on the ring. The entities are ranked by angle
    (the recovered cyclic order); a cycle has no start and no direction, so the correlation of
    ``(+/- rank + shift) mod E`` with ``positions`` is maximised over the E shifts and both
    directions. Ranks are permutations of 0..E-1, so Pearson on them is Spearman's rho. 1 means
    the projection lays the entities around the ring in exactly their true order.
    """
    angles = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    positions = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
    if len(angles) != len(positions) or len(angles) < 3:
        raise ValueError(
            f"angles and positions must be [E] with the same E >= 3, got {len(angles)} and "
            f"{len(positions)}"
        )
    e_count = len(angles)
    rank = torch.argsort(torch.argsort(angles)).to(torch.float64)
    shifts = torch.arange(e_count, dtype=torch.float64)[:, None]
    candidates = torch.cat([(rank + shifts) % e_count, (-rank + shifts) % e_count])  # [2E, E]
    a = candidates - candidates.mean(1, keepdim=True)
    b = positions - positions.mean()
    rho = (a @ b) / (a.norm(dim=1) * b.norm()).clamp_min(1e-12)
    return float(rho.max())


def projection_angles(
    representations: torch.Tensor, method: str = "pca", n_neighbors: int = 10
) -> torch.Tensor:
    """Angle ``[E]`` of each row of ``representations [E, d]`` in a 2-D projection.

    ``method``: ``"pca"`` (the top two principal components) or ``"isomap"`` (scikit-learn's
    Isomap with ``n_neighbors``, which unrolls a ring that is curved in more than two
    dimensions). The angle is ``atan2`` about the projection's centroid.
    """
    reps = torch.as_tensor(representations, dtype=torch.float64)
    if reps.ndim != 2 or len(reps) < 3:
        raise ValueError(f"representations must be [E >= 3, d], got shape {tuple(reps.shape)}")
    if method == "pca":
        centred = reps - reps.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ v[:2].T
    elif method == "isomap":
        from sklearn.manifold import Isomap

        xy = torch.as_tensor(
            Isomap(n_components=2, n_neighbors=min(n_neighbors, len(reps) - 1)).fit_transform(
                reps.numpy()
            )
        )
    else:
        raise ValueError(f"method must be 'pca' or 'isomap', got {method!r}")
    xy = xy - xy.mean(0)
    return torch.atan2(xy[:, 1], xy[:, 0])
