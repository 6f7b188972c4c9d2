"""pk.probes.linear: planted linearly decodable labels, scikit-learn as the reference, the
item-level split, and the accepted input forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probekit as pk


def _planted(n_items=120, positions=5, d=16, classes=4, seed=0):
    """Layer "signal" encodes the label along one direction per class (plus noise); layer
    "noise" is independent of it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n_items, positions), generator=g)
    directions = torch.randn(classes, d, generator=g) * 3.0
    signal = directions[y] + torch.randn(n_items, positions, d, generator=g)
    noise = torch.randn(n_items, positions, d, generator=g)
    return {"signal": signal, "noise": noise}, y


def test_probe_reads_a_planted_label_and_not_noise():
    acts, y = _planted()
    result = pk.probes.linear(acts, {"y": y}, seed=0)
    frame = result.frame.set_index("hook")
    assert frame.loc["signal", "test_accuracy"] > 0.95
    assert frame.loc["noise", "test_accuracy"] < 0.45  # 4 classes: chance ~0.25
    assert frame.loc["noise", "chance"] == pytest.approx(0.25, abs=0.1)
    assert result.summary["best"]["y"]["hook"] == "signal"
    assert list(result.frame["layer"]) == [0, 1]


def test_probe_equals_sklearn_on_the_same_split():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    acts, y = _planted(n_items=60, seed=1)
    x = acts["signal"]
    result = pk.probes.linear(x, y, test_fraction=0.25, max_train=None, seed=7)
    test_items = pk.probes.split_items(60, 0.25, 7)
    assert test_items.sum() == 15
    xs = x.numpy().reshape(-1, 16)
    ys = y.numpy().reshape(-1)
    test = np.repeat(test_items, 5)
    scaler = StandardScaler().fit(xs[~test])
    clf = LogisticRegression(max_iter=300).fit(scaler.transform(xs[~test]), ys[~test])
    expected = clf.score(scaler.transform(xs[test]), ys[test])
    row = result.frame.iloc[0]
    assert row["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert (row["n_train"], row["n_test"]) == (225, 75)


def test_undefined_labels_are_skipped_and_whole_items_held_out():
    acts, y = _planted(n_items=40, seed=2)
    y = y.clone()
    y[:, 0] = -1  # position 0 has no label
    result = pk.probes.linear(acts["signal"], {"y": y}, test_fraction=0.5, seed=3)
    row = result.frame.iloc[0]
    assert row["n_train"] + row["n_test"] == 40 * 4
    assert row["n_test"] % 4 == 0  # whole items (4 labelled positions each) on one side


def test_probe_from_an_activation_store(tmp_path):
    from probekit.models import HookedRNN, RNNConfig

    model = HookedRNN(RNNConfig(kind="gru", input_size=3, hidden_size=8), seed=0)
    x = torch.randn(30, 6, 3, generator=torch.Generator().manual_seed(0))
    store = pk.cache(model, x, ["hook_hidden"], out=tmp_path / "s", progress=False)
    store = pk.ActivationStore.open(tmp_path / "s")
    label = (x[:, :, 0] > 0).long()  # the current input's sign, readable from h_t
    result = pk.probes.linear(store, label, seed=0)
    assert result.frame.iloc[0]["hook"] == "hook_hidden"
    assert result.frame.iloc[0]["test_accuracy"] > 0.8
    fig = result.figures()[0]
    assert [t.name for t in fig.data] == ["label", "label (chance)"]


def test_bad_arguments_name_the_argument():
    acts, y = _planted(n_items=10)
    with pytest.raises(ValueError, match="labels\\['label'\\] must be"):
        pk.probes.linear(acts, y[:, :3])
    with pytest.raises(ValueError, match="integer classes"):
        pk.probes.linear(acts, y.float())
    with pytest.raises(ValueError, match="names not in activations"):
        pk.probes.linear(acts, y, names=["blocks.9"])
    with pytest.raises(ValueError, match="test_fraction"):
        pk.probes.linear(acts, y, test_fraction=1.5)
    with pytest.raises(ValueError, match="activations must be"):
        pk.probes.linear([1, 2], y)


def test_torch_solver_reaches_sklearns_probe_on_a_many_class_task():
    """The default L-BFGS in torch and scikit-learn's lbfgs minimise the same strictly convex
    objective: the same held-out predictions, per hook and label."""
    acts, y = _planted(n_items=200, positions=6, d=24, classes=12, seed=3)
    acts["weak"] = acts["signal"] * 0.05 + acts["noise"]
    a = pk.probes.linear(acts, {"y": y}, seed=2, solver="torch").frame
    b = pk.probes.linear(acts, {"y": y}, seed=2, solver="sklearn").frame
    assert np.allclose(a["test_accuracy"], b["test_accuracy"], atol=0.01)
    assert np.allclose(a["train_accuracy"], b["train_accuracy"], atol=0.01)
    assert a["converged"].all()
    with pytest.raises(ValueError, match="solver"):
        pk.probes.linear(acts, {"y": y}, solver="adam")
