"""Benchmark metrics of the MoNA paper's result tables (all "lower is better").

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864.

Paper map
---------
| paper                                   | code                                                  |
|-----------------------------------------|-------------------------------------------------------|
| Tables 1, 2, 4: reported test errors    | `METRICS` (keyed by data.TaskSpec.metric)             |
| Table 8 / 10 "Metric" rows              | one function per row, below                           |
| evaluation of stage 2 (Eq. 1 models)    | called by stage2.evaluate on the whole split          |

Per task (Tables 8 and 10, as NAS-Bench-360 and PDEBench define them; ORCA reports the same quantities):
| task                          | METRICS key                  |
|-------------------------------|------------------------------|
| CIFAR-100, Spherical, Satellite | "error" (%)                |
| NinaPro                       | "error" (%)                  |
| FSD50K                        | "one_minus_map" (clip level) |
| Darcy Flow (NB360)            | "rel_l2"                     |
| PSICOV                        | "mae8"                       |
| Cosmic                        | "one_minus_auroc_binarized"  |
| ECG                           | "one_minus_f1"               |
| DeepSEA                       | "one_minus_auroc"            |
| PDEBench (8 tasks)            | "nrmse"                      |

Symbols
-------
| paper / benchmark        | code               | shape                                              |
|--------------------------|--------------------|----------------------------------------------------|
| model scores g_θ(x^t)    | `pred`             | (N, K) scores, or dense (N, C, *spatial)           |
| y^t                      | `target`           | (N,) class ids, (N, K) one-/multi-hot, or dense    |
| protein length L_b       | `lengths`          | (N,)                                               |
| clip / record id         | `groups`           | (N,)                                               |

Metrics take the WHOLE evaluation set at once and compute the metric over it. ORCA's `evaluate`
(src/main.py, github.com/sjunhongshen/ORCA) instead computes the metric on chunks of at least
eval_batch_size samples (1,000 for most tasks) and averages over the chunks, which is not the global metric.
They accept numpy arrays or tensors. Bad shapes raise losses.LossError (one line).
"""
from __future__ import annotations

import numpy as np
import torch

from losses import IGNORE_VALUE, LossError, _nrmse_per_sample


# -------------------------------------------------------------------------------------------------
# Constants
# -------------------------------------------------------------------------------------------------

PSICOV_OFFSET = 5  # NB360 pads each protein by pad_size/2 = 5 pixels on each side (pad_size = 10)
PSICOV_PAD_VALUE = 100.0  # NB360 label padding in Å (test labels, unclipped)


# -------------------------------------------------------------------------------------------------
# Helpers
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


# -------------------------------------------------------------------------------------------------
# Metrics (lower is better, as reported in Tables 1, 2 and 4)
# -------------------------------------------------------------------------------------------------


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
    over non-ignored pixels, a different number from the binarised benchmark value (see the next function).
    """
    P, Y = _label_columns(_np(pred), _np(target))
    scores = []
    for k in range(P.shape[1]):
        keep = Y[:, k] != ignore_value if ignore_value is not None else slice(None)
        scores.append(_binary_auroc(P[keep, k], Y[keep, k] > 0.5))
    scores = np.asarray(scores)
    return float(1.0 - np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def one_minus_auroc_binarized(pred, target, threshold: float = 0.0, ignore_value: float | None = IGNORE_VALUE) -> float:
    """Cosmic's benchmark metric: 1 − AUROC of BINARISED predictions over all pixels, as coded by ORCA's
    `inv_auroc` (src/utils.py) and NAS-Bench-360's Cosmic evaluation (backbone/model_grid_original.py).

    ŷ = 1[logit > threshold] (threshold 0 = ORCA's `inv_auroc`, i.e. sigmoid > ½; NB360's code uses 0.5);
    all pixels of all images pooled; ignored pixels (target == `ignore_value`) are NOT excluded: as in
    ORCA/NB360 they count as target 0 with prediction 0 (true negatives). The AUROC of a 0/1 score is
    (TPR + TNR)/2, i.e. balanced accuracy, not a ranking AUROC (`one_minus_auroc` gives that one).
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
    Physical units: decode the point-wise Gaussian normaliser of the targets first (data.py's output_decoder)."""
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
    ORCA's `psicov_mae` (src/utils.py) is called once per test protein and reads the length of the FIRST
    protein of psicov.lst every time, so it scores every protein with that length; the ORCA-compatible
    value is `mae8(pred, target, lengths=[L_0] * N)`.
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


# -------------------------------------------------------------------------------------------------
# Evaluation protocol helper: pool samples into clips / records before a metric
# -------------------------------------------------------------------------------------------------


def aggregate_groups(pred, target, groups, how: str = "mean"):
    """Pool sample-level outputs into group-level ones before a metric (evaluation protocol helpers).

    how="mean": mean of the scores/logits of each group (FSD50K: clip = mean of its 1-s chunks' logits,
    then `one_minus_map`, as ORCA's clip-level evaluation in src/main.py). how="vote": per group, counts
    of argmax votes (N, K) -> (G, K), so argmax gives the majority class, ties to the lowest class id (ECG:
    NAS-Bench-360 scores each record by the majority vote of its windows; ORCA's `ecg_f1` scores windows).
    Groups are ordered by first appearance; the group's target is its first sample's target. Returns numpy
    (pred_g, target_g).
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
