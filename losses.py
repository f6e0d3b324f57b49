"""Outer losses of MoNA stage 1, task losses and benchmark metrics.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864.

Paper map
---------
| paper                                  | code                                                   |
|----------------------------------------|--------------------------------------------------------|
| §3.2 Eq. (4)  L_outer = L_align + L_uniform | `align_uniform_loss` (minimisation form, see DEVIATION) |
| §3.2 Eq. (5)  L'_outer = λ L_outer + L_inner | combined in meta.py / train.py, not here             |
| §2.1 Eq. (1)  task loss ℓ (= L_inner)  | `TASK_LOSSES` (Tables 8 and 10 "Loss" rows)            |
| §4.4 Table 6  "Contrastive Loss"       | `supcon_loss` (Khosla et al., NeurIPS 2020)            |
| §4.4 Table 6  "Clustering Metric"      | `davies_bouldin_loss` (Davies & Bouldin, 1979)         |
| Tables 1, 4   reported test errors     | `METRICS` (all "lower is better")                      |
| §2.2, Table 2 ORCA stage 1 (OTDD)      | `OTDDLoss`, `sinkhorn_divergence` (Alvarez-Melis & Fusi 2020) |

Per task (Tables 8 and 10; the paper's Table 8 "Loss" row is shuffled across NinaPro / FSD50K / Darcy /
PSICOV, so we follow ORCA's code, datasets.md §1 and §6):
| task                          | TASK_LOSSES key (loss_kwargs)           | METRICS key                  |
|-------------------------------|-----------------------------------------|------------------------------|
| CIFAR-100, Spherical, Satellite | "cross_entropy"                       | "error" (%)                  |
| NinaPro                       | "cross_entropy" (= ORCA's focal, γ = 0) | "error" (%)                  |
| FSD50K                        | "bce" (pos_weight=10)                   | "one_minus_map" (clip level) |
| Darcy Flow (NB360)            | "rel_l2" (reduction="sum", as ORCA)     | "rel_l2"                     |
| PSICOV                        | "mse"                                   | "mae8"                       |
| Cosmic                        | "bce" (ignore_value=IGNORE_VALUE)       | "one_minus_auroc_binarized"  |
| ECG                           | "cross_entropy"                         | "one_minus_f1"               |
| DeepSEA                       | "bce" (pos_weight=4)                    | "one_minus_auroc"            |
| PDEBench (8 tasks)            | "nrmse"; Burgers, 1D-NS "rmse" (ORCA)   | "nrmse"                      |

Cosmic's ignore mask travels inside the target: pixels to ignore hold IGNORE_VALUE (−1) instead of their
0/1 cosmic-ray label, i.e. target = where(ignore, −1, cr_mask).

Symbols
-------
| paper            | code        | shape / range                                         |
|------------------|-------------|-------------------------------------------------------|
| f_i^s (normalised) | `z`       | (n, d), rows on the unit sphere                       |
| y_i^s            | `y`         | (n,) integer class labels                             |
| ‖f_i − f_j‖₂²    | `d2`        | (n, n), in [0, 4]; computed as 2 − 2 z_i·z_j          |
| t (= 2 in Eq. 4) | `t`         | scalar > 0                                            |
| τ (SupCon)       | `tau`       | scalar > 0                                            |
| c_i, S_i, M_ij (DB) | `c`, `S`, `M` | (k, d), (k,), (k, k)                            |
| g_θ(x) output    | `pred`      | logits (B, K) or dense (B, C, *spatial)               |
| y^t              | `target`    | (B,) class ids, (B, K) multi-hot, or dense like pred  |

All outer losses are twice differentiable. Exact MoNA differentiates L_outer once (through θ_f* of
the virtual step), but any variant that differentiates it twice needs this: they use the 2 − 2 z zᵀ
form, explicit differences and boolean indexing, never `torch.pdist` / `torch.cdist` (no double
backward, meta-gradients.md §6 pitfall 2) and never −inf masks (0 · inf = NaN in backward passes).

Metrics take the WHOLE evaluation set at once and compute the metric over it (not averaged over
evaluation chunks as ORCA does; baselines.md §5 quirk 4). They accept numpy arrays or tensors.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# -------------------------------------------------------------------------------------------------
# Constants
# -------------------------------------------------------------------------------------------------

IGNORE_VALUE = -1.0  # Cosmic: target pixels equal to this value are "ignored" (datasets.md §2.7)
PSICOV_OFFSET = 5  # NB360 pads each protein by pad_size/2 = 5 pixels on each side (datasets.md §2.6)
PSICOV_PAD_VALUE = 100.0  # NB360 label padding in Å (test labels, unclipped)


class LossError(ValueError):
    """Bad input to a loss or metric; the message is one line saying what was expected and found."""


# -------------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------------


def _check_features(z: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if z.dim() != 2 or y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise LossError(f"{name}: expected z (n, d) and y (n,), got z {tuple(z.shape)} and y {tuple(y.shape)}")
    if z.shape[0] < 2:
        raise LossError(f"{name}: needs n >= 2 samples, got n = {z.shape[0]}")


def _check_unit_norm(z: torch.Tensor, name: str) -> None:
    # cheap precondition check: rows of z lie on the unit sphere
    tol = 2e-2 if z.dtype in (torch.float16, torch.bfloat16) else 1e-3
    err = (z.detach().norm(dim=1) - 1).abs().max().item()
    if err > tol:
        raise LossError(f"{name}: rows of z must be L2-normalised (max | ||z_i|| - 1 | = {err:.3g}); "
                        f"pass normalize=True or F.normalize(z, dim=1)")


def _sq_dists_unit(z: torch.Tensor) -> torch.Tensor:
    """Squared distances of unit vectors, twice differentiable (unlike pdist/cdist)."""
    # ‖z_i − z_j‖² = 2 − 2 z_i·z_j  (unit rows), clamped at 0 against rounding      (n, n)
    return (2 - 2 * z @ z.T).clamp_min(0)


# -------------------------------------------------------------------------------------------------
# Outer losses (§3.2 Eq. (4) and the Table 6 ablations)
# -------------------------------------------------------------------------------------------------


def align_uniform_loss(z: torch.Tensor, y: torch.Tensor, t: float = 2.0, *, normalize: bool = False,
                       return_parts: bool = False):
    """MoNA's outer loss (Eq. 4) in its minimisation form: supervised alignment + uniformity.

        L_outer = E_{i≠j, y_i=y_j} ‖z_i − z_j‖²  +  log E_{i≠j} exp(−t ‖z_i − z_j‖²)

    (Wang & Isola, ICML 2020, with class labels defining the positives; meta-gradients.md §5.1.)

    Args:
        z: (n, d) features, rows L2-normalised (precondition, asserted cheaply) unless `normalize=True`.
        y: (n,) integer labels. Positives are pairs of DIFFERENT samples of the same class.
        t: uniformity temperature (2 in the paper and the reference code).
        normalize: L2-normalise z first (convenience; twice differentiable for z ≠ 0).
        return_parts: also return {"align": L_align, "uniform": L_uniform} (graph tensors; detach to log).

    Returns:
        scalar tensor. Ranges: L_align ∈ [0, 4], L_uniform ∈ [−4t, 0], so the value can be NEGATIVE
        (about −2t is a good uniform spread). Needs n ≥ 2. A class with one sample contributes no
        positive pair; if the batch has no positive pair at all the alignment term is exactly 0 (with
        zero gradient) and only L_uniform remains; never NaN. Sample class-balanced batches so every
        step has positives. Averaging over ordered pairs i ≠ j equals the reference code's `pdist`
        average over i < j.
    """
    _check_features(z, y, "align_uniform_loss")
    if normalize:
        z = F.normalize(z, dim=1)
    else:
        _check_unit_norm(z, "align_uniform_loss")
    n = z.shape[0]
    d2 = _sq_dists_unit(z)  # (n, n)
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)  # i ≠ j
    pos = (y[:, None] == y[None, :]) & off  # y_i = y_j, i ≠ j
    # DEVIATION from Eq. (4): we minimise Wang & Isola's +L_align + L_uniform with SQUARED distances
    # because the printed −E[‖f_i−f_j‖] − log E[exp(−2‖f_i−f_j‖)], when minimised (Eqs. 5-6), pushes
    # same-class features apart and collapses all features: both signs are inverted and the squares
    # dropped (meta-gradients.md §5.2; checked by tests/test_losses.py).
    # L_align = Σ_{pos} d2_ij / |pos|   (0 when there is no positive pair)
    n_pos = pos.sum()
    align = (d2 * pos).sum() / n_pos.clamp_min(1)
    # L_uniform = log( (1/(n(n−1))) Σ_{i≠j} exp(−t d2_ij) ) = logsumexp(−t d2) − log(n(n−1))
    uniform = torch.logsumexp(-t * d2[off], dim=0) - math.log(n * (n - 1))
    loss = align + uniform
    if return_parts:
        return loss, {"align": align, "uniform": uniform}
    return loss


def supcon_loss(z: torch.Tensor, y: torch.Tensor, tau: float = 0.07, *, normalize: bool = False) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020), one view per sample (Table 6 ablation).

        L = (1/|I'|) Σ_{i∈I'} −(1/|P(i)|) Σ_{p∈P(i)} log[ exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ]

    A(i) = all samples but i; P(i) = {p ∈ A(i): y_p = y_i}; I' = anchors with |P(i)| ≥ 1. Anchors without
    positives are DROPPED (the official code would give 0/0 = NaN); if no anchor has a positive the loss
    is 0. The official code's factor τ/base_τ equals 1 at its defaults (τ = base_τ = 0.07) and is omitted.
    z must be L2-normalised (asserted) unless `normalize=True`; n ≥ 2. Twice differentiable (the
    denominators use logsumexp over the off-diagonal entries only, no −inf masks). Range: ≥ 0.
    """
    _check_features(z, y, "supcon_loss")
    if normalize:
        z = F.normalize(z, dim=1)
    else:
        _check_unit_norm(z, "supcon_loss")
    n = z.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (y[:, None] == y[None, :]) & off  # P(i) as a mask   (n, n)
    # s_ij = z_i·z_j / τ                                                              (n, n)
    s = z @ z.T / tau
    # log Σ_{a≠i} exp(s_ia): the n−1 off-diagonal entries of each row                  (n,)
    log_denom = torch.logsumexp(s[off].view(n, n - 1), dim=1)
    n_pos_i = pos.sum(dim=1)  # |P(i)|                                                  (n,)
    # ℓ_i = −(1/|P(i)|) Σ_p (s_ip − log_denom_i)                                        (n,)
    loss_i = -((s * pos).sum(dim=1) - n_pos_i * log_denom) / n_pos_i.clamp_min(1)
    has_pos = n_pos_i > 0
    # L = mean over anchors with at least one positive
    return (loss_i * has_pos).sum() / has_pos.sum().clamp_min(1)


def davies_bouldin_loss(z: torch.Tensor, y: torch.Tensor, eps: float = 1e-8, *, scatter: str = "rms",
                        smooth_tau: float | None = None) -> torch.Tensor:
    """Differentiable Davies-Bouldin index over the classes present in the batch (Table 6 ablation).

        DB = (1/k) Σ_i max_{j≠i} (S_i + S_j) / M_ij,   M_ij = sqrt(‖c_i − c_j‖² + ε)

    c_i = class-i centroid; S_i = within-class scatter: "rms" (default, smoother):
    sqrt((1/T_i) Σ_x ‖x − c_i‖² + ε); "mean" (scikit-learn's definition):
    (1/T_i) Σ_x sqrt(‖x − c_i‖² + ε).
    ε inside each sqrt keeps the loss twice differentiable at zero scatter / coincident centroids.
    The max over j is exact by default; `smooth_tau` replaces it by τ·logsumexp(R_ij/τ) (an upper bound
    within τ·log(k−1)). Every class present counts, singletons included (scatter ≈ 0), as in sklearn.

    Needs ≥ 2 classes in the batch (raises LossError otherwise). Lower is better, minimum 0. Scale
    invariant (exactly for ε = 0): DB(c·z) = DB(z) for c > 0, so unlike L_uniform it does not spread
    features over the sphere; z need not be normalised.
    """
    _check_features(z, y, "davies_bouldin_loss")
    if scatter not in ("rms", "mean"):
        raise LossError(f"davies_bouldin_loss: scatter must be 'rms' or 'mean', got {scatter!r}")
    classes, inv = torch.unique(y, return_inverse=True)
    k = classes.numel()
    if k < 2:
        raise LossError(f"davies_bouldin_loss: needs >= 2 classes in the batch, got {k}; sample class-balanced batches")
    A = F.one_hot(inv, k).to(z.dtype)  # membership                                    (n, k)
    T = A.sum(dim=0)  # T_i: class sizes                                                (k,)
    # c_i = (1/T_i) Σ_{x∈i} x                                                           (k, d)
    c = (A.T @ z) / T[:, None]
    # ‖x − c_{y(x)}‖²                                                                   (n,)
    r2 = ((z - c[inv]) ** 2).sum(dim=1)
    if scatter == "rms":
        # S_i = sqrt((1/T_i) Σ_x ‖x − c_i‖² + ε)                                        (k,)
        S = torch.sqrt(A.T @ r2 / T + eps)
    else:
        # S_i = (1/T_i) Σ_x sqrt(‖x − c_i‖² + ε)                                        (k,)
        S = A.T @ torch.sqrt(r2 + eps) / T
    off = ~torch.eye(k, dtype=torch.bool, device=z.device)
    # M_ij = sqrt(‖c_i − c_j‖² + ε), explicit differences (no cdist)                    (k, k)
    M = torch.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(dim=-1) + eps)
    # R_ij = (S_i + S_j) / M_ij for j ≠ i                                               (k, k−1)
    R = ((S[:, None] + S[None, :]) / M)[off].view(k, k - 1)
    if smooth_tau is None:
        # D_i = max_{j≠i} R_ij
        D = R.max(dim=1).values
    else:
        # D_i ≈ τ log Σ_{j≠i} exp(R_ij / τ)
        D = smooth_tau * torch.logsumexp(R / smooth_tau, dim=1)
    # DB = (1/k) Σ_i D_i
    return D.mean()


OUTER_LOSSES = {
    "align_uniform": align_uniform_loss,
    "supcon": supcon_loss,
    "davies_bouldin": davies_bouldin_loss,
}


# -------------------------------------------------------------------------------------------------
# ORCA's stage-1 objective: the Optimal Transport Dataset Distance (Alvarez-Melis & Fusi, NeurIPS 2020)
# -------------------------------------------------------------------------------------------------
# ORCA (Shen et al., 2023; baselines.md §3) trains the target embedder to minimise the OTDD between the
# labelled source embeddings {(x_i^s, y_i^s)} and the embeddings of one target class at a time. OTDD is
# optimal transport between the two *labelled* datasets with the ground cost
#     d((x, y), (x', y'))² = ‖x − x'‖² + W²(α_y, α'_y'),   α_y = the feature cloud of class y,
# so two samples are close when their features are close AND their classes are distributed alike.
# ORCA calls the vendored `otdd` package (geomloss/KeOps); we write the few lines it needs in torch:
# entropic OT with log-domain Sinkhorn, debiased (Sinkhorn divergence), cost ½‖x − x'‖² as geomloss's p = 2,
# ε = `entreg` = 0.1 (ORCA's setting), and gradients by the envelope theorem (∂OT_ε/∂C = transport plan),
# so no graph is kept through the Sinkhorn iterations.


def _sinkhorn(C: torch.Tensor, eps: float, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropic OT between uniform measures with cost C (n, m): returns (OT_ε value, plan P), without grad.
    Log-domain dual updates f_i = −ε' log Σ_j b_j exp((g_j − C_ij)/ε'), g_j likewise, with ε-scaling
    (ε' halves from max C down to ε, one update each, as geomloss anneals) and then `iters` updates at ε."""
    with torch.no_grad():
        n, m = C.shape
        log_a = torch.full((n,), -math.log(n), dtype=C.dtype, device=C.device)
        log_b = torch.full((m,), -math.log(m), dtype=C.dtype, device=C.device)
        f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
        schedule, e = [], max(float(C.max()), eps)
        while e > eps:
            schedule.append(e)
            e /= 2
        for e in schedule + [eps] * iters:
            # f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε)
            f = -e * torch.logsumexp((g[None, :] - C) / e + log_b[None, :], dim=1)
            # g_j = −ε log Σ_i a_i exp((f_i − C_ij)/ε)
            g = -e * torch.logsumexp((f[:, None] - C) / e + log_a[:, None], dim=0)
        # P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε);  OT_ε = ⟨a, f⟩ + ⟨b, g⟩ (the dual value at the optimum)
        P = torch.exp((f[:, None] + g[None, :] - C) / eps + log_a[:, None] + log_b[None, :])
        return log_a.exp() @ f + log_b.exp() @ g, P


def _ot_value(C: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """OT_ε(C) whose gradient w.r.t. C is the optimal plan (envelope theorem; Danskin)."""
    value, P = _sinkhorn(C.detach(), eps, iters)
    # value: OT_ε;  d OT_ε / d C = P  →  value + ⟨P, C − sg(C)⟩ has that value and that gradient
    return value + (P * (C - C.detach())).sum()


def _sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ½‖x_i − y_j‖², geomloss's cost for p = 2   (n, m)
    return 0.5 * (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, iters: int = 100,
                        C_xy=None, C_xx=None, C_yy=None) -> torch.Tensor:
    """Debiased entropic OT: S_ε(α, β) = OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β) ≥ 0, = 0 iff α = β.
    Uniform weights on the rows of x (n, d) and y (m, d); cost ½‖x − y‖² unless cost matrices are given."""
    C_xy = _sq_dist(x, y) if C_xy is None else C_xy
    C_xx = _sq_dist(x, x) if C_xx is None else C_xx
    C_yy = _sq_dist(y, y) if C_yy is None else C_yy
    # S_ε = OT_ε(x, y) − ½ OT_ε(x, x) − ½ OT_ε(y, y)
    return _ot_value(C_xy, eps, iters) - 0.5 * _ot_value(C_xx, eps, iters) - 0.5 * _ot_value(C_yy, eps, iters)


class OTDDLoss:
    """OTDD between a fixed labelled source set (features x_s (N, D), labels y_s (N,)) and a target set
    (x_t (n, D), labels y_t (n,) or None = one label, as ORCA calls it), differentiable w.r.t. x_t.

    d((x, y), (x', y'))² = ½‖x − x'‖² + S_ε(α_y, α'_y')   (label distance: debiased OT between class clouds)
    OTDD = S_ε over the joint (feature, label) samples with that cost.
    Source-side quantities (class-to-class distances, the source self-term) do not depend on the target
    embedder, so they are computed once here (ORCA recomputes them every call; baselines.md quirk 17).
    The source self-term costs an N × N matrix: ORCA uses N = 5,000 source samples."""

    def __init__(self, x_s: torch.Tensor, y_s: torch.Tensor, eps: float = 0.1, iters: int = 100):
        self.x_s, self.y_s, self.eps, self.iters = x_s.detach(), y_s.detach(), eps, iters
        self.classes = torch.unique(self.y_s)
        self.clouds = [self.x_s[self.y_s == c] for c in self.classes]
        k = len(self.classes)
        W = torch.zeros(k, k, dtype=x_s.dtype, device=x_s.device)
        for i in range(k):                                  # W_ij = S_ε(α_i, α_j) between source classes
            for j in range(i + 1, k):
                W[i, j] = W[j, i] = sinkhorn_divergence(self.clouds[i], self.clouds[j], eps, iters).detach()
        self.code = torch.searchsorted(self.classes, self.y_s)        # class index of each source sample
        C_ss = _sq_dist(self.x_s, self.x_s) + W[self.code][:, self.code]
        self.self_term = _sinkhorn(C_ss, eps, iters)[0]                # OT_ε(source, source), constant

    def __call__(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        y_t = torch.zeros(len(x_t), dtype=torch.long, device=x_t.device) if y_t is None else y_t
        t_classes = torch.unique(y_t)
        t_code = torch.searchsorted(t_classes, y_t)
        t_clouds = [x_t[y_t == c] for c in t_classes]
        # label distances source class i ↔ target class j: S_ε(α_i, α'_j)   (k_s, k_t), differentiable in x_t
        W_st = torch.stack([torch.stack([sinkhorn_divergence(a, b, self.eps, self.iters) for b in t_clouds])
                            for a in self.clouds])
        # target class ↔ target class distances   (k_t, k_t)
        W_tt = torch.stack([torch.stack([sinkhorn_divergence(a, b, self.eps, self.iters) if i != j
                                         else a.new_zeros(()) for j, b in enumerate(t_clouds)])
                            for i, a in enumerate(t_clouds)])
        # joint costs: ½‖x − x'‖² + W(y, y')
        C_st = _sq_dist(self.x_s, x_t) + W_st[self.code][:, t_code]
        C_tt = _sq_dist(x_t, x_t) + W_tt[t_code][:, t_code]
        # OTDD = OT_ε(s, t) − ½ OT_ε(s, s) − ½ OT_ε(t, t)
        return (_ot_value(C_st, self.eps, self.iters) - 0.5 * self.self_term
                - 0.5 * _ot_value(C_tt, self.eps, self.iters))

# -------------------------------------------------------------------------------------------------
# Task losses ℓ of Eq. (1) (= L_inner in Eqs. 2-5)
# -------------------------------------------------------------------------------------------------


def _match_target(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Reshape a dense target like (B, H, W) to pred's (B, 1, H, W); float dtype."""
    if target.shape != pred.shape:
        if target.shape[:1] != pred.shape[:1] or target.numel() != pred.numel():
            raise LossError(f"{name}: target shape {tuple(target.shape)} does not match prediction "
                            f"{tuple(pred.shape)}")
        target = target.reshape(pred.shape)
    return target.to(pred.dtype)


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    raise LossError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def cross_entropy(label_smoothing: float = 0.0):
    """ℓ = −log softmax(pred)[y], mean over the batch. pred (B, K[, *spatial]); target class ids
    (B[, *spatial]) or class probabilities shaped like pred."""
    def loss(pred, target):
        soft = target.is_floating_point() and target.shape == pred.shape  # class probabilities
        return F.cross_entropy(pred, target if soft else target.long(), label_smoothing=label_smoothing)
    return loss


def bce(pos_weight: float | list | None = None, ignore_value: float | None = None):
    """Binary cross-entropy with logits, mean over all entries.

    ℓ = −[w_p · y log σ(x) + (1 − y) log(1 − σ(x))];  w_p = `pos_weight` (scalar or per label;
    FSD50K 10, DeepSEA 4 as in ORCA). Multi-label (B, K) or dense (B, C, H, W).
    `ignore_value` (Cosmic: IGNORE_VALUE = −1): target entries equal to it are ignored pixels. As in ORCA
    (datasets.md §2.7) both the logit and the target of an ignored pixel are set to 0 (mask(img) =
    img·(1 − ignore)): such a pixel adds the constant log 2 to the mean and gets zero gradient.
    """
    def loss(pred, target):
        target = _match_target(pred, target, "bce")
        if ignore_value is not None:
            keep = (target != ignore_value).to(pred.dtype)
            # mask(x) = x · (1 − ignore)
            pred, target = pred * keep, target * keep
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=pred.dtype, device=pred.device)
        return F.binary_cross_entropy_with_logits(pred, target, pos_weight=pw)
    return loss


def focal(gamma: float = 2.0, alpha: float | list | None = None):
    """Multi-class focal loss (Lin et al., ICCV 2017): ℓ = −α_y (1 − p_y)^γ log p_y, mean over the batch.

    p = softmax(pred) over dim 1; `alpha` a scalar or per-class weights (None = 1). gamma = 0 (and
    alpha None or 1) is cross-entropy: ORCA's NinaPro "FocalLoss(alpha=1)" has gamma 0 (baselines.md §5
    quirk 23). Point (B, K) or dense (B, K, *spatial) logits with integer targets.
    """
    def loss(pred, target):
        logp = F.log_softmax(pred, dim=1)
        # log p_y                                                                       (B, *spatial)
        logp_y = logp.gather(1, target.long().unsqueeze(1)).squeeze(1)
        if gamma == 0:
            w = 1.0
        else:
            # (1 − p_y)^γ
            w = (1 - logp_y.exp()).clamp_min(0) ** gamma
        if alpha is not None:
            a = torch.as_tensor(alpha, dtype=pred.dtype, device=pred.device)
            w = w * (a[target.long()] if a.dim() > 0 else a)
        return -(w * logp_y).mean()
    return loss


def rel_l2(reduction: str = "mean", eps: float = 0.0):
    """Relative L2 (FNO's LpLoss, p = 2): per sample ‖pred − y‖₂ / ‖y‖₂ over all its entries.

    reduction "mean" averages over the batch; "sum" sums over it, which is what ORCA trains Darcy Flow
    with (`LpLoss(size_average=False)`, baselines.md §5 quirk 11; effective lr × batch size).
    Outputs and targets must be in physical units (Darcy: decode the normaliser first; datasets.md §2.5).
    """
    def loss(pred, target):
        target = _match_target(pred, target, "rel_l2")
        # ‖ŷ − y‖₂ / ‖y‖₂ per sample                                                  (B,)
        r = _per_sample(pred - target).norm(dim=1) / (_per_sample(target).norm(dim=1) + eps)
        return _reduce(r, reduction)
    return loss


def mse(reduction: str = "mean"):
    """Mean squared error over all entries (PSICOV's training loss)."""
    def loss(pred, target):
        return F.mse_loss(pred, _match_target(pred, target, "mse"), reduction=reduction)
    return loss


def rmse():
    """Per-sample RMSE sqrt(mean_x (ŷ − y)²), averaged over the batch (ORCA's `rmse_loss`; Burgers, 1D-NS)."""
    def loss(pred, target):
        target = _match_target(pred, target, "rmse")
        return _per_sample(pred - target).pow(2).mean(dim=1).sqrt().mean()
    return loss


def _nrmse_per_sample(pred: torch.Tensor, target: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if per_channel and pred.dim() >= 3:
        # PDEBench: nRMSE_bc = RMS_x(ŷ − y) / RMS_x(y) per sample b and channel c          (B, C)
        B, C = pred.shape[:2]
        e = (pred - target).reshape(B, C, -1).pow(2).mean(dim=2).sqrt()
        n = target.reshape(B, C, -1).pow(2).mean(dim=2).sqrt()
        return (e / n).mean(dim=1)
    # all channels together: ‖ŷ − y‖₂ / ‖y‖₂ per sample (ORCA's nrmse_loss)             (B,)
    return _per_sample(pred - target).norm(dim=1) / _per_sample(target).norm(dim=1)


def nrmse(per_channel: bool = True):
    """Normalised RMSE (PDEBench): per sample and channel RMS(ŷ − y)/RMS(y) over the grid, averaged
    over channels and the batch. With one output channel (every task in the paper) it equals ORCA's
    per-sample ‖ŷ − y‖₂/‖y‖₂ (`per_channel=False` gives that all-channel form for C > 1)."""
    def loss(pred, target):
        return _nrmse_per_sample(pred, _match_target(pred, target, "nrmse"), per_channel).mean()
    return loss


TASK_LOSSES = {
    "cross_entropy": cross_entropy,
    "bce": bce,
    "focal": focal,
    "rel_l2": rel_l2,
    "mse": mse,
    "rmse": rmse,
    "nrmse": nrmse,
}

# -------------------------------------------------------------------------------------------------
# Metrics (lower is better, as reported in Tables 1 and 4)
# -------------------------------------------------------------------------------------------------


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _class_ids(target: np.ndarray, n: int) -> np.ndarray:
    # class ids (N,) or one-hot (N, K) -> (N,) ints
    return (target.argmax(axis=1) if target.ndim == 2 else target.reshape(n)).astype(np.int64)


def _binary_auroc(s: np.ndarray, y: np.ndarray) -> float:
    """Ranking AUROC = P(s_pos > s_neg) + ½ P(tie) via the Mann-Whitney U statistic with average ranks."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    # average rank (1-based) of each tie group
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum_pos = avg_rank[inv.reshape(-1)][y.astype(bool)].sum()
    # AUC = (R_pos − n_pos(n_pos+1)/2) / (n_pos n_neg)
    return float((rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary_ap(s: np.ndarray, y: np.ndarray) -> float:
    """Average precision AP = Σ_k (R_k − R_{k−1}) P_k over distinct score thresholds (scikit-learn's)."""
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _label_columns(pred: np.ndarray, target: np.ndarray):
    """(N,) / (N, K) -> columns per label; (N, C, *spatial) -> per channel, pixels pooled over samples."""
    if pred.shape != target.shape:
        if target.size != pred.size:
            raise LossError(f"metric: target shape {target.shape} does not match prediction {pred.shape}")
        target = target.reshape(pred.shape)
    if pred.ndim == 1:
        return pred[:, None], target[:, None]
    if pred.ndim == 2:
        return pred, target
    C = pred.shape[1]
    return (np.moveaxis(pred, 1, -1).reshape(-1, C), np.moveaxis(target, 1, -1).reshape(-1, C))


def error(pred, target) -> float:
    """0-1 error in percent: 100 · (1 − mean[argmax_k pred_k = y]). pred (N, K) scores; target (N,) ids
    or (N, K) one-hot. CIFAR-100, Spherical, NinaPro, Satellite (NB360; ORCA reports the same)."""
    p = _np(pred)
    yhat = p.argmax(axis=1)
    return float(100.0 * np.mean(yhat != _class_ids(_np(target), p.shape[0])))


def one_minus_auroc(pred, target, ignore_value: float | None = IGNORE_VALUE) -> float:
    """1 − macro ranking AUROC over labels (DeepSEA; NB360 computes it on the full test set).

    pred: scores (logits or probabilities: AUROC is invariant to the monotone sigmoid), (N,), (N, K), or
    dense (N, C, *spatial) where all pixels of all samples are pooled per channel. Per label the AUROC is
    the Mann-Whitney probability P(s_pos > s_neg) + ½ P(tie) (= scikit-learn's roc_auc_score); labels
    with a single class in the target are skipped (nan-mean, as ORCA's DeepSEA metric); targets equal to
    `ignore_value` (Cosmic ignored pixels) are excluded. For Cosmic this is the stricter ranking AUROC
    over non-ignored pixels (baselines.md §5 quirk 3, reported alongside the binarised benchmark value).
    """
    P, Y = _label_columns(_np(pred), _np(target))
    scores = []
    for k in range(P.shape[1]):
        keep = Y[:, k] != ignore_value if ignore_value is not None else slice(None)
        scores.append(_binary_auroc(P[keep, k], Y[keep, k] > 0.5))
    scores = np.asarray(scores)
    return float(1.0 - np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def one_minus_auroc_binarized(pred, target, threshold: float = 0.0, ignore_value: float | None = IGNORE_VALUE) -> float:
    """Cosmic's benchmark metric: 1 − AUROC of BINARISED predictions over all pixels (datasets.md §2.7).

    ŷ = 1[logit > threshold] (threshold 0 = ORCA's `inv_auroc`, i.e. sigmoid > ½; NB360's code uses 0.5);
    all pixels of all images pooled; ignored pixels (target == `ignore_value`) are NOT excluded: as in
    ORCA/NB360 they count as target 0 with prediction 0 (true negatives). The AUROC of a 0/1 score is
    (TPR + TNR)/2, i.e. balanced accuracy, not a ranking AUROC (baselines.md §5 quirk 3).
    """
    p, y = _np(pred).reshape(-1), _np(target).reshape(-1)
    if p.size != y.size:
        raise LossError(f"one_minus_auroc_binarized: {p.size} predictions vs {y.size} targets")
    yhat = (p > threshold).astype(np.float64)
    if ignore_value is not None:
        ign = y == ignore_value
        yhat[ign], y = 0.0, np.where(ign, 0.0, y)
    return float(1.0 - _binary_auroc(yhat, y > 0.5))


def one_minus_map(pred, target) -> float:
    """1 − mean average precision, macro over labels (FSD50K; ORCA/NB360 use scikit-learn's
    average_precision_score(average="macro") on clip-level scores; see `aggregate_groups`).

    pred: scores (N, K) (logits or sigmoid: AP depends only on the ranking); target multi-hot (N, K).
    Labels without any positive are skipped (scikit-learn would score them 0 with a warning).
    """
    P, Y = _label_columns(_np(pred), _np(target))
    ap = np.asarray([_binary_ap(P[:, k], Y[:, k] > 0.5) for k in range(P.shape[1])])
    return float(1.0 - np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def one_minus_f1(pred, target) -> float:
    """1 − macro F1 of argmax predictions (ECG). F1_c = 2TP_c / (2TP_c + FP_c + FN_c), averaged over the
    classes that occur in the target or the prediction (scikit-learn's f1_score(average="macro")).
    NB360 scores ECG per record (majority vote over windows: `aggregate_groups(..., how="vote")`)."""
    p = _np(pred)
    yhat = p.argmax(axis=1)
    y = _class_ids(_np(target), p.shape[0])
    f1 = []
    for c in np.union1d(y, yhat):
        tp = np.sum((yhat == c) & (y == c))
        f1.append(2 * tp / (2 * tp + np.sum((yhat == c) & (y != c)) + np.sum((yhat != c) & (y == c))))
    return float(1.0 - np.mean(f1))


def rel_l2_metric(pred, target) -> float:
    """Relative L2 error averaged over samples: mean_b ‖ŷ_b − y_b‖₂ / ‖y_b‖₂ (Darcy Flow, NB360/FNO).
    Physical units: decode the target normaliser first (datasets.md §2.5)."""
    p, y = _np(pred), _np(target)
    p, y = p.reshape(p.shape[0], -1), y.reshape(p.shape[0], -1)
    return float(np.mean(np.linalg.norm(p - y, axis=1) / np.linalg.norm(y, axis=1)))


def nrmse_metric(pred, target, per_channel: bool = True) -> float:
    """nRMSE (PDEBench, Takamoto et al. 2022): per sample b and channel c,
    sqrt(mean_x (ŷ − y)²) / sqrt(mean_x y²), averaged over channels and samples of the whole test set
    (ORCA averages per 1,000-sample chunk; for C = 1 both are ‖ŷ_b − y_b‖₂/‖y_b‖₂ per sample).
    pred/target (N, C, *spatial); (N, L) counts as one channel."""
    p, y = _np(pred), _np(target)
    y = y.reshape(p.shape)
    v = _nrmse_per_sample(torch.from_numpy(p), torch.from_numpy(y), per_channel)
    return float(v.mean())


def mse_metric(pred, target) -> float:
    """Mean squared error over all entries (= scikit-learn mean_squared_error on flattened arrays)."""
    p, y = _np(pred), _np(target)
    return float(np.mean((p - y.reshape(p.shape)) ** 2))


def _infer_psicov_lengths(Y: np.ndarray, offset: int, pad_value: float) -> np.ndarray:
    # protein rows are those of the window (after the offset) that are not entirely label padding
    rows = ~np.all(Y[:, offset:, :] == pad_value, axis=2)  # (N, H − offset)
    return rows.sum(axis=1)


def mae8(pred, target, lengths=None, *, offset: int = PSICOV_OFFSET, min_sep: int = 24,
         max_dist: float = 8.0, clamp_min: float = 0.01, pad_value: float = PSICOV_PAD_VALUE,
         symmetrize: str = "nb360") -> float:
    """PSICOV MAE8 as NAS-Bench-360 defines it (`calculate_mae` in NB360 backbone/utils_grid.py).

    For each protein b with its OWN length L_b (the protein occupies rows/cols [offset, offset + L_b) of
    the window; offset = pad_size/2 = 5), for pairs p < q:
      1. symmetrise and clamp: u_pq = max((ŷ_pq + ŷ_qp)/2, 0.01), l_pq = max(ŷ_qp, 0.01);
      2. NB360's `calculate_mae` averages the two triangles a SECOND time on the already symmetrised
         upper triangle: P_pq = (l_pq + u_pq)/2 = ¾ŷ_qp + ¼ŷ_pq (before clamping). `symmetrize="nb360"`
         (default) reproduces this coded definition (NB360's `evaluate_test_protein` + `calculate_mae`);
         `symmetrize="mean"` uses the intended P_pq = u_pq (equal for symmetric predictions);
      3. keep pairs with sequence separation q − p ≥ 24 and TRUE distance y_pq ≤ 8 Å (NaN targets
         are excluded; NB360's dataset turns NaN labels into 0 BEFORE this, so there they count);
      4. MAE_b = mean |y_pq − P_pq| over those pairs (NaN if there is none).
    MAE8 = nan-mean of MAE_b over proteins (the whole test set at once).

    pred, target: (N, 1, H, W) or (N, H, W) distances in Å (test targets unclipped).
    lengths: (N,) L_b. If None they are recovered from the target as the number of window rows after
    `offset` that are not entirely `pad_value` (NB360's label padding, 100 Å).
    ORCA's `psicov_mae` scored every protein with the FIRST protein's length (datasets.md §2.6); the
    ORCA-compatible value is `mae8(pred, target, lengths=[L_0] * N)`.
    """
    P, Y = _np(pred), _np(target)
    if P.ndim == 4:
        P, Y = P[:, 0], Y.reshape(P.shape)[:, 0]
    if P.ndim != 3 or Y.shape != P.shape:
        raise LossError(f"mae8: expected pred/target (N, [1,] H, W) of equal shape, got {P.shape} and {Y.shape}")
    N, H, _ = P.shape
    if symmetrize not in ("nb360", "mean"):
        raise LossError(f"mae8: symmetrize must be 'nb360' or 'mean', got {symmetrize!r}")
    if lengths is None:
        lengths = _infer_psicov_lengths(Y, offset, pad_value)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    # NB360 windows hold the protein plus `offset` padding on BOTH sides (L + pad_size <= H)
    if lengths.size != N or np.any(lengths + 2 * offset > H) or np.any(lengths < 1):
        raise LossError(f"mae8: need {N} protein lengths with 1 <= L <= {H - 2 * offset} (window {H}, pad "
                        f"{offset} per side), got {lengths.tolist()[:8]}")
    maes = np.full(N, np.nan)
    for b in range(N):
        L = int(lengths[b])
        w = slice(offset, offset + L)
        Pb, Yb = P[b, w, w], Y[b, w, w]
        # step 1: u_pq = max((ŷ_pq + ŷ_qp)/2, 0.01)   (only the upper triangle p < q is used)
        Ps = np.maximum((Pb + Pb.T) / 2.0, clamp_min)
        if symmetrize == "nb360":
            # step 2: P_pq = (max(ŷ_qp, 0.01) + u_pq) / 2
            Ps = (np.maximum(Pb.T, clamp_min) + Ps) / 2.0
        p, q = np.indices((L, L))
        # step 3: q − p ≥ 24 and y_pq ≤ 8 Å (NaN compares False)
        keep = (q - p >= min_sep) & (Yb <= max_dist)
        if keep.any():
            # step 4: MAE over the kept pairs
            maes[b] = np.mean(np.abs(Yb[keep] - Ps[keep]))
    return float(np.nanmean(maes)) if np.isfinite(maes).any() else float("nan")


METRICS = {
    "error": error,
    "one_minus_auroc": one_minus_auroc,
    "one_minus_auroc_binarized": one_minus_auroc_binarized,
    "one_minus_map": one_minus_map,
    "one_minus_f1": one_minus_f1,
    "rel_l2": rel_l2_metric,
    "mae8": mae8,
    "nrmse": nrmse_metric,
    "mse": mse_metric,
}


def aggregate_groups(pred, target, groups, how: str = "mean"):
    """Pool sample-level outputs into group-level ones before a metric (evaluation protocol helpers).

    how="mean": mean of the scores/logits of each group (FSD50K: clip = mean of its chunks' logits,
    then `one_minus_map`; datasets.md §2.4). how="vote": per group, counts of argmax votes (N, K) ->
    (G, K), so argmax gives the majority class, ties to the lowest class id (ECG record-level vote as in
    NB360, baselines.md §5 quirk 5). Groups are ordered by first appearance; the group's target is its
    first sample's target. Returns numpy (pred_g, target_g).
    """
    p, y = _np(pred), _np(target)
    g = np.asarray(groups).reshape(-1)
    uniq, first, inv = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first)  # first-appearance order
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    gi = rank[inv]  # group index per sample
    G = uniq.size
    if how == "vote":
        p = np.eye(p.shape[1])[p.argmax(axis=1)]
    elif how != "mean":
        raise LossError(f"aggregate_groups: how must be 'mean' or 'vote', got {how!r}")
    out = np.zeros((G,) + p.shape[1:])
    np.add.at(out, gi, p)
    if how == "mean":
        out /= np.bincount(gi, minlength=G).reshape((G,) + (1,) * (p.ndim - 1))
    return out, y[first[order]]
