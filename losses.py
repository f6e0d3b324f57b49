"""Outer losses of MoNA's stage 1 (Eq. 4 and the Table 6 ablations) and the task losses ℓ of Eq. (1).

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864.

Paper map
---------
| paper                                  | code                                                   |
|----------------------------------------|--------------------------------------------------------|
| §3.2 Eq. (4)  L_outer = L_align + L_uniform | `align_uniform_loss` (minimisation form, see DEVIATION) |
| §3.2 Eq. (5)  L'_outer = λ L_outer + L_inner | combined in meta.py / stage1.py, not here            |
| §2.1 Eq. (1)  task loss ℓ (= L_inner)  | `TASK_LOSSES` (Tables 8 and 10 "Loss" rows), `task_objective` |
| §4.4 Table 6  "Contrastive Loss"       | `supcon_loss` (Khosla et al., NeurIPS 2020)            |
| §4.4 Table 6  "Clustering Metric"      | `davies_bouldin_loss` (Davies & Bouldin, 1979)         |
The benchmark metrics of Tables 1 and 4 are in metrics.py; ORCA's stage-1 objective (OTDD) is in orca.py.

Per task (Tables 8 and 10). The paper's Table 8 "Loss" row is shuffled across NinaPro / FSD50K / Darcy /
PSICOV (it prints LpLoss, MSELoss, BCE, FocalLoss), so we follow ORCA's `get_config` in src/task_configs.py
(github.com/sjunhongshen/ORCA):
| task                          | TASK_LOSSES key (loss_kwargs)           |
|-------------------------------|-----------------------------------------|
| CIFAR-100, Spherical, Satellite | "cross_entropy"                       |
| NinaPro                       | "cross_entropy" (= ORCA's focal, γ = 0) |
| FSD50K                        | "bce" (pos_weight=10)                   |
| Darcy Flow (NB360)            | "rel_l2" (reduction="sum", as ORCA)     |
| PSICOV                        | "mse"                                   |
| Cosmic                        | "bce" (ignore_value=IGNORE_VALUE)       |
| ECG                           | "cross_entropy"                         |
| DeepSEA                       | "bce" (pos_weight=4)                    |
| PDEBench (8 tasks)            | "nrmse"; Burgers, 1D-NS "rmse" (ORCA)   |

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
form, explicit differences and boolean indexing, never `torch.pdist` / `torch.cdist` (not twice
differentiable: "the derivative for '_pdist_backward' is not implemented") and never −inf masks
(0 · inf = NaN in backward passes).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# -------------------------------------------------------------------------------------------------
# Constants
# -------------------------------------------------------------------------------------------------

# Cosmic: target pixels equal to this value are "ignored" (deepCR's ignore mask, carried inside the target;
# data.py builds such targets, `bce(ignore_value=...)` and the Cosmic metrics in metrics.py read them)
IGNORE_VALUE = -1.0


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

    (Wang & Isola, ICML 2020, reference code github.com/ssnl/align_uniform, with class labels defining the
    positives.)

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
    # same-class features apart and collapses all features: relative to Wang & Isola both signs are
    # inverted and the squares dropped, i.e. it is a score to maximise written where a loss is minimised
    # (tests/test_losses.py::test_minimising_outer_loss_pulls_same_class_together checks our form).
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
    `ignore_value` (Cosmic: IGNORE_VALUE = −1): target entries equal to it are ignored pixels. As ORCA's
    `mask` (src/utils.py) does, both the logit and the target of an ignored pixel are set to 0 (mask(img) =
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
    alpha None or 1) is cross-entropy: ORCA's NinaPro loss `FocalLoss(alpha=1)` (src/task_configs.py) keeps
    the class's default gamma = 0 (src/utils.py). Point (B, K) or dense (B, K, *spatial) logits with integer
    targets.
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
    with (`LpLoss(size_average=False)` in ORCA's src/task_configs.py; the sum makes the effective lr ×
    batch size). Outputs and targets must be in physical units (Darcy: decode the point-wise Gaussian
    normaliser of the targets first, as ORCA and FNO do; data.py's `output_decoder`).
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


def task_objective(spec, td, device):
    """ℓ of Eq. (1) for a task (its registry row's TASK_LOSSES key and kwargs), and the map from model output to
    prediction (identity, or ORCA's target de-normalisation for Darcy Flow, applied before the loss and the metric)."""
    loss = TASK_LOSSES[spec.loss](**spec.loss_kwargs)
    if td.output_decoder is None:
        return loss, (lambda out: out)
    decode = td.output_decoder.to(device)
    return (lambda out, y: loss(decode(out), y)), decode
