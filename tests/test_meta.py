"""Tests for meta.py: MoNA's stage-1 meta-gradients (arXiv 2406.18864, Eq. 5, 7 and 9) against oracles.

Oracles: central finite differences of the objectives F (Eq. 5/7, K-step unroll) and G (Eq. 9) written here
with first-order autograd only; ∇_φ L_inner for the first-order limit. The literal form `meta.meta_grad`
(Eq. 3 and 5, K = 1) is the reference of the variants: the K-step unroll at K = 1 (same bits), the
finite-difference HVPs (O(ε²)), the Taylor form with or without a cached v (O(α²) gap). float64, tiny
models, seconds. Also: the usage example of meta.py's docstring runs, and the module's layout.
"""
import ast
import inspect
import math
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

import meta

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny float64 ops: intra-op threads only add spin-waits (30× slower on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------------
# A tiny MoNA stage-1 problem: embedder φ, encoder θ_f, fixed head θ_h, target CE, source align+uniform
# --------------------------------------------------------------------------------------------------
def align_uniform(z, y, t=2.0):
    """Local copy of Eq. (4) in minimisation form on L2-normalised z (the DEVIATION note in losses.py)."""
    z = F.normalize(z, dim=-1)
    d2 = (2 - 2 * z @ z.T).clamp_min(0)                     # ‖z_i − z_j‖² for unit vectors
    off = ~torch.eye(len(y), dtype=torch.bool)
    same = (y[:, None] == y[None, :]) & off
    return d2[same].mean() + torch.logsumexp(-t * d2[off], 0) - math.log(int(off.sum()))


class Problem:
    def __init__(self, kind="mlp", dropout=0.0, seed=0, dtype=DT, n=24, tokens=5, width=8):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        c_t, c_s, k = 3, 4, 3
        self.embedder = nn.Linear(c_t, width)                                    # φ_e
        if kind == "mlp":
            self.encoder = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Dropout(dropout),
                                         nn.Linear(width, width), nn.Tanh())     # θ_f
        else:
            layer = nn.TransformerEncoderLayer(width, 2, 16, dropout, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, k)                                          # θ_h (fixed)
        self.src_embedder = nn.Linear(c_s, width)                                # θ^S_e0 (frozen)
        for m in (self.embedder, self.encoder, self.head, self.src_embedder):
            m.to(dtype)
        self.head.requires_grad_(False)
        self.src_embedder.requires_grad_(False)
        self.x_t = torch.randn(n, tokens, c_t, generator=g, dtype=DT).to(dtype)
        self.y_t = torch.arange(n) % k
        self.y_s = torch.arange(n) % k
        self.x_s = (torch.randn(n, tokens, c_s, generator=g, dtype=DT) + self.y_s[:, None, None]).to(dtype)

    def inner_loss(self, theta_f, phi):
        tokens = functional_call(self.embedder, phi, (self.x_t,))               # (B, N, D)
        feats = functional_call(self.encoder, theta_f, (tokens,))               # (B, N, D)
        return F.cross_entropy(self.head(feats.mean(1)), self.y_t)

    def outer_loss(self, theta_f):
        with torch.no_grad():
            tokens = self.src_embedder(self.x_s)
        feats = functional_call(self.encoder, theta_f, (tokens,))
        return align_uniform(feats.mean(1), self.y_s)

    @property
    def theta_f(self):
        return dict(self.encoder.named_parameters())

    @property
    def phi(self):
        return dict(self.embedder.named_parameters())


def rel(a: dict, b: dict) -> float:
    num = sum(float((a[k] - b[k]).pow(2).sum()) for k in b)
    return math.sqrt(num / sum(float(b[k].pow(2).sum()) for k in b))


# --------------------------------------------------------------------------------------------------
# Oracles written independently of meta.py (first-order autograd only)
# --------------------------------------------------------------------------------------------------
def grad_theta(loss_fn, theta, *args):
    th = {k: v.detach().requires_grad_() for k, v in theta.items()}
    return dict(zip(th, torch.autograd.grad(loss_fn(th, *args), list(th.values()))))


def F_exact(p, phi, alpha, lam, steps):
    """F(φ) = L_inner(θ_f, φ) + λ L_outer(θ^K), θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ)."""
    theta = {k: v.detach() for k, v in p.theta_f.items()}
    L0 = p.inner_loss(theta, phi)
    for _ in range(steps):
        g = grad_theta(p.inner_loss, theta, phi)
        theta = {k: theta[k] - alpha * g[k] for k in theta}
    return L0 + lam * p.outer_loss(theta)


def G_taylor(p, phi, alpha, lam, v):
    """Eq. (9): G(φ) = L_inner(θ_f, φ) − λα ⟨v, ∇_θ L_inner(θ_f, φ)⟩."""
    theta = {k: t.detach() for k, t in p.theta_f.items()}
    g = grad_theta(p.inner_loss, theta, phi)
    return p.inner_loss(theta, phi) - lam * alpha * sum((v[k] * g[k]).sum() for k in v)


def fd_gradient(fn, phi, h=1e-5):
    """Central differences of a scalar function of φ over every coordinate."""
    base = {k: t.detach().clone() for k, t in phi.items()}
    out = {}
    for k, t in base.items():
        g = torch.zeros_like(t)
        for i in range(t.numel()):
            vals = []
            for s in (h, -h):
                pert = dict(base)
                pert[k] = t.clone()
                pert[k].view(-1)[i] += s
                vals.append(float(fn(pert)))
            g.view(-1)[i] = (vals[0] - vals[1]) / (2 * h)
        out[k] = g
    return out


def grad_inner(p):
    phi = {k: v.detach().requires_grad_() for k, v in p.phi.items()}
    theta = {k: v.detach() for k, v in p.theta_f.items()}
    return dict(zip(phi, torch.autograd.grad(p.inner_loss(theta, phi), list(phi.values()))))


# --------------------------------------------------------------------------------------------------
# Exact (Eq. 7, K-step unroll) and Taylor (Eq. 9) against finite differences of their objectives
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "transformer"])
@pytest.mark.parametrize("steps", [1, 3])
def test_exact_autograd_matches_fd_of_F(kind, steps):
    p = Problem(kind)
    alpha, lam = 0.5, 1.0
    got, st = meta.meta_grad_exact(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam, steps=steps)
    want = fd_gradient(lambda ph: F_exact(p, ph, alpha, lam, steps), p.phi)
    assert rel(got, want) <= 1e-6
    assert st["meta_ratio"] > 0.05                                  # the meta term is large here
    with torch.no_grad():
        L_in = float(p.inner_loss(p.theta_f, p.phi))
    assert math.isclose(st["inner_loss"], L_in, rel_tol=1e-12)
    assert math.isclose(st["outer_loss"], F_exact(p, p.phi, alpha, 1.0, steps).item() - L_in, rel_tol=1e-9)


def test_head_in_phi_is_meta_learned_too():
    """φ may hold θ_h as well: its gradient then carries the same second-order term (checked against FD of F)."""
    p = Problem("mlp")

    def inner_loss(theta_f, phi):                   # φ = {"e.*": embedder, "h.*": head}
        tokens = functional_call(p.embedder, {k[2:]: v for k, v in phi.items() if k[0] == "e"}, (p.x_t,))
        feats = functional_call(p.encoder, theta_f, (tokens,))
        logits = functional_call(p.head, {k[2:]: v for k, v in phi.items() if k[0] == "h"}, (feats.mean(1),))
        return F.cross_entropy(logits, p.y_t)
    p.inner_loss = inner_loss
    phi = {**{"e." + k: v for k, v in p.embedder.named_parameters()},
           **{"h." + k: v for k, v in p.head.named_parameters()}}
    got, _ = meta.meta_grad_exact(p.inner_loss, p.outer_loss, p.theta_f, phi, 0.5, 1.0)
    want = fd_gradient(lambda ph: F_exact(p, ph, 0.5, 1.0, 1), phi)
    assert rel(got, want) <= 1e-6 and list(got) == list(phi)
    fd, _ = meta.meta_grad_exact(p.inner_loss, p.outer_loss, p.theta_f, phi, 0.5, 1.0, hvp="finite_difference")
    assert rel(fd, got) <= 1e-4
    leaves = {k: v.detach().requires_grad_() for k, v in phi.items()}   # the head is frozen (requires_grad=False)
    g_first = dict(zip(phi, torch.autograd.grad(inner_loss(p.theta_f, leaves), list(leaves.values()))))
    assert rel({k: got[k] for k in got if k[0] == "h"}, {k: g_first[k] for k in got if k[0] == "h"}) > 1e-3


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_taylor_autograd_matches_fd_of_G(kind):
    p = Problem(kind)
    alpha, lam = 0.5, 1.0
    v = grad_theta(lambda th: p.outer_loss(th), p.theta_f)
    got, st = meta.meta_grad_taylor(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam)
    want = fd_gradient(lambda ph: G_taylor(p, ph, alpha, lam, v), p.phi)
    assert rel(got, want) <= 1e-6
    assert math.isclose(st["outer_loss"], p.outer_loss(p.theta_f).item(), rel_tol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_taylor_gap_is_order_alpha_squared(kind):
    p = Problem(kind)
    v, _ = meta.outer_gradient(p.outer_loss, p.theta_f)
    gaps, gaps_cached = [], []
    for alpha in (1e-1, 1e-2, 1e-3):
        ex, _ = meta.meta_grad(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, 1.0)
        ta, _ = meta.meta_grad_taylor(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, 1.0)
        tc, _ = meta.meta_grad_taylor(p.inner_loss, None, p.theta_f, p.phi, alpha, 1.0, outer_grad=v)
        gaps.append(math.sqrt(sum(float((ex[k] - ta[k]).pow(2).sum()) for k in ex)))
        gaps_cached.append(math.sqrt(sum(float((ex[k] - tc[k]).pow(2).sum()) for k in ex)))
    assert gaps[2] > 0
    for big, small in zip(gaps, gaps[1:]):
        assert 50 <= big / small <= 200, gaps                      # ≈ 100× per decade of α
    for big, small in zip(gaps_cached, gaps_cached[1:]):
        assert 50 <= big / small <= 200, gaps_cached


# --------------------------------------------------------------------------------------------------
# Finite-difference HVP variants against the double-backward ones
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,r,tol", [("mlp", 1e-2, 1e-4), ("transformer", 1e-4, 1e-6)])
@pytest.mark.parametrize("variant", ["exact1", "exact3", "taylor"])
def test_finite_difference_matches_autograd(kind, r, tol, variant):
    p = Problem(kind)
    args = (p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0)
    if variant == "taylor":
        ref, st_ref = meta.meta_grad_taylor(*args)
        got, st = meta.meta_grad_taylor(*args, hvp="finite_difference", fd_r=r)
    else:
        k = int(variant[-1])
        ref, st_ref = meta.meta_grad(*args) if k == 1 else meta.meta_grad_exact(*args, steps=k)
        got, st = meta.meta_grad_exact(*args, steps=k, hvp="finite_difference", fd_r=r)
    assert rel(got, ref) <= tol
    assert math.isclose(st["meta_norm"], st_ref["meta_norm"], rel_tol=100 * tol)
    assert math.isclose(st["inner_loss"], st_ref["inner_loss"], rel_tol=1e-6)


# --------------------------------------------------------------------------------------------------
# The meta term is really there, and vanishes exactly when α = 0 or λ = 0
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn,hvp", [("exact", "autograd"), ("exact", "finite_difference"),
                                    ("taylor", "autograd"), ("taylor", "finite_difference")])
def test_meta_term_present_and_first_order_limit(fn, hvp):
    p = Problem("mlp")
    f = meta.meta_grad_exact if fn == "exact" else meta.meta_grad_taylor
    g_in = grad_inner(p)
    # FD-Taylor's ∇_φ L_inner is the mean of the ± passes: exact up to O(ε²) (ε = 0.01 / ‖v‖ here)
    tol = 1e-4 if (fn, hvp) == ("taylor", "finite_difference") else 1e-12
    got, st = f(p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0, hvp=hvp)
    assert rel(got, g_in) > 0.05                                   # differs from ∇_φ L_inner
    assert math.isclose(st["inner_grad_norm"], math.sqrt(sum(float(t.pow(2).sum()) for t in g_in.values())),
                        rel_tol=tol)
    assert math.isclose(st["meta_ratio"], st["meta_norm"] / st["inner_grad_norm"], rel_tol=1e-12)
    for alpha, lam in ((0.0, 1.0), (0.5, 0.0)):
        got0, st0 = f(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam, hvp=hvp)
        assert rel(got0, g_in) <= tol
        assert st0["meta_norm"] == 0.0


def test_inner_weight_scales_only_the_first_term():
    p = Problem("mlp")
    args = (p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0)
    full, _ = meta.meta_grad_exact(*args)
    no_inner, _ = meta.meta_grad_exact(*args, inner_weight=0.0)
    g_in = grad_inner(p)
    assert rel({k: no_inner[k] + g_in[k] for k in g_in}, full) <= 1e-12


@pytest.mark.parametrize("hvp", ["autograd", "finite_difference"])
def test_precomputed_outer_grad(hvp):
    p = Problem("mlp")
    v, L_out = meta.outer_gradient(p.outer_loss, p.theta_f)
    want = grad_theta(lambda th: p.outer_loss(th), p.theta_f)
    assert rel(v, want) <= 1e-12 and math.isclose(L_out, p.outer_loss(p.theta_f).item())
    a, st_a = meta.meta_grad_taylor(p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0, hvp=hvp)
    b, st_b = meta.meta_grad_taylor(p.inner_loss, None, p.theta_f, p.phi, 0.5, 1.0, hvp=hvp, outer_grad=v)
    assert rel(b, a) <= 1e-12
    assert "outer_loss" in st_a and "outer_loss" not in st_b


# --------------------------------------------------------------------------------------------------
# Purity, keys, frozen encoders, dropout masks, float32 with fused attention
# --------------------------------------------------------------------------------------------------
CALLS = [("exact", "autograd", 1), ("exact", "finite_difference", 1), ("exact", "autograd", 2),
         ("exact", "finite_difference", 2), ("taylor", "autograd", 1), ("taylor", "finite_difference", 1),
         ("meta_grad", "autograd", 1)]


def call(p, fn, hvp, steps, alpha=0.5, lam=1.0, **kw):
    if fn == "meta_grad":
        assert hvp == "autograd" and steps == 1
        return meta.meta_grad(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam, **kw)
    if fn == "exact":
        return meta.meta_grad_exact(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam, steps=steps,
                                    hvp=hvp, **kw)
    return meta.meta_grad_taylor(p.inner_loss, p.outer_loss, p.theta_f, p.phi, alpha, lam, hvp=hvp, **kw)


@pytest.mark.parametrize("fn,hvp,steps", CALLS)
def test_inputs_untouched_and_keys(fn, hvp, steps):
    p = Problem("transformer")
    p.encoder.layers[0].linear1.requires_grad_(False)               # mixed flags must survive
    tensors = {**{"f." + k: t for k, t in p.theta_f.items()}, **{"e." + k: t for k, t in p.phi.items()}}
    for t in tensors.values():
        if t.requires_grad:
            t.grad = torch.full_like(t, 7.0)
    before = {k: (t.detach().clone(), t.requires_grad, None if t.grad is None else t.grad.clone())
              for k, t in tensors.items()}
    head_before = p.head.weight.detach().clone()
    got, st = call(p, fn, hvp, steps)
    for k, t in tensors.items():
        val, flag, grad = before[k]
        assert torch.equal(t, val) and t.requires_grad == flag, k
        assert (t.grad is None and grad is None) or torch.equal(t.grad, grad), k
    assert torch.equal(p.head.weight, head_before) and p.head.weight.grad is None
    assert list(got) == list(p.phi)
    for k, g in got.items():
        assert g.shape == p.phi[k].shape and g.dtype == p.phi[k].dtype and not g.requires_grad
    assert all(isinstance(v, float) and math.isfinite(v) for v in st.values())
    assert {"inner_loss", "inner_grad_norm", "meta_norm", "meta_ratio", "outer_loss"} <= set(st)


@pytest.mark.parametrize("fn,hvp,steps", CALLS[:2] + CALLS[4:])
def test_frozen_encoder_gives_same_gradient(fn, hvp, steps):
    p = Problem("mlp")
    torch.manual_seed(3)
    a, _ = call(p, fn, hvp, steps)
    p.encoder.requires_grad_(False)
    torch.manual_seed(3)
    b, _ = call(p, fn, hvp, steps)
    assert rel(b, a) <= 1e-14


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
@pytest.mark.parametrize("fn,steps", [("exact", 1), ("exact", 2), ("taylor", 1)])
def test_dropout_masks_synchronised(kind, fn, steps):
    """With dropout active, each call pins the RNG so the ± FD passes and the autograd passes see the same
    masks: FD agrees with autograd as tightly as without dropout (with unpinned RNG this test fails)."""
    p = Problem(kind, dropout=0.3)
    p.encoder.train()
    ref_fn = "meta_grad" if (fn, steps) == ("exact", 1) else fn
    torch.manual_seed(11)
    ref, _ = call(p, ref_fn, "autograd", steps)
    torch.manual_seed(11)
    got, _ = call(p, fn, "finite_difference", steps, fd_r=1e-4)
    assert rel(got, ref) <= 1e-6
    p.encoder.eval()                                                 # dropout really was active
    ev, _ = call(p, fn, "autograd", steps)
    assert rel(ev, ref) > 1e-2
    p.encoder.train()                                                # a different global seed: other masks
    torch.manual_seed(12)
    other, _ = call(p, fn, "autograd", steps)
    assert rel(other, ref) > 1e-2


@pytest.mark.parametrize("fn,hvp,steps", [("exact", "finite_difference", 2), ("meta_grad", "autograd", 1)])
def test_global_rng_advances_by_one_draw_only(fn, hvp, steps):
    p = Problem("mlp", dropout=0.3)
    torch.manual_seed(5)
    call(p, fn, hvp, steps)
    after = torch.rand(3)
    torch.manual_seed(5)
    torch.randint(0, 2 ** 62, ())
    assert torch.equal(after, torch.rand(3))


@pytest.mark.parametrize("fn,hvp,steps", CALLS[:2] + CALLS[4:])
def test_float32_default_attention(fn, hvp, steps):
    """float32 with the default SDPA dispatch (fused kernel for the first-order passes): autograd modes
    work because the twice-differentiated passes run on the MATH kernel; both agree with float64."""
    p64 = Problem("transformer")
    p32 = Problem("transformer", dtype=torch.float32)
    ref, _ = call(p64, fn, "autograd", steps)
    got, _ = call(p32, fn, hvp, steps)
    assert all(g.dtype == torch.float32 for g in got.values())
    assert rel({k: g.double() for k, g in got.items()}, ref) <= 2e-3


# --------------------------------------------------------------------------------------------------
# Argument validation: one-line MetaGradError (a ValueError)
# --------------------------------------------------------------------------------------------------
def test_bad_arguments():
    p = Problem("mlp")
    ex = lambda **kw: meta.meta_grad_exact(**{**dict(inner_loss=p.inner_loss, outer_loss=p.outer_loss,
                                                      theta_f=p.theta_f, phi=p.phi, alpha=0.1, lam=0.5), **kw})
    ta = lambda **kw: meta.meta_grad_taylor(**{**dict(inner_loss=p.inner_loss, outer_loss=p.outer_loss,
                                                       theta_f=p.theta_f, phi=p.phi, alpha=0.1, lam=0.5), **kw})
    bad = [dict(hvp="fd"), dict(steps=0), dict(steps=1.5), dict(alpha=-1.0), dict(lam=float("nan")),
           dict(phi={}), dict(theta_f={"w": torch.zeros(2, dtype=torch.long)}), dict(fd_r=0.0),
           dict(inner_loss=lambda th, ph: p.inner_loss(th, ph).expand(2)),
           dict(inner_loss=lambda th, ph: F.cross_entropy(p.head(p.encoder(functional_call(
               p.embedder, ph, (p.x_t,))).mean(1)), p.y_t)),          # ignores theta_f: meta term would vanish
           dict(outer_loss=lambda th: p.outer_loss(dict(p.encoder.named_parameters())).detach())]
    for kw in bad:
        with pytest.raises(meta.MetaGradError) as e:
            ex(**kw)
        assert "\n" not in str(e.value)
    v, _ = meta.outer_gradient(p.outer_loss, p.theta_f)
    for kw in (dict(outer_loss=None), dict(outer_grad={k: t for k, t in list(v.items())[:-1]}),
               dict(outer_grad={k: t.reshape(-1) if t.dim() > 1 else t for k, t in v.items()})):
        with pytest.raises(meta.MetaGradError):
            ta(**kw)
    assert issubclass(meta.MetaGradError, ValueError)


# --------------------------------------------------------------------------------------------------
# meta_grad: the literal Eq. (3) + Eq. (5); the default path; the variants agree with it
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_meta_grad_matches_fd_of_F(kind):
    """The literal form against finite differences of F (Eq. 5), with and without the L_inner term."""
    p = Problem(kind)
    got, st = meta.meta_grad(p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0)
    assert rel(got, fd_gradient(lambda ph: F_exact(p, ph, 0.5, 1.0, 1), p.phi)) <= 1e-6
    no_inner, _ = meta.meta_grad(p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 1.0, inner_weight=0.0)
    g_in = grad_inner(p)
    assert rel({k: no_inner[k] + g_in[k] for k in g_in}, got) <= 1e-12
    assert math.isclose(st["meta_ratio"], st["meta_norm"] / st["inner_grad_norm"], rel_tol=1e-12)


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_default_exact_path_goes_through_meta_grad(monkeypatch, w):
    """meta_grad_exact(steps=1, hvp="autograd"), what stage 1 calls by default, is meta_grad (same bits,
    same RNG draws); the K-step unroll at K = 1 builds the same graph and gives the same bits too."""
    p = Problem("transformer", dropout=0.3)
    p.encoder.train()
    args = (p.inner_loss, p.outer_loss, p.theta_f, p.phi, 0.5, 0.7)
    torch.manual_seed(2)
    ref, st_ref = meta.meta_grad(*args, inner_weight=w)
    after_ref = torch.rand(3)
    calls = []
    real = meta.meta_grad
    monkeypatch.setattr(meta, "meta_grad", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    torch.manual_seed(2)
    got, st = meta.meta_grad_exact(*args, inner_weight=w)
    assert calls == [1] and torch.equal(torch.rand(3), after_ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref) and st == st_ref
    meta.meta_grad_exact(*args, steps=2)
    meta.meta_grad_exact(*args, hvp="finite_difference")
    assert calls == [1]                                              # the variants do not go through it
    torch.manual_seed(2)
    unrolled, st_u = meta._exact_autograd(*args, 1, w, meta._rng_pinner(p.theta_f))
    assert all(torch.equal(unrolled[k], ref[k]) for k in ref) and st_u == st_ref


def test_meta_grad_bad_arguments():
    p = Problem("mlp")
    for kw in (dict(alpha=-1.0), dict(lam=float("nan")), dict(inner_weight=-1.0), dict(phi={}),
               dict(outer_loss=lambda th: p.outer_loss(dict(p.encoder.named_parameters())).detach())):
        args = {**dict(inner_loss=p.inner_loss, outer_loss=p.outer_loss, theta_f=p.theta_f, phi=p.phi,
                       alpha=0.1, lam=0.5), **kw}
        with pytest.raises(meta.MetaGradError) as e:
            meta.meta_grad(**args)
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# The module itself: the docstring's usage example runs; the layout the docstring promises
# --------------------------------------------------------------------------------------------------
def docstring_example() -> str:
    doc = meta.__doc__
    head = "Usage example\n-------------\n"
    assert doc.count(head) == 1
    block = doc.split(head, 1)[1]
    lines = []
    for line in block.splitlines():
        if line.strip() and not line.startswith("    "):
            break                                                    # the next section, if any
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_docstring_example_runs():
    code = docstring_example()
    assert "meta.meta_grad(" in code and 'hvp="finite_difference"' in code and "functional_call" in code
    assert 10 <= len([line for line in code.splitlines() if line.strip()]) <= 25
    ns = {"__name__": "meta_docstring_example"}
    exec(compile(code, "<meta.__doc__ usage example>", "exec"), ns)
    assert all(p.grad is not None for p in ns["emb"].parameters())
    assert ns["stats"]["meta_norm"] > 0


def test_module_layout():
    """meta_grad opens the module (Eq. 3 and Eq. 5 visible, at most 30 lines); torch + stdlib only; the
    docstring cites nothing that does not travel with a copy of the file."""
    src = inspect.getsource(meta)
    tree = ast.parse(src)
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert public[0] == "meta_grad"
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "meta_grad")
    body_lines = src.splitlines()[fn.body[1].lineno - 1:fn.end_lineno]        # after the docstring
    assert fn.end_lineno - fn.lineno + 1 - (fn.body[1].lineno - fn.body[0].lineno) <= 30
    comments = [line.strip() for line in body_lines if line.strip().startswith("#")]
    assert any(c.startswith("# Eq. (3)") for c in comments) and any(c.startswith("# Eq. (5)") for c in comments)
    assert "lam * L_out" in "\n".join(body_lines)                   # λ multiplied inside the graph
    roots = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            roots |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            roots.add(n.module.split(".")[0])
    assert roots <= {"torch", "__future__"} | set(sys.stdlib_module_names), roots
    doc = meta.__doc__
    assert "Paper map" in doc and "2406.18864" in doc
    for banned in ("bench/", "tests/", ".md"):
        assert banned not in doc, banned
