"""probekit.shattering: R against a hand computation, its invariants, and one edit end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr

import probekit as pk
from probekit import shattering
from probekit.tasks import knowledge_graph as kg
from probekit.tasks.knowledge_graph import load_graph

KG_RING = Path(__file__).resolve().parent.parent / "checkpoints" / "kg-ring"


def test_distortion_matches_hand_computation():
    before = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    after = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 4.0]])
    # D0 off-diagonal: 3, 4, 5; D*: 6, 4, sqrt(52). Each pair appears twice in the matrix.
    num = math.sqrt(2 * ((6 - 3) ** 2 + 0 + (math.sqrt(52) - 5) ** 2))
    den = math.sqrt(2 * (9 + 16 + 25))
    assert shattering.distortion(before, after) == pytest.approx(num / den, rel=1e-12)
    # normalised variant: each matrix divided by its mean off-diagonal entry
    d0, d1 = np.array([3, 4, 5.0]), np.array([6, 4, math.sqrt(52)])
    d0, d1 = d0 / d0.mean(), d1 / d1.mean()
    expected = np.sqrt(((d1 - d0) ** 2).sum() / (d0**2).sum())
    assert shattering.distortion(before, after, normalize=True) == pytest.approx(expected)


def test_distortion_against_scipy_and_its_invariants():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    y = x + 0.1 * torch.randn(30, 8, generator=gen, dtype=torch.float64)
    d0, d1 = squareform(pdist(x.numpy())), squareform(pdist(y.numpy()))
    reference = np.linalg.norm(d1 - d0) / np.linalg.norm(d0)
    assert shattering.distortion(x, y) == pytest.approx(reference, rel=1e-9)
    assert shattering.distortion(x, x) == 0.0
    # a global rescaling by s gives R = |s - 1|, and 0 once normalised
    assert shattering.distortion(x, 2.5 * x) == pytest.approx(1.5, rel=1e-9)
    assert shattering.distortion(x, 2.5 * x, normalize=True) == pytest.approx(0.0, abs=1e-12)
    # rotations and translations move nothing
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    assert shattering.distortion(x, x @ q + 3.0) == pytest.approx(0.0, abs=1e-9)
    # permuting the entities of one set is a distortion
    perm = torch.randperm(30, generator=gen)
    assert shattering.distortion(x, x[perm]) > 0.3


def test_distortion_rejects_mismatched_entities():
    with pytest.raises(ValueError, match="same entities"):
        shattering.distortion(torch.zeros(5, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\|\|D0\|\| = 0"):
        shattering.distortion(torch.zeros(5, 3), torch.ones(5, 3))


def test_correlation_matches_scipy():
    gen = np.random.default_rng(0)
    x = gen.normal(size=40)
    y = 0.5 * x + gen.normal(size=40)
    r, r2 = shattering.correlation(x, y)
    assert r == pytest.approx(pearsonr(x, y)[0], rel=1e-9)
    assert r2 == pytest.approx(r * r)
    assert math.isnan(shattering.correlation(np.ones(5), y[:5])[0])


def test_mean_ci_matches_scipy_t_interval_and_sweep_summary_reports_it():
    from scipy import stats

    from probekit.stats.shattering import mean_ci

    x = np.random.default_rng(1).normal(0.3, 0.1, size=20)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean_ci(x) == pytest.approx((x.mean(), lo, hi), rel=1e-12)
    assert math.isnan(mean_ci([0.2])[1]) and mean_ci([0.2])[0] == 0.2
    import pandas as pd

    frame = pd.DataFrame(
        {
            "method": "rome",
            "distance": np.repeat([1, 2], 20),
            "R": np.r_[x, x + 1],
            "R_normalized": 0.0,
            "drop": np.r_[x, 2 * x],
            "success": True,
        }
    )
    summary = shattering.summarise_sweep(frame)["rome"]
    assert summary["edits_by_d"] == {1: 20, 2: 20}
    assert summary["R_ci95_by_d"][2] == pytest.approx([lo + 1, hi + 1], rel=1e-9)
    assert summary["drop_ci95_by_d"][1] == pytest.approx([lo, hi], rel=1e-9)


def test_kg_contexts_lead_to_the_entity():
    graph = kg.make_graph(20, seed=3)
    ctx = shattering.kg_contexts(graph, order=1)
    assert ctx.shape == (20, 8, 2)
    ring = graph.orders[1].tolist()
    for e in range(20):
        for head, rel_token in ctx[e].tolist():
            order, rest = divmod(rel_token - 20, 8)
            hops = rest % 4 + 1
            step = hops if rest < 4 else -hops
            assert order == 1 and ring[(ring.index(head) + step) % 20] == e
    assert shattering.kg_contexts(graph).shape == (20, 24, 2)


@pytest.fixture(scope="module")
def kg_ring():
    return pk.load(KG_RING, device="cpu")


def test_entity_representations_match_a_manual_cache(kg_ring):
    from probekit import edit as pk_edit

    work = pk_edit.copy_model(kg_ring)  # before run_with_cache: the bridge keeps grad tensors
    graph = load_graph(KG_RING)
    ctx = shattering.kg_contexts(graph, 0)[:5]
    entities = torch.arange(5)
    reps = shattering.entity_representations(kg_ring, entities, "blocks.0.hook_resid_post", ctx)
    prompts = torch.cat([ctx, entities[:, None, None].expand(5, 8, 1)], dim=2).reshape(40, 3)
    _, cache = kg_ring.run_with_cache(prompts, names_filter="blocks.0.hook_resid_post")
    manual = cache["blocks.0.hook_resid_post"][:, 2].reshape(5, 8, -1).mean(1)
    assert torch.allclose(reps, manual, atol=1e-5)
    # every residual-stream hook (read from the plain model's hidden states) and a non-residual
    # hook (read through the bridge's cache) against the bridge's own cache, on an edited copy
    weights = pk_edit.mlp_weights(work, [0])
    weights[0].add_(
        0.05 * torch.randn(weights[0].shape, generator=torch.Generator().manual_seed(0))
    )
    pk_edit.set_mlp_weights(work, weights)
    n_layers = work.cfg.n_layers
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
    hooks += [f"blocks.{i}.hook_resid_post" for i in range(n_layers)] + ["blocks.0.hook_mlp_out"]
    _, cache = work.run_with_cache(prompts, names_filter=lambda name: name in hooks)
    for hook in hooks:
        reps = shattering.entity_representations(work, entities, hook, ctx)
        manual = cache[hook][:, 2].reshape(5, 8, -1).mean(1)
        assert torch.allclose(reps, manual, atol=1e-5), hook


def test_rome_edit_on_kg_ring_and_its_measurement(kg_ring):
    graph = load_graph(KG_RING)
    fingerprint = pk.fingerprint(kg_ring)
    cov_tokens = kg.walks(graph, 128, seed=9)
    edits = shattering.kg_edits(graph, kg_ring, 1, 4, order=0, seed=0)
    assert all(graph.distance(e.old, e.new, 0) == 1 for e in edits)
    requests = [e.request() for e in edits]
    # kg-ring looks facts up at the relation token (see the study), so the key is taken there.
    edited = pk.edit.rome(kg_ring, requests[0], layer=1, cov_tokens=cov_tokens, position="last")
    assert pk.fingerprint(kg_ring) == fingerprint
    result = shattering.measure(
        kg_ring,
        kg_ring,
        torch.arange(graph.n_entities),
        "blocks.0.hook_resid_post",
        shattering.kg_contexts(graph),
        subgraphs={"edit": shattering.kg_contexts(graph, 0)},
        evaluations={"direct": kg.evaluation_sets(graph, max_items=64)["direct"]},
        projections=(),
    )
    assert result.frame["R"].abs().max() == 0.0
    assert result.accuracy["drop"].abs().max() == 0.0
    moved = shattering.measure(
        kg_ring,
        edited,
        torch.arange(graph.n_entities),
        "blocks.1.hook_resid_post",
        shattering.kg_contexts(graph),
        positions=graph.positions[0].tolist(),
        edited_entity=edits[0].head,
        projections=("pca", "isomap"),
    )
    assert moved.summary["R"] > 0
    assert len(moved.figures()) == 1 and len(moved.figures()[0].data) == 8
    # the edit writes the new object, and the original still answers the old one
    assert pk.edit.success(kg_ring, requests[:1]).predicted[0] == edits[0].old
    assert (
        pk.edit.success(edited, requests[:1]).target_prob[0]
        > pk.edit.success(kg_ring, requests[:1]).target_prob[0]
    )


def test_shatter_cli_rejects_bad_arguments(tmp_path, capsys):
    from probekit.cli import main

    assert main(["shatter", str(tmp_path / "missing")]) == 2
    assert main(["shatter", str(KG_RING), "--methods", "rome,bogus"]) == 2
    assert main(["shatter", str(KG_RING), "--distances", "0,1"]) == 2
    assert main(["shatter", str(tmp_path)]) == 2  # no graph.json
    err = capsys.readouterr().err
    assert "bogus" in err and "graph.json" in err


def test_shatter_cli_end_to_end(tmp_path):
    import pandas as pd

    from probekit.cli import main

    out = tmp_path / "shatter.html"
    argv = ["shatter", str(KG_RING), "--methods", "rome", "--distances", "2", "--edits", "1"]
    argv += ["--eval-items", "32", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert len(frame) == 1 and bool(frame.success[0]) and frame.distance[0] == 2
    assert frame.R[0] > 0
    assert "Representation shattering" in out.read_text()


def test_batched_output_shifts_match_one_at_a_time(kg_ring):
    """optimise_output_shifts (what the sweep uses): each row its own loss, Adam moments and
    stop; rows that stop at different steps, prompts of two lengths: the shifts one call per
    request finds, to float rounding; rome_deltas with the shift given gives the same update."""
    from probekit import edit as pk_edit

    graph = load_graph(KG_RING)
    edits = shattering.kg_edits(graph, kg_ring, 4, 3, order=0, seed=4)
    items = [pk_edit.prepare(kg_ring, e.request(), "last") for e in edits]
    # a three-token prompt (the head's ring neighbour before it) makes a second batch
    longer = pk_edit.EditRequest([edits[0].head], [edits[0].relation_token], edits[0].new, [3])
    items.append(pk_edit.prepare(kg_ring, longer, "last"))

    def stop_step(item):  # how many updates the search makes before p(target) >= 0.9
        previous = None
        for k in range(1, 30):
            shift = pk_edit.optimise_output_shift(kg_ring, item, 1, steps=k, stop_prob=0.9)
            if previous is not None and torch.equal(shift, previous):
                return k - 1
            previous = shift
        return None

    stops = [stop_step(item) for item in items]
    assert None not in stops and len(set(stops)) > 1, stops
    one = torch.stack(
        [pk_edit.optimise_output_shift(kg_ring, it, 1, stop_prob=0.9) for it in items]
    )
    many = pk_edit.optimise_output_shifts(kg_ring, items, 1, stop_prob=0.9)
    assert torch.allclose(many, one, atol=1e-4)
    cov = pk_edit.key_covariance(kg_ring, kg.walks(graph, 128, seed=9), [1])[1]
    request = edits[0].request()
    given = pk_edit.rome_deltas(kg_ring, request, 1, cov, "last", shift=one[0])[1]
    found = pk_edit.rome_deltas(kg_ring, request, 1, cov, "last", stop_prob=0.9)[1]
    assert torch.allclose(given, found, atol=1e-5)
