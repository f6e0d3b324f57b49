"""Tests for readers/nb360.py: every NAS-Bench-360 task (but FSD50K) read through data.load_task from tiny files
written here in its native format (keys, dtypes, layouts and transposes of the benchmark's files, as
NAS-Bench-360's and ORCA's `src/data_loaders.py` read them), under both protocols: "strict" (NB360's splits) and
"paper" (ORCA's training set = strict train ∪ val, augmented throughout; ORCA's test-time treatment in
test_orca). Oracles: numpy slicing of the arrays we wrote, torch.std for the normalisers, scikit-learn's
train_test_split for the ECG records, ORCA's slide_and_cut stride rule written out."""
import os
import pickle
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readers import nb360  # noqa: E402
from data import DataError, load_task  # noqa: E402
from data_helpers import (_check_item, _write_cifar, _write_cosmic, _write_ecg, _write_ninapro,  # noqa: E402
                          _write_spherical)


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
    d = _write_spherical(tmp_path, rng)
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
    # a stack whose name does not start with its sky index k: one line naming the file and the expected name
    for bad in ("img_1.npy", "11_img.npy"):                          # no index / k beyond the 10 sky entries
        os.rename(root / "train" / "f435w_GAL" / f"{r + 1}_img.npy", root / "train" / "f435w_GAL" / bad)
        td.train.paths[r] = f"./train/f435w_GAL/{bad}"
        with pytest.raises(DataError, match=rf"{bad}.*'<k>_\.\.\.\.npy' with 1 <= k <= 10"):
            td.train[0]
        os.rename(root / "train" / "f435w_GAL" / bad, root / "train" / "f435w_GAL" / f"{r + 1}_img.npy")


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


# --------------------------------------------------------------------------------------------------
# Protocol "paper": ORCA's training set (= strict train ∪ val), no validation split; ORCA's test treatment
# --------------------------------------------------------------------------------------------------
def _same_items(a, b):
    return len(a) == len(b) and all(torch.equal(p, q) for i in range(len(a)) for p, q in zip(a[i], b[i]))


def _cifar_candidates(row, mean, std):
    a = np.pad(row.reshape(3, 32, 32) / 255.0, ((0, 0), (4, 4), (4, 4)))
    return [((c[:, :, ::-1] if fl else c) - mean) / std for i in range(9) for k in range(9) for fl in (0, 1)
            for c in [a[:, i:i + 32, k:k + 32]]]


def test_cifar100_paper_trains_on_the_whole_file_with_augmentation(tmp_path):
    rng = np.random.default_rng(20)
    _write_cifar(tmp_path / "cifar-100-python" / "test", 10, "fine_labels", rng)
    tr = _write_cifar(tmp_path / "cifar-100-python" / "train", 40, "fine_labels", rng)
    td = load_task("cifar100", tmp_path, protocol="paper")
    strict = load_task("cifar100", tmp_path, protocol="strict")
    assert len(td.train) == 40 and td.val is None and td.info["sizes"] == (40, 0, 10) and td.test_orca is None
    assert td.info["protocol"] == "paper" and strict.info["sizes"] == (32, 8, 10)
    assert set(td.train.idx.tolist()) == set(strict.train.idx.tolist()) | set(strict.val.idx.tolist())
    # a former validation row (36: strict val) gets the training crop + flip (ORCA load_cifar)
    mean = np.array(nb360.CIFAR100_MEAN)[:, None, None]
    std = np.array(nb360.CIFAR100_STD)[:, None, None]
    cands = _cifar_candidates(tr["data"][36], mean, std)
    plain = ((tr["data"][36].reshape(3, 32, 32) / 255.0) - mean) / std
    xs = []
    for seed in range(8):
        torch.manual_seed(seed)
        xs.append(td.train[36][0].numpy())
        assert min(np.abs(c - xs[-1]).max() for c in cands) < 1e-5
    assert any(np.abs(x - plain).max() > 1e-3 for x in xs)                  # augmented, not the plain image
    assert torch.allclose(strict.val[4][0], torch.from_numpy(plain).float(), atol=1e-6)   # strict val: plain
    assert int(td.train[36][1]) == tr["fine_labels"][36]


def test_spherical_satellite_paper_whole_train_file(tmp_path):
    rng = np.random.default_rng(21)
    d = _write_spherical(tmp_path, rng)
    np.save(tmp_path / "satellite_train.npy", {"data": rng.standard_normal((30, 46)), "label": rng.integers(1, 25, 30)},
            allow_pickle=True)
    np.save(tmp_path / "satellite_test.npy", {"data": rng.standard_normal((5, 46)), "label": rng.integers(1, 25, 5)},
            allow_pickle=True)
    for task, n, n_test in (("spherical", 20, 6), ("satellite", 30, 5)):
        td, st = load_task(task, tmp_path, protocol="paper"), load_task(task, tmp_path)
        assert td.train.idx.tolist() == list(range(n)) and td.val is None and td.info["sizes"] == (n, 0, n_test)
        assert set(td.train.idx.tolist()) == set(st.train.idx.tolist()) | set(st.val.idx.tolist())
        assert _same_items(td.test, st.test)


def test_ninapro_deepsea_paper_merge_train_and_val_files(tmp_path):
    rng = np.random.default_rng(22)
    _write_ninapro(tmp_path, rng)
    arrs = {}
    for s, n in (("train", 8), ("val", 3), ("test", 4)):
        arrs[f"x_{s}"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 1000))]
        arrs[f"y_{s}"] = (rng.random((n, 36)) < 0.3).astype(np.uint8)
    np.savez(tmp_path / "deepsea_filtered.npz", **arrs)
    for task, sizes in (("ninapro", (16, 0, 5)), ("deepsea", (11, 0, 4))):
        td, st = load_task(task, tmp_path, protocol="paper"), load_task(task, tmp_path)
        assert td.val is None and td.info["sizes"] == sizes
        n_tr = len(st.train)              # ORCA: np.concatenate((train, val)): strict train rows, then val rows
        assert _same_items(td.train.subset(np.arange(n_tr)), st.train)
        assert _same_items(td.train.subset(np.arange(n_tr, len(td.train))), st.val)
        assert td.train.labels is None or td.train.labels.tolist() == st.train.labels.tolist() + st.val.labels.tolist()
    assert all(isinstance(p, np.memmap) for p in td.train.x.parts)          # DeepSEA's merge reads lazily


def test_darcyflow_paper_all_samples_and_small_files(tmp_path):
    rng = np.random.default_rng(23)
    a, u = _write_darcy_mat(tmp_path / "piececonst_r421_N1024_smooth1.mat", 7, rng)
    _write_darcy_mat(tmp_path / "piececonst_r421_N1024_smooth2.mat", 3, rng)
    with pytest.raises(DataError) as e:                                    # 7 // 10 = 0 validation samples
        load_task("darcyflow", tmp_path, protocol="strict")
    msg = str(e.value)
    assert "\n" not in msg and "piececonst_r421_N1024_smooth1.mat holds 7 samples" in msg and "at least 10" in msg
    td = load_task("darcyflow", tmp_path, protocol="paper")               # ORCA: all of them train
    assert td.val is None and td.info["sizes"] == (7, 0, 3) and td.train.idx.tolist() == list(range(7))
    A = torch.from_numpy(a[:, ::5, ::5][:, :85, :85])
    U = torch.from_numpy(u[:, ::5, ::5][:, :85, :85])
    x, _ = td.train[6]                                                     # normalisers fitted on all 7
    assert torch.allclose(x[0], (A[6] - A.mean(0)) / (A.std(0) + 1e-5), atol=1e-4)
    assert torch.allclose(td.output_decoder.mean[0], U.mean(0)) and torch.allclose(td.output_decoder.std[0], U.std(0))


def test_psicov_paper_trains_on_all_deepcov_proteins(tmp_path):
    rng = np.random.default_rng(24)
    root = tmp_path / "protein"
    ids = [f"d{i}" for i in range(11)]
    for p in ids:
        _write_protein(root, "deepcov", p, 12, rng)
    (root / "deepcov.lst").write_text("\n".join(ids) + "\n")
    _write_protein(root, "psicov", "p0", 15, rng)
    (root / "psicov.lst").write_text("p0\n")
    td, st = load_task("psicov", tmp_path, protocol="paper"), load_task("psicov", tmp_path)
    assert td.val is None and td.info["sizes"] == (11, 0, 1) and td.test_orca is None
    assert td.train.ids == ids and set(td.train.ids) == set(st.train.ids) | set(st.val.ids)
    assert td.train.train and float(td.train[0][1].max()) == 16.0          # d0 (strict val) gets the 16 Å clip
    assert td.spec.paper_metric == "mae8_orca" and td.spec.orca_maxsamples == 64


def test_cosmic_paper_and_test_orca_sky_term(tmp_path):
    rng = np.random.default_rng(25)
    stacks = _write_cosmic(tmp_path, rng)
    td, st = load_task("cosmic", tmp_path, protocol="paper"), load_task("cosmic", tmp_path)
    assert td.val is None and td.info["sizes"] == (10, 0, 3)
    assert sorted(td.train.paths) == sorted(st.train.paths + st.val.paths) and td.train.train
    r = st.val.paths[0]                                                    # a former validation image: sky-augmented
    i = td.train.paths.index(r)
    k = int(r.split("/")[-1].split("_")[0]) - 1
    offset = td.train[i][0][0] - torch.from_numpy(stacks["train", k][0, 64:192, 64:192]).float()
    assert torch.allclose(offset, offset[0, 0].expand_as(offset), atol=1e-4) and abs(float(offset[0, 0])) > 0
    for t in (td, st):                                                     # test_orca in both protocols
        again = load_task("cosmic", tmp_path, protocol=t.info["protocol"]).test_orca
        assert len(t.test_orca) == len(t.test) == 3
        for j in range(3):
            (x, y), (xo, yo) = t.test[j], t.test_orca[j]
            assert torch.equal(y, yo) and torch.equal(xo, again[j][0])     # same labels; reproducible
            d = xo - x                                                     # only the sky term: sky_j · U(−0.9, 3)
            sky = 10.0 * (j + 1)
            assert torch.allclose(d, d[0, 0, 0].expand_as(d), atol=1e-4)
            assert -0.9 * sky - 1e-3 <= float(d[0, 0, 0]) <= 3.0 * sky + 1e-3 and abs(float(d[0, 0, 0])) > 1e-3
    assert torch.equal(td.test_orca[1][0], st.test_orca[1][0])


def test_ecg_paper_split_and_test_orca_label_stride(tmp_path):
    from sklearn.model_selection import train_test_split
    recs, labels = _write_ecg(tmp_path / "challenge2017.pkl", np.random.default_rng(26), n=40)
    td, st = load_task("ecg", tmp_path, protocol="paper"), load_task("ecg", tmp_path)
    tr, te = train_test_split(np.arange(40), test_size=0.1, random_state=0)        # ORCA load_ecg
    assert td.val is None and set(np.unique(td.train.groups)) == set(tr.tolist())
    assert set(np.unique(td.test.groups)) == set(te.tolist())
    stride = {"N": 500, "A": 83, "O": 250, "~": 25}                        # slide_and_cut: 500, 500//6, 500//2, 500//20
    for t, recs_test in ((td, te), (st, np.unique(st.test.groups))):
        o = t.test_orca
        assert o.groups is None and t.spec.paper_group_reduce is None      # ORCA scores windows
        assert len(o) == sum(len(range(0, len(recs[r]) - 1000, stride[labels[r]])) for r in recs_test)
        assert sorted(o.windows[:, 0].tolist()) == sorted(
            r for r in recs_test for _ in range(0, len(recs[r]) - 1000, stride[labels[r]]))
        x, y = o[len(o) - 1]
        r, start = o.windows[o.idx[-1]]
        z = (recs[r] - recs[r].mean()) / recs[r].std()
        assert torch.allclose(x[0], torch.from_numpy(z[start:start + 1000]).float(), atol=1e-5)
        assert int(y) == "NAO~".index(labels[r])
    r = [r for r in tr if labels[r] == "~"][0]                             # training windows: label stride too
    assert (td.train.groups == r).sum() == len(range(0, len(recs[r]) - 1000, 25))


@pytest.mark.parametrize("case", ["cosmic", "ninapro", "cifar100", "ecg"])
def test_empty_split_is_one_line_naming_file_and_counts(tmp_path, case):
    rng = np.random.default_rng(27)
    if case == "cosmic":                       # one training image: the 10 % carve leaves no validation
        _write_cosmic(tmp_path, rng, (("train", 1), ("test", 2)))
        path, pattern = "train_dirs.npy", "empty val split.*train 1, val 0"
    elif case == "ninapro":                    # an empty val file
        _write_ninapro(tmp_path, rng)
        np.save(tmp_path / "ninaPro" / "ninapro_val.npy", np.zeros((0, 52, 16)))
        np.save(tmp_path / "ninaPro" / "label_val.npy", np.zeros(0, int))
        path, pattern = "ninapro_val.npy", "empty val split.*val 0"
    elif case == "cifar100":
        _write_cifar(tmp_path / "cifar-100-python" / "train", 5, "fine_labels", rng)
        _write_cifar(tmp_path / "cifar-100-python" / "test", 0, "fine_labels", rng)
        path, pattern = "test", "empty test split.*test 0"
    else:                                      # records shorter than a window: no training window
        _write_ecg(tmp_path / "challenge2017.pkl", rng, n=10, lengths=(500, 900))
        path, pattern = "challenge2017.pkl", "empty train.*split.*train 0"
    with pytest.raises(DataError, match=pattern) as e:
        load_task(case, tmp_path)
    assert path in str(e.value) and "\n" not in str(e.value)
    if case == "ninapro":                      # paper does not use the val file's rows as a split of its own
        assert load_task(case, tmp_path, protocol="paper").info["sizes"] == (12, 0, 5)
