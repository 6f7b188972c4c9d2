"""MMCR geometry: the loss against the authors' formula, the computed constants, the gradient."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.stats import mmcr as formulas
from probekit.tasks import multiview

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "mmcr-mlp"


def authors_mmcr_loss(z: torch.Tensor, lmbda: float) -> torch.Tensor:
    """The MMCR authors' ``MMCR_Loss.forward``, written out: z [B, D, K] -> scalar."""
    z = torch.nn.functional.normalize(z, dim=1)
    c = z.mean(dim=-1)
    global_nuc = torch.linalg.svdvals(c).sum()
    local_nuc = torch.linalg.svdvals(z).sum() if lmbda != 0 else 0.0
    return lmbda * local_nuc / z.shape[0] - global_nuc


@pytest.mark.parametrize("lmbda", [0.0, 0.3])
def test_mmcr_loss_matches_authors_implementation(lmbda):
    z = torch.randn(48, 5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = float(authors_mmcr_loss(z.transpose(1, 2), lmbda))
    assert float(formulas.mmcr_loss(z, lmbda)) == pytest.approx(expected, rel=1e-10)
    summary = pk.geometry.mmcr(z, lmbda=lmbda).summary
    assert summary["loss"] == pytest.approx(expected, rel=1e-10)
    assert summary["nuclear_norm"] == pytest.approx(float(-authors_mmcr_loss(z.transpose(1, 2), 0)))
    assert summary["bound"] == pytest.approx(math.sqrt(48 * 20))
    assert summary["gap"] == pytest.approx(1 - summary["nuclear_norm"] / summary["bound"])


def test_isotropic_ratio_at_n_equals_d_is_8_over_3pi():
    result = pk.geometry.isotropic_sweep(items=(256,), dims=(256,), repeats=1, seed=0)
    ratio = 1 - result.frame["gap"].iloc[0]
    assert abs(ratio - 8 / (3 * math.pi)) < 0.01
    assert pk.geometry.marchenko_pastur_ratio(256, 256) == pytest.approx(8 / (3 * math.pi), 1e-6)
    # Far from N = D the gap is small (about 1.3 % at N / D = 10 or 0.1) and peaks at N = D.
    sweep = pk.geometry.isotropic_sweep(items=(8, 32, 80, 320), dims=(32,), repeats=2, seed=1)
    gaps = dict(zip(sweep.frame["items"], sweep.frame["gap"]))
    assert max(gaps, key=gaps.get) == 32
    assert gaps[320] == pytest.approx(0.0127, abs=0.004)
    assert 1 - pk.geometry.marchenko_pastur_ratio(320, 32) == pytest.approx(0.0127, abs=0.0005)


def test_bound_reached_exactly_by_orthonormal_centroids():
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(2)))
    views = q[:25, None, :].expand(25, 3, 40).double()  # N = 25 <= D = 40, views identical
    summary = pk.geometry.mmcr(views).summary
    assert summary["nuclear_norm"] == pytest.approx(math.sqrt(25 * 25), rel=1e-12)
    assert summary["gap"] == pytest.approx(0.0, abs=1e-12)
    assert summary["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert summary["effective_rank"] == pytest.approx(25.0, rel=1e-9)
    # N = 2D: two copies of an orthonormal basis is a tight frame and also meets sqrt(N min(N,D)).
    frame = torch.cat([q, q])[:, None, :].double()
    assert pk.geometry.mmcr(frame).summary["gap"] == pytest.approx(0.0, abs=1e-12)


def test_nuclear_norm_gradient_is_u_vt_and_finite_at_repeated_singular_values():
    a = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a.requires_grad_(True)
    (formulas.nuclear_norm(a)).backward()
    u, _, vh = torch.linalg.svd(a.detach(), full_matrices=False)
    torch.testing.assert_close(a.grad, u @ vh)
    # Central finite differences of the nuclear norm (distinct singular values here).
    eps, fd = 1e-6, torch.zeros_like(a)
    for i, j in itertools.product(range(6), range(4)):
        e = torch.zeros_like(a)
        e[i, j] = eps
        fd[i, j] = torch.linalg.svdvals(a.detach() + e).sum() - torch.linalg.svdvals(a - e).sum()
        fd[i, j] /= 2 * eps
    torch.testing.assert_close(a.grad, fd, atol=1e-6, rtol=1e-5)
    # All singular values equal (identical views of orthonormal items): the gradient is finite.
    z = torch.eye(4, dtype=torch.float32)[:, None, :].repeat(1, 3, 1).requires_grad_(True)
    formulas.mmcr_loss(z, lmbda=0.5).backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad.dtype == torch.float32


def test_alignment_and_uniformity_against_loops_and_spec_values():
    g = torch.Generator().manual_seed(4)
    z = torch.nn.functional.normalize(
        torch.randn(7, 3, 5, generator=g, dtype=torch.float64), dim=-1
    )
    pairs = [
        float((z[n, a] - z[n, b]).pow(2).sum())
        for n in range(7)
        for a, b in [(0, 1), (0, 2), (1, 2)]
    ]
    cross = [
        math.exp(-2 * float((z[i, a] - z[j, b]).pow(2).sum()))
        for i in range(7) for j in range(7) if i != j for a in range(3) for b in range(3)
    ]  # fmt: skip
    summary = pk.geometry.mmcr(z).summary
    assert summary["alignment"] == pytest.approx(np.mean(pairs), rel=1e-10)
    assert summary["uniformity"] == pytest.approx(math.log(np.mean(cross)), rel=1e-10)
    assert summary["mi_lower_bound"] == pytest.approx(
        -(summary["uniformity"] + 2 * summary["alignment"])
    )
    # The spec's checks: identical views of 512 random items in D = 128; one collapsed point.
    same = torch.randn(512, 1, 128, generator=g).expand(512, 2, 128)
    s = pk.geometry.mmcr(same).summary
    assert s["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert s["uniformity"] == pytest.approx(-3.94, abs=0.03)
    collapsed = pk.geometry.mmcr(torch.ones(64, 2, 16)).summary
    assert collapsed["uniformity"] == pytest.approx(0.0, abs=1e-9)
    assert collapsed["effective_rank"] == pytest.approx(1.0, abs=1e-6)


def test_mmcr_reads_rows_with_views_and_rejects_bad_shapes():
    z = torch.randn(12, 3, 8, generator=torch.Generator().manual_seed(5))
    flat = pk.geometry.mmcr(z.reshape(36, 8), views=3).summary
    assert flat["loss"] == pytest.approx(pk.geometry.mmcr(z).summary["loss"], rel=1e-12)
    with pytest.raises(ValueError, match="views="):
        pk.geometry.mmcr(z.reshape(36, 8))
    with pytest.raises(ValueError, match=r"\[items, views, dim\]"):
        pk.geometry.mmcr(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="lmbda"):
        pk.geometry.mmcr(z, lmbda="big")


def test_shipped_mmcr_mlp_trained_gap_peaks_at_n_equals_d():
    import json

    config = json.loads((CHECKPOINT / "config.json").read_text())
    task = multiview.load_task(CHECKPOINT)
    x = task.sample(256, config["views"], seed=11)
    with torch.no_grad():
        trained = pk.geometry.mmcr(multiview.load_encoder(CHECKPOINT)(x)).summary
        init = pk.geometry.mmcr(multiview.load_encoder(CHECKPOINT, "step0")(x)).summary
    assert trained["gap"] < init["gap"] - 0.2
    assert trained["uniformity"] < init["uniformity"] - 1.0
    dim = 16
    embeddings = {}
    for n in (4, 16, 64, 256):
        net = multiview.load_encoder(CHECKPOINT, f"N{n}-D{dim}")
        with torch.no_grad():
            embeddings[(n, dim)] = [net(task.sample(n, config["views"], seed=s)) for s in range(4)]
    result = pk.geometry.sweep(embeddings, label="trained")
    assert result.summary["peak_items"][dim] == dim
