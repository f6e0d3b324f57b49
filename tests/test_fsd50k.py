"""Tests for readers/fsd50k.py: FSD50K read through data.load_task from tiny CSV / JSON / WAV files in the layout of
NAS-Bench-360's audio.zip, and the log-mel features against a pure tone."""
import json
import os
import sys

import numpy as np
import pytest
import scipy.io.wavfile
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readers import fsd50k  # noqa: E402
from data import DataError, load_task  # noqa: E402
from data_helpers import _check_item  # noqa: E402


def _write_wav(path, rng, n=22050, freq=None):
    t = np.arange(n) / 22050
    a = np.sin(2 * np.pi * freq * t) if freq else rng.standard_normal(n) * 0.1
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.wavfile.write(path, 22050, (a * 20000).astype(np.int16))


def _write_fsd(tmp_path, rng):
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
    return root


def test_fsd50k_native(tmp_path):
    rng = np.random.default_rng(3)
    root = _write_fsd(tmp_path, rng)
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
    m = fsd50k.log_mel(a.astype(np.float32) / 32768)
    assert m.shape == (96, 101) and torch.allclose(x[0, :, :101], torch.from_numpy(m))
    assert torch.all(x[0, :, 101] == x.min())


def test_log_mel_pure_tone_peaks_at_its_frequency(tmp_path):
    fb = fsd50k.mel_filterbank()
    assert fb.shape == (961, 96) and (fb >= 0).all()
    centres = np.fft.rfftfreq(1920, 1 / 22050)[fb.argmax(0)]                  # centre of each filter
    for f0 in (440.0, 3000.0):
        t = np.arange(22050) / 22050
        m = fsd50k.log_mel(np.sin(2 * np.pi * f0 * t).astype(np.float32))
        assert abs(centres[m.mean(1).argmax()] - f0) < 0.1 * f0


def test_fsd50k_paper_trains_on_tr_csv_without_val(tmp_path):
    """ORCA's load_fsd trains on tr.csv only (its val.csv set is returned unused with valid_split False)."""
    root = _write_fsd(tmp_path, np.random.default_rng(4))
    st = load_task("fsd50k", tmp_path, seed=0)
    (root / "chunks" / "val.csv").unlink()                            # not needed by the paper protocol
    td = load_task("fsd50k", tmp_path, seed=0, protocol="paper")
    assert td.val is None and td.info["sizes"] == (2, 0, 4) and td.test_orca is None
    assert td.train.files == st.train.files and torch.equal(td.train[1][0], st.train[1][0])
    assert td.test.groups.tolist() == st.test.groups.tolist()
    s = td.spec
    assert (s.paper_metric, s.paper_group_reduce, s.eval_chunk) == ("one_minus_map_orca", "mean", 0)   # ORCA: clip level, whole set
    (root / "chunks" / "tr.csv").write_text("files,labels,ext\n")     # a header without rows
    with pytest.raises(DataError, match="tr.csv gives an empty train split") as e:
        load_task("fsd50k", tmp_path, protocol="paper")
    assert "\n" not in str(e.value)
