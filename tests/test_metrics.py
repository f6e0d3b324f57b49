"""Tests for metrics.py: the corrected metrics vs scikit-learn or brute-force reference definitions
(NAS-Bench-360's PSICOV evaluation loops transcribed literally); ORCA's definitions (the paper's columns) vs
literal restatements of ORCA's code (github.com/sjunhongshen/ORCA: src/main.py `evaluate`, src/utils.py
metrics) on the same predictions; chunk_average's edge cases; aggregate_groups."""
import os
import sys
import warnings

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
            "rel_l2", "mae8", "nrmse", "mse", "mae8_orca", "one_minus_auroc_orca",
            "one_minus_map_orca"} <= set(M.METRICS)


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
    # guard against ORCA's bug: every protein scored with the first protein's length (mae8_orca)
    orca = M.mae8(P, Y, lengths=[lengths[0]] * 3)
    assert abs(orca - ref_mae8_nb360(P, Y, [lengths[0]] * 3)) < 1e-12
    assert abs(orca - ref) > 1e-3 and abs(M.mae8_orca(P, Y) - orca) < 1e-12
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


# -------------------------------------------------------------------------------------------------
# ORCA's definitions (the paper's columns) vs literal restatements of ORCA's code
# -------------------------------------------------------------------------------------------------

def orca_evaluate(metric, outputs, targets, batch_size, eval_batch_size, extra=None):
    """src/main.py: evaluate, restated: batches in loader order, the buffer scored once it holds
    >= eval_batch_size samples or after the last batch, the mean over chunks."""
    n = len(outputs)
    loader = [(outputs[s:s + batch_size], targets[s:s + batch_size],
               None if extra is None else extra[s:s + batch_size]) for s in range(0, n, batch_size)]
    eval_score, n_eval = 0.0, 0
    ys, outs, zs, n_data = [], [], [], 0
    for i, (out, y, z) in enumerate(loader):
        outs.append(out)
        ys.append(y)
        zs.append(z)
        n_data += out.shape[0]
        if n_data >= eval_batch_size or i == len(loader) - 1:
            outs, ys = np.concatenate(outs, 0), np.concatenate(ys, 0)
            eval_score += metric(outs, ys) if extra is None else metric(outs, ys, np.concatenate(zs, 0))
            n_eval += 1
            ys, outs, zs, n_data = [], [], [], 0
    return eval_score / n_eval


class OrcaPsicovMae:
    """src/utils.py: psicov_mae restated (the returned separation-24 / 8 Å branch); LMAX = the window size
    (ORCA: 512). `i` indexes the proteins of the BATCH, and evaluate passes batches of one protein."""

    def __init__(self, pdb_list, length_dict, lmax):
        self.pdb_list, self.length_dict, self.lmax = pdb_list, length_dict, lmax

    def __call__(self, output, target):
        targets = [np.expand_dims(target[i].transpose(1, 2, 0), axis=0) for i in range(len(target))]
        P = output.transpose(0, 2, 3, 1).copy()
        LMAX, pad_size = self.lmax, 10
        Y = np.full((len(targets), LMAX, LMAX, 1), np.nan)
        for i, xy in enumerate(targets):
            Y[i, :, :, 0] = xy[0, :, :, 0]
        for j in range(0, len(P[0, :, 0, 0])):
            for k in range(j, len(P[0, :, 0, 0])):
                P[:, j, k, :] = (P[:, k, j, :] + P[:, j, k, :]) / 2.0
        P[P < 0.01] = 0.01
        h = int(pad_size / 2)
        P[:, :LMAX - pad_size, :LMAX - pad_size, :] = P[:, h:LMAX - h, h:LMAX - h, :]
        Y[:, :LMAX - pad_size, :LMAX - pad_size, :] = Y[:, h:LMAX - h, h:LMAX - h, :]
        mae_lr_d8_list = np.zeros(len(P[:, 0, 0, 0]))
        for i in range(0, len(P[:, 0, 0, 0])):
            L = self.length_dict[self.pdb_list[i]]
            PAVG = np.full((L, L), 100.0)
            for j in range(0, L):
                for k in range(j, L):
                    PAVG[j, k] = (P[i, k, j, 0] + P[i, j, k, 0]) / 2.0
            Yi, Pi = np.copy(Y[i, 0:L, 0:L, 0]), np.copy(PAVG)
            for p in range(len(Yi)):
                for q in range(len(Yi)):
                    if q - p < 24:
                        Yi[p, q] = Pi[p, q] = np.nan
                        continue
                    if Yi[p, q] > 8:
                        Yi[p, q] = Pi[p, q] = np.nan
            mae_lr_d8 = np.nan
            if not np.isnan(np.abs(Yi - Pi)).all():
                mae_lr_d8 = np.nanmean(np.abs(Yi - Pi))
            mae_lr_d8_list[i] = mae_lr_d8
        mae = np.nanmean(mae_lr_d8_list)
        return np.inf if np.isnan(mae) else mae


@pytest.mark.parametrize("lengths", [[41, 54, 30], [40, 40, 40]])
def test_mae8_orca_vs_orca_psicov_mae_with_batch_1(lengths):
    rng = np.random.default_rng(20)
    P, Y = _psicov_window(rng, lengths)
    pdbs = ["1a3aA", "1a6mA", "1aapA"]
    psicov_mae = OrcaPsicovMae(pdbs, dict(zip(pdbs, lengths)), lmax=64)
    ref = orca_evaluate(psicov_mae, P, Y, batch_size=1, eval_batch_size=1)    # psicov.yaml: 1 and 1
    orca = M.METRICS["mae8_orca"]
    assert abs(orca(P, Y) - ref) < 1e-12                                      # lengths from the 100 Å padding
    assert abs(orca(torch.tensor(P[:, 0]), torch.tensor(Y[:, 0]), lengths=lengths) - ref) < 1e-12
    # ORCA's loop through chunk_average: each chunk of one protein still uses the FIRST protein's length
    assert abs(M.chunk_average(orca, P, Y, chunk=1, batch_size=1) - ref) < 1e-12
    assert abs(M.chunk_average(orca, P, Y, chunk=1, batch_size=1, lengths=lengths) - ref) < 1e-12
    assert abs(M.chunk_average(orca, P, Y, chunk=0, batch_size=1) - ref) < 1e-12
    corrected = M.METRICS["mae8"](P, Y)
    assert abs(corrected - ref_mae8_nb360(P, Y, lengths)) < 1e-12
    if len(set(lengths)) > 1:
        assert abs(corrected - ref) > 1e-3           # the bug changes the number
    else:
        assert abs(corrected - ref) < 1e-12          # equal lengths: the two definitions agree


def _orca_auroc(output, target):
    """src/utils.py: auroc restated (float32 sigmoid; roc_curve + auc per label; nan-mean)."""
    result = torch.sigmoid(torch.from_numpy(output)).float().numpy()
    auroc_list = []
    for i in range(result.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # a one-class label: NaN ROC, as in ORCA
            fpr, tpr, _ = sk.roc_curve(y_true=target[:, i], y_score=result[:, i])
            auroc_list.append(sk.auc(fpr, tpr))
    return np.nanmean(auroc_list)


def _auroc_per_label_roc_auc_score(s, y):
    """Per label roc_auc_score, NaN for a label with one class in the chunk, nan-mean over labels."""
    out = [sk.roc_auc_score(y[:, k], s[:, k]) if 0 < y[:, k].sum() < len(y) else np.nan for k in range(y.shape[1])]
    return np.nanmean(out)


def test_deepsea_chunk_averaged_auroc_vs_orca_loop():
    rng = np.random.default_rng(21)
    N, K = 2600, 6
    y = (rng.random((N, K)) < 0.2).astype(np.float32)
    y[:1300, 5] = 0                                          # label 5 has one class in the first chunks
    logits = (rng.normal(size=(N, K)) + 2 * y).astype(np.float32)
    logits[rng.random((N, K)) < 0.05] += 20                  # σ saturates to 1.0 in float32: ties
    orca = M.METRICS["one_minus_auroc_orca"]
    # per chunk: ORCA's own code (roc_curve + auc) and roc_auc_score per label give the same value
    for lo, hi in [(0, 1008), (1008, 2016)]:
        s32 = torch.sigmoid(torch.from_numpy(logits[lo:hi])).numpy()
        assert abs(orca(logits[lo:hi], y[lo:hi]) - (1 - _orca_auroc(logits[lo:hi], y[lo:hi]))) < 1e-12
        assert abs(orca(logits[lo:hi], y[lo:hi]) - (1 - _auroc_per_label_roc_auc_score(s32, y[lo:hi]))) < 1e-12
    # deepsea.yaml: batch 16, eval_batch_size 1000 -> chunks of 1008, 1008, 584
    ref = orca_evaluate(lambda o, t: 1 - _orca_auroc(o, t), logits, y, batch_size=16, eval_batch_size=1000)
    paper = M.chunk_average(orca, logits, y, chunk=1000, batch_size=16)
    assert abs(paper - ref) < 1e-12
    # the corrected metric on the same predictions: roc_auc_score over the whole set, on the logits
    corrected = M.METRICS["one_minus_auroc"](logits, y)
    assert abs(corrected - (1 - sk.roc_auc_score(y, logits.astype(np.float64), average="macro"))) < 1e-12
    assert abs(paper - corrected) > 1e-3
    assert abs(orca(logits, y) - corrected) > 1e-4           # float32 σ ties alone change the value
    small = np.clip(logits, -8, 8)                           # no saturation: ORCA's per-chunk AUROC = ours
    assert abs(orca(small, y) - M.one_minus_auroc(small, y)) < 1e-12


def test_ecg_window_f1_chunked_vs_record_vote():
    rng = np.random.default_rng(22)
    n_rec = 300
    rec_label = rng.choice(4, n_rec, p=[0.55, 0.1, 0.3, 0.05])
    n_win = rng.integers(2, 14, n_rec)
    groups = np.repeat(np.arange(n_rec), n_win)
    y = rec_label[groups]
    logits = rng.normal(size=(len(y), 4)) + 1.2 * np.eye(4)[y]
    perm = rng.permutation(len(y))                           # ORCA shuffles its test windows once
    logits, y, groups = logits[perm], y[perm], groups[perm]

    def ecg_f1(output, target):                              # src/utils.py: ecg_f1, restated
        report = sk.classification_report(target, np.argmax(output, axis=1), output_dict=True, zero_division=0)
        return np.mean([report[k]["f1-score"] for k in report if k in ("0", "1", "2", "3")])

    # paper: window-level F1 per chunk (ecg.yaml: batch 4, eval_batch_size 1000), averaged
    ref = orca_evaluate(lambda o, t: 1 - ecg_f1(o, t), logits, y, batch_size=4, eval_batch_size=1000)
    paper = M.chunk_average(M.METRICS["one_minus_f1"], logits, y, chunk=1000, batch_size=4)
    assert abs(paper - ref) < 1e-12
    chunks = [(s, s + 1000) for s in range(0, len(y), 1000)]
    ref_sk = np.mean([1 - sk.f1_score(y[a:b], logits[a:b].argmax(1), average="macro") for a, b in chunks])
    assert abs(paper - ref_sk) < 1e-12
    # corrected: majority vote of each record's windows (ties -> lowest class), F1 over records
    pv, yv = M.aggregate_groups(logits, y, groups, how="vote")
    corrected = M.METRICS["one_minus_f1"](pv, yv)
    vote = {g: np.bincount(logits[groups == g].argmax(1), minlength=4).argmax() for g in range(n_rec)}
    true = {g: y[groups == g][0] for g in range(n_rec)}
    recs = sorted(vote)
    assert abs(corrected - (1 - sk.f1_score([true[g] for g in recs], [vote[g] for g in recs], average="macro"))) < 1e-12
    assert abs(corrected - paper) > 1e-2


def test_accuracy_rel_l2_nrmse_cosmic_chunked_vs_orca_code():
    rng = np.random.default_rng(23)
    # accuracy (cifar100.yaml: batch 32, eval 1000 -> chunks 1024, 1024, 452): inverse_score(accuracy)
    y = rng.integers(0, 10, 2500)
    logits = rng.normal(size=(2500, 10)) + 0.8 * np.eye(10)[y]

    def inv_accuracy(output, target):                        # src/utils.py: accuracy (top-1), 1 − it
        pred = torch.from_numpy(output).topk(1, 1, True, True)[1].t()
        correct = pred.eq(torch.from_numpy(target).view(1, -1).expand_as(pred))
        return 1 - (correct[:1].reshape(-1).float().sum(0) * (1.0 / len(target))).item()
    ref = orca_evaluate(inv_accuracy, logits, y, batch_size=32, eval_batch_size=1000)
    assert abs(M.chunk_average(M.METRICS["error"], logits, y, chunk=1000, batch_size=32) / 100 - ref) < 1e-6
    assert abs(M.error(logits, y) / 100 - (1 - sk.accuracy_score(y, logits.argmax(1)))) < 1e-12

    # relative L2 (LpLoss(size_average=True).rel) and nmse, per chunk; PDE-Darcy: batch 4, eval 100
    p, t = rng.normal(size=(250, 1, 8, 8)), rng.normal(size=(250, 1, 8, 8))

    def lp_rel(x, y_):
        x, y_ = torch.from_numpy(x), torch.from_numpy(y_)
        n = x.size()[0]
        diff_norms = torch.norm(x.reshape(n, -1) - y_.reshape(n, -1), 2, 1)
        return torch.mean(diff_norms / torch.norm(y_.reshape(n, -1), 2, 1)).item()

    def nmse(pred, target):
        pred, target = torch.from_numpy(pred), torch.from_numpy(target)
        nb = target.size()[0]
        err = torch.sqrt(torch.mean((pred.reshape([nb, -1]) - target.reshape([nb, -1])) ** 2, dim=1))
        nrm = torch.sqrt(torch.mean(target.reshape([nb, -1]) ** 2, dim=1))
        return torch.mean(err / nrm, dim=0).item()
    for key, fn in [("rel_l2", lp_rel), ("nrmse", nmse)]:
        ref = orca_evaluate(fn, p, t, batch_size=4, eval_batch_size=100)   # chunks 100, 100, 50
        paper = M.chunk_average(M.METRICS[key], p, t, chunk=100, batch_size=4)
        assert abs(paper - ref) < 1e-12
        assert abs(M.METRICS[key](p, t) - fn(p, t)) < 1e-12                 # corrected: whole set
        assert abs(paper - M.METRICS[key](p, t)) > 1e-6                     # unequal chunks: another mean

    # Cosmic (cosmic.yaml: batch 4, eval 1000): evaluate's mask transform, then inv_auroc
    logits = rng.normal(size=(30, 1, 8, 8))
    crmask = (rng.random((30, 1, 8, 8)) < 0.2).astype(float)
    logits += 2 * crmask
    ignore = (rng.random((30, 1, 8, 8)) < 0.1).astype(float)
    target = np.where(ignore > 0, M.IGNORE_VALUE, crmask)

    def inv_auroc_masked(output, y_, ign):                   # mask(img, ignore) = img * (1 − ignore); inv_auroc
        out, y_ = output * (1 - ign), y_ * (1 - ign)
        return 1 - sk.roc_auc_score(y_.squeeze().flatten(), (out.squeeze() > 0).flatten())
    ref = orca_evaluate(inv_auroc_masked, logits, crmask, batch_size=4, eval_batch_size=10, extra=ignore)
    paper = M.chunk_average(M.METRICS["one_minus_auroc_binarized"], logits, target, chunk=10, batch_size=4)
    assert abs(paper - ref) < 1e-12                          # chunks of 12, 12, 6 images
    assert abs(M.one_minus_auroc_binarized(logits, target) - inv_auroc_masked(logits, crmask, ignore)) < 1e-12


def test_fsd50k_orca_map_vs_clip_path():
    rng = np.random.default_rng(24)
    n_clip, K = 60, 5
    yc = (rng.random((n_clip, K)) < 0.3).astype(np.float32)
    yc[:K, :] = np.eye(K)                                    # every label has a positive
    n_chunks = rng.integers(1, 5, n_clip)
    groups = np.repeat(np.arange(n_clip), n_chunks)
    logits = (rng.normal(size=(len(groups), K)) + 2 * yc[groups]).astype(np.float32)
    logits[rng.random(logits.shape) < 0.2] += 25             # saturated σ: ties
    # evaluate's clip path: model(x).mean(0) per clip, float32 sigmoid, calculate_stats (AP per label)
    outs = np.asarray([torch.sigmoid(torch.from_numpy(logits[groups == g]).mean(0)).numpy() for g in range(n_clip)])
    ref = 1 - np.mean([sk.average_precision_score(yc[:, k].astype(np.int32), outs[:, k], average=None)
                       for k in range(K)])
    pc, yg = M.aggregate_groups(logits, yc[groups], groups, how="mean")
    paper = M.chunk_average(M.METRICS["one_minus_map_orca"], pc, yg, chunk=0, batch_size=32)
    assert abs(paper - ref) < 1e-12
    corrected = M.METRICS["one_minus_map"](pc, yg)
    assert abs(corrected - (1 - sk.average_precision_score(yg, pc, average="macro"))) < 1e-12
    assert abs(paper - corrected) > 1e-4


# ---- chunk_average -----------------------------------------------------------------------------

def _sizes_metric():
    sizes = []

    def metric(p, t):
        assert len(p) == len(t)
        sizes.append(len(p))
        return float(len(p))
    return metric, sizes


@pytest.mark.parametrize("n, batch, chunk, expected", [
    (3000, 300, 1000, [1200, 1200, 600]),    # boundaries on batches: 4 batches of 300 per chunk
    (2500, 100, 1000, [1000, 1000, 500]),    # the last partial chunk is scored
    (1050, 100, 1000, [1000, 50]),           # ... also when it is one partial batch
    (2048, 32, 1000, [1024, 1024]),          # no empty chunk after an exact fit
    (700, 32, 1000, [700]),                  # chunk larger than the set: one chunk
    (700, 32, 0, [700]),                     # chunk 0: the whole set
    (700, 32, -1, [700]),
])
def test_chunk_average_chunk_sizes(n, batch, chunk, expected):
    metric, sizes = _sizes_metric()
    p, t = np.zeros((n, 3)), np.zeros(n)
    assert M.chunk_average(metric, p, t, chunk=chunk, batch_size=batch) == np.mean(expected)
    assert sizes == expected
    ref_metric, ref_sizes = _sizes_metric()
    orca_evaluate(ref_metric, p, t, batch_size=batch, eval_batch_size=max(chunk, n) if chunk <= 0 else chunk)
    assert ref_sizes == expected


def test_chunk_average_passes_kwargs_keeps_order_and_checks_inputs():
    rng = np.random.default_rng(25)
    s, y = rng.normal(size=(90, 1, 4, 4)), (rng.random((90, 1, 4, 4)) < 0.3).astype(float)
    got = M.chunk_average(M.one_minus_auroc_binarized, torch.tensor(s), torch.tensor(y), chunk=30, batch_size=10,
                          threshold=0.5)
    ref = np.mean([M.one_minus_auroc_binarized(s[a:a + 30], y[a:a + 30], threshold=0.5) for a in (0, 30, 60)])
    assert abs(got - ref) < 1e-12
    assert abs(M.chunk_average(M.error, s[:, 0, 0], y[:, 0, 0, 0], chunk=0, batch_size=1)
               - M.error(s[:, 0, 0], y[:, 0, 0, 0])) < 1e-12
    with pytest.raises(M.LossError, match="same, non-zero"):
        M.chunk_average(M.error, s, y[:10], chunk=30, batch_size=10)
    with pytest.raises(M.LossError, match="batch_size"):
        M.chunk_average(M.error, s, y, chunk=30, batch_size=0)
