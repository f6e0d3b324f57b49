"""Tests for readers/pdebench.py: every PDEBench task read through data.load_task from tiny HDF5 files in the
published layouts, the target frame on the published file lengths, ORCA's test frame (test_orca), both
protocols ("paper" trains on strict train ∪ val), and lazy reads (only the frames used).
Oracles: numpy slicing of the arrays we wrote, torch.std for the 1D-CFD normaliser."""
import os
import sys

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
from readers import pdebench  # noqa: E402
from data import DataError, load_task  # noqa: E402
from data_helpers import _check_item, _write_pde  # noqa: E402


@pytest.mark.parametrize("name", [n for n, s in data.TASKS.items() if s.benchmark == "pdebench"])
def test_pdebench_native(tmp_path, name):
    rng = np.random.default_rng(10)
    raw = _write_pde(tmp_path, name, rng)
    td = load_task(name, tmp_path)
    kw = td.spec.reader_kwargs
    assert td.train.t_idx == td.test.t_idx == td.info["target_index"]    # one target index (ORCA tested on another)
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
    """One target frame for train and test (ORCA's load_pde tested on another), on the published files' frame counts."""
    idx = lambda name, T: pdebench._t_index(T, data.TASKS[name].reader_kwargs.get("rt", 1),
                                        data.TASKS[name].reader_kwargs.get("t_train", 1))
    assert idx("advection", 201) == 200 and idx("burgers", 201) == 200      # t = 2.0, the last frame
    assert idx("diffusion-reaction-1d", 101) == 29                          # t = 0.29 (t_train 30)
    assert idx("navier-stokes-1d", 101) == 100                              # reduced frame 20 of 21, t = 1.0
    for name in ("diffusion-sorption", "shallow-water", "diffusion-reaction-2d"):
        assert idx(name, 101) == 100                                        # last frame (ORCA tested at 99)
    assert data.TASKS["diffusion-reaction-2d"].reader_kwargs["cin"] == 0    # u(0) -> v(T), as ORCA
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


@pytest.mark.parametrize("name", [n for n, s in data.TASKS.items() if s.benchmark == "pdebench"])
def test_pdebench_paper_trains_on_every_non_test_sample(tmp_path, name):
    raw = _write_pde(tmp_path, name, np.random.default_rng(30))
    td, st = load_task(name, tmp_path, protocol="paper"), load_task(name, tmp_path)
    assert td.val is None and td.info["sizes"] == (18, 0, 2) and td.test.keys == st.test.keys
    assert sorted(td.train.keys) == sorted(st.train.keys + st.val.keys)
    assert td.test_orca is None                  # T = 11 frames: ORCA's test frame = ours on this short file
    if name == "navier-stokes-1d":               # ORCA fits its normaliser on every training sample
        cat = np.concatenate([raw[n][:, 0] for n in ("density", "pressure", "Vx")], 1)[2:]
        X = torch.from_numpy(cat)
        assert np.allclose(td.train.norm[0][0], X.mean(0).numpy(), atol=1e-5)
        assert np.allclose(td.train.norm[1][0], X.std(0).numpy(), atol=1e-4)


@pytest.mark.parametrize("name, train_t, orca_t", [("diffusion-reaction-1d", 29, 99), ("diffusion-sorption", 100, 99),
                                                   ("advection", 200, None)])
def test_pde_test_orca_uses_orcas_test_frame(tmp_path, name, train_t, orca_t, monkeypatch):
    """On the published frame counts (101; advection 201): ORCA's load_pde tests RD-1D at frame 99 although it
    trains at 29, DS at 99 vs 100; advection's frames agree (no test_orca)."""
    raw = _write_pde(tmp_path, name, np.random.default_rng(31), n=10, T=201 if name == "advection" else 101)
    read = []
    orig = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, a: read.append(orig(self, a).size) or orig(self, a))
    for protocol in ("paper", "strict"):
        td = load_task(name, tmp_path, protocol=protocol)
        assert sum(read) == 0                                             # lazy: nothing read to build it
        assert td.test.t_idx == td.train.t_idx == train_t and td.info["orca_target_index"] == (orca_t or train_t)
        if orca_t is None:
            assert td.test_orca is None
            continue
        o = td.test_orca
        assert o.keys == td.test.keys and o.t_idx == orca_t and len(o) == len(td.test) == 1
        (x, y), (xo, yo) = td.test[0], o[0]
        k = td.test.keys[0]
        frames = raw["tensor"][k] if name == "diffusion-reaction-1d" else raw[k][..., 0]
        assert torch.equal(x, xo) and np.allclose(x[0].numpy(), frames[0])
        assert np.allclose(y[0].numpy(), frames[train_t]) and np.allclose(yo[0].numpy(), frames[orca_t])
        read.clear()


def test_pde_too_few_samples_is_one_line(tmp_path):
    _write_pde(tmp_path, "burgers", np.random.default_rng(32), n=2)
    with pytest.raises(DataError, match="empty val split.*train 1, val 0, test 1.*holds 2 samples") as e:
        load_task("burgers", tmp_path)
    assert "1D_Burgers_Sols_Nu1.0.hdf5" in str(e.value) and "\n" not in str(e.value)
    assert load_task("burgers", tmp_path, protocol="paper").info["sizes"] == (1, 0, 1)
