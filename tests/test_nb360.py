"""Tests for nb360.py: every NAS-Bench-360 task (but FSD50K) read through data.load_task from tiny files
written here in its native format (keys, dtypes, layouts and transposes of the benchmark's files, as
NAS-Bench-360's and ORCA's `src/data_loaders.py` read them). Oracles: numpy slicing of the arrays we wrote,
torch.std for the normalisers, scikit-learn's train_test_split for the ECG records."""
import gzip
import os
import pickle
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nb360  # noqa: E402
from data import load_task  # noqa: E402
from data_helpers import _check_item, _write_cifar, _write_ninapro  # noqa: E402


def test_cifar100_native(tmp_path):
    rng = np.random.default_rng(0)
    te = _write_cifar(tmp_path / "cifar-100-python" / "test", 10, "fine_labels", rng)
    tr = _write_cifar(tmp_path / "cifar-100-python" / "train", 40, "fine_labels", rng)
    td = load_task("cifar100", tmp_path)
    # NB360's published split (40,000 / 10,000 / 10,000): the first 80 % of the training file train, the
    # last 20 % validate (load_cifar100_train_data, val_split 0.2)
    assert (len(td.train), len(td.val), len(td.test)) == (32, 8, 10) and td.info["val_from"] == "published"
    assert td.train.idx.tolist() == list(range(32)) and td.val.idx.tolist() == list(range(32, 40))
    x, y = td.test[3]
    mean, std = torch.tensor(nb360.CIFAR100_MEAN)[:, None, None], torch.tensor(nb360.CIFAR100_STD)[:, None, None]
    expect = (torch.from_numpy(te["data"][3].reshape(3, 32, 32)).float() / 255 - mean) / std
    assert torch.allclose(x, expect, atol=1e-6) and int(y) == te["fine_labels"][3]
    xv, yv = td.val[0]                                                   # validation: no augmentation
    expect = (torch.from_numpy(tr["data"][32].reshape(3, 32, 32)).float() / 255 - mean) / std
    assert torch.allclose(xv, expect, atol=1e-6) and int(yv) == tr["fine_labels"][32]
    for ds in (td.train, td.val):
        _check_item(td.spec, *ds[0])
    torch.manual_seed(0)                 # train: RandomCrop(32, padding 4) + HFlip, then Normalize (ORCA load_cifar)
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


def test_ninapro_native(tmp_path):
    raw = _write_ninapro(tmp_path, np.random.default_rng(2))
    td = load_task("ninapro", tmp_path)
    assert (len(td.train), len(td.val), len(td.test)) == (12, 4, 5) and td.info["val_from"] == "published"
    x, y = td.val[1]
    assert x.shape == (1, 16, 52) and torch.allclose(x[0], torch.from_numpy(raw["val"][0][1].T).float())
    assert int(y) == raw["val"][1][1]


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
