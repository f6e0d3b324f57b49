"""The demo's synthetic source and target (train.py --demo): two modalities built from the same primitives, so that
what a body learns on the source can transfer to the target (Ma et al., ICML 2024, arXiv 2406.18864, §2.1).

Why: cross-modality transfer pays when the source body's knowledge is useful for the target although the target
arrives in another form (§2.1, Fig. 1). The plain synthetic data (`--synthetic-data`: a random template per class
for the task, another for the source) shares nothing between source and target, so nothing can transfer: on
it a pretrained body did no better than a random one. Here both sides are made of one set of primitives:

| modality    | primitive k                                   | a sample of class {a, b}                            |
|-------------|-----------------------------------------------|-----------------------------------------------------|
| 2D source   | a 3 x 4 x 4 pattern (unit RMS; 4 = the tiny   | a 32 x 32 image: noise + primitives a and b, each   |
| (CIFAR-10)  |   Swin's patch)                               |   stamped twice at random places on the patch grid  |
| 2D target   | the same pattern, seen through a fixed        | the task's (C, H, W) image: noise + a and b at      |
|             |   channel mixing (3 -> C channels)            |   random places, then the channel mixing            |
| 1D source   | a band of token ids (8 bands of the           | a sequence of ids: a quarter from band a, a quarter |
| (CoNLL)     |   vocabulary, above <s> </s> <pad>)           |   from band b, the rest from the whole vocabulary   |
| 1D target   | a waveform of one token's length (C x s       | the task's (C, L) signal, s values per token: each  |
|             |   values, s = the 1D embedder's patch)        |   token the waveform of a band drawn as for the     |
|             |                                               |   source, plus noise                                |

A class is an unordered pair of primitives. The source classes and the target classes are *different* pairs of
the *same* primitives (SOURCE_PAIRS; `target_pairs`): the source teaches the body to detect the primitives, the
target asks for new combinations of them, in another form (the modality gap: another colour mixing; waveforms
instead of token ids), which a new target embedder has to bridge. The target uses at most `MAX_CLASSES` classes
(labels 0..K-1 of the task's head). Everything is deterministic in (seed, split, index); the primitives depend on
nothing (one world for every seed, as a published checkpoint is one for every fine-tuning seed).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from readers.splits import IndexedDataset

N_PRIMITIVES = {"2d": 10, "1d": 8}
PATCH = 4                           # 2D primitive side (pixels) = the patch of the tiny Swin
COPIES = 2                          # 2D: each primitive of the pair is stamped COPIES times
SOURCE_PAIRS = {"2d": [(k, (k + 1) % 10) for k in range(10)],    # 10 CIFAR-10-like source classes
                "1d": [(2 * k, 2 * k + 1) for k in range(4)]}    # 4 CoNLL-like source classes (PER ORG LOC MISC)
MAX_CLASSES = 10                    # target classes used (of the task's K)
NOISE = {"2d": 0.5, "1d": 2.0}      # Gaussian noise around the unit-RMS primitives
BAND_SHARE = 0.25                   # 1D: share of tokens from each of the class's two bands
WORLD_SEED = 271828                 # the primitives, the pairs and the channel mixing: one world


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([WORLD_SEED, *key])


def patterns_2d() -> np.ndarray:
    """(P, 3, PATCH, PATCH) float32, each of unit RMS."""
    p = _rng(1).standard_normal((N_PRIMITIVES["2d"], 3, PATCH, PATCH)).astype(np.float32)
    return p / np.sqrt((p ** 2).mean(axis=(1, 2, 3), keepdims=True))


def target_pairs(dim: str, num_classes: int) -> list:
    """The target's classes: pairs of primitives that are not source classes, in a fixed shuffled order, the first
    min(num_classes, MAX_CLASSES) of them."""
    src = {frozenset(p) for p in SOURCE_PAIRS[dim]}
    rest = [p for p in itertools.combinations(range(N_PRIMITIVES[dim]), 2) if frozenset(p) not in src]
    order = _rng(2, N_PRIMITIVES[dim]).permutation(len(rest))
    return [rest[i] for i in order[:min(num_classes, MAX_CLASSES, len(rest))]]


def channel_mixing(channels: int) -> np.ndarray:
    """(C, 3): the 2D target's view of the 3 source colour channels (orthogonal for C = 3), fixed."""
    a = _rng(3, channels).standard_normal((max(channels, 3), 3))
    q, _ = np.linalg.qr(a)                                          # orthonormal columns
    scale = 1.0 if channels == 3 else np.sqrt(3 / channels)        # C != 3: the same signal power per channel
    return (q[:channels] * scale).astype(np.float32)


def waveforms_1d(channels: int, s: int) -> np.ndarray:
    """(P, C, s) float32 band waveforms of unit RMS, fixed."""
    w = _rng(4, channels, s).standard_normal((N_PRIMITIVES["1d"], channels, s)).astype(np.float32)
    return w / np.sqrt((w ** 2).mean(axis=(1, 2), keepdims=True))


def image(pair, shape, rng, mixing=None) -> np.ndarray:
    """(C, H, W): noise + the pair's primitives at random places (the 3 source channels, then `mixing`)."""
    _, H, W = shape
    x = NOISE["2d"] * rng.standard_normal((3, H, W)).astype(np.float32)
    prims = patterns_2d()
    for k in [*pair] * COPIES:                                      # on the grid of PATCH x PATCH cells
        i, j = PATCH * rng.integers(0, H // PATCH), PATCH * rng.integers(0, W // PATCH)
        x[:, i:i + PATCH, j:j + PATCH] += prims[k]
    return x if mixing is None else np.tensordot(mixing, x, axes=1).astype(np.float32)


def bands(pair, n, rng) -> np.ndarray:
    """(n,) band of each token: BAND_SHARE from each band of the pair, the rest uniform over all bands."""
    u = rng.random(n)
    other = rng.integers(0, N_PRIMITIVES["1d"], n)
    return np.where(u < BAND_SHARE, pair[0], np.where(u < 2 * BAND_SHARE, pair[1], other))


def source_images(n: int, seed: int, split_key: int):
    """(x (n, 3, 32, 32) float32, y (n,) int64): the 2D source, classes = SOURCE_PAIRS['2d'], balanced."""
    rng = _rng(10, seed, split_key)
    y = np.arange(n) % len(SOURCE_PAIRS["2d"])
    rng.shuffle(y)
    x = np.stack([image(SOURCE_PAIRS["2d"][c], (3, 32, 32), rng) for c in y])
    return x, y


def source_tokens(n: int, seed: int, split_key: int, vocab_size: int, seq_len: int):
    """(ids (n, seq_len) int64 between <s>=0 and </s>=2, y (n,)): the 1D source; band b = ids
    [3 + b·w, 3 + (b + 1)·w), w = (vocab_size - 3) // P; a token's id is uniform inside its band."""
    rng = _rng(11, seed, split_key)
    P = N_PRIMITIVES["1d"]
    y = np.arange(n) % len(SOURCE_PAIRS["1d"])
    rng.shuffle(y)
    w = (vocab_size - 3) // P
    b = np.stack([bands(SOURCE_PAIRS["1d"][c], seq_len - 2, rng) for c in y])    # (n, seq_len - 2)
    ids = 3 + b * w + rng.integers(0, w, b.shape)
    x = np.concatenate([np.zeros((n, 1), np.int64), ids, np.full((n, 1), 2)], 1)
    return x.astype(np.int64), y


class PrimitiveTask(IndexedDataset):
    """A point classification task's split (spec.input_shape, labels 0..K-1, K = len(target_pairs)) built from the
    primitives; `patch` = the 1D embedder's token length (values along L per token). Generated per index."""

    def __init__(self, spec, n: int, seed: int, split: int, patch: int | None = None):
        self.spec, self.seed, self.split, self.patch = spec, seed, split, patch
        self.pairs = target_pairs(spec.dim, spec.num_classes)
        self.idx = np.arange(n, dtype=np.int64)
        self._labels = np.array([self._rng(i).integers(len(self.pairs)) for i in range(n)], np.int64)
        self.kind = "class"
        if spec.dim == "2d":
            self.mixing = channel_mixing(spec.input_shape[0])
        else:
            self.waves = waveforms_1d(spec.input_shape[0], patch)

    def _rng(self, r):
        return _rng(20, self.seed, self.split, int(r))

    def _item(self, r):
        rng = self._rng(r)
        y = int(rng.integers(len(self.pairs)))
        pair = self.pairs[y]
        if self.spec.dim == "2d":
            x = image(pair, self.spec.input_shape, rng, self.mixing)
        else:
            C, L = self.spec.input_shape
            n_tok = L // self.patch
            b = bands(pair, n_tok, rng)
            x = np.zeros((C, L), np.float32)
            x[:, :n_tok * self.patch] = self.waves[b].transpose(1, 0, 2).reshape(C, -1)
            x += NOISE["1d"] * rng.standard_normal((C, L)).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.tensor(y, dtype=torch.int64)
