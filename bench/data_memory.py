"""Benchmark (not a test): memory of the lazy PDEBench reader (readers/pdebench.py, via data.load_task) vs the file size.

Writes a PDEBench-format HDF5 file (`tensor` (N, T, 1024) float32, the layout of 1D_Burgers_Sols_Nu1.0.hdf5)
of about FILE_GB gigabytes in /tmp, in chunks, then in fresh processes:
  lazy : data.load_task("burgers", ..., max_train_samples=N_USED) and read every training and test sample;
  naive: what ORCA's UNetDatasetSingle does, np.array(f["tensor"]) (the whole file in memory).
Reports the peak RSS growth of each process (ru_maxrss − RSS after imports) against the bytes the task uses
(2 frames × 1024 × 4 B per sample) and the file size. The file is deleted at the end.

Run: python bench/data_memory.py
"""
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILE_GB = 1.5          # target file size on disk
T, X = 201, 1024       # frames and grid points per sample (the published Burgers file has T = 201, X = 1024)
N_USED = 300           # training samples the task uses (max_train_samples)
CHUNK = 100            # samples written per chunk


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: KiB


def write_file(path: str, n: int) -> None:
    import h5py
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("tensor", shape=(n, T, X), dtype="f4")
        f["x-coordinate"] = np.linspace(0, 1, X)
        f["t-coordinate"] = np.linspace(0, 2, T + 1)
        for s in range(0, n, CHUNK):
            ds[s:s + CHUNK] = rng.standard_normal((min(CHUNK, n - s), T, X), dtype=np.float32)


def measure_lazy(data_dir: str, q) -> None:
    sys.path.insert(0, ROOT)
    import torch
    import data
    torch.set_num_threads(1)
    rss0 = _rss_mb()
    t0 = time.time()
    td = data.load_task("burgers", data_dir, max_train_samples=N_USED)
    n = 0
    for ds in (td.train, td.val, td.test):
        for i in range(len(ds)):
            x, y = ds[i]
            n += 1
    q.put(dict(samples=n, rss0=rss0, growth=_peak_mb() - rss0, seconds=time.time() - t0,
               used_mb=n * 2 * X * 4 / 2**20, sizes=td.info["sizes"]))


def measure_naive(data_dir: str, q) -> None:
    import h5py
    rss0 = _rss_mb()
    t0 = time.time()
    with h5py.File(os.path.join(data_dir, "1D_Burgers_Sols_Nu1.0.hdf5"), "r") as f:
        a = np.array(f["tensor"], dtype=np.float32)                    # ORCA: the whole file
    pairs = a[:, [0, -1]].copy()
    del a
    q.put(dict(rss0=rss0, growth=_peak_mb() - rss0, seconds=time.time() - t0, kept_mb=pairs.nbytes / 2**20))


def _run(fn, data_dir):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(data_dir, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main():
    n = int(FILE_GB * 2**30 // (T * X * 4))
    with tempfile.TemporaryDirectory(prefix="mona-bench-", dir="/tmp") as d:
        path = os.path.join(d, "1D_Burgers_Sols_Nu1.0.hdf5")
        t0 = time.time()
        write_file(path, n)
        size_mb = os.path.getsize(path) / 2**20
        print(f"file: {path}  N={n} T={T} X={X}  {size_mb:,.0f} MiB on disk (written in {time.time() - t0:.1f} s)")
        lazy = _run(measure_lazy, d)
        print(f"lazy  (data.load_task, max_train_samples={N_USED}): read {lazy['samples']} samples "
              f"(train/val/test {lazy['sizes']}) = {lazy['used_mb']:.2f} MiB used; peak RSS growth "
              f"{lazy['growth']:.1f} MiB = {lazy['growth'] / size_mb:.2%} of the file; {lazy['seconds']:.1f} s")
        naive = _run(measure_naive, d)
        print(f"naive (np.array(f['tensor']), ORCA's loader): peak RSS growth {naive['growth']:,.0f} MiB "
              f"= {naive['growth'] / size_mb:.0%} of the file; {naive['seconds']:.1f} s")
    print(f"file deleted: {not os.path.exists(path)}")


if __name__ == "__main__":
    main()
