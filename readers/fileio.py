"""Safe file access and downloads for the data loaders of MoNA (Ma et al., ICML 2024, arXiv 2406.18864).

Paper map
---------
No equation lives here. App. A.1 (Tables 8 and 10) names the benchmark files, from NAS-Bench-360 (Tu et al.,
2022) and PDEBench (Takamoto et al., 2022), that the readers in readers/nb360.py, readers/fsd50k.py, readers/pdebench.py and readers/sources.py
open through these helpers. Each helper turns what pickle / numpy / h5py / scipy raise on a missing, truncated or
mis-shaped file into one `DataError` line naming the task, the path and what was expected (train.py prints it
without a traceback).

| file kind                       | code                                                | written that way by     |
|---------------------------------|-----------------------------------------------------|-------------------------|
| (any data problem)              | `DataError`; `_path` missing, `_bad` wrong keys or shape, `_corrupt` unreadable |  |
| pickle, gzip pickle (.pkl, .gz) | `_load_pickle`; `_key`, `_has` (str or bytes keys)  | NB360 (Python-2 pickles) |
| .npy, object .npy               | `_load_npy` (memory-mapped when possible)           | NB360                   |
| .npz                            | `_npz_arrays` (stored members memory-mapped)        | DeepSEA (NB360)         |
| HDF5                            | `_open_h5`                                          | PDEBench (DaRUS)        |
| MATLAB v5 / v7.3                | `_mat_fields`                                       | FNO's Darcy files (1)   |
| CIFAR python batches            | `_cifar_rows`                                       | CIFAR-10 / CIFAR-100 (2) |
| downloads                       | `Download`, `download_file`, `_extract_tar`, `_fetch` |                       |
(1) read as ORCA's `MatReader` does (github.com/sjunhongshen/ORCA, `src/data_loaders.py`): scipy, else h5py.
(2) format: https://www.cs.toronto.edu/~kriz/cifar.html

Safety: pickles (`.pkl`, `.gz`, CIFAR batches, object `.npy`) are only ever read from paths under the
`data_dir` the user passed; never from a download of unknown origin (downloads are MD5-checked archives/HDF5).
A download is written atomically (temporary file + os.replace); tar members that are links, devices or paths
leaving the target folder are refused.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np


# --------------------------------------------------------------------------------------------------
# Errors and download records
# --------------------------------------------------------------------------------------------------
class DataError(Exception):
    """Bad or missing data; the message is one line (train.py prints it without a traceback)."""


@dataclass(frozen=True)
class Download:
    filename: str           # written to data_dir/filename
    url: str
    md5: str | None
    extract: bool = False   # a .tar.gz to unpack in data_dir


# --------------------------------------------------------------------------------------------------
# Safe file access: one-line DataErrors instead of tracebacks deep inside pickle / numpy / h5py / scipy
# --------------------------------------------------------------------------------------------------
def _path(task: str, data_dir: str, rel: str, origin: str, downloadable: bool = False) -> str:
    p = os.path.join(data_dir, rel)
    if not os.path.exists(p):
        hint = " or let train.py --download (data.load_task(..., download=True)) fetch it" if downloadable else ""
        raise DataError(f"task '{task}': missing {p}; get it from {origin}{hint}")
    return p


def _bad(task: str, path: str, expected: str, found: str) -> DataError:
    return DataError(f"task '{task}': {path}: expected {expected}, found {found}")


def _corrupt(task: str, path: str, kind: str, err: BaseException) -> DataError:
    msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return DataError(f"task '{task}': cannot read {path} as {kind} (truncated or corrupted?): {msg}")


_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                  IndexError, KeyError, OSError, zlib.error, UnicodeDecodeError, MemoryError)


def _load_pickle(task: str, path: str, encoding: str = "ASCII"):
    """Unpickle a file under the user's data_dir (gzip-compressed when it ends in .gz)."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            return pickle.load(f, encoding=encoding)
    except _PICKLE_ERRORS as e:
        raise _corrupt(task, path, "a pickle", e) from None


def _load_npy(task: str, path: str, *, allow_pickle: bool = False, mmap: bool = True):
    """np.load of a .npy (memory-mapped when possible); object arrays only when allow_pickle (data_dir files).
    Without allow_pickle, a sound file of Python objects (dtype=object) gets its own line: it is not corrupted,
    its values need a numeric dtype."""
    try:
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError:
            dtype = _npy_dtype(path)
            if dtype is None or not dtype.hasobject:
                raise
            if not allow_pickle:
                raise DataError(f"task '{task}': {path} holds Python objects (dtype=object), which are not "
                                f"read (loading them runs pickle code); save the values as a numeric array, "
                                f"e.g. np.save(path, np.asarray(y, dtype=np.int64)) for class labels or "
                                f"dtype=np.float32 for values") from None
            return np.load(path, allow_pickle=True, encoding="bytes")
    except _PICKLE_ERRORS as e:
        raise _corrupt(task, path, "a .npy array", e) from None


def _npy_header(f) -> tuple:
    """(shape, fortran_order, dtype) from the .npy header at f's position; f is left at the array's data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _npy_dtype(path: str):
    """The dtype in a .npy file's header, or None when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            return _npy_header(f)[2]
    except (ValueError, OSError, EOFError):
        return None


def _npz_arrays(task: str, path: str, keys: tuple) -> dict:
    """Members of an .npz; stored (uncompressed) members are memory-mapped, deflated ones read whole."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _corrupt(task, path, "an .npz archive", e) from None
    with zf:
        names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        missing = [k for k in keys if k not in names]
        if missing:
            raise _bad(task, path, f"keys {list(keys)}", f"keys {sorted(names)}")
        out = {}
        for k in keys:
            info = zf.getinfo(names[k])
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    with open(path, "rb") as f:
                        f.seek(info.header_offset)
                        n_name, n_extra = struct.unpack("<HH", f.read(30)[26:30])
                        start = info.header_offset + 30 + n_name + n_extra
                        f.seek(start)
                        shape, fortran, dtype = _npy_header(f)
                        offset = f.tell()
                    if dtype.hasobject:
                        raise ValueError(f"member {k} holds Python objects")
                    if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
                        raise ValueError(f"member {k} is cut short")
                    out[k] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                                       order="F" if fortran else "C")
                else:
                    out[k] = np.load(io.BytesIO(zf.read(names[k])), allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error) as e:
                raise _corrupt(task, path, f"an .npz archive (member {k})", e) from None
        return out


def _open_h5(task: str, path: str):
    import h5py
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise _corrupt(task, path, "an HDF5 file", e) from None


def _mat_fields(task: str, path: str, names: tuple, n_max: int, step: int, size: int) -> dict:
    """MATLAB fields (N, H, W) -> [rows, ::step, ::step][:, :size, :size]; v5 via scipy, v7.3 via h5py
    (HDF5, axes stored reversed: (W, H, N)), read lazily."""
    import h5py
    import scipy.io
    try:
        if h5py.is_hdf5(path):                       # v7.3 = HDF5 (scipy raises NotImplementedError)
            raise NotImplementedError
        mat = scipy.io.loadmat(path, variable_names=list(names))
    except NotImplementedError:
        f = _open_h5(task, path)
        with f:
            if any(n not in f for n in names):
                raise _bad(task, path, f"fields {list(names)}", f"fields {sorted(f.keys())}") from None
            out = {}
            for n in names:
                ds = f[n]
                if ds.ndim != 3:
                    raise _bad(task, path, f"{n} with 3 axes (v7.3: W, H, N)", f"shape {ds.shape}") from None
                a = ds[::step, ::step, :min(n_max, ds.shape[2])][:size, :size]    # (W', H', n)
                out[n] = np.ascontiguousarray(np.transpose(a, (2, 1, 0)), dtype=np.float32)
            return out
    except (ValueError, TypeError, OSError, EOFError, zlib.error, MemoryError) as e:
        raise _corrupt(task, path, "a MATLAB .mat file", e) from None
    if any(n not in mat for n in names):
        raise _bad(task, path, f"fields {list(names)}", f"fields {sorted(k for k in mat if not k.startswith('__'))}")
    out = {}
    for n in names:
        if mat[n].ndim != 3:
            raise _bad(task, path, f"{n} of shape (N, H, W)", f"shape {mat[n].shape}")
        out[n] = np.ascontiguousarray(mat[n][:n_max, ::step, ::step][:, :size, :size], dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------------------
# Python-2 pickles (str or bytes keys) and the CIFAR python-batch format (CIFAR-10 and CIFAR-100)
# --------------------------------------------------------------------------------------------------
def _key(d: dict, k: str):
    """dict lookup accepting str or bytes keys (Python-2 pickles)."""
    return d[k] if k in d else d[k.encode()]


def _has(d, k: str) -> bool:
    return isinstance(d, dict) and (k in d or k.encode() in d)


def _cifar_rows(task, path, label_key):
    d = _load_pickle(task, path, encoding="latin1")
    if not (_has(d, "data") and _has(d, label_key)):
        raise _bad(task, path, f"a dict with 'data' and '{label_key}'",
                   f"{type(d).__name__} with keys {sorted(map(str, d)) if isinstance(d, dict) else '-'}")
    x, y = np.asarray(_key(d, "data")), np.asarray(_key(d, label_key), dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise _bad(task, path, f"data (N, 3072) uint8 and {label_key} (N,)", f"data {x.shape}, labels {y.shape}")
    return x.reshape(-1, 3, 32, 32), y        # row = 1024 R, 1024 G, 1024 B, each 32x32 row-major


# --------------------------------------------------------------------------------------------------
# Downloads (opt-in): atomic (tmp file + os.replace), MD5-checked, archives extracted safely
# --------------------------------------------------------------------------------------------------
def download_file(url: str, dest: str, md5: str | None = None, *, timeout: float = 60.0) -> str:
    """Fetch `url` to `dest` atomically; a wrong MD5 or a short transfer leaves no file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(os.path.abspath(dest)))
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            expected = r.headers.get("Content-Length")
            n = 0
            while chunk := r.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                n += len(chunk)
        if expected is not None and n != int(expected):
            raise DataError(f"download {url}: got {n} of {expected} bytes; nothing was written to {dest}")
        if md5 is not None and h.hexdigest() != md5.lower():
            raise DataError(f"download {url}: MD5 {h.hexdigest()} != expected {md5}; nothing was written to {dest}")
        os.replace(tmp, dest)
        return dest
    except DataError:
        raise
    except Exception as e:  # network, HTTP status, incomplete read, disk
        raise DataError(f"download {url} failed ({type(e).__name__}: {e}); nothing was written to {dest}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _extract_tar(archive: str, dest_dir: str) -> None:
    """Unpack into a temporary folder inside dest_dir (rejecting links, devices and paths leaving it),
    then move each top-level entry into place with os.replace."""
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf.getmembers():
                target = os.path.realpath(os.path.join(tmp, m.name))
                if not (m.isfile() or m.isdir()) or not (target + os.sep).startswith(os.path.realpath(tmp) + os.sep):
                    raise DataError(f"{archive}: unsafe member {m.name!r} (link, device or path outside); not extracted")
            tf.extractall(tmp, filter="data")
        for name in os.listdir(tmp):
            dst = os.path.join(dest_dir, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, name), dst)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt("download", archive, "a tar archive", e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fetch(data_dir: str, dl: Download) -> None:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, dl.filename)
    if not os.path.exists(path):
        download_file(dl.url, path, dl.md5)
    elif dl.md5 is not None and _md5(path) != dl.md5:
        raise DataError(f"{path} exists but its MD5 {_md5(path)} != {dl.md5} (from {dl.url}); delete it and retry")
    if dl.extract:
        _extract_tar(path, data_dir)
