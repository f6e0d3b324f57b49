"""Tests for metrics.py: metrics vs scikit-learn or brute-force reference definitions (NAS-Bench-360's
PSICOV evaluation loops transcribed literally), and the evaluation helper aggregate_groups."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import metrics as M  # noqa: E402

sk = pytest.importorskip("sklearn.metrics")


# -------------------------------------------------------------------------------------------------
# metrics
# -------------------------------------------------------------------------------------------------

def test_metric_registry():
    assert {"error", "one_minus_auroc", "one_minus_auroc_binarized", "one_minus_map", "one_minus_f1",
            "rel_l2", "mae8", "nrmse", "mse"} <= set(M.METRICS)


def test_error_and_f1_vs_sklearn():
    rng = np.random.default_rng(10)
    p = rng.normal(size=(200, 6))
    y = rng.integers(0, 5, 200)  # class 5 never in the target, sometimes predicted
    yhat = p.argmax(1)
    assert abs(M.METRICS["error"](p, y) - 100 * (1 - sk.accuracy_score(y, yhat))) < 1e-12
    assert abs(M.METRICS["error"](torch.tensor(p), torch.tensor(np.eye(6)[y])) - M.error(p, y)) < 1e-12
    p[:, 2] -= 100  # class 2 never predicted but present in the target
    yhat = p.argmax(1)
    assert abs(M.METRICS["one_minus_f1"](p, y) - (1 - sk.f1_score(y, yhat, average="macro", zero_division=0))) < 1e-12


def test_auroc_and_map_vs_sklearn():
    rng = np.random.default_rng(11)
    y = (rng.random((300, 7)) < 0.3).astype(float)
    s = np.round(rng.normal(size=(300, 7)) + y, 1)  # rounding creates ties
    assert abs(M.METRICS["one_minus_auroc"](s, y) - (1 - sk.roc_auc_score(y, s, average="macro"))) < 1e-12
    assert abs(M.METRICS["one_minus_map"](s, y) - (1 - sk.average_precision_score(y, s, average="macro"))) < 1e-12
    # tensors accepted; a label with a single class is skipped (nan-mean over labels)
    y2 = y.copy()
    y2[:, 3] = 0
    keep = [0, 1, 2, 4, 5, 6]
    assert abs(M.one_minus_auroc(torch.tensor(s), torch.tensor(y2))
               - (1 - sk.roc_auc_score(y2[:, keep], s[:, keep], average="macro"))) < 1e-12
    ref_map = sk.average_precision_score(y2[:, keep], s[:, keep], average="macro")
    assert abs(M.one_minus_map(s, y2) - (1 - ref_map)) < 1e-12


def test_cosmic_auroc_variants_vs_sklearn():
    rng = np.random.default_rng(12)
    logits = rng.normal(size=(3, 1, 16, 16))
    mask = (rng.random((3, 16, 16)) < 0.2).astype(float)
    logits[:, 0] += 2 * mask
    ign = rng.random((3, 16, 16)) < 0.1
    target = np.where(ign, M.IGNORE_VALUE, mask)
    # benchmark definition: binarised at logit > 0, ignored pixels counted as (target 0, prediction 0)
    yb = np.where(ign, 0.0, mask).ravel()
    pb = ((logits[:, 0] > 0) & ~ign).astype(float).ravel()
    assert abs(M.METRICS["one_minus_auroc_binarized"](logits, target) - (1 - sk.roc_auc_score(yb, pb))) < 1e-12
    assert abs(M.one_minus_auroc_binarized(logits, target) - (1 - sk.balanced_accuracy_score(yb, pb))) < 1e-12
    pb5 = ((logits[:, 0] > 0.5) & ~ign).astype(float).ravel()
    assert abs(M.one_minus_auroc_binarized(logits, target, threshold=0.5) - (1 - sk.roc_auc_score(yb, pb5))) < 1e-12
    # ranking AUROC over non-ignored pixels
    keep = ~ign.ravel()
    ref = 1 - sk.roc_auc_score(mask.ravel()[keep], logits[:, 0].ravel()[keep])
    assert abs(M.METRICS["one_minus_auroc"](logits, target) - ref) < 1e-12


def test_regression_metrics_vs_references():
    rng = np.random.default_rng(13)
    p, y = rng.normal(size=(20, 1, 9, 9)), rng.normal(size=(20, 9, 9))
    assert abs(M.METRICS["mse"](p, y) - sk.mean_squared_error(y.ravel(), p.ravel())) < 1e-12
    rel = np.mean([np.linalg.norm(p[b, 0] - y[b]) / np.linalg.norm(y[b]) for b in range(20)])
    assert abs(M.METRICS["rel_l2"](p, y) - rel) < 1e-12
    assert abs(M.METRICS["nrmse"](p, y) - rel) < 1e-12  # one channel: nRMSE == relative L2
    p2, y2 = rng.normal(size=(5, 3, 16)), rng.normal(size=(5, 3, 16))
    ref = np.mean([[np.sqrt(np.mean((p2[b, c] - y2[b, c]) ** 2)) / np.sqrt(np.mean(y2[b, c] ** 2))
                    for c in range(3)] for b in range(5)])
    assert abs(M.METRICS["nrmse"](torch.tensor(p2), torch.tensor(y2)) - ref) < 1e-12


# ---- PSICOV MAE8 -------------------------------------------------------------------------------

def _psicov_window(rng, lengths, H=64, off=5):
    """Targets as NB360 builds them: protein at [off, off+L), label padding 100 Å elsewhere."""
    N = len(lengths)
    Y = np.full((N, 1, H, H), 100.0)
    P = rng.uniform(-0.5, 20.0, size=(N, 1, H, H))  # raw, unsymmetric predictions (some < 0.01)
    for b, Lb in enumerate(lengths):
        D = rng.uniform(0.0, 16.0, size=(Lb, Lb))
        D = (D + D.T) / 2
        D[rng.random((Lb, Lb)) < 0.02] = np.nan  # a few missing residues
        Y[b, 0, off:off + Lb, off:off + Lb] = D
    return P, Y


def ref_mae8_nb360(P, Y, lengths, H=64, pad_size=10):
    """Literal transcription of NB360's evaluation loops (symmetrise, clamp, shift, calculate_mae)."""
    P = P.transpose(0, 2, 3, 1).copy()
    Y = Y.transpose(0, 2, 3, 1).copy()
    for j in range(H):
        for k in range(j, H):
            P[:, j, k, :] = (P[:, k, j, :] + P[:, j, k, :]) / 2.0
    P[P < 0.01] = 0.01
    h = pad_size // 2
    P[:, :H - pad_size, :H - pad_size, :] = P[:, h:H - h, h:H - h, :].copy()
    Y[:, :H - pad_size, :H - pad_size, :] = Y[:, h:H - h, h:H - h, :].copy()
    out = []
    for i in range(P.shape[0]):
        Lb = lengths[i]
        PAVG = np.full((Lb, Lb), 100.0)
        for j in range(Lb):
            for k in range(j, Lb):
                PAVG[j, k] = (P[i, k, j, 0] + P[i, j, k, 0]) / 2.0
        Yi, Pi = Y[i, :Lb, :Lb, 0].copy(), PAVG.copy()
        for p in range(Lb):
            for q in range(Lb):
                if q - p < 24 or Yi[p, q] > 8:
                    Yi[p, q] = Pi[p, q] = np.nan
        d = np.abs(Yi - Pi)
        out.append(np.nanmean(d) if not np.isnan(d).all() else np.nan)
    return np.nanmean(out)


def test_mae8_matches_nb360_with_own_lengths():
    rng = np.random.default_rng(14)
    lengths = [30, 54, 41]
    P, Y = _psicov_window(rng, lengths)
    ref = ref_mae8_nb360(P, Y, lengths)
    assert abs(M.METRICS["mae8"](P, Y, lengths=lengths) - ref) < 1e-12
    # lengths recovered from the 100 Å label padding; tensors and (N, H, W) accepted
    assert abs(M.METRICS["mae8"](torch.tensor(P[:, 0]), torch.tensor(Y[:, 0])) - ref) < 1e-12
    # guard against ORCA's bug: every protein scored with the first protein's length
    orca = M.mae8(P, Y, lengths=[lengths[0]] * 3)
    assert abs(orca - ref_mae8_nb360(P, Y, [lengths[0]] * 3)) < 1e-12
    assert abs(orca - ref) > 1e-3
    with pytest.raises(M.LossError, match="lengths"):
        M.mae8(P, Y, lengths=[30, 55, 41])


def test_mae8_symmetric_mean_variant():
    """symmetrize="mean": P_pq = max((ŷ_pq + ŷ_qp)/2, 0.01); equals NB360's form for symmetric outputs."""
    rng = np.random.default_rng(17)
    lengths = [33, 47]
    P, Y = _psicov_window(rng, lengths)
    maes = []
    for b, Lb in enumerate(lengths):
        errs = []
        for p in range(Lb):
            for q in range(p + 24, Lb):
                y = Y[b, 0, 5 + p, 5 + q]
                if y <= 8:
                    errs.append(abs(y - max((P[b, 0, 5 + p, 5 + q] + P[b, 0, 5 + q, 5 + p]) / 2, 0.01)))
        maes.append(np.mean(errs))
    assert abs(M.mae8(P, Y, lengths=lengths, symmetrize="mean") - np.mean(maes)) < 1e-12
    Psym = (P + P.transpose(0, 1, 3, 2)) / 2
    assert abs(M.mae8(Psym, Y, lengths=lengths) - M.mae8(Psym, Y, lengths=lengths, symmetrize="mean")) < 1e-12
    assert abs(M.mae8(P, Y, lengths=lengths) - M.mae8(P, Y, lengths=lengths, symmetrize="mean")) > 1e-3


def test_mae8_protein_without_pairs_is_skipped():
    rng = np.random.default_rng(15)
    P, Y = _psicov_window(rng, [20, 40])  # L = 20 < 24: no pair with separation >= 24
    assert np.isclose(M.mae8(P, Y, lengths=[20, 40]), M.mae8(P[1:], Y[1:], lengths=[40]), atol=1e-14)


# ---- evaluation helpers -----------------------------------------------------------------------

def test_aggregate_groups_mean_and_vote():
    rng = np.random.default_rng(16)
    groups = np.array([5, 2, 5, 9, 2, 2, 9])
    logits = rng.normal(size=(7, 4))
    target = np.eye(4)[[1, 3, 1, 0, 3, 3, 0]]
    pm, ym = M.aggregate_groups(logits, target, groups, how="mean")
    for gi, g in enumerate([5, 2, 9]):  # first-appearance order
        assert np.allclose(pm[gi], logits[groups == g].mean(0)) and (ym[gi] == target[groups == g][0]).all()
    pv, _ = M.aggregate_groups(logits, target, groups, how="vote")
    for gi, g in enumerate([5, 2, 9]):
        votes = np.bincount(logits[groups == g].argmax(1), minlength=4)
        assert (pv[gi] == votes).all()
