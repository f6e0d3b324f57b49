"""Tests for data.py: every task read from tiny files written here in its native format (keys, dtypes,
layouts, transposes as datasets.md describes), synthetic data, custom data, bad input, lazy HDF5 reads,
downloads from a local 127.0.0.1 server, and the class-balanced sampler. Oracles: numpy slicing of the arrays
we wrote, torch.std for the normalisers, scikit-learn's train_test_split for the ECG records, the tokenizer
itself for CoNLL ids, the paper's Tables 9/11 and baselines.md §2.3 for the registry."""
import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import sys
import tarfile
import threading

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.io.wavfile
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
from data import DataError, load_task  # noqa: E402

try:                                   # the keys losses.py really has (else the contract's list in .api.md)
    import losses
    LOSS_KEYS, METRIC_KEYS = set(losses.TASK_LOSSES), set(losses.METRICS)
except ImportError:
    LOSS_KEYS = {"cross_entropy", "bce", "focal", "rel_l2", "mse", "rmse", "nrmse"}
    METRIC_KEYS = {"error", "one_minus_auroc", "one_minus_auroc_binarized", "one_minus_map", "one_minus_f1",
                   "rel_l2", "mae8", "nrmse", "mse"}


# --------------------------------------------------------------------------------------------------
# Registry against the paper / reference tables
# --------------------------------------------------------------------------------------------------
# Paper Table 9 (NB360) and Table 11 (PDEBench): batch, epochs, accum, optimizer, lr, weight decay
PAPER_HP = {
    "cifar100": (32, 60, 32, "sgd", 1e-4, 1e-3), "spherical": (32, 60, 4, "adamw", 1e-4, 1e-1),
    "ninapro": (32, 60, 1, "adam", 1e-4, 1e-5), "fsd50k": (32, 100, 1, "adam", 1e-4, 5e-5),
    "darcyflow": (4, 100, 1, "adamw", 1e-3, 5e-3), "psicov": (1, 10, 32, "adam", 5e-6, 1e-5),
    "cosmic": (4, 60, 1, "adamw", 1e-3, 0.0), "ecg": (4, 15, 16, "sgd", 1e-6, 1e-1),
    "satellite": (16, 60, 4, "adamw", 3e-5, 3e-6), "deepsea": (16, 13, 1, "adam", 1e-5, 0.0),
    "advection": (4, 200, 1, "adam", 1e-4, 1e-5), "burgers": (4, 200, 1, "adam", 1e-5, 1e-5),
    "diffusion-reaction-1d": (4, 200, 1, "sgd", 1e-3, 1e-5), "diffusion-sorption": (4, 200, 1, "adamw", 1e-4, 0.0),
    "navier-stokes-1d": (4, 200, 1, "adamw", 1e-4, 1e-3), "darcy-pde": (4, 100, 1, "adamw", 1e-4, 1e-5),
    "shallow-water": (4, 200, 1, "adamw", 1e-4, 0.0), "diffusion-reaction-2d": (4, 200, 1, "adam", 1e-4, 1e-3),
}
ORCA_TOKENS = {"ecg": 50, "satellite": 46, "deepsea": 500, "advection": 256, "burgers": 512,   # baselines.md §2.3
               "diffusion-reaction-1d": 256, "diffusion-sorption": 32, "navier-stokes-1d": 128}


def test_registry_matches_paper_tables():
    assert set(data.TASKS) == set(PAPER_HP)
    for name, hp in PAPER_HP.items():
        s = data.TASKS[name]
        assert (s.batch_size, s.epochs, s.accum, s.optimizer, s.lr, s.weight_decay) == hp, name
        assert s.loss in LOSS_KEYS and s.metric in METRIC_KEYS, name
        assert (s.stage1_optimizer, s.stage1_lr, s.stage1_weight_decay, s.stage1_epochs) == ("adamw", 3e-5, 0.1, 10)
        assert s.source == ("cifar10" if s.dim == "2d" else "conll2003")
        assert len(s.input_shape) == (2 if s.dim == "1d" else 3)
        assert s.output_shape == ((s.num_classes,) if s.output == "point" else (s.num_classes, *s.input_shape[1:]))
        assert s.files and s.origin and s.description and s.reader in data.READERS
    assert data.TASKS["fsd50k"].loss_kwargs == {"pos_weight": 10.0} and data.TASKS["fsd50k"].multilabel
    assert data.TASKS["deepsea"].loss_kwargs == {"pos_weight": 4.0} and data.TASKS["deepsea"].multilabel
    assert data.TASKS["ecg"].momentum == 0.99 and data.TASKS["cifar100"].momentum == 0.9
    assert data.TASKS["shallow-water"].warmup_epochs == 10 and data.TASKS["deepsea"].decay_epochs == 25


def test_target_seq_len_gives_orca_token_counts():
    for name, tokens in ORCA_TOKENS.items():
        assert data.num_tokens(data.TASKS[name]) == tokens, name
    try:                                   # the embedder's own rule, where that module is present
        from embedders import compute_stack_num
    except ImportError:
        return
    for name, tokens in ORCA_TOKENS.items():
        s = data.TASKS[name]
        assert s.input_shape[-1] // compute_stack_num(s.input_shape[-1], s.target_seq_len) == tokens


def test_get_task_names_aliases_and_unknown():
    assert data.get_task("PDEBG").name == "burgers" and data.get_task("darcy_pde").name == "darcy-pde"
    with pytest.raises(DataError, match="unknown task 'imagenet'.*cifar100.*custom"):
        data.get_task("imagenet")
    with pytest.raises(DataError, match="unknown task"):
        load_task("imagenet", synthetic=True)
    with pytest.raises(DataError, match="custom"):
        data.get_task("custom")


# --------------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------------
def _check_item(spec, x, y):
    assert x.dtype == torch.float32 and tuple(x.shape) == tuple(spec.input_shape)
    if spec.output == "point" and spec.loss == "cross_entropy":
        assert y.dtype == torch.int64 and y.ndim == 0 and 0 <= int(y) < spec.num_classes
    elif spec.multilabel:
        assert y.dtype == torch.float32 and tuple(y.shape) == (spec.num_classes,)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    else:
        assert y.dtype == torch.float32 and tuple(y.shape) == tuple(spec.output_shape)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(data.TASKS))
def test_synthetic_every_task(name):
    td = load_task(name, synthetic=True, seed=3)
    assert (len(td.train), len(td.val), len(td.test)) == (64, 16, 16)
    for ds in (td.train, td.val, td.test):
        _check_item(td.spec, *ds[0])
    x0, y0 = td.train[0]
    x1, y1 = load_task(name, synthetic=True, seed=3).train[0]       # seeded
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    if td.spec.loss == "bce" and td.spec.output == "dense":
        assert set(torch.unique(y0).tolist()) <= {0.0, 1.0}


def test_synthetic_signal_is_learnable():
    td = load_task("cifar100", synthetic=True, synthetic_sizes=(200, 1, 1))
    T = td.train.templates.reshape(100, -1)                            # nearest template classifies
    hits = [int((T @ td.train[i][0].numpy().ravel()).argmax()) == int(td.train[i][1]) for i in range(len(td.train))]
    assert np.mean(hits) > 0.9                                         # chance 0.01
    ds = load_task("advection", synthetic=True).train                  # dense: y is a function of x
    x, y = ds[0]
    assert torch.allclose(y, torch.tanh(x.mean(0, keepdim=True)) + 1.0)


def test_max_train_samples_subsamples_training_only():
    td = load_task("ecg", synthetic=True, max_train_samples=10, seed=1)
    assert (len(td.train), len(td.val), len(td.test)) == (10, 16, 16)
    assert set(td.train.idx) < set(range(64))


# --------------------------------------------------------------------------------------------------
# Native formats, task by task
# --------------------------------------------------------------------------------------------------
def _disjoint_cover(train, val, n):
    a, b = set(train.idx.tolist()), set(val.idx.tolist())
    assert not a & b and a | b == set(range(n))


def _write_cifar(path, n, label_key, rng, bytes_keys=False):
    d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, 100 if label_key ==
         "fine_labels" else 10, n).tolist(), "filenames": [f"{i}.png" for i in range(n)], "batch_label": "x"}
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_cifar100_native(tmp_path):
    rng = np.random.default_rng(0)
    te = _write_cifar(tmp_path / "cifar-100-python" / "test", 10, "fine_labels", rng)
    tr = _write_cifar(tmp_path / "cifar-100-python" / "train", 40, "fine_labels", rng)
    td = load_task("cifar100", tmp_path)
    # NB360 (datasets.md §2.0/§2.1: 40,000 / 10,000 / 10,000): the first 80 % of the training file train, the
    # last 20 % validate (load_cifar100_train_data, val_split 0.2)
    assert (len(td.train), len(td.val), len(td.test)) == (32, 8, 10) and td.info["val_from"] == "published"
    assert td.train.idx.tolist() == list(range(32)) and td.val.idx.tolist() == list(range(32, 40))
    x, y = td.test[3]
    mean, std = torch.tensor(data.CIFAR100_MEAN)[:, None, None], torch.tensor(data.CIFAR100_STD)[:, None, None]
    expect = (torch.from_numpy(te["data"][3].reshape(3, 32, 32)).float() / 255 - mean) / std
    assert torch.allclose(x, expect, atol=1e-6) and int(y) == te["fine_labels"][3]
    xv, yv = td.val[0]                                                   # validation: no augmentation
    expect = (torch.from_numpy(tr["data"][32].reshape(3, 32, 32)).float() / 255 - mean) / std
    assert torch.allclose(xv, expect, atol=1e-6) and int(yv) == tr["fine_labels"][32]
    for ds in (td.train, td.val):
        _check_item(td.spec, *ds[0])
    torch.manual_seed(0)                 # train: RandomCrop(32, padding 4) + HFlip, then Normalize (§2.1)
    xa = td.train[5][0].numpy()
    a = np.pad(tr["data"][5].reshape(3, 32, 32) / 255.0, ((0, 0), (4, 4), (4, 4)))
    cands = [(c[:, :, ::-1] if fl else c) for i in range(9) for k in range(9) for fl in (0, 1)
             for c in [a[:, i:i + 32, k:k + 32]]]
    assert min(np.abs((c - mean.numpy()) / std.numpy() - xa).max() for c in cands) < 1e-5


def test_spherical_native(tmp_path):
    rng = np.random.default_rng(1)
    d = {s: {"images": rng.integers(0, 256, (n, 3, 60, 60)).astype(np.uint8), "labels": rng.integers(0, 100, n)}
         for s, n in (("train", 20), ("test", 6))}
    with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
        pickle.dump(d, f)
    td = load_task("spherical", tmp_path)
    # NB360 load_scifar100_data (val_split 0.2): train = first int(0.8 n) rows, val = the rest (40,000 / 10,000)
    assert (len(td.train), len(td.val), len(td.test)) == (16, 4, 6) and td.info["val_from"] == "published"
    assert td.train.idx.tolist() == list(range(16)) and td.val.idx.tolist() == list(range(16, 20))
    xv, yv = td.val[1]
    assert torch.allclose(xv, torch.from_numpy(d["train"]["images"][17] / 255.0).float())
    assert int(yv) == d["train"]["labels"][17]
    x, y = td.test[2]
    assert torch.allclose(x, torch.from_numpy(d["test"]["images"][2] / 255.0).float()) and int(y) == d["test"]["labels"][2]


def _write_ninapro(root, rng, shape=(52, 16)):
    (root / "ninaPro").mkdir(exist_ok=True)
    out = {}
    for s, n in (("train", 12), ("val", 4), ("test", 5)):
        out[s] = (rng.standard_normal((n, *shape)), rng.integers(0, 18, n))
        np.save(root / "ninaPro" / f"ninapro_{s}.npy", out[s][0])
        np.save(root / "ninaPro" / f"label_{s}.npy", out[s][1])
    return out


def test_ninapro_native(tmp_path):
    raw = _write_ninapro(tmp_path, np.random.default_rng(2))
    td = load_task("ninapro", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (12, 4, 5) and td.info["val_from"] == "published"
    x, y = td.val[1]
    assert x.shape == (1, 16, 52) and torch.allclose(x[0], torch.from_numpy(raw["val"][0][1].T).float())
    assert int(y) == raw["val"][1][1]


def _write_wav(path, rng, n=22050, freq=None):
    t = np.arange(n) / 22050
    a = np.sin(2 * np.pi * freq * t) if freq else rng.standard_normal(n) * 0.1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.wavfile.write(path, 22050, (a * 20000).astype(np.int16))


def test_fsd50k_native(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "fsd50k"
    names = [f"label_{i}" for i in range(200)]
    (root / "chunks").mkdir(parents=True)
    json.dump({n: i for i, n in enumerate(names)}, open(root / "chunks" / "lbl_map.json", "w"))
    layout = {"tr": [("c1", 2, "label_0,label_5"), ("c2", 1, "label_7")],
              "val": [("v1", 2, "label_1")], "eval": [("e1", 3, "label_2,label_199"), ("e2", 1, "label_3")]}
    for split, clips in layout.items():
        rows = ["files,labels,ext"]
        for clip, k, labels in clips:
            for j in range(k):
                # an absolute path of another machine: re-rooted after its 'chunks' folder
                p = f"/run/determined/workdir/shared_fs/data/chunks/{split}/{clip}_{j}.wav"
                _write_wav(root / "chunks" / split / f"{clip}_{j}.wav", rng)
                rows.append(f'{p},"{labels}",{clip}')
        (root / "chunks" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    _write_wav(root / "noise_22050" / "n0.wav", rng, n=3 * 22050)
    td = load_task("fsd50k", tmp_path, seed=0)
    assert (len(td.train), len(td.val), len(td.test)) == (2, 2, 4)       # train: clips; eval: chunks
    assert td.test.groups.tolist() == [0, 0, 0, 1] and td.spec.group_reduce == "mean"
    for ds in (td.train, td.val, td.test):
        _check_item(td.spec, *ds[0])
    x, y = td.test[0]
    assert np.flatnonzero(y.numpy()).tolist() == [2, 199]
    assert torch.equal(td.train[0][0], td.train[0][0])                 # augmentation frozen per clip
    # eval features: log-mel of the wav, 101 frames + one constant (min) column
    _, a = scipy.io.wavfile.read(root / "chunks" / "eval" / "e1_0.wav")
    m = data.log_mel(a.astype(np.float32) / 32768)
    assert m.shape == (96, 101) and torch.allclose(x[0, :, :101], torch.from_numpy(m))
    assert torch.all(x[0, :, 101] == x.min())


def test_log_mel_pure_tone_peaks_at_its_frequency(tmp_path):
    fb = data.mel_filterbank()
    assert fb.shape == (961, 96) and (fb >= 0).all()
    centres = np.fft.rfftfreq(1920, 1 / 22050)[fb.argmax(0)]                  # centre of each filter
    for f0 in (440.0, 3000.0):
        t = np.arange(22050) / 22050
        m = data.log_mel(np.sin(2 * np.pi * f0 * t).astype(np.float32))
        assert abs(centres[m.mean(1).argmax()] - f0) < 0.1 * f0


def _write_darcy_mat(path, n, rng, v73=False):
    a = rng.standard_normal((n, 421, 421)).astype(np.float32)
    u = rng.standard_normal((n, 421, 421)).astype(np.float32) * 0.01 + 0.02
    if v73:       # MATLAB v7.3 = HDF5 after a 512-byte text header, axes stored reversed
        with h5py.File(path, "w", userblock_size=512) as f:
            f["coeff"], f["sol"] = a.transpose(2, 1, 0), u.transpose(2, 1, 0)
        with open(path, "r+b") as f:
            f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    else:
        scipy.io.savemat(path, {"coeff": a, "sol": u})
    return a, u


@pytest.mark.parametrize("v73", [False, True])
def test_darcyflow_native(tmp_path, v73):
    rng = np.random.default_rng(4)
    a, u = _write_darcy_mat(tmp_path / "piececonst_r421_N1024_smooth1.mat", 10, rng, v73)
    at, ut = _write_darcy_mat(tmp_path / "piececonst_r421_N1024_smooth2.mat", 3, rng, v73)
    td = load_task("darcyflow", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (9, 1, 3)          # NB360: smooth1 last 10 % = val
    sub = lambda z: torch.from_numpy(z[:, ::5, ::5][:, :85, :85])
    A, U = sub(a[:9]), sub(u[:9])
    mu, sd = A.mean(0), A.std(0)                                          # torch.std: unbiased, as FNO/ORCA
    x, y = td.test[1]
    assert torch.allclose(x[0], (sub(at)[1] - mu) / (sd + 1e-5), atol=1e-4)
    g = torch.linspace(0, 1, 85)
    assert torch.allclose(x[1], g[None, :].expand(85, 85)) and torch.allclose(x[2], g[:, None].expand(85, 85))
    assert torch.allclose(y[0], sub(ut)[1])                               # physical units
    z = (U[0] - U.mean(0)) / (U.std(0) + 1e-5)                            # ORCA's normalised target
    assert torch.allclose(td.output_decoder(z[None]), U[0][None], atol=1e-6)
    _check_item(td.spec, *td.val[0])


def _write_protein(root, sub, pdb, L, rng):
    feats = {"seq": "A" * L, "ss": rng.random((3, L)), "pssm": rng.random((L, 22)), "sa": rng.random(L),
             "entropy": rng.random(L), "ccmpred": rng.random((L, L)), "freecon": rng.random((L, L)),
             "potential": rng.random((L, L))}
    (root / sub / "features").mkdir(parents=True, exist_ok=True)
    (root / sub / "distance").mkdir(parents=True, exist_ok=True)
    pickle.dump(feats, open(root / sub / "features" / f"{pdb}.pkl", "wb"))
    d = rng.random((L, L)) * 30
    d = (d + d.T) / 2
    tup = np.empty(3, dtype=object)
    tup[0], tup[1], tup[2] = L, "A" * L, d.copy()
    np.save(root / sub / "distance" / f"{pdb}-cb.npy", tup, allow_pickle=True)
    return feats, d


def test_psicov_native(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "protein"
    ids = [f"d{i}" for i in range(11)]
    raw = {p: _write_protein(root, "deepcov", p, 12, rng) for p in ids}
    (root / "deepcov.lst").write_text("\n".join(ids) + "\n")
    f_t, d_t = _write_protein(root, "psicov", "p0", 15, rng)
    (root / "psicov.lst").write_text("p0\n")
    td = load_task("psicov", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (10, 1, 1)       # NB360: first ids are validation
    assert td.val.ids == ["d0"] and td.train.ids == ids[1:]
    x, y = td.train[0]
    feats, d = raw["d1"]
    L, h = 12, 5
    assert x.shape == (57, 512, 512) and y.shape == (1, 512, 512)
    xi = x[:, h:h + L, h:h + L].numpy()
    assert np.allclose(xi[0], np.tile(feats["ss"][0][None, :], (L, 1)))   # tiled along rows
    assert np.allclose(xi[1], np.tile(feats["ss"][0][:, None], (1, L)))   # and along columns
    assert np.allclose(xi[2 * 3], np.tile(feats["pssm"][:, 0][None, :], (L, 1)))
    assert np.allclose(xi[54], feats["ccmpred"]) and np.allclose(xi[56], feats["potential"])
    assert x[:, :h].abs().sum() == 0 and x[:, h + L:].abs().sum() == 0
    e = np.maximum(d, 1.0)
    e[0, 0], e[L - 1, L - 1] = e[0, 1], e[L - 1, L - 2]
    for q in range(1, L - 1):
        e[q, q] = (e[q, q - 1] + e[q, q + 1]) / 2
    assert np.allclose(y[0, h:h + L, h:h + L].numpy(), np.minimum(e, 16.0), atol=1e-5)    # train: clipped
    assert y[0, 0, 0] == 16.0 and y[0, -1, -1] == 16.0                    # padding 100 -> 16
    xt, yt = td.test[0]
    assert yt[0, 0, 0] == 100.0 and yt.max() == 100.0 and yt[0, h, h + 3] == pytest.approx(max(d_t[0, 3], 1.0), rel=1e-5)


def test_cosmic_native(tmp_path):
    rng = np.random.default_rng(6)
    root = tmp_path / "cosmic"
    paths = {"train": [], "test": []}
    stacks = {}
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            rel = f"{split}/f435w_GAL/{i + 1}_img.npy"
            (root / split / "f435w_GAL").mkdir(parents=True, exist_ok=True)
            s = np.stack([rng.standard_normal((256, 256)), rng.random((256, 256)) > 0.9, rng.random((256, 256)) > 0.8])
            np.save(root / rel, s.astype(np.float32))
            stacks[split, i] = s
            paths[split].append("./" + rel)
        np.save(root / f"{split}_dirs.npy", np.array(paths[split]))
        np.save(root / split / "f435w_GAL" / "sky.npy", np.arange(1, n + 1, dtype=np.float32) * 10)
    td = load_task("cosmic", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (9, 1, 3)
    x, y = td.test[2]
    s = stacks["test", 2][:, 64:192, 64:192]
    assert torch.allclose(x[0], torch.from_numpy(s[0]).float())          # test: no sky augmentation
    assert torch.equal(td.test[2][0], x)                                  # deterministic
    assert torch.equal(y[0], torch.from_numpy(np.where(s[2] > 0, -1.0, s[1])).float())   # ignored = -1
    assert torch.equal(td.test.ignore(2)[0], torch.from_numpy(s[2]).float())
    r = int(td.train.idx[0])
    xa, _ = td.train[0]
    offset = (xa[0] - torch.from_numpy(stacks["train", r][0, 64:192, 64:192]).float())
    sky = 10.0 * (r + 1)
    assert torch.allclose(offset, offset.flatten()[0].expand_as(offset), atol=1e-4)   # a constant sky shift
    assert -0.9 * sky - 1e-3 <= float(offset[0, 0]) <= 3.0 * sky + 1e-3


def test_ecg_native(tmp_path):
    from sklearn.model_selection import train_test_split
    rng = np.random.default_rng(7)
    n = 30
    recs = [rng.standard_normal(int(rng.integers(2500, 4000))) * 3 + 1 for _ in range(n)]
    labels = [["N", "A", "O", "~"][i % 4] for i in range(n)]
    pickle.dump({"data": recs, "label": labels}, open(tmp_path / "challenge2017.pkl", "wb"))
    td = load_task("ecg", tmp_path)
    tr, rest = train_test_split(np.arange(n), test_size=0.2, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, random_state=0)
    for ds, ids in ((td.train, tr), (td.val, va), (td.test, te)):
        assert set(np.unique(ds.groups)) == set(ids.tolist())
    strides = {0: 500, 1: 83, 2: 250, 3: 25}
    for r in tr[:3]:
        assert (td.train.groups == r).sum() == len(range(0, len(recs[r]) - 1000, strides[r % 4]))
    for r in te:                                                          # label-independent test stride
        assert (td.test.groups == r).sum() == len(range(0, len(recs[r]) - 1000, 500))
    x, y = td.test[0]
    r, start = td.test.windows[td.test.idx[0]]
    z = (recs[r] - recs[r].mean()) / recs[r].std()
    assert torch.allclose(x[0], torch.from_numpy(z[start:start + 1000]).float(), atol=1e-5)
    assert int(y) == "NAO~".index(labels[r]) and td.spec.group_reduce == "vote"


def test_satellite_native(tmp_path):
    rng = np.random.default_rng(8)
    tr = {"data": rng.standard_normal((30, 46)), "label": rng.integers(1, 25, 30)}
    te = {"data": rng.standard_normal((5, 46)), "label": rng.integers(1, 25, 5)}
    np.save(tmp_path / "satellite_train.npy", tr, allow_pickle=True)
    np.save(tmp_path / "satellite_test.npy", te, allow_pickle=True)
    td = load_task("satellite", tmp_path)
    assert td.train.idx.tolist() == list(range(25)) and td.val.idx.tolist() == list(range(25, 30))   # no overlap
    x, y = td.val[0]
    assert x.shape == (1, 46) and torch.allclose(x[0], torch.from_numpy(tr["data"][25]).float())
    assert int(y) == tr["label"][25] - 1 and int(td.test[4][1]) == te["label"][4] - 1


@pytest.mark.parametrize("compressed", [False, True])
def test_deepsea_native(tmp_path, compressed):
    rng = np.random.default_rng(9)
    arrs = {}
    for s, n in (("train", 8), ("val", 3), ("test", 4)):
        arrs[f"x_{s}"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 1000))]      # (n, 1000, 4) one-hot
        arrs[f"y_{s}"] = (rng.random((n, 36)) < 0.3).astype(np.uint8)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "deepsea_filtered.npz", **arrs)
    td = load_task("deepsea", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (8, 3, 4)
    if not compressed:
        assert isinstance(td.test.x, np.memmap)                          # stays on disk
    x, y = td.test[2]
    assert torch.equal(x, torch.from_numpy(arrs["x_test"][2].T.astype(np.float32)))
    assert torch.equal(y, torch.from_numpy(arrs["y_test"][2].astype(np.float32)))
    _check_item(td.spec, x, y)


# ---- PDEBench --------------------------------------------------------------------------------------
def _write_pde(tmp_path, name, rng, n=20, T=11):
    s = data.TASKS[name]
    kw = s.reader_kwargs
    path = tmp_path / kw["file"]
    raw = {}
    with h5py.File(path, "w") as f:
        if kw["layout"] == "tensor":
            raw["tensor"] = f["tensor"] = rng.standard_normal((n, T, s.input_shape[1] * kw["rx"])).astype(np.float32)
            f["x-coordinate"] = np.linspace(0, 1, s.input_shape[1] * kw["rx"])
        elif kw["layout"] == "cfd":
            for k in ("density", "pressure", "Vx"):
                raw[k] = f[k] = rng.standard_normal((n, T, 1024)).astype(np.float32) + 2
        elif kw["layout"] == "darcy":
            raw["nu"] = f["nu"] = rng.standard_normal((n, 128, 128)).astype(np.float32)
            raw["tensor"] = f["tensor"] = rng.standard_normal((n, 1, 128, 128)).astype(np.float32)
        else:
            for i in range(n):
                v = 2 if name == "diffusion-reaction-2d" else 1
                raw[f"{i:04d}"] = f.create_group(f"{i:04d}")["data"] = \
                    rng.standard_normal((T, *s.input_shape[1:], v)).astype(np.float32)
    return raw


@pytest.mark.parametrize("name", [n for n, s in data.TASKS.items() if s.benchmark == "pdebench"])
def test_pdebench_native(tmp_path, name):
    rng = np.random.default_rng(10)
    raw = _write_pde(tmp_path, name, rng)
    td = load_task(name, tmp_path)
    kw = td.spec.reader_kwargs
    assert td.train.t_idx == td.test.t_idx == td.info["target_index"]    # one target index (quirk 6)
    T, rt, tt = 11, kw.get("rt", 1), kw.get("t_train", 1)
    t = {"tensor": min(tt, -(-T // rt)) - 1, "cfd": min(tt, -(-T // rt)) - 1, "groups": min(tt, T) - 1}.get(kw["layout"])
    if t is not None:
        assert td.train.t_idx == t * rt
    if name == "diffusion-reaction-1d":
        assert td.train.t_idx == 10 and td.spec.reader_kwargs["t_train"] == 30     # min(30, T) - 1 on this file
    if kw["layout"] == "groups":                                          # last 10 % of sorted keys = test
        assert td.test.keys == ["0018", "0019"] and set(td.train.keys) | set(td.val.keys) == {f"{i:04d}" for i in range(18)}
    else:                                                                 # first 10 % of samples = test
        assert td.test.keys == [0, 1] and set(td.train.keys) | set(td.val.keys) == set(range(2, 20))
    assert not set(td.train.keys) & set(td.val.keys) and len(td.val) == 2
    k, ti, r = td.test.keys[1], td.test.t_idx, kw["rx"]
    x, y = td.test[1]
    _check_item(td.spec, x, y)
    if kw["layout"] == "tensor":
        ex, ey = raw["tensor"][k, 0, ::r][None], raw["tensor"][k, ti, ::r][None]
    elif kw["layout"] == "darcy":
        ex, ey = raw["nu"][k, ::2, ::2][None], raw["tensor"][k, 0, ::2, ::2][None]
    elif kw["layout"] == "groups":
        ex, ey = raw[k][0, ..., kw["cin"]][None], raw[k][ti, ..., kw["cout"]][None]
    else:                                                                 # CFD: normalised with train inputs
        cat = lambda i, tt_: np.concatenate([raw[n][i, tt_] for n in ("density", "pressure", "Vx")])
        X = torch.from_numpy(np.stack([cat(i, 0) for i in td.train.keys]))
        mu, sd = X.mean(0), X.std(0)
        ex = ((torch.from_numpy(cat(k, 0)) - mu) / (sd + 1e-5))[None].numpy()
        ey = ((torch.from_numpy(cat(k, ti)) - mu) / (sd + 1e-5))[None].numpy()
    assert np.allclose(x.numpy(), ex, atol=1e-5) and np.allclose(y.numpy(), ey, atol=1e-5)


def test_pde_target_index_on_published_file_lengths():
    """datasets.md §3.1 / baselines.md §5 quirk 6, with the frame counts of the published files."""
    idx = lambda name, T: data._t_index(T, data.TASKS[name].reader_kwargs.get("rt", 1),
                                        data.TASKS[name].reader_kwargs.get("t_train", 1))
    assert idx("advection", 201) == 200 and idx("burgers", 201) == 200      # t = 2.0, the last frame
    assert idx("diffusion-reaction-1d", 101) == 29                          # t = 0.29 (t_train 30)
    assert idx("navier-stokes-1d", 101) == 100                              # reduced frame 20 of 21, t = 1.0
    for name in ("diffusion-sorption", "shallow-water", "diffusion-reaction-2d"):
        assert idx(name, 101) == 100                                        # last frame (ORCA tested at 99)
    assert data.TASKS["diffusion-reaction-2d"].reader_kwargs["cin"] == 0    # u(0) -> v(T), quirk 8
    assert data.TASKS["diffusion-reaction-2d"].reader_kwargs["cout"] == 1


def test_pde_reads_only_the_frames_it_uses(tmp_path, monkeypatch):
    """A (300, 41, 1024) file: loading and reading 5 training samples touches exactly 5 × 2 × 256 values."""
    rng = np.random.default_rng(11)
    with h5py.File(tmp_path / "1D_Advection_Sols_beta0.4.hdf5", "w") as f:
        f.create_dataset("tensor", data=rng.standard_normal((300, 41, 1024)).astype(np.float32), chunks=(1, 1, 1024))
    read = []
    orig = h5py.Dataset.__getitem__

    def spy(self, args, *a, **k):
        out = orig(self, args, *a, **k)
        read.append(np.asarray(out).size)
        return out
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    td = load_task("advection", tmp_path, max_train_samples=5)
    assert sum(read) == 0                                                 # construction reads metadata only
    for i in range(len(td.train)):
        td.train[i]
    assert sum(read) == 5 * 2 * 256 and max(read) == 256


def test_pde_cfd_normaliser_reads_only_initial_frames(tmp_path, monkeypatch):
    _write_pde(tmp_path, "navier-stokes-1d", np.random.default_rng(12), n=20, T=21)
    read = []
    orig = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, a: read.append(orig(self, a).size) or orig(self, a))
    load_task("navier-stokes-1d", tmp_path)
    assert sum(read) == 3 * 20 * 1024                                     # t = 0 of 3 fields, not 21 frames


# ---- source surrogates -------------------------------------------------------------------------------
def test_cifar10_surrogate_native(tmp_path):
    rng = np.random.default_rng(13)
    batches = [_write_cifar(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", 10, "labels", rng, bytes_keys=True)
               for i in range(1, 6)]
    ds = data.load_source_surrogate("cifar10", tmp_path, max_samples=30, seed=0)
    assert len(ds) == 30 and ds.labels.min() >= 0 and ds.labels.max() <= 9
    allx = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    ally = np.concatenate([b[b"labels"] for b in batches])
    mean, std = np.array(data.CIFAR10_MEAN)[:, None, None], np.array(data.CIFAR10_STD)[:, None, None]
    for j in (0, 17):                   # brute force over the 9 × 9 crops × 2 flips drawn once
        x, y = ds[j]
        a = np.pad(allx[ds.rows[j]] / 255.0, ((0, 0), (4, 4), (4, 4)))
        cands = [(c[:, :, ::-1] if fl else c) for i in range(9) for k in range(9) for fl in (0, 1)
                 for c in [a[:, i:i + 32, k:k + 32]]]
        assert min(np.abs((c - mean) / std - x.numpy()).max() for c in cands) < 1e-5
        assert int(y) == ally[ds.rows[j]]


CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
visits VBZ I-VP O
Germany NNP I-NP I-LOC
France NNP I-NP B-LOC
"""


def _tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_conll_surrogate_native(tmp_path):
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "eng.train").write_text(CONLL)
    m = data.conll_mentions(str(tmp_path / "conll2003" / "eng.train"))
    assert [(" ".join(w), data.CONLL_TYPES[t]) for _, w, t in m] == [
        ("EU", "ORG"), ("German", "MISC"), ("Peter Blackburn", "PER"), ("Germany", "LOC"), ("France", "LOC")]
    tok = _tokenizer(CONLL.split())
    ds = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0)
    assert len(ds) == 5 and sorted(ds.labels.tolist()) == [0, 1, 2, 2, 3]
    for j in range(5):
        x, y = ds[j]
        sent, ment, lab = next(mm for mm in m if mm[2] == int(y) and
                               tok(" ".join(mm[1]), " ".join(mm[0]), truncation=True, max_length=32,
                                   padding="max_length")["input_ids"] == x.tolist())
        assert x.dtype == torch.int64 and x.shape == (32,)
    with pytest.raises(DataError, match="tokenizer"):
        data.load_source_surrogate("conll2003", tmp_path)


def test_synthetic_surrogates():
    c = data.load_source_surrogate("cifar10", synthetic=True)
    assert c[0][0].shape == (3, 32, 32) and c[0][0].dtype == torch.float32 and set(c.labels.tolist()) == set(range(10))
    t = data.load_source_surrogate("conll2003", synthetic=True, vocab_size=50)
    x = torch.stack([t[i][0] for i in range(len(t))])
    assert x.shape == (200, 32) and x.dtype == torch.int64 and int(x.max()) < 50 and set(t.labels.tolist()) == {0, 1, 2, 3}


def test_cifar10_surrogate_test_split(tmp_path):
    """split="test" reads test_batch only, subsamples it with the seed and applies no augmentation."""
    rng = np.random.default_rng(21)
    te = _write_cifar(tmp_path / "cifar-10-batches-py" / "test_batch", 25, "labels", rng, bytes_keys=True)
    with pytest.raises(DataError, match="data_batch_1"):              # the train split reads other files
        data.load_source_surrogate("cifar10", tmp_path, max_samples=10)
    ds = data.load_source_surrogate("cifar10", tmp_path, max_samples=10, seed=3, split="test")
    allx, ally = te[b"data"].reshape(-1, 3, 32, 32), np.asarray(te[b"labels"])
    mean, std = np.array(data.CIFAR10_MEAN)[:, None, None], np.array(data.CIFAR10_STD)[:, None, None]
    assert len(ds) == 10 and len(set(ds.rows.tolist())) == 10 and ds.rows.max() < 25
    np.testing.assert_array_equal(ds.rows, np.sort(np.random.default_rng(3).choice(25, 10, replace=False)))
    for j in range(10):                  # exactly the normalised pixels: no crop, no flip
        x, y = ds[j]
        np.testing.assert_allclose(x.numpy(), (allx[ds.rows[j]] / 255.0 - mean) / std, atol=1e-5)
        assert int(y) == ally[ds.rows[j]]
    full = data.load_source_surrogate("cifar10", tmp_path, max_samples=5000, split="test")
    assert full.rows.tolist() == list(range(25))
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load_source_surrogate("cifar10", tmp_path, split="val")


CONLL_TEST = """-DOCSTART- -X- -X- O

Japan NNP I-NP B-LOC
beats VBZ I-VP O
Syria NNP I-NP B-LOC
in IN I-PP O
Asian JJ I-NP B-MISC
Cup NNP I-NP I-MISC
. . O O

Nadim NNP I-NP B-PER
Ladki NNP I-NP I-PER
"""


@pytest.mark.parametrize("name", ["eng.testb", "test.txt"])
def test_conll_surrogate_test_split(tmp_path, name):
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "eng.train").write_text(CONLL)
    with pytest.raises(DataError) as e:                             # only the train file exists
        data.load_source_surrogate("conll2003", tmp_path, tokenizer=object(), split="test")
    assert "eng.testb" in str(e.value) and "test.txt" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "conll2003" / name).write_text(CONLL_TEST)
    tok = _tokenizer((CONLL + CONLL_TEST).split())
    m = data.conll_mentions(str(tmp_path / "conll2003" / name))
    assert [(" ".join(w), data.CONLL_TYPES[t]) for _, w, t in m] == [
        ("Japan", "LOC"), ("Syria", "LOC"), ("Asian Cup", "MISC"), ("Nadim Ladki", "PER")]
    ds = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0, split="test")
    expected = sorted((tok(" ".join(w), " ".join(s), truncation=True, max_length=32, padding="max_length")
                       ["input_ids"], t) for s, w, t in m)
    assert sorted((ds[j][0].tolist(), int(ds[j][1])) for j in range(len(ds))) == expected
    train = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0)
    assert len(train) == 5 and not {tuple(r) for r, _ in expected} & {tuple(train[j][0].tolist()) for j in range(5)}


def _nearest_centroid_error(x_fit, y_fit, x_eval, y_eval, k):
    """0-1 error of the nearest class mean (fitted on one set) on another set: brute-force distances."""
    c = np.stack([x_fit[y_fit == j].mean(0) for j in range(k)])       # (k, D)
    d = ((x_eval[:, None, :] - c[None]) ** 2).sum(-1)                 # (n, k)
    return float(np.mean(d.argmin(1) != y_eval))


def test_synthetic_surrogate_test_split_same_distribution():
    def arrays(ds):
        return torch.stack([ds[i][0] for i in range(len(ds))]).reshape(len(ds), -1).numpy(), ds.labels

    tr = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4))
    te = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, split="test", n_synthetic=60))
    again = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, split="test", n_synthetic=60))
    other = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=5))
    small = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, n_synthetic=30))
    np.testing.assert_array_equal(te[0], again[0])                       # seeded
    assert te[0].shape == (60, 3072) and set(te[1].tolist()) == set(range(10))
    assert np.abs(tr[0][:, None, :] - te[0][None]).max(-1).min() > 0.5  # a fresh draw, no repeated sample
    assert _nearest_centroid_error(*tr, *te, 10) == 0.0                   # same class templates
    assert _nearest_centroid_error(*small, *te, 10) == 0.0               # ... whatever the number of samples
    assert _nearest_centroid_error(*other, *te, 10) > 0.5                # another seed: other templates
    # conll2003: every split draws half its tokens from the class's band of the vocabulary
    V, k = 50, len(data.CONLL_TYPES)
    for split in ("train", "test"):
        x, y = arrays(data.load_source_surrogate("conll2003", synthetic=True, vocab_size=V, seed=4, split=split))
        band = (x[:, 1:-1] - 3) // ((V - 3) // k)                        # (n, 30) band of each body token
        votes = np.stack([(band == c).sum(1) for c in range(k)], 1)      # (n, k)
        assert np.mean(votes.argmax(1) == y) > 0.95
        if split == "train":
            x_train = x
    assert not np.array_equal(x, x_train)


# --------------------------------------------------------------------------------------------------
# Custom data
# --------------------------------------------------------------------------------------------------
def _save(d, **arrs):
    for k, v in arrs.items():
        np.save(d / f"{k}.npy", v)


def test_custom_inference(tmp_path):
    rng = np.random.default_rng(14)
    cases = {   # (train_x, train_y, expected dim, output, loss, metric, output_shape)
        "cls1d": (rng.standard_normal((20, 2, 50)), rng.integers(0, 3, 20), "1d", "point", "cross_entropy", "error", (3,)),
        "reg2d": (rng.standard_normal((20, 1, 8, 8)), rng.standard_normal(20), "2d", "point", "mse", "mse", (1,)),
        "ml": (rng.standard_normal((20, 1, 30)), (rng.random((20, 5)) < .5).astype(np.int64), "1d", "point", "bce",
               "one_minus_auroc", (5,)),
        "dense2d": (rng.standard_normal((20, 3, 8, 8)), rng.standard_normal((20, 8, 8)), "2d", "dense", "mse", "nrmse",
                    (1, 8, 8)),
        "dense1d": (rng.standard_normal((20, 1, 40)), rng.standard_normal((20, 2, 40)), "1d", "dense", "mse", "nrmse",
                    (2, 40)),
    }
    for key, (x, y, dim, out, loss, metric, oshape) in cases.items():
        d = tmp_path / key
        d.mkdir()
        _save(d, train_x=x, train_y=y, test_x=x[:4], test_y=y[:4])
        td = load_task("custom", d)
        s = td.spec
        assert (s.dim, s.output, s.loss, s.metric, s.output_shape) == (dim, out, loss, metric, oshape), key
        assert s.input_shape == x.shape[1:] and (len(td.train), len(td.val), len(td.test)) == (18, 2, 4)
        _disjoint_cover(td.train, td.val, 20)
        xi, yi = td.test[1]
        _check_item(s, xi, yi)
        assert torch.allclose(xi, torch.from_numpy(x[1]).float())
        assert data.get_task("custom", d) == s
    d = tmp_path / "withval"
    d.mkdir()
    x, y = cases["cls1d"][:2]
    _save(d, train_x=x, train_y=y, test_x=x[:4], test_y=y[:4], val_x=x[:3], val_y=y[:3])
    td = load_task("custom", d)
    assert (len(td.train), len(td.val)) == (20, 3) and td.info["val_from"] == "published"


@pytest.mark.parametrize("arrays, pattern", [
    (dict(train_x=np.zeros((5, 2, 8)), train_y=np.zeros(4, int), test_x=np.zeros((2, 2, 8)), test_y=np.zeros(2, int)),
     "train_x.npy has 5 samples but train_y.npy has 4"),
    (dict(train_x=np.zeros((5, 8)), train_y=np.zeros(5, int), test_x=np.zeros((2, 8)), test_y=np.zeros(2, int)),
     r"must be \(N, C, L\).*found shape \(5, 8\)"),
    (dict(train_x=np.full((5, 1, 8), np.nan), train_y=np.arange(5) % 2, test_x=np.zeros((2, 1, 8)),
          test_y=np.zeros(2, int)), "NaN"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2, test_x=np.zeros((2, 1, 9)), test_y=np.zeros(2, int)),
     "per-sample shape"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2, val_x=np.zeros((2, 1, 8)), test_x=np.zeros((2, 1, 8)),
          test_y=np.zeros(2, int)), "only one of val_x"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2), "missing .*test_x.npy"),
])
def test_custom_errors(tmp_path, arrays, pattern):
    _save(tmp_path, **arrays)
    with pytest.raises(DataError, match=pattern) as e:
        load_task("custom", tmp_path)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# Bad input: missing, wrong keys/shapes, truncated/corrupted files
# --------------------------------------------------------------------------------------------------
def test_missing_files_name_path_and_source(tmp_path):
    with pytest.raises(DataError) as e:
        load_task("spherical", tmp_path)
    msg = str(e.value)
    assert "'spherical'" in msg and str(tmp_path / "s2_cifar100.gz") in msg and "drive.google.com" in msg
    assert "download=True cannot" in msg and "\n" not in msg
    with pytest.raises(DataError) as e:
        load_task("burgers", tmp_path)
    assert str(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5") in str(e.value) and "darus" in str(e.value)
    assert "download=True" in str(e.value)
    with pytest.raises(DataError, match="data_dir"):
        load_task("ecg")
    with pytest.raises(DataError, match="eng.train"):
        data.load_source_surrogate("conll2003", tmp_path, tokenizer=object())


def test_wrong_keys_and_shapes(tmp_path):
    with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
        pickle.dump({"train": {"x": 1}}, f)
    with pytest.raises(DataError, match="expected .*'images'.*found"):
        load_task("spherical", tmp_path)
    _write_ninapro(tmp_path, np.random.default_rng(0), shape=(16, 52))        # already transposed: wrong
    with pytest.raises(DataError, match=r"expected \(N, 52, 16\).*found \(12, 16, 52\)"):
        load_task("ninapro", tmp_path)
    with h5py.File(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5", "w") as f:
        f["u"] = np.zeros((4, 3, 1024), np.float32)
    with pytest.raises(DataError, match=r"expected datasets \['tensor'\], found \['u'\]"):
        load_task("burgers", tmp_path)
    with h5py.File(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5", "w") as f:
        f["tensor"] = np.zeros((4, 3, 512), np.float32)
    with pytest.raises(DataError, match=r"tensor of shape \(4, 3, 1024\), found shape \(4, 3, 512\)"):
        load_task("burgers", tmp_path)
    np.savez(tmp_path / "deepsea_filtered.npz", x_train=np.zeros((2, 1000, 4)))
    with pytest.raises(DataError, match="expected keys.*found keys"):
        load_task("deepsea", tmp_path)


def _truncate(path):
    b = open(path, "rb").read()
    open(path, "wb").write(b[: len(b) // 2])


def test_truncated_and_corrupted_files(tmp_path):
    rng = np.random.default_rng(15)
    pickle.dump({"data": [rng.standard_normal(3000)] * 10, "label": ["N"] * 10}, open(tmp_path / "challenge2017.pkl", "wb"))
    _truncate(tmp_path / "challenge2017.pkl")
    with pytest.raises(DataError, match="challenge2017.pkl as a pickle \\(truncated or corrupted"):
        load_task("ecg", tmp_path)
    d = {s: {"images": np.zeros((4, 3, 60, 60), np.uint8), "labels": np.zeros(4, int)} for s in ("train", "test")}
    with gzip.open(tmp_path / "s2_cifar100.gz", "wb") as f:
        pickle.dump(d, f)
    _truncate(tmp_path / "s2_cifar100.gz")
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_task("spherical", tmp_path)
    _write_ninapro(tmp_path, rng)
    _truncate(tmp_path / "ninaPro" / "ninapro_train.npy")
    with pytest.raises(DataError, match="ninapro_train.npy as a .npy array"):
        load_task("ninapro", tmp_path)
    _write_pde(tmp_path, "burgers", rng)
    _truncate(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5")
    with pytest.raises(DataError, match="as an HDF5 file"):
        load_task("burgers", tmp_path)
    (tmp_path / "2D_rdb_NA_NA.h5").write_bytes(os.urandom(4096))
    with pytest.raises(DataError, match="as an HDF5 file"):
        load_task("shallow-water", tmp_path)
    (tmp_path / "piececonst_r421_N1024_smooth1.mat").write_bytes(b"MATLAB 5.0 MAT-file" + os.urandom(300))
    (tmp_path / "piececonst_r421_N1024_smooth2.mat").write_bytes(b"junk")
    with pytest.raises(DataError, match="smooth1.mat"):
        load_task("darcyflow", tmp_path)
    np.savez(tmp_path / "deepsea_filtered.npz", **{k: np.zeros((2, 2)) for k in ("x_train", "y_train")})
    _truncate(tmp_path / "deepsea_filtered.npz")
    with pytest.raises(DataError, match="npz archive"):
        load_task("deepsea", tmp_path)


# --------------------------------------------------------------------------------------------------
# Downloads from a local 127.0.0.1 server
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/short":                       # announces more bytes than it sends
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_checksum_and_atomicity(tmp_path, server):
    root, url = server
    (root / "f.bin").write_bytes(b"hello" * 1000)
    md5 = hashlib.md5(b"hello" * 1000).hexdigest()
    dest = tmp_path / "dl" / "f.bin"
    data.download_file(f"{url}/f.bin", str(dest), md5)
    assert dest.read_bytes() == b"hello" * 1000
    for bad_url, bad_md5, pattern in ((f"{url}/f.bin", "0" * 32, "MD5"), (f"{url}/short", None, "got 10 of 1000|failed"),
                                      (f"{url}/missing", None, "failed")):
        dest2 = tmp_path / "dl2" / "g.bin"
        with pytest.raises(DataError, match=pattern):
            data.download_file(bad_url, str(dest2), bad_md5)
        assert not dest2.exists() and os.listdir(dest2.parent) == []         # no partial file left


def _cifar100_tarball(path, rng):
    buf = {}
    for name, n in (("train", 20), ("test", 5)):
        b = io.BytesIO()
        pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}, b)
        buf[name] = b.getvalue()
    with tarfile.open(path, "w:gz") as tf:
        for name, b in buf.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(b)
            tf.addfile(info, io.BytesIO(b))


def test_download_through_registry(tmp_path, server, monkeypatch):
    root, url = server
    _cifar100_tarball(root / "cifar-100-python.tar.gz", np.random.default_rng(16))
    md5 = hashlib.md5((root / "cifar-100-python.tar.gz").read_bytes()).hexdigest()
    spec = data.TASKS["cifar100"]
    bad = dataclasses.replace(spec, downloads=(data.Download("cifar-100-python.tar.gz", f"{url}/cifar-100-python.tar.gz",
                                                             "f" * 32, extract=True),))
    monkeypatch.setitem(data.TASKS, "cifar100", bad)
    with pytest.raises(DataError, match="MD5"):
        load_task("cifar100", tmp_path / "d", download=True)
    assert os.listdir(tmp_path / "d") == []
    good = dataclasses.replace(bad, downloads=(dataclasses.replace(bad.downloads[0], md5=md5),))
    monkeypatch.setitem(data.TASKS, "cifar100", good)
    td = load_task("cifar100", tmp_path / "d", download=True)
    assert (len(td.train), len(td.val), len(td.test)) == (16, 4, 5)


def test_unsafe_tar_member_rejected(tmp_path):
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="unsafe member"):
        data._extract_tar(str(tmp_path / "evil.tar.gz"), str(tmp_path / "out"))
    assert not (tmp_path / "evil.txt").exists() and os.listdir(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------------
# Class-balanced batches
# --------------------------------------------------------------------------------------------------
def test_class_balanced_batch_sampler():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3 + [3] * 1 + [4] * 5)
    s = data.ClassBalancedBatchSampler(labels, classes_per_batch=3, samples_per_class=2, seed=0)
    batches = [b for _ in range(3) for b in s]
    assert len(batches) == 3 * len(s) and len(s) == 25 // 6
    for b in batches:
        assert len(b) == 6 and len(set(b)) == 6
        counts = np.bincount(labels[b], minlength=5)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2] and counts[3] == 0
    assert [list(b) for b in data.ClassBalancedBatchSampler(labels, 3, 2, seed=0)] == batches[:len(s)]
    with pytest.raises(DataError, match="only 4 classes"):
        data.ClassBalancedBatchSampler(labels, 5, 2)
    with pytest.raises(DataError, match=">= 2"):
        data.ClassBalancedBatchSampler(labels, 2, 1)
    loader = torch.utils.data.DataLoader(data.load_source_surrogate("cifar10", synthetic=True),
                                         batch_sampler=data.ClassBalancedBatchSampler(
                                             data.load_source_surrogate("cifar10", synthetic=True).labels, 4, 3))
    xb, yb = next(iter(loader))
    assert xb.shape == (12, 3, 32, 32) and sorted(np.bincount(yb.numpy())[np.bincount(yb.numpy()) > 0]) == [3] * 4
