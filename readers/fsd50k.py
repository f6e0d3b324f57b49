"""FSD50K reader and its log-mel features for MoNA (Ma et al., ICML 2024, arXiv 2406.18864).

Paper map
---------
App. A.1, Table 8 lists FSD50K (Fonseca et al., 2022) among the NAS-Bench-360 tasks: 200 sound-event labels per
clip (multi-label, BCE with pos_weight 10, metric 1 − mAP); Table 9 its stage-2 settings (registry row in
data.py). The features and augmentation are NAS-Bench-360's audio pipeline as ORCA runs it
(github.com/sjunhongshen/ORCA, `src/data_loaders.py: load_fsd`, with `AudioParser`, `SpectrogramDataset`,
`FSD50kEvalDataset`, `BackgroundAddMixer`, `SpecAugment` and `get_transforms_fsd_chunks` in `src/utils.py`).
Contract: reader(spec, data_dir, val_fraction, seed, protocol) -> (train, val, test, extras).
Protocols: "strict" trains on tr.csv and validates on val.csv (NB360's published split); "paper" trains on tr.csv
only and has no validation split, as ORCA's `load_fsd` (it builds a val.csv set but returns it unused with
`valid_split: False`), so val.csv is not read. Test = eval.csv in both; ORCA's test-time treatment is ours
(`test_orca` None).

| step                                                         | code             | shape                      |
|--------------------------------------------------------------|------------------|----------------------------|
| triangular HTK-mel filters (torchaudio melscale_fbanks, norm=None) | `mel_filterbank` | (961, 96)            |
| power |STFT|² -> mel -> dB (top_db 80) -> + 75 -> minus the mean | `log_mel`      | (n,) -> (96, 1 + n // 220) |
| pad (wrap, or constant = min) or crop to 102 frames          | `_to_frames`     | (96, T) -> (96, 102)       |
| SpecAugment: 1-2 masks of <= 15 % of mels and <= 20 % of frames | `_spec_augment` | (96, 102)                |
| WAV at 22,050 Hz -> float in [-1, 1), tiled to >= 1 s        | `_read_wav`      | (n,)                       |
| train: one item per clip; eval: one per chunk, `groups` = clip | `FSDDataset`   | x (1, 96, 102), y (200,)   |

Known bugs of the earlier loader, and what we do
------------------------------------------------
- ORCA's `load_fsd` reads from its cluster path (/run/determined/workdir/shared_fs/data) and its CSV entries
  name files there. We read data_dir/fsd50k; `_resolve_chunk` re-roots a CSV path after its last `chunks` folder.
- Matched on purpose: `load_fsd` materialises one random chunk per training clip once, before training, so its
  augmentation is drawn once and frozen for all epochs. `FSDDataset` draws chunk and augmentation once per clip
  from `seed`.
- Evaluation pools the chunks of a clip (mean of their logits; registry `group_reduce="mean"`), as ORCA does.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import torch

from readers.fileio import _bad, _corrupt, _path
from readers.splits import IndexedDataset, _need

FSD = dict(sr=22050, n_fft=1920, win=661, hop=220, n_mels=96, frames=102, top_db=80.0, offset=75.0)


# --------------------------------------------------------------------------------------------------
# Log-mel features of 1-s chunks (NB360 / ORCA `AudioParser`), pad/crop, SpecAugment, WAV input
# --------------------------------------------------------------------------------------------------
_MEL_FB: dict = {}


def mel_filterbank(sr=FSD["sr"], n_fft=FSD["n_fft"], n_mels=FSD["n_mels"]) -> np.ndarray:
    """Triangular HTK-mel filters (n_fft/2+1, n_mels), torchaudio.functional.melscale_fbanks(norm=None)."""
    all_f = np.linspace(0, sr // 2, n_fft // 2 + 1)
    # mel(f) = 2595 log10(1 + f/700)
    m = np.linspace(0.0, 2595.0 * np.log10(1.0 + (sr // 2) / 700.0), n_mels + 2)
    f_pts = 700.0 * (10 ** (m / 2595.0) - 1.0)
    slopes = f_pts[None, :] - all_f[:, None]                                  # (n_freqs, n_mels + 2)
    down, up = -slopes[:, :-2] / np.diff(f_pts)[:-1], slopes[:, 2:] / np.diff(f_pts)[1:]
    return np.maximum(0.0, np.minimum(down, up))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(n_samples,) at 22,050 Hz -> (96, 1 + n//220) log-mel as NB360/ORCA's AudioParser: power mel
    spectrogram (n_fft 1920, win 661, hop 220, Hann, centred reflect padding) -> power_to_db (top_db 80) -> +75
    -> minus the per-sample mean."""
    fb = _MEL_FB.setdefault("fb", torch.from_numpy(mel_filterbank()).float())
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(audio, np.float32)), n_fft=FSD["n_fft"],
                      hop_length=FSD["hop"], win_length=FSD["win"], window=torch.hann_window(FSD["win"]),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2   # |STFT|² (961, T)
    mel = fb.T @ spec                                                                   # (96, T)
    db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))                               # power_to_db, ref 1
    db = torch.maximum(db, db.max() - FSD["top_db"]) + FSD["offset"]
    return (db - db.mean()).numpy()


def _to_frames(spec, n, rng=None, wrap=False):
    """Pad (centred; constant = min, or wrap) or crop (centre; random with rng) the time axis to n frames."""
    T = spec.shape[1]
    if T < n:
        off = (n - T) // 2
        pad = ((0, 0), (off, n - T - off))
        return np.pad(spec, pad, "wrap") if wrap else np.pad(spec, pad, constant_values=spec.min())
    s = (T - n) // 2 if rng is None else int(rng.integers(0, T - n + 1))
    return spec[:, s:s + n]


def _spec_augment(spec, rng, num_mask=2, freq=0.15, time=0.20):
    spec, value = spec.copy(), spec.min()
    for _ in range(int(rng.integers(1, num_mask + 1))):
        nf = int(rng.uniform(0, freq) * spec.shape[0])
        f0 = int(rng.uniform(0, spec.shape[0] - nf))
        spec[f0:f0 + nf] = value
        nt = int(rng.uniform(0, time) * spec.shape[1])
        t0 = int(rng.uniform(0, spec.shape[1] - nt))
        spec[:, t0:t0 + nt] = value
    return spec


def _read_wav(task, path) -> np.ndarray:
    import scipy.io.wavfile
    try:
        sr, a = scipy.io.wavfile.read(path)
    except (ValueError, OSError, EOFError) as e:
        raise _corrupt(task, path, "a WAV file", e) from None
    if sr != FSD["sr"]:
        raise _bad(task, path, f"{FSD['sr']} Hz audio", f"{sr} Hz")
    if a.dtype.kind in "iu":                                   # PCM -> [-1, 1) as soundfile does
        half = 2.0 ** (8 * a.dtype.itemsize - 1)
        a = (a.astype(np.float64) - (half if a.dtype.kind == "u" else 0.0)) / half
    a = np.asarray(a, np.float32)
    a = a.mean(1) if a.ndim == 2 else a
    if len(a) < FSD["sr"]:                                     # min_duration 1 s: tile
        a = np.tile(a, FSD["sr"] // max(len(a), 1) + 1)[:FSD["sr"]]
    return a


class FSDDataset(IndexedDataset):
    """FSD50K 1-s chunks. train: one item per clip = one chunk chosen once, with NB360/ORCA's augmentation
    (pad wrap/constant, SpecAugment p .5, background noise mix p .75, α ~ U(0, .5)) drawn once per clip from
    `seed` (ORCA's load_fsd freezes them for all epochs). eval: one item per chunk; `groups` = clip ids."""

    def __init__(self, task, files, labels, clips, noise_files, *, train: bool, seed: int = 0):
        self.task, self.files, self.y, self.clips = task, files, labels, clips
        self.noise_files, self.train, self.seed = noise_files, train, seed
        self.unique = np.unique(clips)
        if train:
            self.idx = np.arange(len(self.unique), dtype=np.int64)
            self._groups = np.arange(len(self.unique))
        else:
            self.idx = np.arange(len(files), dtype=np.int64)
            self._groups = np.searchsorted(self.unique, clips)

    def _item(self, r):
        if not self.train:
            x = _to_frames(log_mel(_read_wav(self.task, self.files[r])), FSD["frames"])
            return torch.from_numpy(x[None].astype(np.float32)), torch.from_numpy(self.y[r])
        rng = np.random.default_rng([self.seed, r])
        chunk = rng.choice(np.flatnonzero(self.clips == self.unique[r]))
        x = _to_frames(log_mel(_read_wav(self.task, self.files[chunk])), FSD["frames"], rng, wrap=rng.random() < 0.5)
        if rng.random() < 0.5:
            x = _spec_augment(x, rng)
        if self.noise_files and rng.random() < 0.75:
            bg = log_mel(_read_wav(self.task, self.noise_files[int(rng.integers(len(self.noise_files)))]))
            alpha = rng.uniform(0.0, 0.5)
            x = (1 - alpha) * x + alpha * _to_frames(bg, FSD["frames"], rng)        # BackgroundAddMixer
        return torch.from_numpy(x[None].astype(np.float32)), torch.from_numpy(self.y[chunk])


def _resolve_chunk(root, p):
    """CSV paths may be absolute paths of another machine: keep the part after the last 'chunks' folder."""
    if os.path.isabs(p) and os.path.exists(p):
        return p
    parts = p.replace("\\", "/").split("/")
    if "chunks" in parts:
        parts = parts[len(parts) - parts[::-1].index("chunks"):]
        return os.path.join(root, "chunks", *parts)
    return os.path.join(root, p.lstrip("/"))


def _read_fsd50k(spec, data_dir, val_fraction, seed, protocol):
    splits = ("train", "val", "test") if protocol == "strict" else ("train", "test")
    files = [spec.files[i] for i, s in enumerate(("train", "val", "test")) if s in splits] + [spec.files[3]]
    paths = [_path(spec.name, data_dir, f, spec.origin) for f in files]
    try:
        with open(paths[-1]) as f:
            lbl_map = json.load(f)
    except (ValueError, OSError) as e:
        raise _corrupt(spec.name, paths[-1], "JSON", e) from None
    if not isinstance(lbl_map, dict) or len(lbl_map) != spec.num_classes:
        raise _bad(spec.name, paths[-1], f"a JSON map of {spec.num_classes} label names -> index",
                   f"{type(lbl_map).__name__} of {len(lbl_map) if hasattr(lbl_map, '__len__') else '?'}")
    root = os.path.join(data_dir, "fsd50k")
    noise_dir = os.path.join(root, "noise_22050")
    noise = sorted(os.path.join(noise_dir, f) for f in os.listdir(noise_dir) if f.endswith(".wav")) \
        if os.path.isdir(noise_dir) else []
    out = []
    for split, p in zip(splits, paths[:-1]):
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), reader.fieldnames or []
        if any(k not in columns for k in ("files", "labels", "ext")):
            raise _bad(spec.name, p, "CSV columns files, labels, ext", f"columns {columns or 'none'}")
        _need(spec.name, p, protocol, {split: len(rows)})
        y = np.zeros((len(rows), spec.num_classes), np.float32)
        for i, row in enumerate(rows):
            for name in row["labels"].split(","):
                if name not in lbl_map:
                    raise _bad(spec.name, p, "labels listed in lbl_map.json", f"unknown label {name!r} (row {i + 2})")
                y[i, int(lbl_map[name])] = 1.0
        files = [_resolve_chunk(root, row["files"]) for row in rows]
        out.append(FSDDataset(spec.name, files, y, np.asarray([row["ext"] for row in rows]), noise,
                              train=split == "train", seed=seed))
    if protocol == "paper":
        return out[0], None, out[1], {"val_from": None}
    return (*out, {"val_from": "published"})
