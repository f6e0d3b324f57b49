"""Tests for losses.py: outer losses vs brute-force loops, twice-differentiability, the sign of Eq. (4),
task losses vs torch / loops. The metrics' tests are in tests/test_metrics.py."""
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import losses as L  # noqa: E402

sk = pytest.importorskip("sklearn.metrics")
DT = torch.float64


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=DT), dim=1)


# labels with repeats, a singleton class (7) and classes of different sizes
Y_MIXED = torch.tensor([0, 1, 0, 2, 1, 0, 7, 2, 2, 1, 3, 3])
Y_NO_POS = torch.arange(6)  # every class a singleton: no positive pair anywhere


# -------------------------------------------------------------------------------------------------
# brute-force references (pure Python loops over pairs)
# -------------------------------------------------------------------------------------------------

def ref_align_uniform(z, y, t):
    n = len(y)
    same, allp = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d2 = float(((z[i] - z[j]) ** 2).sum())
            allp.append(math.exp(-t * d2))
            if y[i] == y[j]:
                same.append(d2)
    align = sum(same) / len(same) if same else 0.0
    return align + math.log(sum(allp) / len(allp))


def ref_supcon(z, y, tau):
    n = len(y)
    losses = []
    for i in range(n):
        P = [p for p in range(n) if p != i and y[p] == y[i]]
        if not P:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in P) / len(P))
    return sum(losses) / len(losses) if losses else 0.0


def ref_db(z, y, eps, scatter="rms"):
    classes = sorted(set(y.tolist()))
    c, S = {}, {}
    for k in classes:
        X = z[y == k]
        c[k] = X.mean(0)
        r2 = [float(((x - c[k]) ** 2).sum()) for x in X]
        S[k] = math.sqrt(sum(r2) / len(r2) + eps) if scatter == "rms" else sum(math.sqrt(r + eps) for r in r2) / len(r2)
    D = []
    for i in classes:
        D.append(max((S[i] + S[j]) / math.sqrt(float(((c[i] - c[j]) ** 2).sum()) + eps) for j in classes if j != i))
    return sum(D) / len(D)


# -------------------------------------------------------------------------------------------------
# outer losses
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("y", [Y_MIXED, Y_NO_POS], ids=["mixed", "no_positive_pair"])
def test_align_uniform_matches_loop(y):
    z = _unit(len(y), 5, 0)
    for t in (2.0, 0.7):
        got = L.align_uniform_loss(z, y, t=t)
        assert torch.isfinite(got)
        assert abs(got.item() - ref_align_uniform(z, y, t)) < 1e-12


def test_align_uniform_no_positive_pair_is_uniformity_only():
    z = _unit(6, 4, 1)
    loss, parts = L.align_uniform_loss(z, Y_NO_POS, return_parts=True)
    assert parts["align"].item() == 0.0 and loss.item() == parts["uniform"].item()
    g, = torch.autograd.grad(L.align_uniform_loss(z.requires_grad_(), Y_NO_POS), z)
    assert torch.isfinite(g).all()


def test_uniformity_equals_reference_pdist_form():
    z = _unit(12, 6, 2)
    _, parts = L.align_uniform_loss(z, Y_MIXED, t=2.0, return_parts=True)
    # Wang & Isola's reference code: pdist over i < j
    ref = torch.pdist(z, p=2).pow(2).mul(-2.0).exp().mean().log()
    assert abs(parts["uniform"].item() - ref.item()) < 1e-12
    ref_align = torch.stack([(z[i] - z[j]).norm().pow(2) for i in range(12) for j in range(12)
                             if i != j and Y_MIXED[i] == Y_MIXED[j]]).mean()
    assert abs(parts["align"].item() - ref_align.item()) < 1e-12


def test_align_uniform_preconditions():
    z = torch.randn(5, 3, dtype=DT) * 3
    y = torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(L.LossError, match="L2-normalised"):
        L.align_uniform_loss(z, y)
    assert torch.allclose(L.align_uniform_loss(z, y, normalize=True), L.align_uniform_loss(F.normalize(z, dim=1), y))
    with pytest.raises(L.LossError, match="n >= 2"):
        L.align_uniform_loss(_unit(1, 3, 0), torch.tensor([0]))
    with pytest.raises(L.LossError):
        L.align_uniform_loss(_unit(4, 3, 0), torch.tensor([0, 1, 0]))


def test_minimising_outer_loss_pulls_same_class_together():
    """The DEVIATION really is the minimisation form: SGD on free unit vectors reduces same-class
    distances and spreads the batch, while minimising the printed Eq. (4) pushes same-class apart."""
    torch.manual_seed(0)
    y = torch.arange(4).repeat_interleave(6)  # 24 vectors, 4 classes

    def same_mean_d2(z):
        d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
        m = (y[:, None] == y[None]) & ~torch.eye(len(y), dtype=torch.bool)
        return d2[m].mean().item()

    def printed_eq4(z, y):  # −E_same ‖·‖ − log E exp(−2‖·‖), literally as printed
        d = (2 - 2 * z @ z.T).clamp_min(1e-12).sqrt()
        off = ~torch.eye(len(y), dtype=torch.bool)
        m = (y[:, None] == y[None]) & off
        return -d[m].mean() - torch.log(torch.exp(-2 * d[off]).mean())

    w0 = torch.randn(24, 8, dtype=DT)
    res = {}
    for name, fn in [("ours", lambda z: L.align_uniform_loss(z, y)), ("printed", lambda z: printed_eq4(z, y))]:
        w = w0.clone().requires_grad_()
        opt = torch.optim.SGD([w], lr=1.0)
        for _ in range(100):
            opt.zero_grad()
            fn(F.normalize(w, dim=1)).backward()
            opt.step()
        res[name] = same_mean_d2(F.normalize(w.detach(), dim=1))
    start = same_mean_d2(F.normalize(w0, dim=1))
    assert res["ours"] < 0.7 * start
    assert res["printed"] > start


@pytest.mark.parametrize("y", [Y_MIXED, Y_NO_POS], ids=["mixed", "no_positive_pair"])
def test_supcon_matches_loop(y):
    z = _unit(len(y), 5, 3)
    for tau in (0.07, 0.5):
        got = L.supcon_loss(z, y, tau=tau)
        assert torch.isfinite(got)
        assert abs(got.item() - ref_supcon(z, y, tau)) < 1e-10 * max(1.0, abs(got.item()))
    if len(set(y.tolist())) == len(y):
        assert L.supcon_loss(z, y).item() == 0.0


@pytest.mark.parametrize("scatter", ["rms", "mean"])
def test_davies_bouldin_matches_loop(scatter):
    z = torch.randn(12, 5, dtype=DT, generator=torch.Generator().manual_seed(4))
    for eps in (1e-8, 0.1):
        got = L.davies_bouldin_loss(z, Y_MIXED, eps=eps, scatter=scatter)
        assert abs(got.item() - ref_db(z, Y_MIXED, eps, scatter)) < 1e-12


def test_davies_bouldin_vs_sklearn_and_scale_invariance():
    z = torch.randn(30, 6, dtype=DT, generator=torch.Generator().manual_seed(5))
    y = torch.arange(5).repeat(6)
    ours = L.davies_bouldin_loss(z, y, eps=0.0, scatter="mean").item()
    assert abs(ours - sk.davies_bouldin_score(z.numpy(), y.numpy())) < 1e-12
    a = L.davies_bouldin_loss(z, y, eps=0.0).item()
    assert abs(L.davies_bouldin_loss(7.3 * z, y, eps=0.0).item() - a) < 1e-12
    # smooth max: upper bound within tau·log(k−1), converging to the exact max
    s = L.davies_bouldin_loss(z, y, eps=0.0, smooth_tau=0.01).item()
    assert a <= s <= a + 0.01 * math.log(4) + 1e-12
    with pytest.raises(L.LossError, match=">= 2 classes"):
        L.davies_bouldin_loss(z, torch.zeros(30, dtype=torch.long))


@pytest.mark.parametrize("name", ["align_uniform", "supcon", "davies_bouldin", "davies_bouldin_smooth"])
def test_outer_losses_twice_differentiable(name):
    y = torch.tensor([0, 1, 0, 2, 1, 3])  # class 2 and 3 contain one / one sample
    z = torch.randn(6, 4, dtype=DT, generator=torch.Generator().manual_seed(6)).requires_grad_()
    fn = {
        "align_uniform": lambda z: L.OUTER_LOSSES["align_uniform"](z, y, normalize=True),
        "supcon": lambda z: L.OUTER_LOSSES["supcon"](z, y, tau=0.5, normalize=True),
        "davies_bouldin": lambda z: L.OUTER_LOSSES["davies_bouldin"](z, y),
        "davies_bouldin_smooth": lambda z: L.davies_bouldin_loss(z, y, smooth_tau=0.3),
    }[name]
    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))


def test_outer_losses_registry():
    assert set(L.OUTER_LOSSES) == {"align_uniform", "supcon", "davies_bouldin"}


# -------------------------------------------------------------------------------------------------
# task losses
# -------------------------------------------------------------------------------------------------

def test_task_loss_registry():
    assert set(L.TASK_LOSSES) == {"cross_entropy", "bce", "focal", "rel_l2", "mse", "rmse", "nrmse"}


def test_focal_gamma0_is_cross_entropy_and_matches_loop():
    g = torch.Generator().manual_seed(7)
    x, t = torch.randn(9, 5, dtype=DT, generator=g), torch.randint(0, 5, (9,), generator=g)
    ce = L.TASK_LOSSES["cross_entropy"]()(x, t)
    assert torch.allclose(L.TASK_LOSSES["focal"](gamma=0.0)(x, t), ce, atol=1e-14, rtol=0)
    assert torch.allclose(ce, F.cross_entropy(x, t))
    alpha = [0.5, 1.0, 2.0, 0.3, 1.5]
    got = L.TASK_LOSSES["focal"](gamma=2.0, alpha=alpha)(x, t)
    p = torch.softmax(x, 1)
    ref = sum(-alpha[t[i]] * (1 - p[i, t[i]]) ** 2 * math.log(p[i, t[i]]) for i in range(9)) / 9
    assert abs(got.item() - float(ref)) < 1e-12
    # dense (B, K, H, W) with integer targets (B, H, W)
    xd, td = torch.randn(2, 3, 4, 4, dtype=DT, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g)
    assert torch.allclose(L.focal(gamma=0.0)(xd, td), F.cross_entropy(xd, td))


def test_bce_pos_weight_matches_torch_and_ignore_mask():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(6, 36, dtype=DT, generator=g)
    t = (torch.rand(6, 36, generator=g) < 0.3).to(DT)
    for pw in (None, 4.0, 10.0):
        ref = torch.nn.BCEWithLogitsLoss(pos_weight=None if pw is None else pw * torch.ones(36, dtype=DT))(x, t)
        assert torch.allclose(L.TASK_LOSSES["bce"](pos_weight=pw)(x, t), ref, atol=1e-14, rtol=0)
    # Cosmic: dense logits (B, 1, H, W), target (B, H, W) with ignored pixels = IGNORE_VALUE
    xd = torch.randn(2, 1, 5, 5, dtype=DT, generator=g).requires_grad_()
    td = (torch.rand(2, 5, 5, generator=g) < 0.2).to(DT)
    ign = torch.rand(2, 5, 5, generator=g) < 0.3
    td_enc = torch.where(ign, torch.full_like(td, L.IGNORE_VALUE), td)
    got = L.TASK_LOSSES["bce"](ignore_value=L.IGNORE_VALUE)(xd, td_enc)
    terms = [math.log(2.0) if ign.flatten()[i] else
             float(F.binary_cross_entropy_with_logits(xd.detach().flatten()[i], td.flatten()[i])) for i in range(50)]
    assert abs(got.item() - sum(terms) / 50) < 1e-12
    gx, = torch.autograd.grad(got, xd)
    assert (gx[:, 0][ign] == 0).all() and (gx[:, 0][~ign] != 0).all()


def test_regression_losses_against_loops():
    g = torch.Generator().manual_seed(9)
    p, y = torch.randn(4, 2, 8, dtype=DT, generator=g), torch.randn(4, 2, 8, dtype=DT, generator=g)
    rel = [float((p[b] - y[b]).norm() / y[b].norm()) for b in range(4)]
    assert abs(L.TASK_LOSSES["rel_l2"]()(p, y).item() - np.mean(rel)) < 1e-12
    assert abs(L.TASK_LOSSES["rel_l2"](reduction="sum")(p, y).item() - np.sum(rel)) < 1e-12
    rmse = [math.sqrt(float(((p[b] - y[b]) ** 2).mean())) for b in range(4)]
    assert abs(L.TASK_LOSSES["rmse"]()(p, y).item() - np.mean(rmse)) < 1e-12
    nr = [np.mean([math.sqrt(float(((p[b, c] - y[b, c]) ** 2).mean())) / math.sqrt(float((y[b, c] ** 2).mean()))
                   for c in range(2)]) for b in range(4)]
    assert abs(L.TASK_LOSSES["nrmse"]()(p, y).item() - np.mean(nr)) < 1e-12
    assert abs(L.TASK_LOSSES["nrmse"](per_channel=False)(p, y).item() - np.mean(rel)) < 1e-12
    assert torch.allclose(L.TASK_LOSSES["mse"]()(p, y), F.mse_loss(p, y))
    # one output channel: nRMSE == relative L2; target without the channel axis is accepted
    p1, y1 = p[:, :1], y[:, 0]
    assert torch.allclose(L.nrmse()(p1, y1), L.rel_l2()(p1, y1))
    with pytest.raises(L.LossError, match="does not match"):
        L.mse()(p, y[:, :1])
