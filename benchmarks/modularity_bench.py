"""Benchmark: task variance + clustering + anatomical null for 1024 units x 20 tasks.

Times the vectorised ``pk.modularity`` path against per-unit / per-permutation Python loops
measured in the same process, on a synthetic population with planted clusters:

- task variance: ``trial_variance`` over ``[trials, time, units]`` per task vs a loop over units
  (``np.var`` of one unit's ``[trials, time]`` at a time);
- clustering: ``pk.modularity.cluster`` (k-means, n_init = 20, k = 2..29, silhouette), absolute
  time and the adjusted Rand index against the planted labels;
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--k-max", type=int, default=29)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--n-null", type=int, default=100)
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
