"""pk.modularity: task variance, clustering, anatomical modularity, lesions."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import probekit as pk
from probekit import modularity as mod
from probekit.models.rnn import HookedRNN, RNNConfig
from probekit.tasks import cognitive as cog


def _planted_population(n_per: int = 40, n_clusters: int = 6, n_tasks: int = 20, seed: int = 0):
    """Units in blocks: each block prefers its own pair of tasks, plus noise and dead units."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(n_clusters), n_per)
    profiles = 0.05 * rng.random((n_clusters, n_tasks))
    for c in range(n_clusters):
        profiles[c, [2 * c, 2 * c + 1]] = 1.0
    gain = rng.uniform(0.5, 2.0, (len(truth), 1))
    tv = gain * (profiles[truth] + 0.08 * rng.random((len(truth), n_tasks)))
    dead = np.full((7, n_tasks), 1e-6)
    return np.vstack([tv, dead]), truth


def test_planted_blocks_are_clustered_back():
    tv, truth = _planted_population()
    result = mod.cluster(tv, k_range=range(2, 12), seed=0, n_init=5, embeddings=())
    assert result.k == 6
    assert (result.labels[-7:] == -1).all() and not result.active[-7:].any()
    assert adjusted_rand_score(truth, result.labels[:-7]) >= 0.9
    # clusters ordered by preferred task: cluster c prefers task 2c or 2c+1
    assert np.array_equal(result.preferred_task // 2, np.arange(6))
    assert result.summary["n_active"] == 240
    assert len(result.frame) == 247
    assert result.silhouette == max(result.silhouettes.values())


def _silhouette_by_hand(x: np.ndarray, labels: np.ndarray) -> float:
    """Rousseeuw's mean silhouette from its definition, one point at a time."""
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    scores = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def test_cluster_scores_each_k_by_the_silhouette_of_its_kmeans_labels():
    tv, truth = _planted_population(n_per=12, n_clusters=4, n_tasks=10, seed=2)
    result = mod.cluster(tv, k_range=[3, 4, 5], seed=0, n_init=4, embeddings=())
    assert result.k == 4
    x, labels = result.normalized, result.labels[result.active]
    assert result.silhouette == pytest.approx(_silhouette_by_hand(x, labels), abs=1e-10)
    # k-means on well-separated blobs: the planted partition, whatever the label names
    assert adjusted_rand_score(truth, result.labels[:-7]) == 1.0


def test_sum_normalisation_and_input_checks():
    tv, truth = _planted_population(seed=1)
    result = mod.cluster(
        torch.as_tensor(tv), k_range=[4, 6, 8], normalize="sum", n_init=3, embeddings=()
    )
    assert adjusted_rand_score(truth, result.labels[:-7]) >= 0.9
    assert np.allclose(result.normalized.sum(1), 1.0)
    with pytest.raises(ValueError, match="normalize must be"):
        mod.cluster(tv, normalize="l2")
    with pytest.raises(ValueError, match=r"task_variance must be \[units, tasks\]"):
        mod.cluster(tv[:, 0])
    with pytest.raises(ValueError, match="k_range must contain"):
        mod.cluster(tv[:3], k_range=[5])


def test_cluster_figures_include_tsne_heatmap_and_silhouette():
    tv, _ = _planted_population(n_per=10, n_clusters=3, n_tasks=8)
    result = mod.cluster(tv, k_range=range(2, 6), n_init=3, embeddings=("tsne",))
    figs = result.figures()
    assert len(figs) == 3
    assert result.embedding("tsne").shape == (30, 2)


def _random_graph(n: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (n,), generator=g)
    return w, labels


def test_q_equals_networkx_modularity():
    w, labels = _random_graph()
    a = (w.abs() + w.abs().T) / 2
    a.fill_diagonal_(0.0)
    graph = nx.Graph()
    n = len(labels)
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from((i, j, float(a[i, j])) for i in range(n) for j in range(i + 1, n))
    parts = [set(np.flatnonzero(labels.numpy() == c).tolist()) for c in labels.unique().tolist()]
    expected = nx.community.modularity(graph, parts, weight="weight")
    result = mod.anatomical(w, labels, n_null=20, seed=0)
    assert result.summary["Q"] == pytest.approx(expected, abs=1e-12)
    # the batched form agrees with the single one
    batch = torch.stack([labels, labels.flip(0)])
    qs = mod.newman_modularity(a, batch)
    assert float(qs[0]) == pytest.approx(expected, abs=1e-12)
    assert float(qs[1]) == pytest.approx(float(mod.newman_modularity(a, labels.flip(0))), abs=1e-12)


def test_within_fraction_and_locality_by_hand():
    w = torch.tensor([[5.0, 1.0, -2.0], [3.0, 0.0, 4.0], [-1.0, 2.0, 7.0]])
    labels = torch.tensor([0, 0, 1])
    off = 1 + 2 + 3 + 4 + 1 + 2
    assert float(mod.within_fraction(w, labels)) == pytest.approx((1 + 3) / off)
    pos = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [1.0, 1.0]])
    lab = torch.tensor([0, 0, 1, 1])
    assert float(mod.locality(pos, lab)) == pytest.approx((5.0 * 2 + 1.0 * 2) / 4)


def test_block_structured_weights_are_anatomically_modular():
    n, k = 40, 4
    labels = torch.arange(n) % k
    g = torch.Generator().manual_seed(0)
    w = 0.05 * torch.randn(n, n, generator=g, dtype=torch.float64)
    same = labels[:, None] == labels[None, :]
    w[same] += torch.randn(int(same.sum()), generator=g, dtype=torch.float64)
    pos = torch.stack([labels.double(), torch.zeros(n, dtype=torch.float64)], 1)
    pos += 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    s = mod.anatomical(w, labels, positions=pos, n_null=200, seed=1).summary
    assert s["Q"] > 0.5 and s["Q_z"] > 5 and s["Q_p"] == pytest.approx(1 / 201)
    assert s["within_fraction"] > 0.8 and s["within_fraction_p"] < 0.01
    assert s["locality"] < 0.3 and s["locality_z"] > 5 and s["locality_p"] < 0.01
    # shuffled labels: no modularity beyond chance
    perm = torch.randperm(n, generator=g)
    s0 = mod.anatomical(w, labels[perm], n_null=200, seed=1).summary
    assert abs(s0["Q_z"]) < 3


def test_anatomical_leaves_out_inactive_units_and_checks_inputs():
    w, labels = _random_graph(12, seed=3)
    labels = labels.clone()
    labels[:3] = -1
    r = mod.anatomical(w, labels, n_null=10)
    kept = torch.arange(3, 12)
    a = (w.abs() + w.abs().T)[kept][:, kept] / 2
    a.fill_diagonal_(0.0)
    _, relabel = torch.unique(labels[kept], return_inverse=True)
    assert r.summary["Q"] == pytest.approx(float(mod.newman_modularity(a, relabel)))
    assert r.summary["n_units"] == 9 and len(r.frame) == 2 and len(r.figures()) == 3
    with pytest.raises(ValueError, match="weights must be square"):
        mod.anatomical(w[:, :5], labels)
    with pytest.raises(ValueError, match="labels must be"):
        mod.anatomical(w, labels[:5])
    with pytest.raises(ValueError, match="positions must be"):
        mod.anatomical(w, labels, positions=torch.zeros(5, 2))


def _cog_model(h: int = 12, seed: int = 0) -> HookedRNN:
    cfg = RNNConfig(
        kind="ctrnn",
        input_size=cog.N_INPUT,
        hidden_size=h,
        output_size=cog.N_OUTPUT,
        nonlinearity="softplus",
        dt=20.0,
        tau=100.0,
        convention="yang2019",
    )
    model = HookedRNN(cfg, seed=seed).double()
    with torch.no_grad():
        model.weight_ih.mul_(3.0)  # make the inputs drive the units visibly
    return model


def test_task_variance_matches_a_hand_computation():
    model = _cog_model()
    tasks = ["go", "dm1", "dms"]
    tv = mod.task_variance(model, tasks, n_trials=16, seed=5)
    assert tv.values.shape == (12, 3)
    gen = torch.Generator().manual_seed(5)
    a = model.cfg.alpha
    for j, task in enumerate(tasks):
        trials = cog.generate(
            task, 16, seed=gen, noise=0.0, fixed_timing=True, dtype=torch.float64, dt=20.0
        )  # the model's own dt (20 ms): task_variance generates its trials at it
        x = trials.inputs
        h = torch.zeros(16, 12, dtype=torch.float64)
        states = []
        w_in, w_rec = model.weight_ih.detach(), model.weight_hh.detach()
        b = (model.bias_ih + model.bias_hh).detach()
        for t in range(x.shape[1]):
            h = (1 - a) * h + a * torch.nn.functional.softplus(x[:, t] @ w_in.T + h @ w_rec.T + b)
            states.append(h)
        act = torch.stack(states, 1)[:, int(trials.stim_on[0]) :].numpy()
        expected = np.mean(np.var(act, axis=0), axis=0)  # numpy: population variance
        np.testing.assert_allclose(tv.values[:, j], expected, rtol=1e-9, atol=1e-12)
    assert tv.summary["n_units"] == 12 and np.asarray(tv).shape == (12, 3)


def test_task_variance_from_a_store_opened_in_a_fresh_process_equals_the_live_model(tmp_path):
    import subprocess
    import sys

    model = _cog_model()
    tasks = ["go", "dm1", "dms"]  # three trial lengths: the shorter ones are padded
    live = mod.task_variance(model, tasks, n_trials=8, seed=5)
    data = cog.variance_data(tasks, n_trials=8, seed=5, dtype=torch.float64, dt=cog.model_dt(model))
    assert (
        data["tasks"] == tasks
        and data["extras"]["task_id"].tolist()
        == [0] * 8 + [cog.TASKS.index("dm1")] * 8 + [cog.TASKS.index("dms")] * 8
    )
    out = tmp_path / "acts"
    # batches of 5 cut across tasks: batching must not matter either
    pk.cache(
        model,
        data["inputs"],
        "hook_hidden",
        out=out,
        extras=data["extras"],
        dtype=None,
        batch_size=5,
        device="cpu",
        progress=False,
    )
    code = (
        "import sys, numpy as np, probekit as pk; "
        "tv = pk.modularity.task_variance(sys.argv[1]); "
        "np.save(sys.argv[2], tv.values); print(','.join(tv.tasks), tv.n_trials)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(out), str(tmp_path / "tv.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.split() == [",".join(tasks), "8"]
    np.testing.assert_allclose(np.load(tmp_path / "tv.npy"), live.values, rtol=1e-9, atol=1e-12)
    # a subset of the stored tasks, by name; a task the store lacks is refused
    part = mod.task_variance(pk.ActivationStore.open(out), ["dms", "go"])
    np.testing.assert_allclose(part.values, live.values[:, [2, 0]], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="not in the store"):
        mod.task_variance(out, ["anti"])


def test_lesion_silences_only_targeted_units_inside_the_recurrence():
    model = _cog_model(h=10)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, -1, -1, 2])
    trials = cog.generate("dlygo", 4, seed=0, dtype=torch.float64)
    mask = torch.ones(10, dtype=torch.float64)
    mask[labels == 1] = 0.0

    def silence(h, hook):
        return h * mask

    _, intact = model.run_with_cache(trials.inputs, names_filter="hook_hidden")
    with model.hooks(fwd_hooks=[("hook_hidden", silence)]):
        _, cut = model.run_with_cache(trials.inputs, names_filter="hook_hidden")
    hi, hc = intact["hook_hidden"], cut["hook_hidden"]
    assert float(hc[:, :, labels == 1].abs().max()) == 0.0
    # the other units change (the silenced ones no longer feed them) ...
    assert float((hi - hc)[:, 1:, labels != 1].abs().max()) > 1e-4
    # ... and equal a hand recurrence in which the silenced units are held at zero
    a = model.cfg.alpha
    h = torch.zeros(4, 10, dtype=torch.float64)
    x = trials.inputs
    w_in, w_rec = model.weight_ih.detach(), model.weight_hh.detach()
    b = (model.bias_ih + model.bias_hh).detach()
    for t in range(x.shape[1]):
        h = (
            (1 - a) * h + a * torch.nn.functional.softplus(x[:, t] @ w_in.T + h @ w_rec.T + b)
        ) * mask
        torch.testing.assert_close(hc[:, t], h)

    result = mod.lesion(model, ["go", "dlygo"], labels, n_trials=8, seed=0)
    assert result.clusters == [0, 1, 2] and result.cluster_sizes == [3, 4, 1]
    assert result.drop.shape == (3, 2) and len(result.frame) == 6
    # the batched lesion equals running each lesion on its own
    gen = torch.Generator().manual_seed(0)
    for j, task in enumerate(["go", "dlygo"]):
        tr = cog.generate(task, 8, seed=gen, noise=0.05, dtype=torch.float64)
        base = cog.accuracy(model(tr.inputs), tr)
        assert result.baseline[j] == pytest.approx(base)
        for i, c in enumerate([0, 1, 2]):
            m = torch.ones(10, dtype=torch.float64)
            m[labels == c] = 0.0
            y = model.run_with_hooks(
                tr.inputs, fwd_hooks=[("hook_hidden", lambda h, hook, m=m: h * m)]
            )
            assert result.lesioned[i, j] == pytest.approx(cog.accuracy(y, tr))


def test_public_api_is_reachable_from_pk():
    assert pk.modularity.cluster is mod.cluster
    assert callable(pk.modularity.task_variance) and callable(pk.modularity.lesion)


def test_cli_modularity_writes_a_report_and_rejects_bad_arguments(tmp_path, capsys):
    from probekit.cli import main

    model = _cog_model(h=12).float()
    model.add_extra_tensor(
        "positions", torch.rand(12, 2, generator=torch.Generator().manual_seed(0))
    )
    model.save(tmp_path / "rnn")
    out = tmp_path / "mod.html"
    argv = ["modularity", str(tmp_path / "rnn"), "--out", str(out), "--tasks", "go", "dm1", "dms"]
    code = main([*argv, "--n-trials", "4", "--k-max", "4", "--n-null", "5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Q=" in printed and "locality=" in printed
    assert out.is_file() and out.with_suffix(".labels.csv").is_file()
    assert main([*argv, "--n-trials", "1"]) == 2
    assert main(["modularity", str(tmp_path / "rnn"), "--tasks", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
