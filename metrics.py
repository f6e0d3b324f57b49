"""Benchmark metrics of the MoNA paper's result tables (all "lower is better").

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864.

Paper map
---------
| paper                                | code                                                             |
|--------------------------------------|------------------------------------------------------------------|
| Tables 1, 2, 4: reported test errors | `METRICS` (keyed by data.TaskSpec.metric / .paper_metric)        |
| Table 8 / 10 "Metric" rows           | one function per row, below                                      |
| evaluation of stage 2 (Eq. 1 models) | the whole split at once (corrected), or `chunk_average` (ORCA's) |

Two definitions
---------------
The paper's numbers come from ORCA's evaluation (App. A.1: MoNA "basically follows" ORCA's code,
github.com/sjunhongshen/ORCA): `src/task_configs.py: get_metric` picks a function of `src/utils.py`, and
`src/main.py: evaluate` applies it to chunks of >= eval_batch_size test samples (whole batches) and
averages the chunk scores (`chunk_average` below). The corrected definitions are NAS-Bench-360's and
PDEBench's, over the whole test set at once. Both are computed on the same predictions:
paper column (tasks): ORCA's code, per chunk -> ORCA's key (chunk) | the corrected key (whole set)
- 0-1 error (CIFAR-100, Spherical, NinaPro, Satellite): `inverse_score(accuracy)` -> "error" (1000) | "error"
- 1 − mAP (FSD50K): evaluate's clip path, mean of a clip's logits, float32 σ, AP per label (`calculate_stats`)
  -> "one_minus_map_orca" (0: all clips at once) | "one_minus_map" (clips)
- relative L2 (Darcy): `LpLoss(size_average=True)` on decoded outputs -> "rel_l2" (1000) | "rel_l2"
- MAE8 (PSICOV): `psicov_mae`, every protein with the first protein's length -> "mae8_orca" (1) | "mae8"
- 1 − AUROC (Cosmic): `inv_auroc`, logit > 0, ignored pixels masked to 0 -> "one_minus_auroc_binarized" (1000)
  | the same key
- 1 − F1 (ECG): `ecg_f1`, macro F1 over windows -> "one_minus_f1" on windows (1000) | "one_minus_f1" on the
  majority vote of each record's windows
- 1 − AUROC (DeepSEA): `auroc`, float32 σ, roc_curve + auc per label, nan-mean -> "one_minus_auroc_orca" (1000)
  | "one_minus_auroc"
- nRMSE (PDEBench, 8 tasks): `nmse`, per sample, channels flattened -> "nrmse" (1000; PDE Darcy 100) | "nrmse"
"(chunk)" is ORCA's eval_batch_size (src/configs/*.yaml); its chunks hold whole test batches of the config's
batch size (PSICOV's test loader: 1). Where the keys agree, ORCA's number still differs by the chunking and,
for Cosmic, ECG and four PDE tasks, by ORCA's test data (sky augmentation; label-dependent windows; another
target frame: data.py). ORCA's DeepSEA test loader is shuffled, so its chunks are random draws.

Symbols
-------
| paper / benchmark        | code               | shape                                              |
|--------------------------|--------------------|----------------------------------------------------|
| model scores g_θ(x^t)    | `pred`             | (N, K) scores, or dense (N, C, *spatial)           |
| y^t                      | `target`           | (N,) class ids, (N, K) one-/multi-hot, or dense    |
| protein length L_b       | `lengths`          | (N,)                                               |
| clip / record id         | `groups`           | (N,)                                               |

Metrics accept numpy arrays or tensors. Bad shapes raise losses.LossError (one line).
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
    or (N, K) one-hot. CIFAR-100, Spherical, NinaPro, Satellite (NB360). Per chunk this is ORCA's
    `inverse_score(accuracy)` (src/utils.py) in percent: ORCA's value is `chunk_average(error, ...)`."""
    p = _np(pred)
    yhat = p.argmax(axis=1)
    return float(100.0 * np.mean(yhat != _class_ids(_np(target), p.shape[0])))


def one_minus_auroc(pred, target, ignore_value: float | None = IGNORE_VALUE) -> float:
    """1 − macro ranking AUROC over labels (DeepSEA; NB360 computes it on the full test set).

    pred: scores (logits or probabilities: AUROC is invariant to the monotone sigmoid), (N,), (N, K), or
    dense (N, C, *spatial) where all pixels of all samples are pooled per channel. Per label the AUROC is
    the Mann-Whitney probability P(s_pos > s_neg) + ½ P(tie) (= scikit-learn's roc_auc_score); labels
    with a single class in the target are skipped (nan-mean over labels); targets equal to
    `ignore_value` (Cosmic ignored pixels) are excluded. For Cosmic this is the stricter ranking AUROC
    over non-ignored pixels, a different number from the binarised benchmark value (see the next function).
    ORCA's DeepSEA metric ranks float32 sigmoid scores instead: `one_minus_auroc_orca`.
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
    With the defaults this IS ORCA's definition (`inv_auroc` after its `mask` transform sets ignored
    outputs and targets to 0); ORCA's value is `chunk_average(one_minus_auroc_binarized, ...)`.
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


def _sigmoid32(x) -> np.ndarray:
    # σ(x) in float32, as ORCA applies it to float32 logits: saturates to 1.0 above x ≈ 16.6 (ties in a ranking)
    return torch.sigmoid(torch.from_numpy(_np(x).astype(np.float32))).numpy()


def one_minus_auroc_orca(pred, target) -> float:
    """ORCA's DeepSEA metric, `inverse_score(auroc)` (src/utils.py): 1 − nan-mean over labels of the AUROC
    of float32 sigmoid scores (`roc_curve` + `auc` per label; a label with one class gives NaN and is skipped).
    Ranking float32 σ(logit) instead of the logits ties every score whose logit exceeds ≈ 16.6 (σ rounds to
    1.0); otherwise it equals `one_minus_auroc` (AUROC is invariant to the monotone σ). ORCA's value is
    `chunk_average(one_minus_auroc_orca, ...)`. pred: logits (N, K); target 0/1 (N, K).
    """
    # ORCA-compatible (reproduces a quirk): auroc ranks output = torch.sigmoid(output).float(), then per label
    # roc_curve + auc (= the Mann-Whitney AUROC), nan-mean over labels
    return one_minus_auroc(_sigmoid32(pred), target, ignore_value=None)


def one_minus_map_orca(pred, target) -> float:
    """ORCA's FSD50K metric (src/main.py: evaluate, clip path): 1 − mean over labels of scikit-learn's
    average precision of float32 sigmoid scores of the clip logits (`calculate_stats`, src/utils.py).
    pred: clip-level logits (G, K) (`aggregate_groups(..., how="mean")`: ORCA's `model(x).mean(0)`); target
    multi-hot (G, K). Labels without a positive are skipped, as in `one_minus_map` (FSD50K's eval set has all
    200 labels). The float32 σ ties clip scores with logit above ≈ 16.6; otherwise it equals `one_minus_map`
    (AP depends only on the ranking).
    """
    # ORCA-compatible (reproduces a quirk): AP of float32 sigmoid scores (evaluate: torch.sigmoid(out), float32)
    return one_minus_map(_sigmoid32(pred), target)


def one_minus_f1(pred, target) -> float:
    """1 − macro F1 of argmax predictions (ECG). F1_c = 2TP_c / (2TP_c + FP_c + FN_c), averaged over the
    classes that occur in the target or the prediction (scikit-learn's f1_score(average="macro")).
    On windows this IS ORCA's `ecg_f1` (src/utils.py: classification_report, mean F1 of the classes 0-3
    present), and ORCA's value is its `chunk_average` over windows; NB360 scores ECG per record (majority vote
    over windows: `aggregate_groups(..., how="vote")`, then this function)."""
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
    Physical units: decode the point-wise Gaussian normaliser of the targets first (data.py's output_decoder).
    This IS ORCA's Darcy metric (`LpLoss(size_average=True).rel`, src/utils.py), which it averages per chunk."""
    p, y = _np(pred), _np(target)
    p, y = p.reshape(p.shape[0], -1), y.reshape(p.shape[0], -1)
    return float(np.mean(np.linalg.norm(p - y, axis=1) / np.linalg.norm(y, axis=1)))


def nrmse_metric(pred, target, per_channel: bool = True) -> float:
    """nRMSE (PDEBench, Takamoto et al. 2022): per sample b and channel c,
    sqrt(mean_x (ŷ − y)²) / sqrt(mean_x y²), averaged over channels and samples of the whole test set.
    pred/target (N, C, *spatial); (N, L) counts as one channel. ORCA's `nmse` (src/utils.py) flattens all
    channels, ‖ŷ_b − y_b‖₂/‖y_b‖₂ per sample (`per_channel=False`); for C = 1 (every task of Table 4) the
    two agree, and ORCA's value is `chunk_average(nrmse_metric, ...)`."""
    p, y = _np(pred), _np(target)
    y = y.reshape(p.shape)
    v = _nrmse_per_sample(torch.from_numpy(p), torch.from_numpy(y), per_channel)
    return float(v.mean())


def mse_metric(pred, target) -> float:
    """Mean squared error over all entries (= scikit-learn mean_squared_error on flattened arrays)."""
    p, y = _np(pred), _np(target)
    return float(np.mean((p - y.reshape(p.shape)) ** 2))


def _psicov_arrays(pred, target, name: str):
    P, Y = _np(pred), _np(target)
    if P.ndim == 4:
        P, Y = P[:, 0], Y.reshape(P.shape)[:, 0]
    if P.ndim != 3 or Y.shape != P.shape:
        raise LossError(f"{name}: expected pred/target (N, [1,] H, W) of equal shape, got {P.shape} and {Y.shape}")
    return P, Y


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
    ORCA's `psicov_mae` (src/utils.py) scores every protein with the FIRST protein's length: `mae8_orca`.
    """
    P, Y = _psicov_arrays(pred, target, "mae8")
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


def _first_protein_length(target, lengths, offset: int, pad_value: float) -> int:
    if lengths is not None:
        return int(np.asarray(lengths).reshape(-1)[0])
    Y0 = _np(target[:1])  # the first protein only
    return int(_infer_psicov_lengths(Y0.reshape(1, Y0.shape[-2], Y0.shape[-1]), offset, pad_value)[0])


def mae8_orca(pred, target, lengths=None, *, first_length: int | None = None, offset: int = PSICOV_OFFSET,
              pad_value: float = PSICOV_PAD_VALUE, **kw) -> float:
    """ORCA's definition of PSICOV MAE8 (`psicov_mae`, src/utils.py, with eval batch size 1), the paper's column.

    ORCA's evaluate calls `psicov_mae` once per test protein (batch 1), and it reads the length as
    L = length_dict[pdb_list[i]] with i the protein's index IN THE BATCH, i.e. i = 0 on every call: every
    protein b is scored on the window [offset, offset + L_0)² of the FIRST protein of psicov.lst (a longer
    protein is cut; for a shorter one the window takes in label padding, 100 Å > 8 Å, which drops out). The
    mean of those calls is the mean over proteins of MAE_b(L_0), returned here: `mae8` with lengths = [L_0]·N.
    NB360's `calculate_mae` (backbone/utils_grid.py) uses each protein's own length: the corrected `mae8`.
    lengths: (N,) or None as in `mae8` (inferred from the label padding); only L_0 is read. first_length: L_0
    directly (`chunk_average` passes the whole set's, so a chunk not starting at protein 0 still uses it).
    A protein without a scored pair is skipped (nan-mean); ORCA's `psicov_mae` returns inf for it, on which
    its evaluate fails (`.item()` of a Python float). Other keyword arguments go to `mae8` (its default
    symmetrize="nb360" is ORCA's code too).
    """
    P, Y = _psicov_arrays(pred, target, "mae8_orca")
    if first_length is None:
        first_length = _first_protein_length(Y, lengths, offset, pad_value)
    # ORCA-compatible (reproduces a bug): L = length_dict[pdb_list[0]] for every protein
    return mae8(P, Y, lengths=np.full(P.shape[0], int(first_length)), offset=offset, pad_value=pad_value, **kw)


def _mae8_orca_whole_set(pred, target, lengths=None, first_length=None, **kw) -> dict:
    # psicov_mae reads L_0 once (its constructor reads psicov.lst), the same for every chunk
    if first_length is None:
        first_length = _first_protein_length(target, lengths, kw.get("offset", PSICOV_OFFSET),
                                             kw.get("pad_value", PSICOV_PAD_VALUE))
    return dict(kw, first_length=first_length)


mae8_orca.whole_set_kwargs = _mae8_orca_whole_set


METRICS = {
    "error": error,
    "one_minus_auroc": one_minus_auroc,
    "one_minus_auroc_binarized": one_minus_auroc_binarized,
    "one_minus_map": one_minus_map,
    "one_minus_f1": one_minus_f1,
    "rel_l2": rel_l2_metric,
    "mae8": mae8,
    "mae8_orca": mae8_orca,
    "one_minus_auroc_orca": one_minus_auroc_orca,
    "one_minus_map_orca": one_minus_map_orca,
    "nrmse": nrmse_metric,
    "mse": mse_metric,
}


# -------------------------------------------------------------------------------------------------
# Evaluation protocol helpers: ORCA's chunk average; pool samples into clips / records before a metric
# -------------------------------------------------------------------------------------------------


def chunk_average(metric_fn, pred, target, *, chunk: int, batch_size: int, **kw) -> float:
    """ORCA's evaluation loop (src/main.py: evaluate), restated: the mean of per-chunk metric values.

    ORCA appends each test batch of `batch_size` outputs to a buffer and, once the buffer holds >= `chunk`
    samples (its eval_batch_size) or after the last batch, scores the buffer with the metric and empties it;
    the result is the mean over chunks. So chunk boundaries fall on batch boundaries: every chunk holds
    ⌈chunk / batch_size⌉ whole batches (batch 300, chunk 1000 -> 1200 samples), the last one the rest.
    `chunk <= 0`: the metric over the whole set (the corrected definitions; FSD50K's clip-level path).

    pred, target: the whole evaluation set in loader order (arrays or tensors, first axis = samples).
    kw go unchanged to every chunk's metric call, except that a metric with a `whole_set_kwargs` attribute
    first reads its whole-set constants from the full set (`mae8_orca`: the first protein's length).
    A chunk whose metric is NaN makes the mean NaN, as ORCA's sum of chunk scores does.
    """
    n = len(pred)
    if len(target) != n or n == 0:
        raise LossError(f"chunk_average: need the same, non-zero number of predictions and targets, got {n} and "
                        f"{len(target)}")
    if chunk <= 0 or chunk >= n:
        return float(metric_fn(pred, target, **kw))
    if batch_size < 1:
        raise LossError(f"chunk_average: batch_size must be >= 1, got {batch_size}")
    whole = getattr(metric_fn, "whole_set_kwargs", None)
    if whole is not None:
        kw = whole(pred, target, **kw)
    # evaluate: a chunk closes after the first batch with n_data >= eval_batch_size
    size = -(-chunk // batch_size) * batch_size
    # eval_score = Σ_chunks metric(outs, ys) / n_eval
    scores = [float(metric_fn(pred[s:s + size], target[s:s + size], **kw)) for s in range(0, n, size)]
    return float(np.mean(scores))


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
