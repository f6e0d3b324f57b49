"""meta.py: MoNA's stage-1 meta-gradient, first in the paper's literal form, then in efficient variants.

Paper map: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864: §3.2 (Eq. 2-6), Algorithm 1 (stage 1), Appendix A.3 (Eq. 7-9), Fig. 6c (K inner steps).

| paper                                                  | code                                  | shape        |
|--------------------------------------------------------|---------------------------------------|--------------|
| φ (φ_e), target embedder: the stage-1 variable         | `phi` (dict name -> tensor)           | any          |
| θ_f, encoder body, = θ^S_f0 during stage 1             | `theta_f` (dict name -> tensor)       | any          |
| θ_h, target predictor                                  | closed over by `inner_loss` (fixed)   | any          |
| L_inner(θ_f, φ), task loss of a target batch (Eq. 2)   | `inner_loss(theta_f, phi)`            | scalar       |
| L_outer(θ_f), source alignment + uniformity (Eq. 4)    | `outer_loss(theta_f)`                 | scalar       |
| α, virtual step size (Eq. 3); λ, trade-off (Eq. 5)     | `alpha`, `lam`                        | floats >= 0  |
| w, weight of L_inner (1; 0 = Table 6 "w/o L_inner")    | `inner_weight`                        | float >= 0   |
| g = ∇_θf L_inner(θ_f, φ), kept differentiable          | `g["theta_f"]`                        | like theta_f |
| θ_f* = θ_f − α g (Eq. 3)                               | `theta_star = virtual_step(...)`      | like theta_f |
| F(φ) = w·L_inner(θ_f, φ) + λ L_outer(θ_f*(φ)) (Eq. 5)  | `meta_grad` (K = 1, autograd)         | scalar       |
| ∇_φ F, the Alg. 1 update direction (Eq. 7)             | returned `grads_phi`                  | like phi     |
| K, virtual steps (Fig. 6c; the paper uses 1)           | `steps` of `meta_grad_exact`          | int >= 1     |
| u = ∇L_outer(θ_f*); adjoints a_k (a_K = u)             | `a` in `_exact_fd`                    | like theta_f |
| v = ∇_θf L_outer(θ_f) (Eq. 8, 9)                       | `v`, `outer_grad`, `outer_gradient()` | like theta_f |
| G(φ), the first-order Taylor form (Eq. 9)              | `meta_grad_taylor`                    | scalar       |

The file imports only torch and the standard library: copy it anywhere. Every function is pure: it takes
parameter dicts and two loss callables and returns detached gradients for `phi` and a dict of floats to log.
`meta_grad` is Eq. (3) and (5) line by line (K = 1, double backward) and is what `meta_grad_exact` runs by
default; below it come the same gradient for K steps or from first-order passes only, and the Taylor form.

Derivation
----------
    θ_f*(φ) = θ_f − α g(φ),   g(φ) = ∇_θf L_inner(θ_f, φ)                                   (Eq. 3)
    F(φ)    = w·L_inner(θ_f, φ) + λ L_outer(θ_f*(φ))                                        (Eq. 5)
    ∇_φ F   = w ∇_φ L_inner(θ_f, φ) − λα (∂²L_inner/∂φ∂θ_f) u,   u = ∇L_outer(θ_f*)         (Eq. 7)

K steps (Fig. 6c): θ^0 = θ_f, θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ), F = w·L_inner(θ_f, φ) + λ L_outer(θ^K)
(the L_inner term stays the one at θ_f). Reverse mode through the unroll, with ∂θ^k/∂θ^{k−1} = I − α H_θθ and
∂θ^k/∂φ = −α H_θφ (Hessians of L_inner at θ^{k−1}), is the adjoint recursion

    a_K = ∇L_outer(θ^K);   for k = K..1:   ∇_φ F += −λα (∂²L_inner/∂φ∂θ)(θ^{k−1}) a_k,
                                            a_{k−1} = a_k − α (∂²L_inner/∂θ²)(θ^{k−1}) a_k.

Taylor (App. A.3): L_outer(θ_f − α g) ≈ L_outer(θ_f) − α ⟨v, g⟩ with v = ∇L_outer(θ_f) fixed (Eq. 8);
dropping the φ-free term,

    G(φ)   = w·L_inner(θ_f, φ) − λα ⟨v, ∇_θf L_inner(θ_f, φ)⟩                                (Eq. 9)
    ∇_φ G  = w ∇_φ L_inner(θ_f, φ) − λα (∂²L_inner/∂φ∂θ_f) v.

∇_φ F − ∇_φ G = −λα (∂²L_inner/∂φ∂θ_f)(u − v) with u − v = O(α): the gap is O(α²) (O(α) relative to the
meta term), so the two agree at fine-tuning-sized α and drift apart as α grows. The meta term is the whole
point of MoNA: computed without the second-order path (create_graph=False, .detach(), torch.no_grad(),
p.data updates) it vanishes exactly and stage 1 silently becomes the "Emb" baseline of Table 2.

Stage 1 trains only φ_e (Alg. 1); θ_h stays at its initialisation inside `inner_loss`, or goes into `phi`
to be meta-learned too (same maths). θ_f is reset to θ^S_f0 every iteration, so it may be frozen: we
differentiate detached leaf copies. Hessian-vector products (`hvp=`): "autograd" differentiates g
(create_graph=True) once more; "finite_difference" uses first-order passes only, H w ≈ [∇L(θ + εw) −
∇L(θ − εw)] / 2ε with ε = r/‖w‖, r = 0.01, the central difference of DARTS (github.com/quark0/darts,
cnn/architect.py); float32 relative error about 1e-5-1e-4. Finite differences need no double backward and
keep memory close to a plain step; they work with fused attention, torch.compile, DDP and checkpointing.

Pitfalls
--------
1. Route θ_f through the dict. The callables must run the encoder with the tensors they are given, e.g.
   torch.func.functional_call(encoder, theta_f, (tokens,)); a closure that calls encoder(tokens) uses the
   module's own weights and the meta term silently vanishes. We raise MetaGradError when a loss does not
   depend on the dict it was given.
2. Fused attention has no double backward: the twice-differentiated passes of hvp="autograd" run under
   torch.nn.attention.sdpa_kernel([SDPBackend.MATH]). Hugging Face models may also be built with
   attn_implementation="eager".
3. BatchNorm running statistics are updated by every forward (target, source, and each FD pass), so source
   statistics would leak into the target model: use eval-mode BN, track_running_stats=False, or pass cloned
   buffers in the dict. LayerNorm backbones (Swin, ViT, RoBERTa) have no running state.
4. Activation checkpointing + functional_call: a non-reentrant checkpoint (torch.utils.checkpoint) recomputes
   with the module's own weights after functional_call restored them: silently wrong gradients. Pass the
   parameters as explicit inputs of the checkpointed function, or do not checkpoint with hvp="autograd".
5. Dropout / drop-path: one seed is drawn from the global generator per call, and the evaluation of L_inner
   at θ^{k−1} always runs with the RNG seeded to seed + (k − 1) (L_outer: seed + K), inside
   torch.random.fork_rng. So the ± passes of a finite difference see the same masks (otherwise mask noise
   swamps the difference), and both `hvp` modes see the same masks for the same global seed.
6. DDP: stage 1 trains only the small φ; call these functions on the unwrapped modules and all-reduce
   `grads_phi` by hand. Higher-order gradients are not synchronised by DDP; the FD variants need none.
7. fp16 with a GradScaler: unscale g before the virtual step (the "gradient penalty" recipe of the PyTorch
   AMP examples); bf16 autocast inside the callables works with both modes.

Usage example
-------------
    import torch, torch.nn as nn, torch.nn.functional as F
    from torch.func import functional_call
    import meta
    torch.manual_seed(0)
    emb, enc, head = nn.Linear(3, 8), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 2)
    src_emb = nn.Linear(4, 8)                                            # frozen source embedder
    x_t, y_t = torch.randn(16, 3), torch.randint(0, 2, (16,))            # target batch
    x_s, y_s = torch.randn(16, 4), torch.arange(16) % 2                  # labelled source batch
    def inner_loss(theta_f, phi):                                        # Eq. (2), the head θ_h fixed
        return F.cross_entropy(head(functional_call(enc, theta_f, (functional_call(emb, phi, (x_t,)),))), y_t)
    def outer_loss(theta_f):                                             # Eq. (4): align + uniform
        z = F.normalize(functional_call(enc, theta_f, (src_emb(x_s).detach(),)), dim=-1)
        d2, same = 2 - 2 * z @ z.T, (y_s[:, None] == y_s) & ~torch.eye(16, dtype=torch.bool)
        return d2[same].mean() + torch.logsumexp(-2 * d2.flatten(), 0)
    theta_f, phi = dict(enc.named_parameters()), dict(emb.named_parameters())
    grads, stats = meta.meta_grad(inner_loss, outer_loss, theta_f, phi, alpha=0.1, lam=0.5)
    fd, _ = meta.meta_grad_exact(inner_loss, outer_loss, theta_f, phi, 0.1, 0.5, hvp="finite_difference")
    assert all(torch.allclose(grads[k], fd[k], rtol=1e-3, atol=1e-6) for k in phi) and stats["meta_norm"] > 0
    for name, p in emb.named_parameters(): p.grad = grads[name]          # then optimizer.step() on φ (Alg. 1)
"""
from __future__ import annotations

import contextlib
import functools
import math
import numbers
from typing import Callable, Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

Params = dict[str, torch.Tensor]

HVP_MODES = ("autograd", "finite_difference")
FD_R = 1e-2        # DARTS radius r: ε = r / ‖w‖ (DARTS cnn/architect.py uses R = 0.01 / ‖v‖)


class MetaGradError(ValueError):
    """Bad arguments or loss callables for a meta-gradient (one-line message)."""


def meta_grad(inner_loss: Callable[[Params, Params], torch.Tensor], outer_loss: Callable[[Params], torch.Tensor],
              theta_f: Mapping[str, torch.Tensor], phi: Mapping[str, torch.Tensor], alpha: float, lam: float, *,
              inner_weight: float = 1.0) -> tuple[Params, dict]:
    """∇_φ F for Eq. (5), F(φ) = w·L_inner(θ_f, φ) + λ L_outer(θ_f*(φ)), by autograd through Eq. (3) (K = 1).

    Arguments and purity as `meta_grad_exact` (w = inner_weight). Returns grads_phi (detached, the keys,
    shapes and dtypes of phi) and stats: inner_loss, inner_grad_norm ‖∇_φ L_inner‖, meta_norm ‖λ ∇_φ L_outer‖,
    meta_ratio = meta_norm / inner_grad_norm, outer_loss = L_outer(θ_f*).
    """
    _check(inner_loss, outer_loss, theta_f, phi, alpha, lam, 1, "autograd", FD_R, inner_weight)
    pin = _rng_pinner(theta_f)                        # one seed per call: the same dropout masks (pitfall 5)
    theta_l, phi_l = leaf_copies(theta_f), leaf_copies(phi)     # leaves: a frozen encoder works, inputs untouched
    with sdpa_kernel([SDPBackend.MATH]):              # fused attention has no double backward (pitfall 2)
        with pin(0):
            # Eq. (2): L_inner(θ_f, φ), the task loss of the target batch
            L_in = _scalar(inner_loss(theta_l, phi_l), "inner_loss")
        # Eq. (3) and (5): g = ∇_θf L_inner and ∇_φ L_inner, with their graph (create_graph: what makes it MoNA)
        g = grad_dict(L_in, {"theta_f": theta_l, "phi": phi_l}, create_graph=True)
        # DEVIATION from Alg. 1 ("virtually update θ^T") and the printed Eq. (3) (which updates θ_e): only θ_f
        # is updated virtually, as in Eq. (7); a virtual φ_e or θ_h would never reach L_outer (same gradient).
        # Eq. (3): θ_f* = θ_f − α ∇_θf L_inner(θ_f, φ), a differentiable function of φ
        theta_star = virtual_step(theta_l, g["theta_f"], alpha)
    with pin(1):
        # Eq. (4): L_outer(θ_f*), alignment + uniformity of source features under θ_f* (differentiated once)
        L_out = _scalar(outer_loss(theta_star), "outer_loss")
    # Eq. (5), second term: λ ∇_φ L_outer(θ_f*(φ)) back through Eq. (3) (double backward), λ inside the graph;
    # ∇_θf* comes free and checks that outer_loss used the dict (pitfall 1)
    d_out = grad_dict(lam * L_out, {"theta_f": theta_star, "phi": phi_l}, required=("theta_f",))["phi"]
    # Eq. (5): ∇_φ F = w·∇_φ L_inner(θ_f, φ) + λ ∇_φ L_outer(θ_f*(φ))
    grads_phi = {k: (inner_weight * g["phi"][k] + d_out[k]).detach().to(phi[k].dtype) for k in phi}
    return grads_phi, _stats(g["phi"], d_out, L_in.detach(), L_out.detach())


# --------------------------------------------------------------------------------------------------
# Efficient and general variants: K-step unroll, finite-difference HVPs, the Taylor form (Eq. 9),
# a cached v. Each is checked against `meta_grad` (exact up to rounding, O(ε²) or, for Taylor, O(α²)).
# --------------------------------------------------------------------------------------------------
def meta_grad_exact(inner_loss: Callable[[Params, Params], torch.Tensor],
                    outer_loss: Callable[[Params], torch.Tensor],
                    theta_f: Mapping[str, torch.Tensor], phi: Mapping[str, torch.Tensor],
                    alpha: float, lam: float, steps: int = 1, hvp: str = "autograd", *,
                    fd_r: float = FD_R, inner_weight: float = 1.0) -> tuple[Params, dict]:
    """dF/dφ for F(φ) = w·L_inner(θ_f, φ) + λ L_outer(θ^K(φ)), θ^0 = θ_f, θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ).

    Eq. (7) for steps=1 (the paper's setting; with hvp="autograd" this calls `meta_grad`); Fig. 6c for
    steps=K: step k starts from the previous virtual weights, and the L_inner term of F stays the one at θ_f.
    w = inner_weight (1; 0 = Table 6's ablation "without L_inner").

    Args:
        inner_loss: (theta_f: dict, phi: dict) -> scalar L_inner on a target batch (θ_h closed over).
        outer_loss: (theta_f: dict) -> scalar L_outer on a labelled source batch (source embedder closed
            over, best under no_grad).
        theta_f: encoder tensors θ_f (may have requires_grad=False); phi: tensors to differentiate (φ_e,
            optionally θ_h). Nothing passed in is modified (values, .grad, requires_grad).
        alpha: α >= 0, virtual SGD step; lam: λ >= 0 (Eq. 5); steps: K >= 1.
        hvp: "autograd" (double backward through create_graph=True) or "finite_difference" (first-order
            passes only: reverse-mode adjoint recursion with central-difference HVPs, radius fd_r).
    Returns:
        grads_phi: {name: detached tensor} with exactly the keys, shapes and dtypes of phi.
        stats: inner_loss (at θ_f), outer_loss (at θ^K), inner_grad_norm ‖∇_φ L_inner‖, meta_norm
            ‖meta term‖, meta_ratio = meta_norm / inner_grad_norm.
    """
    _check(inner_loss, outer_loss, theta_f, phi, alpha, lam, steps, hvp, fd_r, inner_weight)
    if hvp == "autograd" and steps == 1:
        # the paper's setting: Eq. (3) and (5) literally (meta_grad draws the call's RNG seed itself)
        return meta_grad(inner_loss, outer_loss, theta_f, phi, alpha, lam, inner_weight=inner_weight)
    pin = _rng_pinner(theta_f)
    if hvp == "autograd":
        return _exact_autograd(inner_loss, outer_loss, theta_f, phi, alpha, lam, steps, inner_weight, pin)
    return _exact_fd(inner_loss, outer_loss, theta_f, phi, alpha, lam, steps, inner_weight, pin, fd_r)


def _exact_autograd(inner_loss, outer_loss, theta_f, phi, alpha, lam, K, inner_weight, pin):
    """Differentiate through the K virtual steps with create_graph=True (double backward). `meta_grad_exact`
    sends K = 1 to `meta_grad`; for K = 1 this loop builds the same graph and gives the same bits."""
    phi_l = leaf_copies(phi)
    theta_k = leaf_copies(theta_f)                          # θ^0 = θ_f (leaves: a frozen encoder works)
    # DEVIATION from Alg. 1 ("virtually update θ^T", i.e. φ_e, θ_f, θ_h) and from the printed Eq. (3) (which
    # updates θ_e): only θ_f is updated virtually, as in Eq. (7). For K = 1 this is the same gradient: the
    # virtual φ_e and θ_h never reach L_outer. For K > 1 φ_e and θ_h stay fixed inside the unroll (the paper
    # does not specify it), which keeps the recursion in θ_f-space.
    with sdpa_kernel([SDPBackend.MATH]):                    # fused attention has no double backward
        for k in range(1, K + 1):
            with pin(k - 1):
                L_k = _scalar(inner_loss(theta_k, phi_l), "inner_loss")
            wrt = {"theta_f": theta_k, "phi": phi_l} if k == 1 else {"theta_f": theta_k}
            # g_f = ∇_θ L_inner(θ^{k−1}, φ) with its graph (create_graph: this is what makes it MoNA)
            g = grad_dict(L_k, wrt, create_graph=True)
            if k == 1:
                L_in = L_k.detach()
                # ∇_φ L_inner(θ_f, φ): the first term of the gradient of Eq. (7)
                grad_in = {n: t.detach() for n, t in g.pop("phi").items()}
            # Eq. (3) / (7): θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ), a differentiable function of φ
            theta_k = virtual_step(theta_k, g["theta_f"], alpha)
            del g, L_k
    # L_outer(θ^K) is differentiated once: the source pass may keep the fused attention kernel
    with pin(K):
        L_out = _scalar(outer_loss(theta_k), "outer_loss")
    # Eq. (7), second term: λ d L_outer(θ^K(φ)) / dφ, back through the virtual steps (double backward);
    # asking for ∇_θ^K too is free (on the path) and checks that outer_loss really used the dict
    meta = grad_dict(lam * L_out, {"theta_f": theta_k, "phi": phi_l}, required=("theta_f",))["phi"]
    return _finish(phi, grad_in, meta, inner_weight, L_in, L_out.detach())


def fd_hvp(loss_fn: Callable[[Params, Params], torch.Tensor], theta: Params, phi: Params, w: Params, *,
           r: float = FD_R, wrt_theta: bool = False,
           rng: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
    """Hessian-vector products of L = loss_fn(θ, φ) along w (θ-space) by central differences, first order.

    Returns (H_φθ w, H_θθ w or None, ∇_φ L(θ) + O(ε²), L(θ) + O(ε²)); wrt_theta=False skips the weight
    gradients of θ in both passes (the cheaper "φ-only" pass). Both passes run under `rng()`, which must
    give them the same random state (dropout masks)."""
    norm_w = global_norm(w)
    # ε = r / ‖w‖ (DARTS); for w = 0 both passes coincide and every product is exactly 0
    eps = r / norm_w if norm_w > 0 else r
    phi_l = leaf_copies(phi)
    passes = []
    for sign in (1.0, -1.0):
        # θ ± εw as new tensors (not DARTS's in-place p.data.add_, which drifts and may be left unrestored)
        theta_s = {k: torch.add(theta[k].detach(), w[k], alpha=sign * eps) for k in theta}
        theta_s = leaf_copies(theta_s, requires_grad=wrt_theta)
        with rng():
            L = _scalar(loss_fn(theta_s, phi_l), "inner_loss")
        wrt = {"phi": phi_l, "theta_f": theta_s} if wrt_theta else {"phi": phi_l}
        passes.append((L.detach(), grad_dict(L, wrt)))
    (L_p, g_p), (L_m, g_m) = passes
    # (∂²L/∂φ∂θ) w ≈ [∇_φ L(θ + εw) − ∇_φ L(θ − εw)] / 2ε
    h_phi = {k: (g_p["phi"][k] - g_m["phi"][k]) / (2 * eps) for k in phi}
    # (∂²L/∂θ²) w ≈ [∇_θ L(θ + εw) − ∇_θ L(θ − εw)] / 2ε
    h_theta = {k: (g_p["theta_f"][k] - g_m["theta_f"][k]) / (2 * eps) for k in theta} if wrt_theta else None
    # ∇_φ L(θ) = [∇_φ L(θ + εw) + ∇_φ L(θ − εw)] / 2 + O(ε²)
    mean_phi = {k: (g_p["phi"][k] + g_m["phi"][k]) / 2 for k in phi}
    return h_phi, h_theta, mean_phi, (L_p + L_m) / 2



def _exact_fd(inner_loss, outer_loss, theta_f, phi, alpha, lam, K, inner_weight, pin, fd_r):
    """The same gradient with first-order passes only: forward sweep θ^0..θ^K, then the adjoint sweep

        a_K = ∇L_outer(θ^K);  for k = K..1:  meta += −λα H_φθ(θ^{k−1}) a_k,
                                              a_{k−1} = a_k − α H_θθ(θ^{k−1}) a_k,

    both products from one central difference of (∇_θ L_inner, ∇_φ L_inner) at θ^{k−1} ± ε a_k (the last
    one, k = 1, needs only ∇_φ). It is the chain rule through θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ):
    ∂θ^k/∂θ^{k−1} = I − α H_θθ, ∂θ^k/∂φ = −α H_θφ (Hessians symmetric). Memory: K copies of θ_f."""
    # DEVIATION from Alg. 1 / printed Eq. (3): only θ_f is updated virtually (see _exact_autograd).
    thetas = [{k: p.detach() for k, p in theta_f.items()}]          # θ^0 = θ_f
    phi_c = leaf_copies(phi, requires_grad=False)
    for k in range(1, K + 1):
        theta_l = leaf_copies(thetas[-1])
        phi_k = leaf_copies(phi) if k == 1 else phi_c               # φ-gradient only at θ^0
        with pin(k - 1):
            L_k = _scalar(inner_loss(theta_l, phi_k), "inner_loss")
        g = grad_dict(L_k, {"theta_f": theta_l, "phi": phi_k} if k == 1 else {"theta_f": theta_l})
        if k == 1:
            # ∇_φ L_inner(θ_f, φ) and L_inner(θ_f, φ) from the same pass
            L_in, grad_in = L_k.detach(), g["phi"]
        # Eq. (3) / (7): θ^k = θ^{k−1} − α ∇_θ L_inner(θ^{k−1}, φ)   (values only: first order)
        thetas.append(virtual_step(thetas[-1], g["theta_f"], alpha))
        del g, L_k
    theta_K = leaf_copies(thetas.pop())
    with pin(K):
        L_out = _scalar(outer_loss(theta_K), "outer_loss")
    # a_K = ∇_θ L_outer(θ^K)   (= u for K = 1)
    a = grad_dict(L_out, {"theta_f": theta_K})["theta_f"]
    del theta_K
    meta = {n: torch.zeros_like(p) for n, p in grad_in.items()}
    for k in range(K, 0, -1):
        h_phi, h_theta, _, _ = fd_hvp(inner_loss, thetas[k - 1], phi, a, r=fd_r, wrt_theta=k > 1,
                                      rng=functools.partial(pin, k - 1))
        # Eq. (7) differentiated: meta += −λα (∂²L_inner/∂φ∂θ)(θ^{k−1}) a_k
        meta = {n: meta[n] - (lam * alpha) * h_phi[n] for n in meta}
        if k > 1:
            # adjoint: a_{k−1} = a_k − α (∂²L_inner/∂θ²)(θ^{k−1}) a_k
            a = {n: a[n] - alpha * h_theta[n] for n in a}
    return _finish(phi, grad_in, meta, inner_weight, L_in, L_out.detach())


def meta_grad_taylor(inner_loss: Callable[[Params, Params], torch.Tensor],
                     outer_loss: Callable[[Params], torch.Tensor] | None,
                     theta_f: Mapping[str, torch.Tensor], phi: Mapping[str, torch.Tensor],
                     alpha: float, lam: float, hvp: str = "autograd", outer_grad: Mapping | None = None, *,
                     fd_r: float = FD_R, inner_weight: float = 1.0) -> tuple[Params, dict]:
    """dG/dφ for Eq. (9): G(φ) = w·L_inner(θ_f, φ) − λα ⟨∇_θf L_outer(θ_f), ∇_θf L_inner(θ_f, φ)⟩.

    The first-order Taylor form of Eq. (7) (App. A.3): the second term rewards target gradients w.r.t. θ_f
    that point along the source gradients. It equals the exact one-step gradient up to O(α²).
    v = ∇_θf L_outer(θ_f) is taken on detached leaves: a constant w.r.t. φ.

    outer_grad: a precomputed v (dict with the keys and shapes of theta_f); then outer_loss may be None and
        the source pass is skipped. In stage 1 the encoder stays at its pretrained weights θ^S_f0 (Alg. 1
        resets it every iteration), so v does not depend on φ and can be computed once per epoch, or once
        over the whole source surrogate (average `outer_gradient` over source batches), instead of at every
        step. (A full-surrogate v is a lower-variance estimate of the same direction; the batch estimate of
        align + uniform differs from it slightly because L_uniform is a log of a mean.)
    hvp: "autograd" (double backward, MATH attention) or "finite_difference": two φ-only passes at
        θ_f ± εv; their difference gives the mixed product, their mean gives ∇_φ L_inner (+ O(ε²)), which
        saves a third pass. The logged inner_loss is then the mean of the two losses (also + O(ε²)).
    Other arguments, return values and purity: as meta_grad_exact; stats["outer_loss"] is L_outer(θ_f)
    when it was computed here (absent with outer_grad).
    """
    _check(inner_loss, outer_loss, theta_f, phi, alpha, lam, 1, hvp, fd_r, inner_weight, outer_grad)
    pin = _rng_pinner(theta_f)
    L_out = None
    if outer_grad is None:
        with pin(1):
            # Eq. (8)-(9): v = ∇_θf L_outer(θ_f), a constant w.r.t. φ (detached leaves)
            v, L_out = outer_gradient(outer_loss, theta_f)
    else:
        v = {k: outer_grad[k].detach().to(theta_f[k].dtype) for k in theta_f}
    if hvp == "autograd":
        theta_l, phi_l = leaf_copies(theta_f), leaf_copies(phi)
        with sdpa_kernel([SDPBackend.MATH]):                # fused attention has no double backward
            with pin(0):
                L_in = _scalar(inner_loss(theta_l, phi_l), "inner_loss")
            # g_f = ∇_θf L_inner(θ_f, φ) with its graph, and ∇_φ L_inner from the same backward
            g = grad_dict(L_in, {"theta_f": theta_l, "phi": phi_l}, create_graph=True)
        grad_in = {n: t.detach() for n, t in g.pop("phi").items()}
        # Eq. (9), second term: −λα ⟨v, ∇_θf L_inner(θ_f, φ)⟩ (the gradient alignment)
        align = sum((v[k] * g["theta_f"][k]).sum() for k in v)
        meta = grad_dict(-(lam * alpha) * align, {"phi": phi_l}, required=())["phi"]
        L_in = L_in.detach()
    else:
        h_phi, _, grad_in, L_in = fd_hvp(inner_loss, theta_f, phi, v, r=fd_r, rng=functools.partial(pin, 0))
        # gradient of Eq. (9)'s second term: −λα (∂²L_inner/∂φ∂θ_f) v
        meta = {k: -(lam * alpha) * h_phi[k] for k in phi}
    return _finish(phi, grad_in, meta, inner_weight, L_in, L_out)


def outer_gradient(outer_loss: Callable[[Params], torch.Tensor], theta_f: Params) -> tuple[Params, float]:
    """v = ∇_θf L_outer(θ_f) on detached leaves (Eq. 8-9), and L_outer(θ_f). First order; any attention."""
    theta_l = leaf_copies(theta_f)
    L_out = _scalar(outer_loss(theta_l), "outer_loss")
    # Eq. (8): v = ∇_θf L_outer(θ_f), a constant w.r.t. φ
    return {k: g.detach() for k, g in grad_dict(L_out, {"theta_f": theta_l})["theta_f"].items()}, L_out.item()



# --------------------------------------------------------------------------------------------------
# Shared helpers: leaf copies, the virtual step, gradients as dicts, RNG pinning, checks, stats
# --------------------------------------------------------------------------------------------------
def leaf_copies(params: Mapping[str, torch.Tensor], requires_grad: bool = True) -> Params:
    """New autograd leaves sharing storage with `params` (works for frozen encoders; flags untouched)."""
    return {k: p.detach().requires_grad_(requires_grad) for k, p in params.items()}


def virtual_step(theta: Params, g: Params, alpha: float) -> Params:
    """One plain SGD step as a pure dict function (differentiable in φ when g carries a graph)."""
    # Eq. (3) / (7): θ' = θ − α ∇_θ L_inner(θ, φ)       (torch.add(θ, g, alpha=−α) = θ − α g, one kernel)
    return {k: torch.add(theta[k], g[k], alpha=-alpha) for k in theta}


def grad_dict(loss: torch.Tensor, wrt: dict[str, Params], *, create_graph: bool = False,
              required: tuple[str, ...] | None = None) -> dict[str, Params]:
    """∇ loss w.r.t. several named dicts of tensors in one autograd.grad call (never .backward, so no
    stray .grad anywhere); unused entries get zeros. A dict named in `required` (default: all) that the
    loss does not depend on at all raises MetaGradError (pitfall 1 of the module docstring: the meta term
    would silently be 0)."""
    required = tuple(wrt) if required is None else required
    flat = [t for group in wrt.values() for t in group.values()]
    if required and not loss.requires_grad:
        raise MetaGradError(f"the loss does not depend on `{required[0]}`: call the modules with the dicts you "
                            "are given, e.g. torch.func.functional_call(encoder, theta_f, (tokens,))")
    grads = torch.autograd.grad(loss, flat, create_graph=create_graph, allow_unused=True) \
        if loss.requires_grad else [None] * len(flat)
    out, i = {}, 0
    for name, group in wrt.items():
        gs = grads[i:i + len(group)]
        i += len(group)
        if name in required and all(g is None for g in gs):
            raise MetaGradError(f"the loss does not depend on `{name}`: call the modules with the dicts you are "
                                "given, e.g. torch.func.functional_call(encoder, theta_f, (tokens,))")
        out[name] = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(group.items(), gs)}
    return out


def global_norm(tensors: Params) -> float:
    """‖(t_1, ..., t_n)‖_2 over all entries of a dict (one device sync)."""
    norms = [torch.linalg.vector_norm(t.detach().to(torch.promote_types(t.dtype, torch.float32)))
             for t in tensors.values()]
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].dtype) for n in norms])).item()


@contextlib.contextmanager
def fixed_rng(seed: int, device_type: str = "cpu"):
    """Run a block with the RNG seeded to `seed`, restoring the caller's RNG state afterwards (pitfall 5)."""
    if device_type == "cpu":
        with torch.random.fork_rng(devices=[], device_type="cpu"):
            torch.default_generator.manual_seed(seed)
            yield
    else:
        mod = torch.get_device_module(device_type)
        with torch.random.fork_rng(devices=range(mod.device_count()), device_type=device_type):
            torch.manual_seed(seed)
            yield


def _rng_pinner(theta_f: Params) -> Callable[[int], contextlib.AbstractContextManager]:
    """pin(i) -> a context with the RNG at seed + i; one seed drawn from the global generator per call."""
    seed = int(torch.randint(0, 2 ** 62, ()).item())
    device_type = next(iter(theta_f.values())).device.type
    return lambda i: fixed_rng(seed + i, device_type)


def _scalar(loss, name: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise MetaGradError(f"{name} must return a scalar tensor, got {shape}; reduce it (e.g. .mean())")
    return loss.reshape(())


def _check(inner_loss, outer_loss, theta_f, phi, alpha, lam, steps, hvp, fd_r, inner_weight, outer_grad=None):
    if hvp not in HVP_MODES:
        raise MetaGradError(f"hvp must be one of {HVP_MODES}, got {hvp!r}")
    if not callable(inner_loss):
        raise MetaGradError(f"inner_loss must be a callable (theta_f, phi) -> scalar, got {type(inner_loss).__name__}")
    if outer_loss is None and outer_grad is None:
        raise MetaGradError("pass outer_loss (a callable theta_f -> scalar) or, for the Taylor form, outer_grad")
    if outer_loss is not None and not callable(outer_loss):
        raise MetaGradError(f"outer_loss must be a callable theta_f -> scalar, got {type(outer_loss).__name__}")
    for name, d in (("theta_f", theta_f), ("phi", phi)):
        if not isinstance(d, Mapping) or not d:
            raise MetaGradError(f"{name} must be a non-empty dict name -> tensor, got {type(d).__name__}")
        for k, t in d.items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                raise MetaGradError(f"{name}[{k!r}] must be a floating-point tensor, got "
                                    f"{getattr(t, 'dtype', type(t).__name__)}")
    for name, x in (("alpha", alpha), ("lam", lam), ("fd_r", fd_r), ("inner_weight", inner_weight)):
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x < 0:
            raise MetaGradError(f"{name} must be a finite number >= 0, got {x!r}")
    if fd_r == 0:
        raise MetaGradError("fd_r must be > 0 (ε = fd_r / ‖w‖)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MetaGradError(f"steps must be an int >= 1 (K virtual steps, Fig. 6c), got {steps!r}")
    if outer_grad is not None:
        if not isinstance(outer_grad, Mapping) or set(outer_grad) != set(theta_f):
            missing = sorted(set(theta_f) - set(outer_grad or {}))[:3]
            extra = sorted(set(outer_grad or {}) - set(theta_f))[:3]
            raise MetaGradError(f"outer_grad must have exactly the keys of theta_f (missing {missing}, extra {extra})")
        for k, t in theta_f.items():
            if tuple(outer_grad[k].shape) != tuple(t.shape):
                raise MetaGradError(f"outer_grad[{k!r}] has shape {tuple(outer_grad[k].shape)}, theta_f has "
                                    f"{tuple(t.shape)}")


def _finish(phi: Params, grad_in: Params, meta: Params, inner_weight: float, L_in: torch.Tensor | float,
            L_out: torch.Tensor | float | None) -> tuple[Params, dict]:
    """grads_phi = w ∇_φ L_inner + meta term, detached, keys and dtypes of phi; plus log-friendly stats."""
    # Eq. (5)-(7): ∇_φ F = w ∇_φ L_inner + λ d L_outer(θ^K(φ))/dφ   (Eq. 9: the Taylor meta term)
    grads_phi = {k: (inner_weight * grad_in[k] + meta[k]).detach().to(phi[k].dtype) for k in phi}
    return grads_phi, _stats(grad_in, meta, L_in, L_out)


def _stats(grad_in: Params, meta: Params, L_in: torch.Tensor | float, L_out: torch.Tensor | float | None) -> dict:
    """Floats to log: inner_loss, inner_grad_norm, meta_norm, meta_ratio, and outer_loss when computed."""
    n_in, n_meta = global_norm(grad_in), global_norm(meta)
    stats = {"inner_loss": float(L_in), "inner_grad_norm": n_in, "meta_norm": n_meta,
             "meta_ratio": n_meta / n_in if n_in > 0 else (0.0 if n_meta == 0 else math.inf)}
    if L_out is not None:
        stats["outer_loss"] = float(L_out)
    return stats
