"""Graph navigation task: graphs, path counts and sampling against networkx and scipy, the split,
the formats, in-context exemplars, files, and rollout scoring on planted generations."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from scipy import stats

from probekit.tasks import graph_navigation as gn


def _small_graphs():
    yield gn.hierarchical_dag(layers=4, width=3, p=0.6, seed=1)
    yield gn.hierarchical_dag(layers=5, width=4, p=0.4, seed=2)
    yield gn.random_dag(n_nodes=12, p=0.3, seed=3)
    yield gn.random_dag(n_nodes=9, p=0.5, seed=4)


def test_graphs_are_dags_with_edges_only_between_adjacent_layers():
    g = gn.hierarchical_dag(layers=5, width=4, p=0.5, seed=0)
    assert nx.is_directed_acyclic_graph(g)
    assert g.number_of_nodes() == 20
    assert all(g.nodes[v]["level"] + 1 == g.nodes[w]["level"] for v, w in g.edges)
    r = gn.random_dag(n_nodes=15, p=0.3, seed=0)
    assert nx.is_directed_acyclic_graph(r) and all(u < v for u, v in r.edges)
    # same seed, same graph; edge density near p
    assert sorted(gn.hierarchical_dag(5, 4, 0.5, 0).edges) == sorted(g.edges)
    big = gn.hierarchical_dag(layers=6, width=10, p=0.4, seed=0)
    assert abs(big.number_of_edges() / (5 * 100) - 0.4) < 0.06


def test_path_counts_match_networkx_enumeration():
    for g in _small_graphs():
        counts = gn.path_counts(g)
        for u, v in itertools.product(g.nodes, g.nodes):
            expected = 1 if u == v else len(list(nx.all_simple_paths(g, u, v)))
            assert counts[u, v] == expected, (u, v)


def test_distances_and_longest_paths_match_networkx():
    for g in _small_graphs():
        dist, longest = gn.distances(g), gn.longest_paths(g)
        for u, v in itertools.product(g.nodes, g.nodes):
            paths = [len(p) - 1 for p in nx.all_simple_paths(g, u, v)] if u != v else [0]
            if paths:
                assert dist[u, v] == nx.shortest_path_length(g, u, v) == min(paths)
                assert longest[u, v] == max(paths)
            else:
                assert np.isinf(dist[u, v]) and longest[u, v] == -np.inf


def test_sampled_paths_are_valid_paths_to_the_goal():
    for g in _small_graphs():
        counts = gn.path_counts(g)
        pairs = gn.all_pairs(g)
        pairs = pairs[counts[pairs[:, 0], pairs[:, 1]] > 0]
        for (s, t), path in zip(pairs, gn.sample_paths(g, pairs, 0)):
            assert path[0] == s and path[-1] == t
            assert nx.is_path(g, path)


def test_path_sampling_is_uniform_chi_square():
    # complete layered graph 4 layers x 3 nodes: 3 * 3 = 9 paths from a layer-0 node to a
    # layer-3 node, all equally likely under uniform sampling
    g = gn.hierarchical_dag(layers=4, width=3, p=1.0, seed=0)
    assert gn.path_counts(g)[0, 9] == 9
    # an unbalanced graph: node 0 -> {1, 2}, 1 -> 3, 2 -> {4, 5}, all -> 6: 3 paths, of which
    # a per-step uniform walk would pick 0-1-3-6 half the time
    h = nx.DiGraph()
    h.add_nodes_from(range(7))
    h.add_edges_from([(0, 1), (0, 2), (1, 3), (2, 4), (2, 5), (3, 6), (4, 6), (5, 6)])
    for graph, (s, t), n_paths in ((g, (0, 9), 9), (h, (0, 6), 3)):
        draws = gn.sample_paths(graph, np.tile([[s, t]], (9000, 1)), generator=5)
        freq = {}
        for p in draws:
            freq[tuple(p)] = freq.get(tuple(p), 0) + 1
        assert len(freq) == n_paths
        observed = np.array(list(freq.values()))
        result = stats.chisquare(observed)
        assert result.pvalue > 0.001, (freq, result)


def test_split_caps_training_length_and_partitions_pairs():
    g = gn.hierarchical_dag(layers=6, width=10, p=0.4, seed=0)
    split = gn.make_split(g, max_train_length=3, heldout_fraction=0.2, seed=0)
    counts = gn.path_counts(g)
    train = np.concatenate([split.train_connected, split.train_unconnected])
    held = np.concatenate([split.heldout_connected, split.heldout_unconnected])
    assert gn.pair_lengths(g, train).max() <= 3
    assert (counts[split.train_connected[:, 0], split.train_connected[:, 1]] > 0).all()
    assert (counts[split.heldout_unconnected[:, 0], split.heldout_unconnected[:, 1]] == 0).all()
    everything = {tuple(p) for p in gn.all_pairs(g)}
    assert {tuple(p) for p in train} | {tuple(p) for p in held} == everything
    assert not {tuple(p) for p in train} & {tuple(p) for p in held}
    lengths = gn.pair_lengths(g, held)
    assert (lengths > 3).sum() > 0 and (lengths <= 3).sum() > 0
    seqs = gn.training_sequences(g, split, "stepwise", 2000, seed=0)
    n = g.number_of_nodes()
    pairs = np.stack([seqs[:, 1].numpy(), seqs[:, 0].numpy()], 1)
    assert {tuple(p) for p in pairs} <= {tuple(p) for p in train}
    # every stepwise row is a path (connected) or a walk (unconnected) of at most 3 edges
    for row in seqs.tolist():
        nodes = [t for t in row[1:] if t < n]
        assert len(nodes) - 1 <= 3 and nx.is_path(g, nodes)
        answer = gn.vocabulary(n)[row[len(nodes) + 1]]
        assert answer == (gn.YES if counts[nodes[0], row[0]] > 0 else gn.NO)
        assert (answer == gn.YES) == (nodes[-1] == row[0])


def test_formats_and_tokenizer_agree():
    n = 12
    step = gn.encode_stepwise([[0, 4, 9], [1, 5]], [9, 10], n, connected=[True, False])
    assert gn.decode(step[0], n) == "9 0 4 9 <yes> <eos>"
    assert gn.decode(step[1], n) == "10 1 5 <no> <eos>"
    direct = gn.encode_direct([[0, 9]], [True], n)
    assert gn.decode(direct[0], n) == "9 0 <yes> <eos>"
    tok = gn.tokenizer(n)
    assert tok("9 0 4 9 <yes> <eos>")["input_ids"] == step[0].tolist()


def test_incontext_exemplars_chain_and_conflict():
    n = 30
    batch = gn.incontext_sequences(n, 50, motifs=[2, 3], motif_length=2, seed=0)
    ex, q = gn.token_id(gn.EX, n), gn.token_id(gn.QUERY, n)
    for row, plen, path in zip(batch.tokens.tolist(), batch.prompt_len.tolist(), batch.paths):
        qpos = row.index(q)
        assert row[qpos + 1] == path[-1] and row[qpos + 2] == path[0] and plen == qpos + 3
        motifs = [row[i + 1 : i + 4] for i, t in enumerate(row[:qpos]) if t == ex]
        # the motifs chain into the answer path: each edge of it is shown in one motif
        edges = {(m[i], m[i + 1]) for m in motifs for i in range(2)}
        assert set(zip(path[:-1], path[1:])) == edges
        assert row[plen : plen + len(path) - 1] == path[1:]
    conflict = gn.incontext_sequences(n, 200, motifs=2, motif_length=2, conflicting=True, seed=1)
    assert (conflict.first_choice != conflict.second_choice).all()
    firsts = []
    for row, f, s in zip(conflict.tokens.tolist(), conflict.first_choice, conflict.second_choice):
        qpos = row.index(q)
        start = row[qpos + 2]
        leaving = [row[i + 2] for i, t in enumerate(row[:qpos]) if t == ex and row[i + 1] == start]
        assert leaving == [int(f), int(s)]
        firsts.append(leaving[0] == row[qpos + 3])
    # the answer row follows one rival motif; which one is shown first is a fair coin
    assert 0.35 < np.mean(firsts) < 0.65


def test_save_load_graph_roundtrip(tmp_path):
    g = gn.hierarchical_dag(layers=4, width=5, p=0.5, seed=3)
    split = gn.make_split(g, 2, 0.25, seed=1)
    gn.save_graph(g, tmp_path, split)
    back = gn.load_graph(tmp_path)
    assert isinstance(back, nx.DiGraph)
    assert sorted(back.nodes) == list(range(20)) and all(type(v) is int for v in back.nodes)
    assert sorted(back.edges) == sorted(g.edges)
    assert [back.nodes[v]["level"] for v in back.nodes] == [v // 5 for v in range(20)]
    assert gn.heldout_pairs(tmp_path) == [tuple(map(int, p)) for p in split.heldout_connected]
    with pytest.raises(ValueError, match="graph.json"):
        gn.load_graph(tmp_path / "missing")


def test_score_paths_on_planted_generations():
    g = gn.hierarchical_dag(layers=4, width=3, p=1.0, seed=0)
    g.remove_edge(0, 3)
    pairs = [(0, 9)] * 4 + [(1, 10)]
    n = g.number_of_nodes()
    # planted continuations after the prompt "goal start"
    yes, no, eos = (gn.token_id(t, n) for t in (gn.YES, gn.NO, gn.EOS))
    conts = torch.tensor(
        [
            [4, 7, 9, yes, eos],  # correct
            [3, 6, 9, yes, eos],  # 0 -> 3 removed: misstep at step 0, reaches goal
            [4, 7, 10, no, eos],  # valid walk that misses the goal: planning failure
            [4, 7, 9, 9, 9],  # never terminated
            [5, 8, 10, yes, eos],  # correct
        ]
    )
    paths, answers, terminated = gn.parse_rollouts([p[0] for p in pairs], conts, n)
    assert paths[0] == [0, 4, 7, 9] and answers[2] == gn.NO and terminated == [1, 1, 1, 0, 1]
    scores = gn.score_paths(g, pairs, paths, terminated)
    assert scores["valid"].tolist() == [True, False, True, False, True]
    assert scores["first_misstep"].tolist() == [-1, 0, -1, 3, -1]
    assert scores["reached_goal"].tolist() == [True, True, False, False, True]
    assert scores["correct"].tolist() == [True, False, False, False, True]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="layers"):
        gn.hierarchical_dag(layers=1)
    with pytest.raises(ValueError, match="p must"):
        gn.random_dag(p=0.0)
    with pytest.raises(ValueError, match="pairs must be connected"):
        g = gn.hierarchical_dag(3, 2, 1.0, 0)
        g.remove_edges_from(list(g.out_edges(0)))
        gn.sample_paths(g, [[0, 4]])
    with pytest.raises(ValueError, match="fmt"):
        gn.training_sequences(gn.hierarchical_dag(3, 2), None, "chain", 3)
