"""Helpers shared by the data tests (test_data.py, test_nb360.py, test_fsd50k.py, test_pdebench.py,
test_sources.py, test_fileio.py): tiny files in a task's native format, and the per-item check of a task's
shapes and dtypes."""
import gzip
import os
import pickle
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402


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


def _write_cifar(path, n, label_key, rng, bytes_keys=False):
    d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, 100 if label_key ==
         "fine_labels" else 10, n).tolist(), "filenames": [f"{i}.png" for i in range(n)], "batch_label": "x"}
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def _write_spherical(root, rng, sizes=(("train", 20), ("test", 6))):
    """NB360's s2_cifar100.gz: a gzip pickle {split: {"images": (n, 3, 60, 60) uint8, "labels": (n,)}}."""
    d = {s: {"images": rng.integers(0, 256, (n, 3, 60, 60)).astype(np.uint8), "labels": rng.integers(0, 100, n)}
         for s, n in sizes}
    with gzip.open(os.path.join(root, "s2_cifar100.gz"), "wb") as f:
        pickle.dump(d, f)
    return d


def _write_ninapro(root, rng, shape=(52, 16)):
    (root / "ninaPro").mkdir(exist_ok=True)
    out = {}
    for s, n in (("train", 12), ("val", 4), ("test", 5)):
        out[s] = (rng.standard_normal((n, *shape)), rng.integers(0, 18, n))
        np.save(root / "ninaPro" / f"ninapro_{s}.npy", out[s][0])
        np.save(root / "ninaPro" / f"label_{s}.npy", out[s][1])
    return out


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


def _write_cosmic(root, rng, sizes=(("train", 10), ("test", 3))):
    """cosmic/{train,test}_dirs.npy listing './<split>/f435w_GAL/<k>_img.npy' stacks (3, 256, 256) [image, CR mask,
    ignore] and a sky.npy per folder (sky_k = 10 k), as ORCA's preprocess_cosmic.py writes them."""
    root = root / "cosmic"
    stacks = {}
    for split, n in sizes:
        (root / split / "f435w_GAL").mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            rel = f"{split}/f435w_GAL/{i + 1}_img.npy"
            s = np.stack([rng.standard_normal((256, 256)), rng.random((256, 256)) > 0.9, rng.random((256, 256)) > 0.8])
            np.save(root / rel, s.astype(np.float32))
            stacks[split, i] = s
            paths.append("./" + rel)
        np.save(root / f"{split}_dirs.npy", np.array(paths, dtype=str))
        np.save(root / split / "f435w_GAL" / "sky.npy", np.arange(1, n + 1, dtype=np.float32) * 10)
    return stacks


def _write_ecg(path, rng, n=30, lengths=(2500, 4000)):
    """challenge2017.pkl: n records of random length, labels N, A, O, ~ in turn."""
    recs = [rng.standard_normal(int(rng.integers(*lengths))) * 3 + 1 for _ in range(n)]
    labels = [["N", "A", "O", "~"][i % 4] for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump({"data": recs, "label": labels}, f)
    return recs, labels
