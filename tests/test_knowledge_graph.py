"""probekit.tasks.knowledge_graph and the kg-ring recipe, checked against plain-Python walks."""

from __future__ import annotations

import json

import pytest
import torch

from probekit.tasks import knowledge_graph as kg
from probekit.tasks.knowledge_graph import load_graph
from probekit.train.knowledge_graph import KGRingRecipe, build_kg_ring


@pytest.fixture(scope="module")
def graph():
    return kg.make_graph(24, heldout_fraction=0.1, composition_heldout_fraction=0.2, seed=5)


def _tail_by_hand(graph, head, relation):
    order, rest = divmod(relation, 8)
    direction, hops = divmod(rest, 4)
    ring = graph.orders[order].tolist()
    step = hops + 1 if direction == 0 else -(hops + 1)
    return ring[(ring.index(head) + step) % len(ring)]


def test_relation_names_and_ids_round_trip():
    names = [kg.relation_name(r) for r in range(24)]
    assert names[:3] == ["I_C1", "I_C2", "I_C3"] and names[-1] == "III_A4"
    assert len(set(names)) == 24
    assert kg.relation_id(2, "A", 4) == 23 and kg.relation_id(1, "C", 1) == 8
    assert kg.inverse_relation(torch.tensor([0, 5, 23])).tolist() == [4, 1, 19]
    with pytest.raises(ValueError, match="hops must be in 1..4"):
        kg.relation_id(0, "C", 5)


def test_orders_are_permutations_and_tails_follow_the_rings(graph):
    for ring in graph.orders:
        assert sorted(ring.tolist()) == list(range(24))
    heads = torch.arange(24).repeat_interleave(24)
    rels = torch.arange(24).repeat(24)
    tails = graph.tail(heads, rels)
    by_hand = [_tail_by_hand(graph, h, r) for h, r in zip(heads.tolist(), rels.tolist())]
    assert tails.tolist() == by_hand
    # an anticlockwise k-hop undoes a clockwise k-hop
    assert torch.equal(graph.tail(tails, kg.inverse_relation(rels)), heads)


def test_heldout_facts_have_seen_inverses(graph):
    held = graph.facts(heldout=True)
    assert len(held) == round(0.1 * 24 * 24)
    inverse_heads, inverse_rels = held[:, 2], kg.inverse_relation(held[:, 1])
    assert not graph.heldout[inverse_heads, inverse_rels].any()
    # held-out compositions use two seen facts
    h, r1, r2 = graph.heldout_composition.nonzero(as_tuple=True)
    assert len(h) > 0
    assert not graph.heldout[h, r1].any() and not graph.heldout[graph.tail(h, r1), r2].any()


def _parse_walk(tokens, n_entities):
    """Plain-Python reading of a walk: (head, relations, tail) per step."""
    steps, head, rels = [], tokens[0], []
    assert head < n_entities
    for tok in tokens[1:]:
        if tok >= n_entities:
            rels.append(tok - n_entities)
        else:
            steps.append((head, tuple(rels), tok))
            head, rels = tok, []
    return steps


def test_walks_are_true_and_never_show_heldout_items(graph):
    walks = kg.walks(graph, 400, length=15, skip_prob=0.3, seed=1)
    assert walks.shape == (400, 15)
    assert torch.equal(walks, kg.walks(graph, 400, length=15, skip_prob=0.3, seed=1))
    n_skip = 0
    for row in walks.tolist():
        for head, rels, tail in _parse_walk(row, 24):
            assert len(rels) in (1, 2)
            mid = _tail_by_hand(graph, head, rels[0])
            assert not graph.heldout[head, rels[0]]
            if len(rels) == 1:
                assert tail == mid
            else:
                n_skip += 1
                assert not graph.heldout[mid, rels[1]]
                assert not graph.heldout_composition[head, rels[0], rels[1]]
                assert tail == _tail_by_hand(graph, mid, rels[1])
    assert n_skip > 100


def test_evaluation_sets_match_their_definitions(graph):
    sets = kg.evaluation_sets(graph)
    assert len(sets["direct"]) + len(sets["logical"]) == 24 * 24
    for prompt, target in zip(sets["logical"].prompts.tolist(), sets["logical"].targets.tolist()):
        head, rel = prompt[0], prompt[1] - 24
        assert graph.heldout[head, rel] and target == _tail_by_hand(graph, head, rel)
    comp = sets["compositional"]
    assert len(comp) == int(graph.heldout_composition.sum())
    for (h, r1, r2), target in zip(comp.prompts.tolist(), comp.targets.tolist()):
        mid = _tail_by_hand(graph, h, r1 - 24)
        assert target == _tail_by_hand(graph, mid, r2 - 24)
    only_ring_1 = kg.evaluation_sets(graph, orders=[1])["direct"]
    assert set(((only_ring_1.prompts[:, 1] - 24) // 8).tolist()) == {1}
    assert len(kg.evaluation_sets(graph, max_items=10)["direct"]) == 10


def test_tokenizer_round_trips_walk_text(graph):
    tok = kg.tokenizer(24)
    walks = kg.walks(graph, 3, seed=2)
    text = kg.as_text(walks, 24)
    assert [tok(t)["input_ids"] for t in text] == walks.tolist()
    assert tok("e3 nope")["input_ids"] == [3, kg.pad_id(24) + 1]


def test_recipe_writes_a_loadable_checkpoint(tmp_path):
    recipe = KGRingRecipe(
        n_entities=12, n_walks=300, n_layer=1, n_embd=16, n_head=2, eval_every=5, eval_items=32
    )
    metrics = build_kg_ring(tmp_path / "kg", steps=10, recipe=recipe, progress=False)
    files = {p.name for p in (tmp_path / "kg").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "graph.json",
        "card.md",
        "metrics.json",
    } <= files
    assert set(metrics["accuracy"]) == {"direct", "logical", "compositional"}
    saved = json.loads((tmp_path / "kg" / "metrics.json").read_text())
    assert saved["model_sha256"] == metrics["model_sha256"]
    graph = load_graph(tmp_path / "kg")
    again = kg.make_graph(12, 0.1, 0.1, seed=0)
    assert torch.equal(graph.orders, again.orders)
    assert torch.equal(graph.heldout, again.heldout)
    assert torch.equal(graph.heldout_composition, again.heldout_composition)
    # deterministic: the same seed gives the same weights
    metrics2 = build_kg_ring(tmp_path / "kg2", steps=10, recipe=recipe, progress=False)
    assert metrics2["model_sha256"] == metrics["model_sha256"]
