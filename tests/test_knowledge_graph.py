"""probekit.tasks.knowledge_graph and the kg-ring recipe, checked against plain-Python walks."""

from __future__ import annotations

import json

import pytest
import torch

from probekit.tasks import knowledge_graph as kg
from probekit.tasks.knowledge_graph import load_graph
from probekit.train.knowledge_graph import (
    KGRingRecipe,
    best_ring,
    build_kg_ring,
    entity_target_loss,
    ring_contexts,
    ring_scores,
)


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


# ----------------------------------------------------------------------------- ring geometry


def _spearman(a, b):
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def test_circular_rank_correlation_is_one_for_any_rotation_or_direction_of_the_ring():
    gen = torch.Generator().manual_seed(0)
    positions = torch.randperm(40, generator=gen)
    angles = 2 * torch.pi * positions / 40
    assert kg.circular_rank_correlation(angles, positions) == pytest.approx(1.0)
    # a rotated, reversed copy of the ring is the same cyclic order
    turned = -(angles + 1.3) % (2 * torch.pi)
    assert kg.circular_rank_correlation(turned, positions) == pytest.approx(1.0)
    # it is the best Spearman rho over the 2 x 40 relabellings of the cycle (scipy, by hand)
    noisy = angles + 0.6 * torch.randn(40, generator=gen)
    rank = torch.argsort(torch.argsort(noisy))
    by_hand = max(
        _spearman(((sign * rank + shift) % 40).tolist(), positions.tolist())
        for sign in (1, -1)
        for shift in range(40)
    )
    assert kg.circular_rank_correlation(noisy, positions) == pytest.approx(by_hand, abs=1e-9)
    assert 0.5 < by_hand < 1.0
    random = [
        kg.circular_rank_correlation(torch.rand(40, generator=gen), positions) for _ in range(5)
    ]
    assert max(random) < 0.6
    with pytest.raises(ValueError, match="angles and positions"):
        kg.circular_rank_correlation(torch.zeros(5), torch.zeros(4))


@pytest.mark.parametrize("method", ["pca", "isomap"])
def test_projection_recovers_a_planted_ring_embedded_in_many_dimensions(method):
    gen = torch.Generator().manual_seed(1)
    positions = torch.randperm(60, generator=gen)
    theta = 2 * torch.pi * positions / 60
    plane = torch.stack([theta.cos(), theta.sin()], dim=1)
    basis = torch.linalg.qr(torch.randn(16, 2, generator=gen)).Q.T  # [2, 16] orthonormal
    reps = 5 * plane @ basis + 0.05 * torch.randn(60, 16, generator=gen)
    angles = kg.projection_angles(reps, method)
    assert angles.shape == (60,)
    assert kg.circular_rank_correlation(angles, positions) > 0.99
    with pytest.raises(ValueError, match="method must be"):
        kg.projection_angles(reps, "umap")


def test_ring_contexts_lead_to_each_entity_by_a_true_fact_of_that_ring(graph):
    ctx = ring_contexts(graph, 2)
    assert ctx.shape == (24, 8, 3)
    for row in ctx.reshape(-1, 3).tolist():
        x, rel, e = row[0], row[1] - 24, row[2]
        assert rel // 8 == 2 and _tail_by_hand(graph, x, rel) == e
    assert ctx[:, :, 2].tolist() == [[e] * 8 for e in range(24)]


def test_entity_target_loss_averages_cross_entropy_over_entity_targets_only():
    gen = torch.Generator().manual_seed(2)
    tokens = torch.tensor([[3, 30, 5, 31, 32, 7], [1, 29, 2, 33, 4, 28]])  # E = 24
    logits = torch.randn(2, 6, 50, generator=gen)
    terms = []
    for b in range(2):
        for j in range(5):
            target = int(tokens[b, j + 1])
            if target < 24:
                terms.append(-torch.log_softmax(logits[b, j], -1)[target])
    expected = torch.stack(terms).mean()
    assert len(terms) == 4
    assert torch.allclose(entity_target_loss(logits, tokens, 24), expected, atol=1e-6)


def test_small_recipe_learns_the_facts_and_reports_what_the_checkpoint_does(tmp_path):
    from transformers import GPT2LMHeadModel

    recipe = KGRingRecipe(
        n_entities=12,
        n_walks=2000,
        n_layer=1,
        n_embd=128,
        n_head=4,
        lr=3e-3,
        weight_decay=0.1,
        eval_every=200,
        eval_items=64,
        warmup=20,
        skip_prob=0.2,
        min_lr=0.1,
    )
    metrics = build_kg_ring(tmp_path / "kg", steps=400, recipe=recipe, progress=False)
    assert metrics["accuracy"]["direct"] > 0.8  # the seen facts are learnt (chance 1/12)
    assert [e["step"] for e in metrics["evals"]] == [200, 400]
    # the reported accuracies and ring scores are what the saved model gives, by hand
    model = GPT2LMHeadModel.from_pretrained(tmp_path / "kg").eval()
    graph = load_graph(tmp_path / "kg")
    for name, items in kg.evaluation_sets(graph).items():
        with torch.no_grad():
            logits = model(items.prompts).logits[:, -1, :12]
        hits = (logits.argmax(-1) == items.targets).float().mean().item()
        assert hits == pytest.approx(metrics["accuracy"][name])
    rings = ring_scores(model, graph)
    for stream in rings:
        for order in rings[stream]:
            for method, value in rings[stream][order].items():
                assert value == pytest.approx(metrics["ring_correlation"][stream][order][method])
    assert metrics["ring_correlation_best"] == pytest.approx(best_ring(rings))
    assert "| stream | order | PCA | Isomap |" in (tmp_path / "kg" / "card.md").read_text()


def test_shipped_checkpoint_reports_its_measured_accuracies():
    from pathlib import Path

    from transformers import GPT2LMHeadModel

    root = Path(__file__).resolve().parents[1] / "checkpoints" / "kg-ring"
    data = json.loads((root / "graph.json").read_text())
    assert {"orders", "heldout_facts", "heldout_compositions"} <= set(data)
    graph = load_graph(root)
    metrics = json.loads((root / "metrics.json").read_text())
    assert len(data["heldout_facts"]) == metrics["eval_sizes"]["logical"]
    assert len(data["heldout_compositions"]) == metrics["eval_sizes"]["compositional"]
    model = GPT2LMHeadModel.from_pretrained(root).eval()
    logical = kg.evaluation_sets(graph)["logical"]
    with torch.no_grad():
        logits = model(logical.prompts).logits[:, -1, : graph.n_entities]
    hits = (logits.argmax(-1) == logical.targets).float().mean().item()
    assert hits == pytest.approx(metrics["accuracy"]["logical"])
    # the shipped model infers held-out facts from their seen inverses (the aim: >= 0.8;
    # chance is 1/128), by Hugging Face's own forward pass
    assert hits >= 0.8
    card = (root / "card.md").read_text()
    assert f"{metrics['accuracy']['logical']:.4f}" in card
    assert f"Best: {metrics['ring_correlation_best']:.3f}" in card


def test_early_phase_draws_its_own_walks_with_its_own_decay(monkeypatch):
    """``early_steps``: the first steps read ``early_tokens`` under ``early_weight_decay``, the
    rest the walks under the recipe's decay; groups without decay keep none."""
    from probekit.train.knowledge_graph import kg_ring_model, train_kg

    recipe = KGRingRecipe(
        n_entities=12,
        n_layer=1,
        n_embd=16,
        n_head=2,
        eval_every=0,
        weight_decay=0.5,
        early_steps=3,
        early_weight_decay=2.0,
    )
    model = kg_ring_model(recipe, 0)
    seen, decays = [], []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(args[0].clone()), with_kwargs=True
    )
    step = torch.optim.AdamW.step

    def recording_step(self, *a, **k):
        decays.append([g["weight_decay"] for g in self.param_groups])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    data = torch.full((50, recipe.length), 1)
    early = torch.full((50, recipe.length), 2)
    train_kg(model, data, recipe, steps=5, warmup=1, seed=0, progress=False, early_tokens=early)
    assert [int(b[0, 0]) for b in seen] == [2, 2, 2, 1, 1]
    assert decays == [[2.0]] * 3 + [[0.5]] * 2
    # with decay on matrices only, the undecayed group stays at 0 in both phases
    decays.clear()
    recipe = KGRingRecipe(**{**recipe.__dict__, "decay_all": False})
    train_kg(
        kg_ring_model(recipe, 0),
        data,
        recipe,
        steps=4,
        warmup=1,
        seed=0,
        progress=False,
        early_tokens=early,
    )
    assert decays[0] == [2.0, 0.0] and decays[-1] == [0.5, 0.0]
