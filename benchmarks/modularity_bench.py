"""Benchmark: task variance + clustering + anatomical null for 1024 units x 20 tasks.

Times the vectorised ``pk.modularity`` path against per-unit / per-permutation Python loops
measured in the same process, on a synthetic population with planted clusters:

- task variance: ``trial_variance`` over ``[trials, time, units]`` per task vs a loop over units
  (``np.var`` of one unit's ``[trials, time]`` at a time);
- clustering: ``pk.modularity.cluster`` (scikit-learn ``KMeans``, n_init = 20, k = 2..29,
  ``silhouette_score``), absolute time and the adjusted Rand index against the planted labels;
  against the hand-written batched torch k-means++ / silhouette probekit used before (kept
  here for the comparison), on the same normalised task variance: time, chosen k, and the
  adjusted Rand index between the two label sets at every k. The hand version was replaced
  because it was slower (``--skip-hand`` leaves it out);
- anatomical null: ``pk.modularity.anatomical`` (Q and within fraction for 100 label shuffles,
  batched) vs networkx's ``community.modularity`` on the same shuffles.

Run: ``python benchmarks/modularity_bench.py [--units 1024] [--tasks 20] [--k-max 29]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hand_kmeans(x: torch.Tensor, k: int, n_init: int, seed: int) -> torch.Tensor:
    """The hand-written k-means probekit shipped before scikit-learn: k-means++ seeding and
    Lloyd iterations with all ``n_init`` restarts batched; labels of the lowest inertia."""
    x = x.double()
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(n, (n_init,), generator=gen)
    centres = x[first][:, None, :]
    closest = ((x[None] - centres) ** 2).sum(-1)
    for _ in range(1, k):
        pick = torch.multinomial(closest.clamp_min(0) + 1e-300, 1, generator=gen)[:, 0]
        new = x[pick][:, None, :]
        centres = torch.cat([centres, new], dim=1)
        closest = torch.minimum(closest, ((x[None] - new) ** 2).sum(-1))
    assign = None
    for _ in range(300):
        d2 = torch.cdist(x[None].expand(n_init, -1, -1), centres) ** 2
        new_assign = d2.argmin(-1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        onehot = torch.nn.functional.one_hot(assign, k).double()
        counts = onehot.sum(1)
        sums = onehot.transpose(1, 2) @ x
        centres = torch.where(
            (counts > 0)[..., None], sums / counts.clamp_min(1)[..., None], centres
        )
    d2 = torch.cdist(x[None].expand(n_init, -1, -1), centres) ** 2
    return d2.argmin(-1)[int(d2.min(-1).values.sum(-1).argmin())]


def _hand_silhouette(x: torch.Tensor, labels: torch.Tensor) -> float:
    """The hand-written mean silhouette (Euclidean), one distance matrix for all points."""
    x = x.double()
    d = torch.cdist(x, x)
    onehot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).double()
    counts = onehot.sum(0)
    sums = d @ onehot
    own = onehot.bool()
    size = counts[labels]
    a = sums[own] / (size - 1).clamp_min(1)
    mean_other = (sums / counts.clamp_min(1)).masked_fill(own | (counts == 0), float("inf"))
    b = mean_other.min(1).values
    s = torch.where(size > 1, (b - a) / torch.maximum(a, b), torch.zeros_like(a))
    return float(torch.nan_to_num(s, nan=0.0).mean())


def _compare_hand_kmeans(clusters: object, k_max: int, t_sklearn: float) -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    x = clusters.normalized
    xt = torch.as_tensor(x)
    ks = [k for k in range(2, k_max + 1) if k <= len(x) - 1]
    t0 = time.perf_counter()
    hand = {}
    for k in ks:
        labels = _hand_kmeans(xt, k, n_init=20, seed=0)
        _, labels = torch.unique(labels, return_inverse=True)
        hand[k] = (_hand_silhouette(xt, labels), labels.numpy())
    t_hand = time.perf_counter() - t0
    best = max(hand, key=lambda k: (hand[k][0], -k))
    with threadpool_limits(1):
        aris = [
            adjusted_rand_score(hand[k][1], KMeans(k, n_init=20, random_state=0).fit(x).labels_)
            for k in ks
        ]
    print(
        f"hand k-means + silhouette (torch, batched restarts): {t_hand:.2f} s vs scikit-learn "
        f"{t_sklearn:.2f} s (hand/sklearn {t_hand / t_sklearn:.2f}x); chose k={best} vs "
        f"k={clusters.k}; ARI hand vs sklearn labels over k: min {min(aris):.3f}, "
        f"median {float(np.median(aris)):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--k-max", type=int, default=29)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--n-null", type=int, default=100)
    parser.add_argument("--skip-hand", action="store_true", help="skip the hand k-means timing")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from sklearn.metrics import adjusted_rand_score

    import probekit as pk
    from probekit.modularity import trial_variance

    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    n, n_tasks = args.units, args.tasks
    truth = rng.integers(0, args.clusters, n)
    # each planted cluster is driven by its own few tasks: activity scale per (unit, task)
    drive = 0.1 + 0.9 * (rng.random((args.clusters, n_tasks)) < 0.25)
    scale = torch.as_tensor(drive[truth] * rng.uniform(0.5, 1.5, (n, 1)), dtype=torch.float32)
    acts = [
        torch.randn(args.trials, args.steps, n, generator=g) * scale[:, t] for t in range(n_tasks)
    ]

    t0 = time.perf_counter()
    tv = torch.stack([trial_variance(a) for a in acts], dim=1).numpy()
    t_vec = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop = np.zeros((n, n_tasks))
    for j, a in enumerate(acts):
        a_np = a.double().numpy()
        for u in range(n):
            loop[u, j] = np.var(a_np[:, :, u], axis=0).mean()
    t_loop = time.perf_counter() - t0
    assert np.allclose(tv, loop, rtol=1e-6)
    print(
        f"task variance  {n} units x {n_tasks} tasks ({args.trials} trials x {args.steps} "
        f"steps): vectorised {t_vec * 1e3:.1f} ms, per-unit loop {t_loop * 1e3:.1f} ms, "
        f"ratio {t_loop / t_vec:.1f}x"
    )

    t0 = time.perf_counter()
    clusters = pk.modularity.cluster(tv, k_range=range(2, args.k_max + 1), seed=0, embeddings=())
    t_cluster = time.perf_counter() - t0
    ari = adjusted_rand_score(truth, clusters.labels)
    print(
        f"clustering     k=2..{args.k_max}, n_init 20: {t_cluster:.2f} s, chose k={clusters.k} "
        f"(planted {args.clusters}), ARI {ari:.3f}"
    )
    print(f"task variance + clustering: {t_vec + t_cluster:.2f} s")
    if not args.skip_hand:
        _compare_hand_kmeans(clusters, args.k_max, t_cluster)

    import networkx as nx

    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    t0 = time.perf_counter()
    anat = pk.modularity.anatomical(w, clusters.labels, n_null=args.n_null, seed=0)
    t_anat = time.perf_counter() - t0
    a = anat.adjacency
    graph = nx.from_numpy_array(a)
    n_nx = max(1, args.n_null // 10)
    perm_rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_nx):
        lab = perm_rng.permutation(anat.labels)
        parts = [set(np.flatnonzero(lab == c).tolist()) for c in np.unique(lab)]
        nx.community.modularity(graph, parts)
    t_nx = (time.perf_counter() - t0) / n_nx * args.n_null
    print(
        f"anatomical null {args.n_null} shuffles of {n} units: batched {t_anat:.2f} s (Q + within "
        f"fraction), networkx Q loop {t_nx:.2f} s (extrapolated from {n_nx}), ratio "
        f"{t_nx / t_anat:.1f}x"
    )
    print(f"peak RSS {_peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
