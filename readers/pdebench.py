"""PDEBench reader for MoNA (Ma et al., ICML 2024, arXiv 2406.18864): one HDF5 file per task, read lazily.

Paper map
---------
App. A.1, Tables 10 and 11 list the eight PDEBench tasks (Takamoto et al., 2022) and their stage-2 settings
(registry rows in data.py, with each file's DaRUS id and MD5). As in ORCA (github.com/sjunhongshen/ORCA,
`src/data_loaders.py: load_pde` with `UNetDatasetSingle` and `UNetDatasetMult`), a task is a single-step map:
input = state at time index 0, target = state at `_t_index`, both subsampled by `rx` in space.
Contract: reader(spec, data_dir, val_fraction, seed, protocol, **spec.reader_kwargs) -> (train, val, test, extras).

| layout   | HDF5 contents                           | x -> y                                 | tasks                |
|----------|-----------------------------------------|----------------------------------------|----------------------|
| "tensor" | `tensor` (N, T, X)                      | u(0)[::rx] -> u(t)[::rx]               | advection, burgers, diffusion-reaction-1d |
| "cfd"    | `density`, `pressure`, `Vx` (N, T, X)   | [ρ, p, v](0) -> at t, (1, 3X), normalised | navier-stokes-1d  |
| "darcy"  | `nu` (N, X, Y), `tensor` (N, 1, X, Y)   | a -> u (steady state)                  | darcy-pde            |
| "groups" | groups '0000'... each `data` (T, *S, V) | channel cin at 0 -> channel cout at t  | diffusion-sorption, shallow-water, diffusion-reaction-2d |

Split: PDEBench's own convention, as ORCA: a single-dataset file -> the first 10 % of samples are the test set;
a grouped file -> the last 10 % of the sorted group keys. Protocol "paper" trains on all the rest (ORCA's
`load_pde`: no validation split); "strict" holds out `val_fraction` of the rest (seeded carve) for validation.
Both fit 1D-CFD's normaliser on their training samples. ORCA's test target frame (`extras["test_orca"]`,
both protocols): the test samples with the target at `_t_index(T, rt, ORCA_TEST_T_TRAIN)`, built only where
that frame differs from the training one (on the published files: Diffusion-Reaction 1D 99 vs 29;
Diffusion-Sorption, Shallow-Water, Diffusion-Reaction 2D 99 vs 100), else None.

Known bugs of the earlier loader, and what we do
------------------------------------------------
- One target index for train and test. ORCA's `load_pde` builds the test set without `t_train`, so it falls
  back to the class default 100: Diffusion-Reaction 1D trains on t index 29 but is tested on 99; Diffusion-
  Sorption, Shallow-Water and Diffusion-Reaction 2D train on 100 and are tested on 99. `_t_index` serves both
  `train` and `test`; `test_orca` reproduces ORCA's frame.
- The file is never loaded whole (ORCA's `UNetDatasetSingle` np.array's the whole `tensor`): `PDEDataset` reads
  the two frames of a sample on access (bench/data_memory.py measures it).
- Files are read from data_dir (ORCA hard-codes its cluster path for most PDE tasks).
Matched on purpose: 1D-CFD is learned and scored in ORCA's normalised space (a point-wise
`UnitGaussianNormalizer` fitted on training inputs, applied to inputs and targets); Diffusion-Reaction 2D maps
u(0) to the other species v(T) (ORCA's `UNetDatasetMult` returns channel 1 as target).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from readers.fileio import DataError, _bad, _corrupt, _open_h5, _path
from readers.splits import NORM_EPS, IndexedDataset, _carve, _need, _unit_gaussian

ORCA_TEST_T_TRAIN = 100        # the t_train ORCA's load_pde test set falls back to (UNetDataset* default)


# --------------------------------------------------------------------------------------------------
# Target frame, lazy dataset, reader
# --------------------------------------------------------------------------------------------------
def _t_index(T: int, rt: int, t_train: int) -> int:
    """ORCA's target frame, in file indices: reduced index min(t_train, ceil(T/rt)) − 1, times rt.
    Used for train AND test (fix: ORCA's load_pde built its test set without t_train, so it fell back to 100)."""
    return (min(t_train, math.ceil(T / rt)) - 1) * rt


class PDEDataset(IndexedDataset):
    """Lazy (input, target) pairs from a PDEBench HDF5 file: each access reads only the two frames it needs
    (h5py hyperslabs), so memory grows with the samples used, not with the file. One handle per process."""

    def __init__(self, task, path, keys, layout, t_idx, rx, cin=0, cout=0, norm=None):
        self.task, self.path, self.keys, self.layout = task, path, keys, layout
        self.t_idx, self.rx, self.cin, self.cout, self.norm = t_idx, rx, cin, cout, norm
        self.idx = np.arange(len(keys), dtype=np.int64)
        self._f, self._pid = None, None

    def __getstate__(self):                       # DataLoader workers reopen the file
        return {**self.__dict__, "_f": None, "_pid": None}

    def _file(self):
        if self._f is None or self._pid != os.getpid():
            self._f, self._pid = _open_h5(self.task, self.path), os.getpid()
        return self._f

    def _pair(self, k):
        f, r, t = self._file(), self.rx, self.t_idx
        if self.layout == "tensor":                       # tensor (N, T, X)
            ds = f["tensor"]
            return ds[k, 0, ::r][None], ds[k, t, ::r][None]
        if self.layout == "darcy":                        # nu (N, X, Y) -> tensor (N, 1, X, Y)
            return f["nu"][k, ::r, ::r][None], f["tensor"][k, 0, ::r, ::r][None]
        if self.layout == "cfd":                          # [ρ, p, v] channel-major -> (1, 3X)
            x = np.concatenate([f[n][k, 0, ::r] for n in ("density", "pressure", "Vx")])[None]
            y = np.concatenate([f[n][k, t, ::r] for n in ("density", "pressure", "Vx")])[None]
            return x, y
        g = f[k]["data"]                                  # groups: data (T, *S, V)
        sl = (slice(None, None, r),) * (g.ndim - 2)
        return g[(0, *sl, self.cin)][None], g[(t, *sl, self.cout)][None]

    def _item(self, r):
        try:
            x, y = self._pair(self.keys[r])
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise _corrupt(self.task, self.path, f"PDEBench HDF5 (sample {self.keys[r]})", e) from None
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if self.norm is not None:                         # 1D-CFD: point-wise (v − μ_x)/(σ_x + eps) on x AND y
            mu, sd = self.norm
            x, y = (x - mu) / (sd + NORM_EPS), (y - mu) / (sd + NORM_EPS)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def _check_shape(task, path, what, shape, expected):
    if tuple(shape) != tuple(expected):
        raise _bad(task, path, f"{what} of shape {tuple(expected)}", f"shape {tuple(shape)}")


def _read_pdebench(spec, data_dir, val_fraction, seed, protocol, *, file, layout, rx, rt=1, t_train=1, cin=0,
                   cout=0):
    dl = spec.downloads[0]
    path = _path(spec.name, data_dir, file, spec.origin, downloadable=True)
    f = _open_h5(spec.name, path)
    try:                                     # closed however the scan ends; the datasets reopen it lazily
        S = tuple(int(v) * rx for v in spec.input_shape[1:])     # native spatial size (ORCA's ::rx of it)
        if layout == "cfd":
            S = (S[0] // 3,)
        if layout in ("tensor", "cfd"):
            names = ("tensor",) if layout == "tensor" else ("density", "pressure", "Vx")
            for n in names:
                if n not in f:
                    raise _bad(spec.name, path, f"datasets {list(names)}", f"{sorted(f.keys())}")
            N, T = f[names[0]].shape[:2]
            for n in names:
                _check_shape(spec.name, path, n, f[n].shape, (N, T, *S))
            keys = list(range(N))
        elif layout == "darcy":
            if "tensor" not in f or "nu" not in f:
                raise _bad(spec.name, path, "datasets 'tensor' (N,1,128,128) and 'nu' (N,128,128)",
                           f"{sorted(f.keys())}")
            N, T = f["nu"].shape[0], 1
            _check_shape(spec.name, path, "nu", f["nu"].shape, (N, *S))
            _check_shape(spec.name, path, "tensor", f["tensor"].shape, (N, 1, *S))
            keys = list(range(N))
        else:
            import h5py
            keys = sorted(f.keys())
            if not keys or not isinstance(f[keys[0]], h5py.Group) or "data" not in f[keys[0]]:
                raise _bad(spec.name, path, "groups '0000'... each with 'data' (T, *S, V)", f"{keys[:3]}")
            shp = f[keys[0]]["data"].shape
            T = shp[0]
            if shp[1:-1] != S or shp[-1] <= max(cin, cout):
                raise _bad(spec.name, path, f"group data of shape (T, {', '.join(map(str, S))}, >{max(cin, cout)})",
                           f"{shp}")
        t_idx = _t_index(T, rt, t_train) if layout != "darcy" else 0
        t_orca = _t_index(T, rt, ORCA_TEST_T_TRAIN) if layout != "darcy" else 0  # ORCA's test frame
        n = len(keys)
        # PDEBench split: single file -> first 10 % test; grouped -> last 10 % of sorted keys test
        n_test = max(1, int(n * 0.1)) if layout != "groups" else max(1, n - int(n * 0.9))
        if layout == "groups":
            test_keys, train_keys = keys[n - n_test:], keys[:n - n_test]
        else:
            test_keys, train_keys = keys[:n_test], keys[n_test:]
        if protocol == "paper":                          # ORCA load_pde: every non-test sample trains
            t_rel, v_rel = np.arange(len(train_keys)), None
        else:
            t_rel, v_rel = _carve(len(train_keys), val_fraction)
        _need(spec.name, path, protocol, {"train": len(t_rel), "val": None if v_rel is None else len(v_rel),
                                          "test": len(test_keys)},
              f"the file holds {n} samples; the {protocol} protocol needs at least {2 if protocol == 'paper' else 3}")
        norm = None
        if layout == "cfd":                              # UnitGaussianNormalizer fitted on training inputs
            tr_idx = [train_keys[i] for i in t_rel]
            x0 = np.concatenate([f[n][:, 0, ::rx] for n in ("density", "pressure", "Vx")], 1)[tr_idx]   # (n, 3X)
            mu, sd = _unit_gaussian(x0.astype(np.float32))
            norm = (mu[None].astype(np.float32), sd[None].astype(np.float32))
            del x0
    finally:
        f.close()
    mk = lambda ks, t=t_idx: PDEDataset(spec.name, path, ks, layout, t, rx, cin, cout, norm)
    train = mk([train_keys[i] for i in t_rel])
    val = None if v_rel is None else mk([train_keys[i] for i in v_rel])
    test_orca = mk(test_keys, t_orca) if t_orca != t_idx else None       # the same samples, ORCA's frame
    return train, val, mk(test_keys), {"val_from": "carved" if val is not None else None, "target_index": t_idx,
                                       "orca_target_index": t_orca, "test_orca": test_orca, "file_md5": dl.md5}
