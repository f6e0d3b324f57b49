"""ORCA's OTDD (orca.OTDDLoss): entropic OT against exact OT, envelope gradients against finite
differences, and the properties a dataset distance must have."""
import os
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import orca  # noqa: E402


def test_entropic_ot_converges_to_exact_assignment():
    """Uniform measures of equal size: exact OT is the best assignment (Birkhoff); OT_ε → it as ε → 0."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(12, 3, generator=g, dtype=torch.float64)
    C = orca._sq_dist(x, y)
    r, c = linear_sum_assignment(C.numpy())
    exact = C.numpy()[r, c].mean()
    gaps = []
    for eps in (1e-1, 1e-2, 1e-3):
        value, P = orca._sinkhorn(C, eps, 2000)
        np.testing.assert_allclose(P.sum(1).numpy(), np.full(12, 1 / 12), rtol=1e-2)   # marginals
        gaps.append(abs(float((P * C).sum()) - exact))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * exact


def test_sinkhorn_divergence_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    yy = y.clone().requires_grad_()
    grad, = torch.autograd.grad(orca.sinkhorn_divergence(x, yy, 0.05, 500), yy)
    h = 1e-6
    for i, j in [(0, 0), (3, 1), (6, 0)]:
        d = torch.zeros_like(y)
        d[i, j] = h
        fd = (orca.sinkhorn_divergence(x, y + d, 0.05, 500) - orca.sinkhorn_divergence(x, y - d, 0.05, 500)) / (2 * h)
        assert abs(float(grad[i, j]) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


def test_otdd_is_a_distance_between_labelled_sets():
    g = torch.Generator().manual_seed(2)
    x_s = torch.cat([torch.randn(20, 4, generator=g) + 3 * k for k in range(3)]).double()
    y_s = torch.arange(3).repeat_interleave(20)
    otdd = orca.OTDDLoss(x_s, y_s, eps=0.1)
    assert abs(float(otdd(x_s, y_s))) < 1e-6                         # identical labelled sets: 0
    near, far = float(otdd(x_s[:20])), float(otdd(x_s[:20] - 10.0))  # one target class, as ORCA calls it
    assert 0 <= near < far
    x_t = (x_s[:20] - 10.0).clone().requires_grad_()
    loss = otdd(x_t)
    loss.backward()
    with torch.no_grad():                                            # a gradient step lowers the distance
        assert float(otdd(x_t - 0.05 * x_t.grad)) < float(loss)


@pytest.mark.parametrize("n_t", [1, 5])
def test_otdd_small_target_sets(n_t):
    x_s = torch.randn(30, 3, dtype=torch.float64)
    y_s = torch.arange(3).repeat(10)
    v = orca.OTDDLoss(x_s, y_s)(torch.randn(n_t, 3, dtype=torch.float64))
    assert torch.isfinite(v)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_otdd_gradient_is_the_sinkhorn_divergence_gradient_with_one_target_label(seed):
    """ORCA's otdd stores every label-to-label distance as a number (`.item()`), and ORCA compares the labelled
    source set with ONE target class at a time. The label term then adds a constant to each source row of the
    cost, which moves neither the plan nor the gradient: d OTDD / d x_t is the gradient of the plain Sinkhorn
    divergence between the features (same cost ½‖x − x'‖², same ε), here to 1e-5 relative in float64 once
    both have converged (1,000 iterations: the ε-schedule starts at max C, which the row constants change)."""
    g = torch.Generator().manual_seed(seed)
    x_s = torch.cat([torch.randn(15, 4, generator=g, dtype=torch.float64) + 2 * k for k in range(3)])
    y_s = torch.arange(3).repeat_interleave(15)
    x_t = (torch.randn(12, 4, generator=g, dtype=torch.float64) + 1).requires_grad_()
    otdd = orca.OTDDLoss(x_s, y_s, eps=0.1, iters=1000)
    g_otdd, = torch.autograd.grad(otdd(x_t), x_t)
    g_plain, = torch.autograd.grad(orca.sinkhorn_divergence(x_s, x_t, 0.1, 1000), x_t)
    assert torch.linalg.vector_norm(g_otdd - g_plain) <= 1e-5 * torch.linalg.vector_norm(g_plain)
