"""Dataset views, the two split protocols and the training-split normaliser for MoNA (Ma et al., ICML 2024,
arXiv 2406.18864).

Paper map
---------
App. A.1 gives each task's data and Tables 9 / 11 its training budget; the paper does not say how a model is
selected. Two protocols (the table per task is "Protocols" in data.py's docstring): "paper" trains on what ORCA
trained on (train + validation merged, no validation split) and "strict" holds out a validation split for model
selection, so the test split only gives the final number. These are the pieces the readers share to build them.

| what                                                  | code                                            |
|-------------------------------------------------------|-------------------------------------------------|
| a split = rows `idx` of a store; `subset` composes    | `IndexedDataset`, `ArrayDataset`                |
| several arrays read as one store (train + val merged) | `ConcatRows`                                    |
| NB360's published cut: first 80 % train, the rest val | `_nb360_tail` (1)                               |
| a seeded carve where no validation split is published | `_carve`, `SPLIT_SEED`                          |
| the protocol names; an empty split as one line        | `PROTOCOLS`, `_check_protocol`, `_need`         |
| z = (v − μ)/(σ + eps), μ and σ point-wise over the training samples | `_unit_gaussian`, `NORM_EPS` (2)  |
| its decode, v = z·(σ + eps) + μ                       | `GaussianDecoder` (2)                           |
(1) NAS-Bench-360 `backbone/data_utils/load_data.py: load_cifar100_train_data, load_scifar100_data` (val_split 0.2).
(2) FNO's / ORCA's `UnitGaussianNormalizer` (github.com/sjunhongshen/ORCA, `src/data_loaders.py`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch.utils.data import Dataset

from readers.fileio import DataError

PROTOCOLS = ("paper", "strict")   # paper: ORCA's training set, no validation; strict: a held-out validation split
SPLIT_SEED = 0                 # validation carve: the same split for every run and seed
NORM_EPS = 1e-5                # UnitGaussianNormalizer eps (FNO / ORCA)


# --------------------------------------------------------------------------------------------------
# Datasets: views over index arrays (`subset` composes them; `groups` / `labels` follow the view)
# --------------------------------------------------------------------------------------------------
class IndexedDataset(Dataset):
    """Rows `idx` of an underlying store. Subclasses implement `_item(row) -> (x, y)`."""
    idx: np.ndarray
    _groups: np.ndarray | None = None     # per-row evaluation groups (clip / record ids)
    _labels: np.ndarray | None = None     # per-row single-label classes (class-balanced sampling)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self._item(int(self.idx[i]))

    def subset(self, rel) -> "IndexedDataset":
        new = copy.copy(self)
        new.idx = self.idx[np.asarray(rel, dtype=np.int64)]
        return new

    @property
    def groups(self):
        return None if self._groups is None else self._groups[self.idx]

    @property
    def labels(self):
        return None if self._labels is None else self._labels[self.idx]


def _y_tensor(y, kind: str) -> torch.Tensor:
    if kind == "class":
        return torch.tensor(int(y), dtype=torch.int64)
    return torch.as_tensor(np.array(y, dtype=np.float32))


class ArrayDataset(IndexedDataset):
    """In-memory or memory-mapped arrays; x_fn turns one stored row into the float32 input."""

    def __init__(self, x, y, idx=None, *, x_fn=None, y_kind="class", groups=None):
        self.x, self.y, self.x_fn, self.y_kind = x, y, x_fn, y_kind
        self.idx = np.arange(len(x), dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64)
        self._groups = None if groups is None else np.asarray(groups)
        self._labels = np.asarray(y).astype(np.int64) if y_kind == "class" else None

    def _item(self, r):
        x = np.asarray(self.x[r])
        x = np.ascontiguousarray(self.x_fn(x) if self.x_fn is not None else x, dtype=np.float32)
        if not x.flags.writeable:      # a row of a read-only memory map: torch wants its own, writable copy
            x = x.copy()               # (one row at a time; the file is never read whole)
        return torch.from_numpy(x), _y_tensor(self.y[r], self.y_kind)


class ConcatRows:
    """Rows of several arrays (or memory maps) read as one store, without copying them: row r of the whole is
    row r − offset of the part holding it. `np.asarray(store)` concatenates (used for small label arrays)."""

    def __init__(self, *parts):
        self.parts = parts
        self.ends = np.cumsum([len(p) for p in parts])

    def __len__(self):
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, r):
        k = int(np.searchsorted(self.ends, r, side="right"))
        return self.parts[k][r - (int(self.ends[k - 1]) if k else 0)]

    def __array__(self, dtype=None, copy=None):
        a = np.concatenate([np.asarray(p) for p in self.parts])
        return a if dtype is None else a.astype(dtype)


class GaussianDecoder(torch.nn.Module):
    """ORCA's UnitGaussianNormalizer.decode as a module: z·(σ + eps) + μ, σ/μ point-wise over training targets."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, eps: float = NORM_EPS):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.eps = eps

    def forward(self, z):
        return z * (self.std + self.eps) + self.mean


def _unit_gaussian(train: np.ndarray):
    """Point-wise mean and std (unbiased, as torch.std) over training samples (axis 0)."""
    return train.mean(0), train.std(0, ddof=1) if len(train) > 1 else np.zeros_like(train[0])


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
def _nb360_tail(n: int, train_share: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) as NB360's load_cifar100_train_data / load_scifar100_data (val_split 0.2):
    the first int(0.8 n) rows train, the rest validate (50,000 -> 40,000 / 10,000, NB360's published split)."""
    n_tr = min(max(1, int(train_share * n)), n - 1)
    return np.arange(n_tr), np.arange(n_tr, n)


def _carve(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) from n training rows; val = val_fraction of them, fixed SPLIT_SEED."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_protocol(protocol) -> str:
    if protocol not in PROTOCOLS:
        raise DataError(f"protocol must be one of {', '.join(PROTOCOLS)} (train.py --protocol), got {protocol!r}")
    return protocol


def _need(task: str, path, protocol: str, counts: dict, need: str = "") -> None:
    """One-line DataError when a split built from `path` is empty; counts = {split: number of samples}."""
    empty = [k for k, v in counts.items() if v is not None and v == 0]
    if empty:
        found = ", ".join(f"{k} {v}" for k, v in counts.items() if v is not None)
        raise DataError(f"task '{task}': {path} gives an empty {' and '.join(empty)} split under the {protocol} "
                        f"protocol ({found} samples){'; ' + need if need else ''}")
