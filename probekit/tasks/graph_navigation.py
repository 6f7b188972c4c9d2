"""Graph navigation: does a transformer find a path from a start to a goal node by writing it out?

The synthetic task of the stepwise-inference study (Khona et al. 2024, see
``docs/graph_navigation.md``). A directed acyclic graph is drawn from a seed:

- *hierarchical*: ``layers`` layers of ``width`` nodes, an edge from each node of layer ``l`` to
  each node of layer ``l + 1`` with probability ``p`` (node ``layer * width + i``);
- *random order*: ``n_nodes`` nodes in a fixed order, an edge ``i -> j`` for every ``i < j`` with
  probability ``p``.

Either way node ids are a topological order, and every node carries a ``level`` (its layer, or its
id for a random-order DAG): a path only climbs levels. A question is a pair ``(start, goal)`` with
``level(start) < level(goal)``; it is *connected* when at least one path leads from start to
goal. Paths are counted by dynamic programming (:func:`path_counts`) and sampled uniformly among
all paths (:func:`sample_paths`: the next node ``w`` of ``v`` is drawn with probability
``count(w -> goal) / count(v -> goal)``).

Formats (one word per token; node ``v`` is the token ``str(v)`` with id ``v``):

- stepwise: ``goal start n1 ... goal <yes> <eos>`` for a connected pair; for an unconnected one
  a walk from start that never climbs above the goal's level (drawn uniformly step by step, it
  ends where no such successor is left) and then ``<no> <eos>``: the model answers the
  path-exists question after writing its path;
- direct: ``goal start <yes> <eos>`` or ``goal start <no> <eos>``: the answer at once.

The prompt is ``goal start`` in both. A training split (:func:`make_split`) caps the length of
the paths seen in training (so how far a model stitches sub-paths together can be measured
against it) and holds out a fraction of the pairs under the cap.

In-context exemplars (:func:`incontext_sequences`): node labels drawn afresh per sequence, a
chain of ``motifs`` path segments ("motifs") shown in the context in shuffled order as
``<ex> a b c``, then the query ``<q> goal start`` and the path through the chained motifs. The
conflicting variant shows two motifs that leave the start node for different nodes and meet
again; which one the model follows (the first shown or the second) measures a primacy bias.

Files: :func:`save_graph` writes ``graph.json`` (nodes, levels, edges, the split) into a
checkpoint directory; :func:`load_graph` and :func:`heldout_pairs` read it back.

Rollouts: :func:`sample_continuations` extends prompts with a model (any causal LM probekit
accepts, through the runner's KV-cache ``generate``: batched, temperature 0 = greedy) and :func:`parse_rollouts` turns generated tokens into
paths and answers, which :func:`score_paths` checks against the graph.

Example::

    >>> from probekit.tasks import graph_navigation as gn
    >>> g = gn.hierarchical_dag(layers=3, width=2, p=1.0, seed=0)
    >>> int(gn.path_counts(g)[0, 4])
    2
    >>> gn.decode(gn.encode_stepwise([[0, 2, 4]], [4], g.number_of_nodes())[0], 6)
    '4 0 2 4 <yes> <eos>'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import torch

from probekit.validation import as_generator, check_choice, check_fraction, check_int

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

PAD, EOS, YES, NO, EX, QUERY, UNK = "<pad>", "<eos>", "<yes>", "<no>", "<ex>", "<q>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, YES, NO, EX, QUERY, UNK)
FORMATS = ("stepwise", "direct")
KINDS = ("hierarchical", "random")
GRAPH_FILE = "graph.json"


# ----------------------------------------------------------------------------- graphs


def hierarchical_dag(layers: int = 6, width: int = 10, p: float = 0.4, seed: int = 0) -> nx.DiGraph:
    """A layered DAG: ``layers x width`` nodes, node ``l * width + i`` in layer ``l``; each of the
    ``width**2`` possible edges between adjacent layers is present with probability ``p``
    (independently, drawn from ``seed``). Nodes carry ``level`` = layer."""
    check_int("layers", layers, low=2)
    check_int("width", width, low=1)
    check_fraction("p", p, open_low=True)
    rng = np.random.default_rng(seed)
    graph = nx.DiGraph(kind="hierarchical", layers=layers, width=width, p=p, seed=seed)
    for v in range(layers * width):
        graph.add_node(v, level=v // width)
    for layer in range(layers - 1):
        present = rng.random((width, width)) < p
        for i, j in zip(*np.nonzero(present)):
            graph.add_edge(layer * width + int(i), (layer + 1) * width + int(j))
    return graph


def random_dag(n_nodes: int = 30, p: float = 0.15, seed: int = 0) -> nx.DiGraph:
    """A random-order DAG: an edge ``i -> j`` for each ``i < j`` with probability ``p`` (drawn
    from ``seed``). Nodes carry ``level`` = their id."""
    check_int("n_nodes", n_nodes, low=2)
    check_fraction("p", p, open_low=True)
    rng = np.random.default_rng(seed)
    graph = nx.DiGraph(kind="random", n_nodes=n_nodes, p=p, seed=seed)
    graph.add_nodes_from((v, {"level": v}) for v in range(n_nodes))
    present = np.triu(rng.random((n_nodes, n_nodes)) < p, k=1)
    graph.add_edges_from((int(i), int(j)) for i, j in zip(*np.nonzero(present)))
    return graph


def _check_graph(graph: nx.DiGraph) -> int:
    if not isinstance(graph, nx.DiGraph):
        raise ValueError(f"graph must be a networkx.DiGraph, got {type(graph).__name__}")
    n = graph.number_of_nodes()
    if sorted(graph.nodes) != list(range(n)):
        raise ValueError("graph nodes must be the integers 0..n-1")
    if any(u >= v for u, v in graph.edges):
        raise ValueError("graph edges must go from a lower to a higher node id (topological ids)")
    return n


def adjacency(graph: nx.DiGraph) -> np.ndarray:
    """``bool [n, n]``: ``A[u, v]`` is True when ``u -> v`` is an edge."""
    n = _check_graph(graph)
    a = np.zeros((n, n), dtype=bool)
    for u, v in graph.edges:
        a[u, v] = True
    return a


def levels(graph: nx.DiGraph) -> np.ndarray:
    """``int [n]``: each node's level (layer for a hierarchical DAG, id otherwise)."""
    n = _check_graph(graph)
    return np.array([graph.nodes[v].get("level", v) for v in range(n)], dtype=np.int64)


def path_counts(graph: nx.DiGraph) -> np.ndarray:
    """``int64 [n, n]``: ``C[u, v]`` = number of directed paths from ``u`` to ``v`` (``C[v, v] =
    1``, the empty path). Dynamic programming in reverse topological order:
    ``C[u] = e_u + sum_{w in succ(u)} C[w]``, i.e. ``C = (I - A)^-1`` for the DAG's adjacency."""
    a = adjacency(graph)
    n = len(a)
    counts = np.eye(n, dtype=np.int64)
    for u in range(n - 1, -1, -1):
        succ = np.nonzero(a[u])[0]
        if len(succ):
            counts[u] += counts[succ].sum(0)
    return counts


def distances(graph: nx.DiGraph) -> np.ndarray:
    """``float [n, n]``: shortest directed path length (edges) from ``u`` to ``v``; ``inf`` when
    there is none, 0 on the diagonal."""
    a = adjacency(graph)
    n = len(a)
    dist = np.full((n, n), np.inf)
    np.fill_diagonal(dist, 0.0)
    for u in range(n - 1, -1, -1):
        succ = np.nonzero(a[u])[0]
        if len(succ):
            dist[u] = np.minimum(dist[u], dist[succ].min(0) + 1)
    return dist


def longest_paths(graph: nx.DiGraph) -> np.ndarray:
    """``float [n, n]``: longest directed path length from ``u`` to ``v``; ``-inf`` when there is
    none, 0 on the diagonal."""
    a = adjacency(graph)
    n = len(a)
    longest = np.full((n, n), -np.inf)
    np.fill_diagonal(longest, 0.0)
    for u in range(n - 1, -1, -1):
        succ = np.nonzero(a[u])[0]
        if len(succ):
            longest[u] = np.maximum(longest[u], longest[succ].max(0) + 1)
    return longest


def _walk_allowed(lv: np.ndarray) -> np.ndarray:
    """``bool [n, n]``: ``allowed[w, g]`` = a walk towards goal ``g`` may step on ``w``
    (``level(w) <= level(g)`` and ``w != g``)."""
    allowed = lv[:, None] <= lv[None, :]
    np.fill_diagonal(allowed, False)
    return allowed


def longest_walks(graph: nx.DiGraph) -> np.ndarray:
    """``float [n, n]``: for an unconnected pair, the longest walk from ``u`` that never climbs
    above ``level(g)`` (the walks :func:`sample_walks` draws); computed for every ``(u, g)``."""
    a = adjacency(graph)
    allowed = _walk_allowed(levels(graph))
    n = len(a)
    longest = np.zeros((n, n))
    for u in range(n - 1, -1, -1):
        succ = np.nonzero(a[u])[0]
        if len(succ):
            step = np.where(allowed[succ], longest[succ] + 1, 0.0)
            longest[u] = step.max(0)
    return longest


def all_pairs(graph: nx.DiGraph) -> np.ndarray:
    """``int64 [m, 2]``: every question ``(start, goal)`` with ``level(start) < level(goal)``, in
    row-major order."""
    lv = levels(graph)
    s, g = np.nonzero(lv[:, None] < lv[None, :])
    return np.stack([s, g], 1).astype(np.int64)


def _as_pairs(pairs: Any, n: int | None = None, name: str = "pairs") -> np.ndarray:
    arr = np.asarray(pairs, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be [m, 2] (start, goal) node ids, got shape {arr.shape}")
    if n is not None and arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must hold node ids in 0..{n - 1}")
    return arr


# ----------------------------------------------------------------------------- sampling


def sample_paths(
    graph: nx.DiGraph,
    pairs: Any,
    generator: int | torch.Generator | None = 0,
    counts: np.ndarray | None = None,
) -> list[list[int]]:
    """One path per connected pair ``pairs [m, 2]``, drawn uniformly among all its paths.

    From node ``v`` the next node ``w`` (a successor) is drawn with probability
    ``C[w, goal] / C[v, goal]`` (:func:`path_counts`), so a whole path has probability
    ``1 / C[start, goal]``. Vectorised over pairs; returns node lists, start first, goal last.
    """
    n = _check_graph(graph)
    pairs = _as_pairs(pairs, n)
    gen = as_generator(generator, "generator")
    a = adjacency(graph)
    counts = path_counts(graph) if counts is None else counts
    if len(pairs) and (counts[pairs[:, 0], pairs[:, 1]] == 0).any():
        raise ValueError("pairs must be connected (at least one path from start to goal)")
    paths = [[int(s)] for s in pairs[:, 0]]
    current, goal = pairs[:, 0].copy(), pairs[:, 1]
    active = current != goal
    while active.any():
        idx = np.nonzero(active)[0]
        weights = a[current[idx]] * counts[:, goal[idx]].T.astype(np.float64)
        nxt = torch.multinomial(torch.from_numpy(weights), 1, generator=gen)[:, 0].numpy()
        for i, w in zip(idx, nxt):
            paths[i].append(int(w))
        current[idx] = nxt
        active = current != goal
    return paths


def sample_walks(
    graph: nx.DiGraph, pairs: Any, generator: int | torch.Generator | None = 0
) -> list[list[int]]:
    """One walk per unconnected pair ``pairs [m, 2]``: from start, the next node is drawn
    uniformly among the successors ``w`` with ``level(w) <= level(goal)``; the walk ends where
    there is none. Node lists, start first."""
    n = _check_graph(graph)
    pairs = _as_pairs(pairs, n)
    gen = as_generator(generator, "generator")
    a = adjacency(graph)
    allowed = _walk_allowed(levels(graph))
    walks = [[int(s)] for s in pairs[:, 0]]
    current, goal = pairs[:, 0].copy(), pairs[:, 1]
    while True:
        weights = a[current] & allowed[:, goal].T
        active = weights.any(1)
        if not active.any():
            return walks
        idx = np.nonzero(active)[0]
        w = torch.from_numpy(weights[idx].astype(np.float64))
        nxt = torch.multinomial(w, 1, generator=gen)[:, 0].numpy()
        for i, v in zip(idx, nxt):
            walks[i].append(int(v))
        current[idx] = nxt


# ----------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Split:
    """Questions ``int64 [m, 2]`` (start, goal) of a graph: connected and unconnected pairs for
    training and held out, and the cap on the path length seen in training."""

    train_connected: np.ndarray
    train_unconnected: np.ndarray
    heldout_connected: np.ndarray
    heldout_unconnected: np.ndarray
    max_train_length: int

    def to_json(self) -> dict[str, Any]:
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Split:
        return cls(
            **{
                k: np.asarray(record[k], dtype=np.int64).reshape(-1, 2)
                for k in ("train_connected", "train_unconnected")
                + ("heldout_connected", "heldout_unconnected")
            },
            max_train_length=int(record["max_train_length"]),
        )


def pair_lengths(graph: nx.DiGraph, pairs: Any) -> np.ndarray:
    """``int64 [m]``: the length that counts against the training cap: the longest path for a
    connected pair, the longest walk (:func:`longest_walks`) for an unconnected one."""
    pairs = _as_pairs(pairs, graph.number_of_nodes())
    longest = longest_paths(graph)[pairs[:, 0], pairs[:, 1]]
    walks = longest_walks(graph)[pairs[:, 0], pairs[:, 1]]
    return np.where(np.isfinite(longest), longest, walks).astype(np.int64)


def make_split(
    graph: nx.DiGraph, max_train_length: int, heldout_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Hold out ``heldout_fraction`` of the pairs whose length (:func:`pair_lengths`) is at most
    ``max_train_length`` (drawn from ``seed``, separately for connected and unconnected pairs);
    every longer pair is held out too. Training therefore never shows a path longer than the cap."""
    check_int("max_train_length", max_train_length, low=1)
    check_fraction("heldout_fraction", heldout_fraction, open_high=True)
    rng = np.random.default_rng(seed)
    pairs = all_pairs(graph)
    connected = path_counts(graph)[pairs[:, 0], pairs[:, 1]] > 0
    lengths = pair_lengths(graph, pairs)
    parts: dict[str, np.ndarray] = {}
    for name, mask in (("connected", connected), ("unconnected", ~connected)):
        short = pairs[mask & (lengths <= max_train_length)]
        order = rng.permutation(len(short))
        n_held = int(round(heldout_fraction * len(short)))
        held = np.concatenate([short[order[:n_held]], pairs[mask & (lengths > max_train_length)]])
        parts[f"train_{name}"] = _sorted_pairs(short[order[n_held:]])
        parts[f"heldout_{name}"] = _sorted_pairs(held)
    return Split(**parts, max_train_length=max_train_length)


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    pairs = pairs.reshape(-1, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


# ----------------------------------------------------------------------------- tokens


def vocabulary(n_nodes: int) -> list[str]:
    """Token strings by id: ``"0" .. str(n_nodes - 1)``, then :data:`SPECIAL_TOKENS`."""
    check_int("n_nodes", n_nodes, low=1)
    return [str(v) for v in range(n_nodes)] + list(SPECIAL_TOKENS)


def token_id(token: str, n_nodes: int) -> int:
    """Id of a special token (``"<yes>"``, ...) for a graph of ``n_nodes`` nodes."""
    return n_nodes + SPECIAL_TOKENS.index(token)


def tokenizer(n_nodes: int, max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A ``transformers`` WordLevel tokenizer over :func:`vocabulary` (whitespace split, nothing
    added automatically): ``"7 0 3 7 <yes>"`` -> ``[7, 0, 3, 7, n + 2]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary(n_nodes))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {} if max_length is None else {"model_max_length": max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def decode(tokens: Any, n_nodes: int, skip_pad: bool = True) -> str:
    """Space-separated text of one token sequence ``[L]`` (``<pad>`` dropped by default)."""
    words = vocabulary(n_nodes)
    ids = torch.as_tensor(tokens).tolist()
    return " ".join(words[i] for i in ids if not (skip_pad and words[i] == PAD))


def _pad_rows(rows: list[list[int]], n_nodes: int, length: int | None) -> torch.Tensor:
    width = max(len(r) for r in rows) if length is None else length
    if any(len(r) > width for r in rows):
        raise ValueError(f"a sequence is longer than length={width}")
    out = torch.full((len(rows), width), token_id(PAD, n_nodes), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def encode_stepwise(
    paths: Sequence[Sequence[int]],
    goals: Sequence[int],
    n_nodes: int,
    connected: Sequence[bool] | None = None,
    length: int | None = None,
) -> torch.Tensor:
    """``LongTensor [m, L]``: ``goal start n1 ... nk <yes|no> <eos>`` padded with ``<pad>``.
    ``connected`` (default all True) chooses the answer token."""
    connected = [True] * len(paths) if connected is None else list(connected)
    yes, no, eos = (token_id(t, n_nodes) for t in (YES, NO, EOS))
    rows = [
        [int(g), *map(int, p), yes if c else no, eos]
        for p, g, c in zip(paths, goals, connected, strict=True)
    ]
    return _pad_rows(rows, n_nodes, length)


def encode_direct(
    pairs: Any, connected: Sequence[bool], n_nodes: int, length: int | None = None
) -> torch.Tensor:
    """``LongTensor [m, L]``: ``goal start <yes|no> <eos>`` padded with ``<pad>``."""
    pairs = _as_pairs(pairs, n_nodes)
    yes, no, eos = (token_id(t, n_nodes) for t in (YES, NO, EOS))
    rows = [
        [int(g), int(s), yes if c else no, eos] for (s, g), c in zip(pairs, connected, strict=True)
    ]
    return _pad_rows(rows, n_nodes, length)


def prompts(pairs: Any, n_nodes: int) -> torch.Tensor:
    """``LongTensor [m, 2]``: the prompt ``goal start`` of each pair ``(start, goal)``."""
    pairs = _as_pairs(pairs, n_nodes)
    return torch.from_numpy(pairs[:, ::-1].copy())


def max_sequence_length(graph: nx.DiGraph) -> int:
    """Tokens in the longest stepwise sequence of ``graph``: goal, the longest path or walk
    (:func:`longest_paths`, :func:`longest_walks`) plus its start, answer, ``<eos>``."""
    longest = longest_paths(graph)
    edges = max(float(longest[np.isfinite(longest)].max()), float(longest_walks(graph).max()))
    return int(edges) + 4


def training_sequences(
    graph: nx.DiGraph,
    split: Split,
    fmt: str,
    n_sequences: int,
    seed: int = 0,
    unconnected_fraction: float = 0.5,
) -> torch.Tensor:
    """``LongTensor [n_sequences, max_sequence_length]``: training sequences of the split's
    training pairs in format ``fmt`` (``"stepwise"`` or ``"direct"``). A row is an unconnected
    pair with probability ``unconnected_fraction`` (0 when the split has none), else a connected
    one; pairs uniformly within each group; each connected row a fresh uniform path."""
    check_choice("fmt", fmt, FORMATS)
    check_int("n_sequences", n_sequences, low=1)
    frac = check_fraction("unconnected_fraction", unconnected_fraction)
    n = graph.number_of_nodes()
    gen = torch.Generator().manual_seed(seed)
    if not len(split.train_unconnected):
        frac = 0.0
    is_unconnected = torch.rand(n_sequences, generator=gen) < frac
    n_un = int(is_unconnected.sum())
    conn = split.train_connected[
        torch.randint(len(split.train_connected), (n_sequences - n_un,), generator=gen).numpy()
    ]
    rows = np.empty((n_sequences, 2), dtype=np.int64)
    rows[~is_unconnected.numpy()] = conn
    if n_un:
        un_idx = torch.randint(len(split.train_unconnected), (n_un,), generator=gen).numpy()
        rows[is_unconnected.numpy()] = split.train_unconnected[un_idx]
    connected = ~is_unconnected.numpy()
    length = max_sequence_length(graph)
    if fmt == "direct":
        return encode_direct(rows, connected, n, length)
    paths: list[list[int]] = [[] for _ in range(n_sequences)]
    ci, ui = np.nonzero(connected)[0], np.nonzero(~connected)[0]
    for i, p in zip(ci, sample_paths(graph, rows[ci], gen)):
        paths[i] = p
    if len(ui):
        for i, p in zip(ui, sample_walks(graph, rows[ui], gen)):
            paths[i] = p
    return encode_stepwise(paths, rows[:, 1], n, connected, length)


def loss_mask(length: int) -> torch.Tensor:
    """``bool [length - 1]`` over target positions: every target but the first (the start node,
    which is the question, not something to predict)."""
    mask = torch.ones(length - 1, dtype=torch.bool)
    mask[0] = False
    return mask


# ----------------------------------------------------------------------------- in-context exemplars


@dataclass(frozen=True)
class InContextBatch:
    """In-context sequences and what they ask: ``tokens [m, L]`` (padded), ``prompt_len [m]``
    (tokens up to and including ``start`` after ``<q>``), the answer paths, and for conflicting
    items which next node the first-shown and the second-shown motif give."""

    tokens: torch.Tensor
    prompt_len: torch.Tensor
    paths: list[list[int]]
    first_choice: torch.Tensor
    second_choice: torch.Tensor


def incontext_sequences(
    n_nodes: int,
    n_sequences: int,
    motifs: int | Sequence[int],
    motif_length: int = 2,
    conflicting: bool = False,
    seed: int | torch.Generator = 0,
    length: int | None = None,
) -> InContextBatch:
    """Sequences whose graph is given in context by chained motif exemplars.

    Each sequence draws ``motifs * motif_length + 1`` distinct node labels (``+ motif_length - 1``
    for the conflicting detour), forms a chain of ``motifs`` path segments of ``motif_length``
    edges (segment ``i`` ends where segment ``i + 1`` starts), shows them in shuffled order as
    ``<ex> a b c``, then asks ``<q> goal start`` with start and goal the chain's ends, and answers
    with the whole path, ``<yes> <eos>``. ``motifs`` may be a list to draw from per sequence.

    ``conflicting=True`` adds a second motif leaving the start node through other nodes to the
    same end as the first motif; both orders of the two are drawn (each half the time), and
    ``first_choice`` / ``second_choice`` hold the node after ``start`` in the motif shown first /
    second. Without conflict both are the one right next node.
    """
    check_int("n_sequences", n_sequences, low=1)
    check_int("motif_length", motif_length, low=2 if conflicting else 1)
    choices = [motifs] if isinstance(motifs, int) else list(motifs)
    for k in choices:
        check_int("motifs", k, low=1)
    gen = as_generator(seed, "seed")
    ex, q, yes, eos = (token_id(t, n_nodes) for t in (EX, QUERY, YES, EOS))
    need = max(choices) * motif_length + 1 + (motif_length - 1 if conflicting else 0)
    if need > n_nodes:
        raise ValueError(f"n_nodes={n_nodes} is too few for {max(choices)} motifs of that length")
    rows, prompt_lens, paths, first, second = [], [], [], [], []
    for _ in range(n_sequences):
        k = choices[int(torch.randint(len(choices), (1,), generator=gen))]
        labels = torch.randperm(n_nodes, generator=gen).tolist()
        chain = labels[: k * motif_length + 1]
        segments = [chain[i * motif_length : (i + 1) * motif_length + 1] for i in range(k)]
        right = chain[1]
        other = right
        if conflicting:
            detour = labels[k * motif_length + 1 : k * motif_length + motif_length]
            alt = [chain[0], *detour, chain[motif_length]]
            other = alt[1]
            segments.append(alt)
        order = torch.randperm(len(segments), generator=gen).tolist()
        if conflicting:
            # the two rival motifs are the last two shown, in a random order of the two
            rest = [i for i in order if i not in (0, k)]
            pair = [0, k] if bool(torch.rand(1, generator=gen) < 0.5) else [k, 0]
            order = rest + pair
        context = [tok for i in order for tok in [ex, *segments[i]]]
        seq = [*context, q, chain[-1], chain[0]]
        prompt_lens.append(len(seq))
        rows.append([*seq, *chain[1:], yes, eos])
        paths.append(chain)
        shown = [segments[i][1] for i in order if i in (0, k)] if conflicting else [right, right]
        first.append(shown[0] if conflicting else right)
        second.append(shown[1] if conflicting else other)
    tokens = _pad_rows(rows, n_nodes, length)
    return InContextBatch(
        tokens=tokens,
        prompt_len=torch.tensor(prompt_lens),
        paths=paths,
        first_choice=torch.tensor(first),
        second_choice=torch.tensor(second),
    )


# ----------------------------------------------------------------------------- files


def save_graph(
    graph: nx.DiGraph, directory: str | os.PathLike, split: Split | None = None, **extra: Any
) -> Path:
    """Write ``graph.json`` into ``directory``: the graph's settings, node levels, edges, and
    the split (if given) plus any ``extra`` JSON fields. Returns the file's path."""
    n = _check_graph(graph)
    record = {
        "graph": {k: v for k, v in graph.graph.items()},
        "n_nodes": n,
        "levels": levels(graph).tolist(),
        "edges": sorted([int(u), int(v)] for u, v in graph.edges),
        "split": None if split is None else split.to_json(),
        **extra,
    }
    path = Path(directory) / GRAPH_FILE
    path.write_text(json.dumps(record) + "\n")
    return path


def _read_record(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(checkpoint_dir) / GRAPH_FILE
    if not path.is_file():
        raise ValueError(f"checkpoint_dir must hold {GRAPH_FILE}, none at {path}")
    return json.loads(path.read_text())


def load_graph(checkpoint_dir: str | os.PathLike) -> nx.DiGraph:
    """The graph saved by :func:`save_graph` in ``checkpoint_dir``: a ``networkx.DiGraph`` with
    integer nodes ``0..n-1`` carrying ``level``, and the generator's settings in ``graph.graph``."""
    record = _read_record(checkpoint_dir)
    graph = nx.DiGraph(**record["graph"])
    graph.add_nodes_from((v, {"level": lv}) for v, lv in enumerate(record["levels"]))
    graph.add_edges_from((int(u), int(v)) for u, v in record["edges"])
    return graph


def load_split(checkpoint_dir: str | os.PathLike) -> Split:
    """The :class:`Split` saved with the graph in ``checkpoint_dir``."""
    record = _read_record(checkpoint_dir)
    if record.get("split") is None:
        raise ValueError(f"{Path(checkpoint_dir) / GRAPH_FILE} holds no split")
    return Split.from_json(record["split"])


def heldout_pairs(checkpoint_dir: str | os.PathLike) -> list[tuple[int, int]]:
    """The held-out connected ``(start, goal)`` pairs of the checkpoint's split (never trained
    on: unseen pairs under the length cap, and every pair above it)."""
    return [(int(s), int(g)) for s, g in load_split(checkpoint_dir).heldout_connected]


# ----------------------------------------------------------------------------- rollouts


def _logits_of(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    out = model(tokens)
    return out if isinstance(out, torch.Tensor) else out.logits


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _runner_or_none(model: Any) -> Any:
    """``probekit.models.runner.runner(model)``, or None for a model it does not take (a plain
    module computing logits, such as a planted test model)."""
    # Decide by type names first, so a plain module never pays the transformers import.
    known = ("transformers.", "transformer_lens.", "probekit.models.")
    if not isinstance(model, (str, os.PathLike)) and not any(
        cls.__module__.startswith(known) for cls in type(model).__mro__
    ):
        return None
    from probekit.models.runner import runner

    try:
        return runner(model)
    except TypeError:
        return None


@torch.no_grad()
def sample_continuations(
    model: Any,
    prefix: torch.Tensor,
    steps: int,
    temperature: float = 0.0,
    generator: int | torch.Generator | None = 0,
) -> torch.Tensor:
    """Extend ``prefix [B, k]`` by ``steps`` tokens: ``LongTensor [B, steps]`` (on the CPU).

    Temperature 0 takes the argmax (greedy decoding); otherwise each token is drawn from
    ``softmax(logits / temperature)`` with ``generator``. A model the runner takes (a
    ``pk.load`` result, a Hugging Face causal LM, a checkpoint path) decodes through
    ``runner(model).generate`` with its KV cache; any other module (``model(tokens)`` ->
    logits) with a forward over the whole prefix at each step. Batched over rows.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    check_int("steps", steps, low=0)
    gen = as_generator(generator, "generator")
    tokens = torch.as_tensor(prefix, dtype=torch.long)
    if steps == 0:
        return torch.empty(len(tokens), 0, dtype=torch.long)
    run = _runner_or_none(model)
    if run is not None:
        return run.generate(tokens, steps, float(temperature), gen).cpu()
    device = _model_device(model)
    tokens = tokens.to(device)
    out = torch.empty(len(tokens), 0, dtype=torch.long, device=device)
    for _ in range(steps):
        logits = _logits_of(model, torch.cat([tokens, out], 1))[:, -1].float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1).cpu()
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0].to(device)
        out = torch.cat([out, nxt[:, None]], 1)
    return out.cpu()


def parse_rollouts(
    starts: Sequence[int], continuations: torch.Tensor, n_nodes: int
) -> tuple[list[list[int]], list[str], list[bool]]:
    """Read generated continuations ``[B, steps]`` (after the prompt ``goal start``) back.

    Returns, per row: the path (``start`` then the node tokens up to the first non-node token),
    the answer (that token's string, or ``""`` if the row ran out of steps), and whether the
    path was terminated (a non-node token followed it).
    """
    words = vocabulary(n_nodes)
    paths, answers, terminated = [], [], []
    for s, row in zip(starts, torch.as_tensor(continuations).tolist(), strict=True):
        path = [int(s)]
        answer = ""
        for tok in row:
            if tok < n_nodes:
                path.append(tok)
            else:
                answer = words[tok]
                break
        paths.append(path)
        answers.append(answer)
        terminated.append(answer != "")
    return paths, answers, terminated


def score_paths(
    graph: nx.DiGraph, pairs: Any, paths: Sequence[Sequence[int]], terminated: Sequence[bool]
) -> dict[str, np.ndarray]:
    """Check generated paths against the graph.

    ``valid``: every consecutive pair of the path is an edge (a path of one node is valid);
    ``first_misstep``: index of the first non-edge step (-1 if none); ``reached_goal``: the
    path ends at the goal and was terminated there; ``correct``: both. Arrays ``[m]``.
    """
    n = _check_graph(graph)
    pairs = _as_pairs(pairs, n)
    a = adjacency(graph)
    valid, first_bad, reached = [], [], []
    for (s, g), path, term in zip(pairs, paths, terminated, strict=True):
        steps = list(zip(path[:-1], path[1:]))
        bad = [i for i, (u, v) in enumerate(steps) if not (0 <= u < n and 0 <= v < n and a[u, v])]
        valid.append(not bad and path[0] == s)
        first_bad.append(bad[0] if bad else -1)
        reached.append(bool(term) and path[-1] == g)
    valid_a, reached_a = np.array(valid, bool), np.array(reached, bool)
    return {
        "valid": valid_a,
        "first_misstep": np.array(first_bad, dtype=np.int64),
        "reached_goal": reached_a,
        "correct": valid_a & reached_a,
    }


def rollout(
    model: Any,
    graph: nx.DiGraph,
    pairs: Any,
    temperature: float = 0.0,
    samples: int = 1,
    generator: int | torch.Generator | None = 0,
    steps: int | None = None,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Let ``model`` answer every pair ``pairs [m, 2]`` ``samples`` times from the prompt
    ``goal start``, and score the answers.

    Rows are pair-major (``pair 0 sample 0, pair 0 sample 1, ...``). Returns ``pairs [m *
    samples, 2]``, ``sample [m * samples]``, ``paths`` (node lists, start first), ``answers``
    (the token after the path), ``terminated``, and :func:`score_paths`'s arrays. ``steps``
    (default :func:`max_sequence_length` - 1) bounds the tokens generated per row.
    """
    n = _check_graph(graph)
    pairs = _as_pairs(pairs, n)
    check_int("samples", samples, low=1)
    gen = as_generator(generator, "generator")
    steps = max_sequence_length(graph) - 1 if steps is None else check_int("steps", steps, low=1)
    rows = np.repeat(pairs, samples, axis=0)
    prompt = prompts(rows, n)
    conts = [
        sample_continuations(model, chunk, steps, temperature, gen)
        for chunk in prompt.split(batch_size)
    ]
    continuations = torch.cat(conts) if conts else torch.empty(0, steps, dtype=torch.long)
    paths, answers, terminated = parse_rollouts(rows[:, 0], continuations, n)
    return {
        "pairs": rows,
        "sample": np.tile(np.arange(samples), len(pairs)),
        "paths": paths,
        "answers": answers,
        "terminated": np.array(terminated, bool),
        **score_paths(graph, rows, paths, terminated),
    }


def answer_correct(connected: Any, answers: Sequence[str], correct: Any) -> np.ndarray:
    """``bool [m]``: whether each answer to the path-exists question is right. A connected pair
    needs ``<yes>`` after a correct path (for the direct format the path is just ``start``, so
    ``correct`` is passed as True); an unconnected pair needs ``<no>``."""
    connected = np.asarray(connected, bool)
    said_yes = np.array([a == YES for a in answers], bool)
    said_no = np.array([a == NO for a in answers], bool)
    return np.where(connected, said_yes & np.asarray(correct, bool), said_no)


def incontext_continuations(
    model: Any, batch: InContextBatch, steps: int, temperature: float = 0.0, generator: Any = 0
) -> list[list[int]]:
    """Continuations (``steps`` tokens each) of every prompt of an :class:`InContextBatch`;
    prompts of equal length are decoded together."""
    gen = as_generator(generator, "generator")
    out: list[list[int]] = [[] for _ in range(len(batch.paths))]
    lens = batch.prompt_len.tolist()
    for length in sorted(set(lens)):
        idx = [i for i, k in enumerate(lens) if k == length]
        cont = sample_continuations(model, batch.tokens[idx, :length], steps, temperature, gen)
        for i, row in zip(idx, cont.tolist()):
            out[i] = row
    return out


def incontext_correct(
    continuations: Sequence[Sequence[int]], batch: InContextBatch, n_nodes: int
) -> np.ndarray:
    """``bool [m]``: the continuation writes the whole chained path after ``start`` and then
    ``<yes>``."""
    yes = token_id(YES, n_nodes)
    return np.array(
        [
            list(c[: len(p) - 1]) == list(p[1:]) and len(c) >= len(p) and c[len(p) - 1] == yes
            for c, p in zip(continuations, batch.paths, strict=True)
        ],
        bool,
    )
