"""Tests for readers/fileio.py: bad input (wrong keys and shapes, truncated and corrupted files) gives a one-line
DataError through every reader, and downloads from a local 127.0.0.1 server are MD5-checked, atomic and
extracted safely."""
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import pickle
import sys
import tarfile
import threading

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
from readers import fileio  # noqa: E402
from data import DataError, load_task  # noqa: E402
from data_helpers import _write_ninapro, _write_pde  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Bad input: missing, wrong keys/shapes, truncated/corrupted files
# --------------------------------------------------------------------------------------------------
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
    fileio.download_file(f"{url}/f.bin", str(dest), md5)
    assert dest.read_bytes() == b"hello" * 1000
    for bad_url, bad_md5, pattern in ((f"{url}/f.bin", "0" * 32, "MD5"), (f"{url}/short", None, "got 10 of 1000|failed"),
                                      (f"{url}/missing", None, "failed")):
        dest2 = tmp_path / "dl2" / "g.bin"
        with pytest.raises(DataError, match=pattern):
            fileio.download_file(bad_url, str(dest2), bad_md5)
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
    bad = dataclasses.replace(spec, downloads=(fileio.Download("cifar-100-python.tar.gz", f"{url}/cifar-100-python.tar.gz",
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
        fileio._extract_tar(str(tmp_path / "evil.tar.gz"), str(tmp_path / "out"))
    assert not (tmp_path / "evil.txt").exists() and os.listdir(tmp_path / "out") == []
