"""NAS-Bench-360 readers (all tasks but FSD50K, which has readers/fsd50k.py) for MoNA (Ma et al., ICML 2024,
arXiv 2406.18864).

Paper map
---------
App. A.1, Table 8 lists the ten NAS-Bench-360 tasks (Tu et al., 2022) and Table 9 their stage-2 settings; the
registry rows are in data.py. Each reader turns the benchmark's native files into (x float32 of
`spec.input_shape`, y) datasets, as NAS-Bench-360's loaders and ORCA's (github.com/sjunhongshen/ORCA,
`src/data_loaders.py`, commit 19b8c1c) do, with the fixes listed below.
Contract: reader(spec, data_dir, val_fraction, seed, protocol) -> (train, val, test, extras); val is None under
protocol "paper"; extras["test_orca"] = the test set with ORCA's test-time treatment where it differs.

| task      | x -> y                                                     | code                  | ORCA function     |
|-----------|------------------------------------------------------------|-----------------------|-------------------|
| cifar100  | (3, 32, 32) -> class 0..99                                 | `_read_cifar100`      | `load_cifar`      |
| spherical | (3, 60, 60) / 255 -> class 0..99                           | `_read_spherical`     | `load_spherical`  |
| ninapro   | (52, 16) transposed to (1, 16, 52) -> class 0..17          | `_read_ninapro`       | `load_ninapro`    |
| satellite | (1, 46) -> labels 1..24 minus 1                            | `_read_satellite`     | `load_satellite`  |
| deepsea   | one-hot (1000, 4) transposed to (4, 1000) -> 36 labels     | `_read_deepsea`       | `load_deepsea`    |
| darcyflow | [a normalised, x, y] (3, 85, 85) -> u (1, 85, 85)          | `_read_darcyflow`     | `load_darcy_flow` |
| psicov    | 57 pair features (57, 512, 512) -> Cβ distances (1, 512, 512) | `PsicovDataset`    | `load_psicov`     |
| cosmic    | image (1, 128, 128) -> CR mask, ignored pixels IGNORE_VALUE | `CosmicDataset`      | `load_cosmic`     |
| ecg       | 1000-sample windows (1, 1000) of z-scored records -> 0..3  | `WindowDataset`       | `load_ecg`        |

Protocol "paper" = what ORCA's loader returns with `valid_split: False` (every shipped config), built natively
so training augmentation reaches every training sample:
| task      | paper: train / test (ORCA)                          | strict: train / val / test (NB360)          |
|-----------|-----------------------------------------------------|---------------------------------------------|
| cifar100  | all 50,000 (crop + flip on all) / 10,000            | first 40,000 / last 10,000 / 10,000         |
| spherical | all 50,000 / 10,000                                 | first 40,000 / last 10,000 / 10,000         |
| ninapro   | train + val files (3,297) / test file               | train / val / test files                    |
| satellite | the whole train file / test file                    | train file but / its last len(test) rows / test |
| deepsea   | x_train + x_val / x_test                            | x_train / x_val / x_test                    |
| darcyflow | smooth1[:1000] (normalisers fitted on all) / smooth2[:100] | smooth1[:900] / [900:1000] / smooth2[:100] |
| psicov    | all of deepcov.lst / psicov.lst                     | deepcov.lst[100:] / [:100] / psicov.lst     |
| cosmic    | all train dirs (sky augmented) / test dirs          | 90 % / 10 % seeded carve / test dirs        |
| ecg       | records 90 / 10 (train_test_split 0.1, seed 0)      | 80 / 10 / 10 (0.2, then halved)             |
ORCA's test-time treatment (`extras["test_orca"]`, both protocols; None for the other tasks):
- cosmic: the test images plus sky·U(−0.9, 3) as `PairedDatasetImagePath` adds to the test set too; drawn per
  image from `COSMIC_SKY_SEED` (ORCA seeds NumPy with 1), so two loads give the same images.
- ecg: the test records cut with the label-dependent training stride (`slide_and_cut`), one item per window, no
  record groups (ORCA scores windows); records shorter than a window give none, as `slide_and_cut`.

Known bugs of the earlier loaders, and what we do
-------------------------------------------------
ORCA is the loader code the paper follows (App. A.1: its settings "basically follow the setups in ORCA").
Where it departs from the benchmark:
- No validation split (`src/task_configs.py: get_data`: `valid_split: False` -> val = test, so checkpoints were
  chosen on the test set). Under "strict" we use NB360's published validation splits (NB360
  `backbone/data_utils/load_data.py`, `backbone/model_grid_original.py` for Darcy and PSICOV,
  `backbone_1d/data_utils/load_data.py: read_data_physionet_4_with_val, load_satellite_data`), and for Cosmic a
  seeded `val_fraction` carve; "paper" trains on ORCA's merged set and has no validation split.
- Cosmic (`PairedDatasetImagePath`): the sky augmentation sky·U(−0.9, 3) is applied to the test set as well, so
  the test metric is random, and the constructor calls `np.random.seed(1)`, resetting NumPy's global RNG. `test`
  has no sky term; `test_orca` has it from a fixed seed; no global RNG is ever seeded.
- ECG (`load_ecg` -> `slide_and_cut`): test records are cut with the label-dependent training stride
  (500 / 83 / 250 / 25 for N / A / O / ~), so the test windows depend on the true labels. `test` cuts every
  record with stride 500 and is scored per record by majority vote (NB360); `test_orca` is ORCA's.
- Satellite (`load_satellite`, `valid_split` path): the training set is truncated first and validation is then
  taken from the tail of the truncated set, so it overlaps training. Ours is disjoint (NB360's cut).
- NinaPro: ORCA's loss `FocalLoss(alpha=1)` (`src/utils.py`, default gamma 0, hard-coded 18-class `torch.eye`) is
  cross-entropy plus 1e-9 inside the log; the registry uses plain cross-entropy.
- Files are read from data_dir only (ORCA hard-codes its cluster paths for some tasks).
Matched on purpose (they define the numbers the paper compares with):
- Darcy: ORCA's loss `LpLoss(size_average=False)` (`src/task_configs.py: get_config`) sums the per-sample relative
  L2 over the batch: registry `loss_kwargs={"reduction": "sum"}`.
- Darcy: ORCA normalises inputs and targets with point-wise `UnitGaussianNormalizer`s and decodes output and
  target with the target's (`y_normalizer`, `src/main.py`) before loss and metric. We keep targets in physical
  units and return the decoder (`extras["output_decoder"]`), so decode(output) is compared with y.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np
import torch

from readers.fileio import DataError, _bad, _cifar_rows, _has, _key, _load_npy, _load_pickle, _mat_fields, _npz_arrays, _path
from losses import IGNORE_VALUE   # Cosmic: ignored pixels in y; the one definition lives with the loss
from readers.splits import (NORM_EPS, ArrayDataset, ConcatRows, GaussianDecoder, IndexedDataset, _carve, _nb360_tail, _need,
                    _unit_gaussian)

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)    # ORCA's `load_cifar`
COSMIC_SKY_SEED = 1            # test_orca's sky draws (ORCA's PairedDatasetImagePath calls np.random.seed(1))


# --------------------------------------------------------------------------------------------------
# Images and vectors held in arrays: CIFAR-100, Spherical, NinaPro, Satellite, DeepSEA, Darcy
# --------------------------------------------------------------------------------------------------
def _cifar_pixels(a, mean, std, augment: bool):
    """uint8 (3, 32, 32) -> [optional RandomCrop(32, padding 4) + HFlip] -> /255 -> Normalize(mean, std)."""
    x = a.astype(np.float32) / 255.0
    if augment:                                # torch RNG: seeded per DataLoader worker
        i, j = torch.randint(0, 9, (2,)).tolist()
        x = np.pad(x, ((0, 0), (4, 4), (4, 4)))[:, i:i + 32, j:j + 32]
        if torch.rand(()) < 0.5:
            x = x[:, :, ::-1]
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return (x - m) / s                         # torchvision Normalize


def _train_val_rows(task, path, n, protocol):
    """Rows of a training file: paper -> all n (ORCA: train + val merged); strict -> NB360's 80 % / 20 % cut."""
    if protocol == "paper":
        t_idx, v_idx = np.arange(n), None
    else:
        t_idx, v_idx = _nb360_tail(n) if n > 1 else (np.arange(n), np.arange(0))
    _need(task, path, protocol, {"train": len(t_idx), "val": None if v_idx is None else len(v_idx)},
          "the strict protocol needs at least 2 training rows (NB360's 80 % / 20 % cut)")
    return t_idx, v_idx


def _read_cifar100(spec, data_dir, val_fraction, seed, protocol):
    tr, te = (_path(spec.name, data_dir, f, spec.origin, True) for f in spec.files)
    x, y = _cifar_rows(spec.name, tr, "fine_labels")
    xt, yt = _cifar_rows(spec.name, te, "fine_labels")
    _need(spec.name, te, protocol, {"test": len(xt)})
    t_idx, v_idx = _train_val_rows(spec.name, tr, len(x), protocol)     # NB360: 40,000 / 10,000; ORCA: 50,000
    fn = partial(_cifar_pixels, mean=CIFAR100_MEAN, std=CIFAR100_STD, augment=False)
    # training augmentation on every training row, the former validation rows included under "paper"
    train = ArrayDataset(x, y, t_idx, x_fn=partial(_cifar_pixels, mean=CIFAR100_MEAN, std=CIFAR100_STD, augment=True))
    val = None if v_idx is None else ArrayDataset(x, y, v_idx, x_fn=fn)         # validation: no augmentation
    return train, val, ArrayDataset(xt, yt, x_fn=fn), {"val_from": "published" if val is not None else None}


def _div255(a):
    return np.asarray(a, np.float32) / 255.0


def _read_spherical(spec, data_dir, val_fraction, seed, protocol):
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    d = _load_pickle(spec.name, path, encoding="latin1")
    split = {}
    for s in ("train", "test"):
        if not (_has(d, s) and _has(_key(d, s), "images") and _has(_key(d, s), "labels")):
            raise _bad(spec.name, path, "{'train','test'} each with 'images' and 'labels'",
                       f"keys {sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__}")
        im, lb = np.asarray(_key(_key(d, s), "images")), np.asarray(_key(_key(d, s), "labels")).astype(np.int64)
        if im.shape[1:] != (3, 60, 60) or len(im) != len(lb):
            raise _bad(spec.name, path, f"{s} images (N, 3, 60, 60), labels (N,)", f"{im.shape}, {lb.shape}")
        split[s] = (im, lb)
    (x, y), (xt, yt) = split["train"], split["test"]
    _need(spec.name, path, protocol, {"test": len(xt)})
    t_idx, v_idx = _train_val_rows(spec.name, path, len(x), protocol)   # NB360: 40,000 / 10,000; ORCA: 50,000
    val = None if v_idx is None else ArrayDataset(x, y, v_idx, x_fn=_div255)
    return (ArrayDataset(x, y, t_idx, x_fn=_div255), val, ArrayDataset(xt, yt, x_fn=_div255),
            {"val_from": "published" if val is not None else None})


def _sizes(task, paths, protocol, n_train, n_val, n_test):
    """Empty-split check for a published train / val / test file triple (paper merges train + val)."""
    paper = protocol == "paper"
    for s, p, n in (("train", paths[0], n_train + n_val * paper), ("val", paths[1], None if paper else n_val),
                    ("test", paths[2], n_test)):
        _need(task, f"{paths[0]} + {paths[1]}" if paper and s == "train" else p, protocol, {s: n})


def _emg(a):
    return np.asarray(a, np.float32).T[None]        # (52, 16) -> (1, 16, 52)


def _read_ninapro(spec, data_dir, val_fraction, seed, protocol):
    out, paths = [], []
    for s in ("train", "val", "test"):
        px = _path(spec.name, data_dir, f"ninaPro/ninapro_{s}.npy", spec.origin)
        py = _path(spec.name, data_dir, f"ninaPro/label_{s}.npy", spec.origin)
        x = _load_npy(spec.name, px, allow_pickle=True)
        y = np.asarray(_load_npy(spec.name, py, allow_pickle=True)).astype(np.int8).astype(np.int64)
        if x.ndim != 3 or x.shape[1:] != (52, 16) or len(x) != len(y):
            raise _bad(spec.name, px, "(N, 52, 16) with labels (N,)", f"{x.shape} with labels {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise _bad(spec.name, py, f"labels in 0..{spec.num_classes - 1}", f"range {y.min()}..{y.max()}")
        out.append((x, y))
        paths.append(px)
    (x, y), (xv, yv), (xt, yt) = out
    _sizes(spec.name, paths, protocol, len(x), len(xv), len(xt))
    test = ArrayDataset(xt, yt, x_fn=_emg)
    if protocol == "paper":                  # ORCA load_ninapro: np.concatenate((train, val)) = 3,297 samples
        return ArrayDataset(ConcatRows(x, xv), np.concatenate([y, yv]), x_fn=_emg), None, test, {"val_from": None}
    return ArrayDataset(x, y, x_fn=_emg), ArrayDataset(xv, yv, x_fn=_emg), test, {"val_from": "published"}


def _read_satellite(spec, data_dir, val_fraction, seed, protocol):
    parts, paths = [], []
    for f in spec.files:
        path = _path(spec.name, data_dir, f, spec.origin)
        d = _load_npy(spec.name, path, allow_pickle=True, mmap=False)
        d = d[()] if isinstance(d, np.ndarray) and d.dtype == object and d.shape == () else d
        if not (_has(d, "data") and _has(d, "label")):
            raise _bad(spec.name, path, "a pickled dict with 'data' (N, 46) and 'label' (N,)", f"{type(d).__name__}")
        x, y = np.asarray(_key(d, "data"), np.float32), np.asarray(_key(d, "label")).astype(np.int64) - 1
        if x.ndim != 2 or x.shape[1] != 46 or len(x) != len(y):
            raise _bad(spec.name, path, "data (N, 46) and label (N,)", f"{x.shape} and {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= 24):
            raise _bad(spec.name, path, "labels 1..24", f"range {y.min() + 1}..{y.max() + 1}")
        parts.append((x[:, None, :], y))
        paths.append(path)
    (x, y), (xt, yt) = parts
    _need(spec.name, paths[1], protocol, {"test": len(xt)})
    if protocol == "paper":                    # ORCA load_satellite: the whole train file
        t_idx, v_idx, how = np.arange(len(x)), None, None
    elif len(xt) < len(x):                     # NB360: validation = last len(test) rows of the train file
        t_idx, v_idx, how = np.arange(len(x) - len(xt)), np.arange(len(x) - len(xt), len(x)), "published"
    else:
        (t_idx, v_idx), how = _carve(len(x), val_fraction), "carved"
    _need(spec.name, paths[0], protocol, {"train": len(t_idx), "val": None if v_idx is None else len(v_idx)})
    val = None if v_idx is None else ArrayDataset(x, y, v_idx)
    return ArrayDataset(x, y, t_idx), val, ArrayDataset(xt, yt), {"val_from": how}


def _dna(a):
    return np.asarray(a, np.float32).T             # (1000, 4) one-hot -> (4, 1000)


def _read_deepsea(spec, data_dir, val_fraction, seed, protocol):
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    d = _npz_arrays(spec.name, path, keys)
    out = []
    for s in ("train", "val", "test"):
        x, y = d[f"x_{s}"], d[f"y_{s}"]
        if x.ndim != 3 or x.shape[1:] != (1000, 4) or y.shape != (len(x), 36):
            raise _bad(spec.name, path, f"x_{s} (N, 1000, 4) and y_{s} (N, 36)", f"{x.shape} and {y.shape}")
        out.append((x, y))
    (x, y), (xv, yv), (xt, yt) = out
    _sizes(spec.name, [f"{path} (x_{s})" for s in ("train", "val", "test")], protocol, len(x), len(xv), len(xt))
    test = ArrayDataset(xt, yt, x_fn=_dna, y_kind="float")
    if protocol == "paper":                  # ORCA load_deepsea: x_train + x_val, read lazily (no copy)
        return (ArrayDataset(ConcatRows(x, xv), ConcatRows(y, yv), x_fn=_dna, y_kind="float"), None, test,
                {"val_from": None})
    return (ArrayDataset(x, y, x_fn=_dna, y_kind="float"), ArrayDataset(xv, yv, x_fn=_dna, y_kind="float"), test,
            {"val_from": "published"})


def _read_darcyflow(spec, data_dir, val_fraction, seed, protocol, r=5, s=85):
    p1, p2 = (_path(spec.name, data_dir, f, spec.origin) for f in spec.files)
    tr = _mat_fields(spec.name, p1, ("coeff", "sol"), 1000, r, s)    # ORCA: first 1000 of smooth1
    te = _mat_fields(spec.name, p2, ("coeff", "sol"), 100, r, s)     # first 100 of smooth2
    for p, d in ((p1, tr), (p2, te)):
        if d["coeff"].shape[1:] != (s, s) or d["sol"].shape != d["coeff"].shape:
            raise _bad(spec.name, p, "coeff, sol (N, 421, 421)", f"{d['coeff'].shape} / {d['sol'].shape} after ::5")
    n = len(tr["coeff"])
    _need(spec.name, p2, protocol, {"test": len(te["coeff"])})
    if protocol == "strict" and n < 10:    # else n // 10 = 0: an empty validation split
        raise DataError(f"task '{spec.name}': {p1} holds {n} samples; the strict protocol needs at least 10 "
                        f"(900/100 as NAS-Bench-360, scaled); the paper protocol trains on all of them")
    _need(spec.name, p1, protocol, {"train": n})
    # NB360 (strict): smooth1[900:1000] of 1000 validate; ORCA (paper): all 1,000 train, normalisers fitted on them
    n_val = n // 10 if protocol == "strict" else 0
    a_mu, a_sd = _unit_gaussian(tr["coeff"][: n - n_val])
    u_mu, u_sd = _unit_gaussian(tr["sol"][: n - n_val])
    g = np.linspace(0, 1, s, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)                         # gx varies along W, gy along H ('xy' indexing)

    def inputs(a):
        # UnitGaussianNormalizer.encode: (a − μ)/(σ + eps), then channels [a, x, y]
        a = (a - a_mu) / (a_sd + NORM_EPS)
        return np.concatenate([a[:, None], np.broadcast_to(gx, a.shape)[:, None],
                               np.broadcast_to(gy, a.shape)[:, None]], 1).astype(np.float32)

    x, y, xt, yt = inputs(tr["coeff"]), tr["sol"][:, None], inputs(te["coeff"]), te["sol"][:, None]
    train = ArrayDataset(x, y, np.arange(n - n_val), y_kind="float")
    val = ArrayDataset(x, y, np.arange(n - n_val, n), y_kind="float") if protocol == "strict" else None
    # y stays in physical units; ORCA decodes its normalised output with the target normaliser (y_normalizer)
    return train, val, ArrayDataset(xt, yt, y_kind="float"), {
        "output_decoder": GaussianDecoder(u_mu[None], u_sd[None]), "val_from": None if val is None else "published"}


# ---- PSICOV ----------------------------------------------------------------------------------------
def _psicov_input(task, path) -> np.ndarray:
    """57 channels (L, L): ss, pssm, sa, entropy each tiled along rows then columns, + ccmpred, freecon, potential."""
    f = _load_pickle(task, path, encoding="latin1")
    need = ("seq", "ss", "pssm", "sa", "entropy", "ccmpred", "freecon", "potential")
    if not isinstance(f, dict) or any(not _has(f, k) for k in need):
        found = sorted(map(str, f)) if isinstance(f, dict) else type(f).__name__
        raise _bad(task, path, f"a dict with keys {list(need)}", f"keys {found}")
    L = len(_key(f, "seq"))
    ss, pssm = np.asarray(_key(f, "ss")), np.asarray(_key(f, "pssm"))
    sa, ent = np.asarray(_key(f, "sa")), np.asarray(_key(f, "entropy"))
    pairs = [np.asarray(_key(f, k)) for k in ("ccmpred", "freecon", "potential")]
    if ss.shape != (3, L) or pssm.shape != (L, 22) or sa.shape != (L,) or ent.shape != (L,) \
            or any(p.shape != (L, L) for p in pairs):
        raise _bad(task, path, f"ss (3, L), pssm (L, 22), sa/entropy (L,), pair maps (L, L) with L={L}",
                   f"ss {ss.shape}, pssm {pssm.shape}, sa {sa.shape}, entropy {ent.shape}, "
                   f"maps {[p.shape for p in pairs]}")
    rows = [*ss, *pssm.T, sa, ent]                       # 3 + 22 + 1 + 1 = 27 per-residue features (L,)
    X = np.empty((57, L, L), np.float32)
    for c, v in enumerate(rows):
        X[2 * c] = v[None, :]                            # a[i, k] = v[k]
        X[2 * c + 1] = v[:, None]                        # a.T
    X[54:] = np.stack(pairs)
    return X


def _psicov_target(task, path, L) -> np.ndarray:
    """Cβ distances: < 1 Å -> 1, diagonal interpolated from its neighbours (NB360 / ORCA get_map)."""
    try:
        ly, _, cb = _load_npy(task, path, allow_pickle=True, mmap=False)
    except (ValueError, TypeError) as e:
        raise _bad(task, path, "a pickled tuple (length, sequence, distance map)", str(e)) from None
    Y = np.array(cb, dtype=np.float64)
    if int(ly) != L or Y.shape != (L, L):
        raise _bad(task, path, f"length {L} and map ({L}, {L}) as in the features", f"length {ly}, map {Y.shape}")
    with np.errstate(invalid="ignore"):
        Y[Y < 1.0] = 1.0
    Y[0, 0], Y[L - 1, L - 1] = Y[0, 1], Y[L - 1, L - 2]
    for q in range(1, L - 1):
        if np.isnan(Y[q, q]):
            continue
        lo, hi = Y[q, q - 1], Y[q, q + 1]
        Y[q, q] = 1.0 if np.isnan(lo) and np.isnan(hi) else hi if np.isnan(lo) else lo if np.isnan(hi) else (lo + hi) / 2
    return Y


class PsicovDataset(IndexedDataset):
    """One protein per item, built on access: pad 5 px each side in a 512 window (input pad 0, label pad 100 Å);
    train: random 512 crop when longer, labels clipped at 16 Å; val/test: unclipped, top-left window."""

    def __init__(self, task, root, ids, subdir, *, train: bool, window=512, pad=10):
        self.task, self.root, self.ids, self.subdir = task, root, list(ids), subdir
        self.train, self.window, self.pad = train, window, pad
        self.idx = np.arange(len(self.ids), dtype=np.int64)

    def _item(self, r):
        pdb, d = self.ids[r], os.path.join(self.root, self.subdir)
        fpath, dpath = os.path.join(d, "features", pdb + ".pkl"), os.path.join(d, "distance", pdb + "-cb.npy")
        for p in (fpath, dpath):
            if not os.path.exists(p):
                raise DataError(f"task '{self.task}': missing {p} (listed in {self.subdir}.lst); from protein.zip")
        X = _psicov_input(self.task, fpath)
        L, h, W = X.shape[1], self.pad // 2, self.window
        Y = _psicov_target(self.task, dpath, L)
        Xp = np.zeros((57, L + self.pad, L + self.pad), np.float32)
        Xp[:, h:h + L, h:h + L] = X
        Yp = np.full((L + self.pad, L + self.pad), 100.0)
        Yp[h:h + L, h:h + L] = Y
        l = L + self.pad
        if l <= W:
            XX, YY = np.zeros((57, W, W), np.float32), np.full((W, W), 100.0)
            XX[:, :l, :l], YY[:l, :l] = Xp, Yp
        else:
            rx, ry = (torch.randint(0, l - W + 1, (2,)).tolist() if self.train else (0, 0))
            XX, YY = Xp[:, rx:rx + W, ry:ry + W], Yp[rx:rx + W, ry:ry + W]
        if self.train:
            YY = np.where(YY > 16.0, 16.0, YY)          # label_engineering '16.0' (padding 100 -> 16 too)
        XX, YY = np.nan_to_num(XX, nan=0.0), np.nan_to_num(YY, nan=0.0)
        return torch.from_numpy(np.ascontiguousarray(XX)), torch.from_numpy(YY[None].astype(np.float32))


def _read_list(task, path):
    with open(path) as f:
        ids = [ln.split()[0] for ln in f if ln.strip()]
    if not ids:
        raise _bad(task, path, "one protein id per line", "an empty list")
    return ids


def _read_psicov(spec, data_dir, val_fraction, seed, protocol):
    root = os.path.join(data_dir, "protein")
    dc = _read_list(spec.name, _path(spec.name, data_dir, spec.files[0], spec.origin))
    ps = _read_list(spec.name, _path(spec.name, data_dir, spec.files[1], spec.origin))
    if protocol == "paper":                  # ORCA load_psicov: all of deepcov.lst, random crop + 16 Å clip on all
        return (PsicovDataset(spec.name, root, dc, "deepcov", train=True), None,
                PsicovDataset(spec.name, root, ps, "psicov", train=False), {"val_from": None})
    n_val = max(1, min(100, len(dc) // 10)) if len(dc) > 1 else 0        # NB360: deepcov_list[:100]
    if n_val == 0:
        raise _bad(spec.name, os.path.join(root, "deepcov.lst"), "at least 2 training proteins", f"{len(dc)}")
    return (PsicovDataset(spec.name, root, dc[n_val:], "deepcov", train=True),
            PsicovDataset(spec.name, root, dc[:n_val], "deepcov", train=False),
            PsicovDataset(spec.name, root, ps, "psicov", train=False), {"val_from": "published"})


# ---- Cosmic ----------------------------------------------------------------------------------------
class CosmicDataset(IndexedDataset):
    """deepCR (3, H, W) stacks [image, CR mask, ignore] cropped to [64:192, 64:192]. The ignore mask travels
    inside the target: y = where(ignore, IGNORE_VALUE = −1, CR mask), so losses.bce(ignore_value=−1) applies
    ORCA's mask(img) = img·(1 − ignore) to output and target. + sky·U(−0.9, 3) when the folder has sky.npy:
    train=True draws U from torch's RNG on every access (augmentation); sky_seed set draws it once per file
    from (sky_seed, row), ORCA's test-time term made reproducible; else no sky term. `ignore(i)` returns item
    i's ignore mask."""

    def __init__(self, task, data_dir, paths, *, train: bool, sky_seed: int | None = None):
        self.task, self.data_dir, self.paths, self.train = task, data_dir, list(paths), train
        self.sky_seed = sky_seed
        self.idx = np.arange(len(self.paths), dtype=np.int64)

    def _resolve(self, p):
        rel = str(p)[2:] if str(p).startswith("./") else str(p)
        for base in (self.data_dir, os.path.join(self.data_dir, "cosmic")):
            if os.path.exists(os.path.join(base, rel)):
                return os.path.join(base, rel)
        raise DataError(f"task '{self.task}': missing {os.path.join(self.data_dir, rel)} (listed in cosmic/*_dirs.npy)")

    def _stack(self, r):
        path = self._resolve(self.paths[r])
        a = _load_npy(self.task, path, mmap=False)
        if a.ndim != 3 or a.shape[0] not in (2, 3) or a.shape[1] < 192 or a.shape[2] < 192:
            raise _bad(self.task, path, "[image, mask, ignore] of shape (3, H>=192, W>=192)", f"shape {a.shape}")
        a = np.asarray(a[:, 64:192, 64:192], np.float32)
        ignore = a[2] if a.shape[0] == 3 else np.zeros_like(a[0])
        return path, a[0], a[1], ignore

    def ignore(self, i):
        return torch.from_numpy(self._stack(int(self.idx[i]))[3][None].copy())

    def _item(self, r):
        path, image, mask, ignore = self._stack(r)
        sky_path = os.path.join(os.path.dirname(path), "sky.npy")
        if (self.train or self.sky_seed is not None) and os.path.exists(sky_path):
            sky = np.asarray(_load_npy(self.task, sky_path, mmap=False)).reshape(-1)
            # deepCR names each stack "<k>_<...>.npy": its sky level is entry k (1-based) of the folder's sky.npy
            head = os.path.basename(path).split("_")[0]
            if not head.isdigit() or not 1 <= int(head) <= len(sky):
                raise _bad(self.task, path, f"a file name '<k>_....npy' with 1 <= k <= {len(sky)} (the entries "
                           f"of {sky_path})", f"name {os.path.basename(path)!r}")
            k = int(head) - 1
            # ORCA get_skyaug: sky_k · U(−0.9, 3)
            u = (float(torch.empty(()).uniform_(-0.9, 3.0)) if self.train
                 else float(np.random.default_rng([self.sky_seed, r]).uniform(-0.9, 3.0)))
            image = image + float(sky[k]) * u
        y = np.where(ignore > 0.5, IGNORE_VALUE, mask).astype(np.float32)
        return torch.from_numpy(image[None].copy()), torch.from_numpy(y[None])


def _read_cosmic(spec, data_dir, val_fraction, seed, protocol):
    lists, paths = [], []
    for f, split in zip(spec.files, ("train", "test")):
        p = _path(spec.name, data_dir, f, spec.origin)
        a = np.asarray(_load_npy(spec.name, p, allow_pickle=True, mmap=False)).reshape(-1)
        if not all(isinstance(v, (str, bytes, np.str_)) for v in a):
            raise _bad(spec.name, p, "a 1-D array of relative .npy paths", f"{a.dtype} array of {len(a)}")
        _need(spec.name, p, protocol, {split: len(a)})
        lists.append([v.decode() if isinstance(v, bytes) else str(v) for v in a])
        paths.append(p)
    mk = partial(CosmicDataset, spec.name, data_dir)
    # ORCA's test-time sky term on the test images, drawn from a fixed seed (both protocols)
    extras = {"test_orca": mk(lists[1], train=False, sky_seed=COSMIC_SKY_SEED)}
    if protocol == "paper":                  # ORCA load_cosmic: all train dirs, sky-augmented
        return mk(lists[0], train=True), None, mk(lists[1], train=False), {**extras, "val_from": None}
    t_idx, v_idx = _carve(len(lists[0]), val_fraction)                 # NB360's 483 of 4,830 = 10 %
    _need(spec.name, paths[0], protocol, {"train": len(t_idx), "val": len(v_idx)},
          "the strict protocol needs at least 2 training images (a 10 % validation carve)")
    return (mk([lists[0][i] for i in t_idx], train=True), mk([lists[0][i] for i in v_idx], train=False),
            mk(lists[1], train=False), {**extras, "val_from": "carved"})


# ---- ECG -------------------------------------------------------------------------------------------
ECG_LABELS = {"N": 0, "A": 1, "O": 2, "~": 3}
ECG_STRIDE = {0: 500, 1: 83, 2: 250, 3: 25}            # ORCA/NB360 training strides (class-dependent)


class WindowDataset(IndexedDataset):
    """Windows (record, start) of z-scored 1D records; `groups` = record ids (majority vote per record), or
    None with grouped=False (ORCA scores windows)."""

    def __init__(self, records, labels, windows, window=1000, grouped=True):
        self.records, self.rec_labels, self.windows, self.window = records, labels, windows, window
        self.idx = np.arange(len(windows), dtype=np.int64)
        self._groups = windows[:, 0].copy() if grouped else None
        self._labels = labels[windows[:, 0]]

    def _item(self, r):
        rec, start = self.windows[r]
        x = np.zeros(self.window, np.float32)
        seg = self.records[rec][start:start + self.window]
        x[:len(seg)] = seg
        return torch.from_numpy(x[None]), torch.tensor(int(self.rec_labels[rec]), dtype=torch.int64)


def _windows(records, labels, rec_ids, *, by_label: bool, window=1000):
    """slide_and_cut: starts range(0, len − window, stride); by_label: the stride of the record's class, as ORCA
    cuts training AND test records (test_orca); else stride 500 for all with one zero-padded window for a record
    too short for one (strict evaluation: DEVIATION from ORCA's load_ecg, whose test stride depends on the label)."""
    out = []
    for r in rec_ids:
        stride = ECG_STRIDE[int(labels[r])] if by_label else 500
        starts = list(range(0, len(records[r]) - window, stride))
        if not starts and not by_label:
            starts = [0]
        out += [(r, s) for s in starts]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _read_ecg(spec, data_dir, val_fraction, seed, protocol):
    from sklearn.model_selection import train_test_split
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    d = _load_pickle(spec.name, path, encoding="latin1")
    if not (_has(d, "data") and _has(d, "label")) or len(_key(d, "data")) != len(_key(d, "label")):
        raise _bad(spec.name, path, "a dict {'data': [1D arrays], 'label': ['N'|'A'|'O'|'~']} of equal length",
                   f"{type(d).__name__} {sorted(map(str, d)) if isinstance(d, dict) else ''}")
    raw = [_key(d, "label")[i] for i in range(len(_key(d, "label")))]
    raw = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    if any(v not in ECG_LABELS for v in raw):
        raise _bad(spec.name, path, "labels in N, A, O, ~", f"{sorted(set(raw) - set(ECG_LABELS))}")
    labels = np.asarray([ECG_LABELS[v] for v in raw], np.int64)
    records = []
    for a in _key(d, "data"):
        a = np.asarray(a, np.float64).reshape(-1)
        records.append(((a - a.mean()) / (a.std() if a.std() > 0 else 1.0)).astype(np.float32))  # z-score
    ids = np.arange(len(records))
    try:
        if protocol == "paper":     # ORCA load_ecg: 90 % / 10 % of the records (random_state 0), no validation
            (tr, te), va = train_test_split(ids, test_size=0.1, random_state=0), None
        else:                       # NB360: 80 % train, then the remaining 20 % halved into val / test
            tr, rest = train_test_split(ids, test_size=0.2, random_state=0)
            va, te = train_test_split(rest, test_size=0.5, random_state=0)
    except ValueError:              # too few records for the split
        raise DataError(f"task '{spec.name}': {path} holds {len(ids)} records; the {protocol} protocol needs at "
                        f"least {2 if protocol == 'paper' else 6} (record split "
                        f"{'90/10' if protocol == 'paper' else '80/10/10'})") from None
    mk = lambda r, by_label, grouped=True: WindowDataset(
        records, labels, _windows(records, labels, np.sort(r), by_label=by_label), grouped=grouped)
    train, test = mk(tr, True), mk(te, False)
    val = None if va is None else mk(va, False)
    test_orca = mk(te, True, grouped=False)      # ORCA: label-dependent test stride, windows scored one by one
    _need(spec.name, path, protocol, {"train": len(train), "val": None if val is None else len(val),
                                      "test": len(test), "test_orca": len(test_orca)},
          "every split needs a record longer than one 1000-sample window")
    return train, val, test, {"test_orca": test_orca, "val_from": "published" if val is not None else None}
