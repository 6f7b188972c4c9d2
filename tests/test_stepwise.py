"""pk.stepwise: metrics against hand computations on planted generations and oracle models,
temperature 0 against greedy decoding, and the shipped checkpoints' interface."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from figure_checks import problems
from torch import nn

import probekit as pk
from probekit.tasks import graph_navigation as gn

ROOT = Path(__file__).resolve().parent.parent


class ScriptedModel(nn.Module):
    """Writes a planted continuation for each prompt ``goal start``: logits put all mass on
    ``script[(start, goal)][t]`` at the t-th generated position."""

    def __init__(self, scripts: dict[tuple[int, int], list[int]], vocab: int):
        super().__init__()
        self.scripts, self.vocab = scripts, vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        logits = torch.zeros(b, t, self.vocab)
        for i in range(b):
            script = self.scripts[(int(tokens[i, 1]), int(tokens[i, 0]))]
            for pos in range(1, t):
                k = pos - 1
                if k < len(script):
                    logits[i, pos, script[k]] = 50.0
        return logits


class OracleModel(nn.Module):
    """The true next-node distribution of uniform path sampling (``C[w, g] / C[v, g]``), or
    with ``shortest=True`` uniform over the successors on a shortest path; ``<yes>`` at the
    goal."""

    def __init__(self, graph, shortest: bool = False):
        super().__init__()
        n = graph.number_of_nodes()
        a = gn.adjacency(graph)
        if shortest:
            dist = gn.distances(graph)
            weight = np.zeros((n, n, n))  # [v, g, w]
            for v in range(n):
                for g in range(n):
                    succ = np.nonzero(a[v])[0]
                    if len(succ) and np.isfinite(dist[succ, g]).any():
                        best = succ[dist[succ, g] == dist[succ, g].min()]
                        weight[v, g, best] = 1.0
        else:
            counts = gn.path_counts(graph).astype(float)
            weight = a[:, None, :] * counts.T[None, :, :]  # [v, g, w] = A[v, w] C[w, g]
        table = torch.full((n, n, n + len(gn.SPECIAL_TOKENS)), -1e9)
        table[:, :, :n] = torch.log(torch.from_numpy(weight).float()).clamp(min=-1e9)
        yes = gn.token_id(gn.YES, n)
        for g in range(n):
            table[g, g, :] = -1e9
            table[g, g, yes] = 0.0
        self.register_buffer("table", table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.table.shape[0]
        goal = tokens[:, :1].expand_as(tokens)
        cur = tokens.clamp(max=n - 1)
        return self.table[cur, goal]


def _tiny_gpt2(vocab: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=None,
        eos_token_id=None,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def _planted():
    g = gn.hierarchical_dag(layers=4, width=3, p=1.0, seed=0)
    g.remove_edge(0, 3)
    n = g.number_of_nodes()
    yes, no, eos = (gn.token_id(t, n) for t in (gn.YES, gn.NO, gn.EOS))
    scripts = {
        (0, 9): [4, 7, 9, yes, eos],  # correct
        (1, 9): [3, 6, 9, yes, eos],  # 1 -> 3 is an edge: correct
        (0, 10): [3, 7, 10, yes, eos],  # 0 -> 3 removed: misstep at step 0
        (2, 11): [5, 8, 10, no, eos],  # valid walk, wrong end: planning failure
        (1, 10): [4, 7, 10, 10, 10, 10, 10],  # 10 -> 10 is no edge: misstep at step 3
    }
    return g, ScriptedModel(scripts, n + len(gn.SPECIAL_TOKENS)), list(scripts)


def test_evaluate_frame_and_summary_on_planted_generations():
    g, model, pairs = _planted()
    res = pk.stepwise.evaluate(model, g, pairs)
    f = res.frame
    assert list(f.columns[:10]) == [
        "pair",
        "sample",
        "start",
        "goal",
        "path",
        "answer",
        "valid",
        "reached_goal",
        "correct",
        "first_misstep",
    ]
    assert f["path"].tolist()[0] == [0, 4, 7, 9] and f["path"].tolist()[3] == [2, 5, 8, 10]
    assert f["valid"].tolist() == [True, True, False, True, False]
    assert f["reached_goal"].tolist() == [True, True, True, False, False]
    assert f["correct"].tolist() == [True, True, False, False, False]
    assert f["failure"].tolist() == ["correct", "correct", "misstep", "planning", "misstep"]
    assert f["first_misstep"].tolist() == [-1, -1, 0, -1, 3]
    assert f["n_paths"].tolist() == [6, 9, 6, 9, 9]  # 0 -> 3 removed: 2 x 3 paths from 0
    assert res.summary["accuracy"] == pytest.approx(2 / 5)
    assert res.summary["misstep_rate"] == pytest.approx(2 / 5)
    assert res.summary["planning_failure_rate"] == pytest.approx(1 / 5)
    assert res.figures() and res.figures()[0].layout.xaxis.title.text


def _assert_labelled(*results):
    for result in results:
        for fig in result.figures():
            assert not problems(fig.to_plotly_json()), (result.kind, problems(fig.to_plotly_json()))


def test_temperature_zero_equals_greedy_decoding_and_cache_agrees():
    g = gn.hierarchical_dag(layers=5, width=3, p=0.7, seed=2)
    n = g.number_of_nodes()
    model = _tiny_gpt2(n + len(gn.SPECIAL_TOKENS))
    pairs = [tuple(p) for p in gn.all_pairs(g) if gn.path_counts(g)[p[0], p[1]] > 0][:20]
    steps = 6
    # greedy by hand: a full forward over the prefix, argmax of the last position
    tokens = gn.prompts(np.array(pairs), n)
    with torch.no_grad():
        for _ in range(steps):
            tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], 1)
    paths, _, _ = gn.parse_rollouts([s for s, _ in pairs], tokens[:, 2:], n)
    res = pk.stepwise.evaluate(model, g, pairs, temperature=0.0, samples=3, steps=steps)
    assert res.frame["path"].tolist() == [p for p in paths for _ in range(3)]
    # the KV-cache sampler and a cacheless forward agree on sampled tokens too
    cached = gn.sample_continuations(model, gn.prompts(np.array(pairs), n), steps, 1.0, 7)

    def plain(x):
        return model(x).logits

    uncached = gn.sample_continuations(plain, gn.prompts(np.array(pairs), n), steps, 1.0, 7)
    assert torch.equal(cached, uncached)


def test_diversity_oracle_covers_paths_at_temperature_one_not_at_zero():
    g = gn.hierarchical_dag(layers=4, width=3, p=1.0, seed=0)  # 9 paths per end-to-end pair
    model = OracleModel(g)
    res = pk.stepwise.diversity(model, g, [(0, 9), (1, 10)], temperatures=(0.0, 1.0), samples=120)
    t0 = res.frame[res.frame["temperature"] == 0.0]
    t1 = res.frame[res.frame["temperature"] == 1.0]
    assert (t0["unique_correct"] == 1).all() and (t0["accuracy"] == 1).all()
    assert (t1["unique_correct"] == 9).all() and (t1["coverage"] == 1).all()
    assert (t1["accuracy"] == 1).all()
    assert res.summary["peak_temperature"] == 1.0
    _assert_labelled(res)


def test_simplicity_bias_zero_for_uniform_oracle_negative_for_shortest():
    g = gn.random_dag(n_nodes=12, p=0.4, seed=1)
    counts, dist = gn.path_counts(g), gn.distances(g)
    pairs = [(int(s), int(t)) for s, t in gn.all_pairs(g) if counts[s, t] > 3][:15]
    # hand check: the expected uniform true length minus the shortest
    uniform = pk.stepwise.evaluate(OracleModel(g), g, pairs, temperature=1.0, samples=200)
    bias = pk.stepwise.simplicity_bias(uniform, g, seed=3)
    assert uniform.summary["accuracy"] == 1.0
    assert abs(bias.summary["mean_minus_uniform"]) < 0.15
    short = pk.stepwise.evaluate(OracleModel(g, shortest=True), g, pairs, 1.0, 50)
    sbias = pk.stepwise.simplicity_bias(short, g, seed=3)
    assert sbias.summary["mean_minus_shortest"] == 0.0
    longest = gn.longest_paths(g)
    if any(longest[s, t] > dist[s, t] for s, t in pairs):
        assert sbias.summary["mean_minus_uniform"] < -0.1
    # the frame's difference columns are what they say
    _assert_labelled(uniform, sbias)
    row = sbias.frame.iloc[0]
    assert row["minus_uniform"] == row["length"] - row["true_length"]


def test_stepwise_gap_and_failure_split_and_rule_on_planted_models():
    g = gn.hierarchical_dag(layers=4, width=3, p=0.5, seed=4)
    n = g.number_of_nodes()
    counts = gn.path_counts(g)
    pairs = gn.all_pairs(g)
    conn = pairs[counts[pairs[:, 0], pairs[:, 1]] > 0]
    un = pairs[counts[pairs[:, 0], pairs[:, 1]] == 0]
    oracle = OracleModel(g, shortest=True)
    yes = gn.token_id(gn.YES, n)
    always_yes = ScriptedModel({tuple(map(int, p)): [yes] for p in pairs}, n + 7)
    gap = pk.stepwise.stepwise_gap(oracle, always_yes, g, conn, un, max_train_length=2)
    # the oracle gets every connected pair right, never says <no>: balanced 0.5
    # always-yes direct: right on every connected pair, wrong on every unconnected one
    assert gap.summary["stepwise_accuracy"] == pytest.approx(0.5)
    assert gap.summary["direct_accuracy"] == pytest.approx(0.5)
    conn_rows = gap.frame[gap.frame["connected"]]
    assert (conn_rows["stepwise_accuracy"] == 1).all() and (conn_rows["direct_accuracy"] == 1).all()
    assert (gap.frame[~gap.frame["connected"]]["direct_accuracy"] == 0).all()
    assert set(gap.frame["beyond_cap"]) == {False, True}
    # failure split over planted "snapshots"
    _, planted, planted_pairs = _planted()
    g2 = _planted()[0]
    split = pk.stepwise.failure_split({100: planted, 200: OracleModel(g2)}, g2, planted_pairs)
    assert split.frame["misstep_rate"].tolist() == pytest.approx([0.4, 0.0])
    assert split.frame["planning_failure_rate"].tolist() == pytest.approx([0.2, 0.0])
    assert split.summary["misstep_below_5pct_at"] == 200
    _assert_labelled(gap, split)
    # the shortest-path oracle always picks a successor nearest the goal
    mech = pk.stepwise.mechanism(oracle, g, conn)
    assert mech.summary["rule_agreement"] == 1.0
    assert 0 < mech.summary["rule_chance"] <= 1.0


def test_mechanism_attention_matches_hand_computation():
    g = gn.hierarchical_dag(layers=4, width=3, p=0.8, seed=1)
    n = g.number_of_nodes()
    model = _tiny_gpt2(n + len(gn.SPECIAL_TOKENS), seed=3)
    counts = gn.path_counts(g)
    pairs = [tuple(map(int, p)) for p in gn.all_pairs(g) if counts[p[0], p[1]] > 0][:6]
    # by hand, before the runner wraps the model: Hugging Face's own attention probabilities
    res = pk.stepwise.evaluate(model, g, pairs)
    goal_sum, self_sum, count = np.zeros((2, 2)), np.zeros((2, 2)), 0
    for goal, path in zip(res.frame["goal"], res.frame["path"]):
        seq = torch.tensor([[goal, *path]])
        with torch.no_grad():
            att = model(seq, output_attentions=True).attentions
        for t in range(1, len(path)):
            count += 1
            for layer in range(2):
                goal_sum[layer] += att[layer][0, :, t, 0].numpy()
                self_sum[layer] += att[layer][0, :, t, t].numpy()
    assert count > 0
    mech = pk.stepwise.mechanism(model, g, pairs)
    assert mech.frame["goal_attention"].to_numpy() == pytest.approx(
        (goal_sum / count).reshape(-1), abs=1e-5
    )
    assert mech.frame["current_attention"].to_numpy() == pytest.approx(
        (self_sum / count).reshape(-1), abs=1e-5
    )
    _assert_labelled(mech)


def test_bad_arguments_name_the_argument():
    g, model, pairs = _planted()
    with pytest.raises(ValueError, match="pairs"):
        pk.stepwise.evaluate(model, g, [(0, 1, 2)])
    with pytest.raises(ValueError, match="temperature"):
        pk.stepwise.evaluate(model, g, pairs, temperature=-1)
    with pytest.raises(ValueError, match="samples"):
        pk.stepwise.evaluate(model, g, pairs, samples=0)
    with pytest.raises(ValueError, match="connected"):
        pk.stepwise.evaluate(model, g, [(0, 2)])


@pytest.mark.parametrize("name", ["graphnav-stepwise", "graphnav-direct"])
def test_shipped_checkpoints_interface(name):
    ckpt = ROOT / "checkpoints" / name
    graph = gn.load_graph(ckpt)
    pairs = gn.heldout_pairs(ckpt)
    assert all(type(v) is int for v in graph.nodes) and pairs
    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0
    if name == "graphnav-stepwise":
        # a checkpoint path runs through the runner's plain Hugging Face model
        res = pk.stepwise.evaluate(str(ckpt), graph, pairs)
        assert res.summary["accuracy"] == pytest.approx(metrics["heldout_accuracy"], abs=1e-6)
