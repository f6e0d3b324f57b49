"""Source surrogates for MoNA's stage-1 outer loss (Ma et al., ICML 2024, arXiv 2406.18864): CIFAR-10, CoNLL-2003,
their synthetic stand-ins, and class-balanced batches.

Paper map
---------
Paper §4 ("Following ORCA, we use CoNLL-2003 and CIFAR-10 as the source modality datasets to compute the
outer-loop meta loss") and App. A.6: labelled source samples (x^s, y^s) feed the frozen source embedder, then the
encoder at the virtually updated weights (Alg. 1, stage 1); paper §2.2 / Fig. 3 probe the encoder on CIFAR-10
(probe.py uses the "test" split). data.load_source_surrogate is the entry point; this module holds the readers.

| symbol                             | code                        | shape (per sample)                         |
|------------------------------------|-----------------------------|--------------------------------------------|
| x^s (2D bodies)                    | `_cifar10` -> SourceDataset | (3, 32, 32) float32, CIFAR-10 mean/std     |
| x^s (1D bodies)                    | `_conll` -> SourceDataset   | input_ids (CONLL_SEQ_LEN,) int64           |
| padding of x^s (1D)                | `SourceDataset.pad_id`      | int: attention_mask = (ids != pad_id)      |
| y^s                                | `SourceDataset.labels`      | int64 (): class 0..9 / PER, ORG, LOC, MISC |
| no files                           | `_synthetic_source`         | the same shapes, seeded                    |
| positive pairs (Alg. 1 outer loss) | `ClassBalancedBatchSampler` | k classes × m >= 2 samples per batch       |

Primary sources: ORCA (github.com/sjunhongshen/ORCA) `src/embedder.py: get_tgt_model` draws 5,000 CIFAR-10
training images with training augmentation (RandomCrop(32, 4) + HFlip, drawn once) and ORCA's Normalize constants;
its 1D source is `src/data_loaders.py: load_text`, precomputed RoBERTa input embeddings `text_xs_32.npy` /
`text_ys_32.npy` whose corpus and labels are not documented (github.com/sjunhongshen/ORCA/issues/4: "a
subset of the CoNLL dataset"). We read CoNLL-2003 itself (https://www.clips.uantwerpen.be/conll2003/ner/;
Hugging Face Hub `eriktks/conll2003`) and make one sample per entity mention (`_conll`, DEVIATION noted there).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Sampler

from readers.fileio import DataError, Download, _bad, _cifar_rows, _corrupt, _fetch
from readers.splits import IndexedDataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)    # ORCA's constants
CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")        # source labels 0..3 of the CoNLL-2003 surrogate
CONLL_SEQ_LEN = 32                                 # the 32 of ORCA's text_xs_32.npy (`load_text`)
SYNTHETIC_PAD_ID = 1                               # synthetic CoNLL ids: <s>=0, </s>=2, tokens >= 3; 1 never occurs
SOURCE_SPLITS = ("train", "test")                  # load_source_surrogate(split=...): outer loss / probe test
CONLL_FILES = {"train": ("eng.train", "train.txt"), "test": ("eng.testb", "test.txt")}   # original / Hub export
SOURCE_DIR = "train.py --source-dir DIR (default: its --data-dir)"   # where the surrogates' folders live
SOURCE_LAYOUT = {"cifar10": "DIR/cifar-10-batches-py/ (data_batch_1..5, test_batch)",
                 "conll2003": "DIR/conll2003/eng.train (+ eng.testb for the test split)"}
CIFAR10_DOWNLOAD = Download("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "c58f30108f718f92721af3b95e74349a", extract=True)


# --------------------------------------------------------------------------------------------------
# Source surrogates (stage 1 outer loss): CIFAR-10 (2D bodies) and CoNLL-2003 (1D bodies)
# --------------------------------------------------------------------------------------------------
class SourceDataset(IndexedDataset):
    """(x^s, y^s) pairs held in memory; `labels` for ClassBalancedBatchSampler. Token sources (CoNLL-2003 and
    its synthetic stand-in) set `pad_id`, the id that marks padding: attention_mask = (ids != pad_id); None for
    images."""

    def __init__(self, x: torch.Tensor, y: np.ndarray, pad_id: int | None = None):
        self.x, self._labels, self.pad_id = x, np.asarray(y, np.int64), pad_id
        self.idx = np.arange(len(y), dtype=np.int64)

    def _item(self, r):
        return self.x[r], torch.tensor(int(self._labels[r]), dtype=torch.int64)


def _cifar10(data_dir, max_samples, seed, download, split="train"):
    """CIFAR-10 python batches: split "train" = data_batch_1..5 (50,000 images, ORCA's once-drawn crop/flip),
    split "test" = test_batch (10,000 images, no augmentation). Both: max_samples rows drawn with `seed`,
    then Normalize(CIFAR-10 mean/std). ds.rows = the chosen rows of that split's images."""
    d = os.path.join(data_dir, "cifar-10-batches-py")
    origin = f"{CIFAR10_DOWNLOAD.url} (MD5 {CIFAR10_DOWNLOAD.md5})"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if download and not os.path.exists(os.path.join(d, files[-1])):
        _fetch(data_dir, CIFAR10_DOWNLOAD)
    for f in files:
        if not os.path.exists(os.path.join(d, f)):
            raise DataError(f"source 'cifar10' (the stage-1 surrogate of 2D bodies): missing {os.path.join(d, f)}; "
                            f"put the CIFAR-10 python batches in {SOURCE_LAYOUT['cifar10']} with {SOURCE_DIR}, "
                            f"or pass --download (download=True) to fetch {origin}")
    xs, ys = zip(*(_cifar_rows("cifar10", os.path.join(d, f), "labels") for f in files))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.min() < 0 or y.max() > 9:
        raise _bad("cifar10", d, "labels 0..9", f"range {y.min()}..{y.max()}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x), min(max_samples, len(x)), replace=False))
    out = np.empty((len(idx), 3, 32, 32), np.float32)
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (CIFAR10_MEAN, CIFAR10_STD))
    for j, r in enumerate(idx):
        a = x[r].astype(np.float32) / 255.0                                  # (3, 32, 32) in [0, 1]
        if split == "train":   # ORCA: training augmentation (RandomCrop(32, 4) + HFlip) drawn once
            a = np.pad(a, ((0, 0), (4, 4), (4, 4)))
            i0, j0 = rng.integers(0, 9, 2)
            a = a[:, i0:i0 + 32, j0:j0 + 32]
            a = a[:, :, ::-1] if rng.random() < 0.5 else a
        out[j] = (a - mean) / std                                            # Normalize
    ds = SourceDataset(torch.from_numpy(out), y[idx])
    ds.rows = idx                                  # rows of the split's images (50,000 train / 10,000 test)
    return ds


def conll_mentions(path: str) -> list[tuple[list[str], list[str], int]]:
    """(sentence words, mention words, type id) for every entity mention of a CoNLL-2003 file.
    Accepts IOB1 (original files) and IOB2 (Hub): a mention starts at B-X, or at I-X after a tag of another type."""
    out, words, tags = [], [], []

    def flush():
        cur, start = None, 0
        for i, t in enumerate(tags + ["O"]):
            typ = t[2:] if t[:2] in ("B-", "I-") else None
            if cur is not None and (typ != cur or t.startswith("B-")):
                out.append((list(words), words[start:i], CONLL_TYPES.index(cur)))
                cur = None
            if typ is not None and cur is None:
                if typ not in CONLL_TYPES:
                    raise DataError(f"source 'conll2003': {path}: unknown entity type {typ!r}; expected {CONLL_TYPES}")
                cur, start = typ, i
        words.clear()
        tags.clear()

    try:
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                cols = line.split()
                if not cols or cols[0] == "-DOCSTART-":
                    flush()
                    continue
                if len(cols) < 2:
                    raise DataError(f"source 'conll2003': {path} line {ln}: expected 'word POS chunk NE' columns, "
                                    f"found {line.strip()!r}")
                words.append(cols[0])
                tags.append(cols[-1])
        flush()
    except UnicodeDecodeError as e:
        raise _corrupt("conll2003", path, "UTF-8 CoNLL text", e) from None
    if not out:
        raise DataError(f"source 'conll2003': {path} has no entity mentions (expected CoNLL-2003 NE tags)")
    return out


def _conll(data_dir, tokenizer, max_samples, seed, seq_len, split="train"):
    """One sample per entity mention of the split's file (CONLL_FILES: eng.train / eng.testb, or the Hub
    export's train.txt / test.txt): input_ids = tokenizer(mention, sentence) as a pair, truncated/padded to
    seq_len (RoBERTa: <s> mention </s></s> sentence </s> <pad>...), label = its type (PER, ORG, LOC, MISC);
    `pad_id` = the tokenizer's pad_token_id.
    DEVIATION from ORCA's undocumented text_xs_32 features (`load_text`): an entity-typing formulation of
    CoNLL-2003 with whole-sample labels; we return token ids, the frozen source embedder makes the features."""
    origin = ("CoNLL-2003 (https://www.clips.uantwerpen.be/conll2003/ner/ annotations + Reuters RCV1 text, or the "
              "Hugging Face Hub dataset eriktks/conll2003 exported to CoNLL text); no stable direct URL")
    cands = [os.path.join(data_dir, "conll2003", f) for f in CONLL_FILES[split]]
    path = next((p for p in cands if os.path.exists(p)), None)
    if path is None:
        raise DataError(f"source 'conll2003' (the stage-1 surrogate of 1D bodies, {split} split): missing {cands[0]} "
                        f"(or {cands[1]}); put CoNLL-2003 in {SOURCE_LAYOUT['conll2003']} with {SOURCE_DIR}; "
                        f"the body's own tokenizer reads it; get it from {origin}")
    if tokenizer is None:
        raise DataError("source 'conll2003': pass tokenizer= (the source model's, e.g. roberta-base's "
                        "AutoTokenizer) to turn the text into input_ids")
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise DataError("source 'conll2003': the tokenizer has no pad token (pad_token_id is None); the surrogate "
                        f"pads every sample to {seq_len} ids and marks padding with it")
    mentions = conll_mentions(path)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(mentions), min(max_samples, len(mentions)), replace=False))
    ids, labels = [], []
    for i in pick:
        sent, ment, lab = mentions[i]
        enc = tokenizer(" ".join(ment), " ".join(sent), truncation=True, max_length=seq_len, padding="max_length")
        row = list(enc["input_ids"])
        if len(row) != seq_len:
            raise DataError(f"source 'conll2003': the tokenizer returned {len(row)} ids, expected {seq_len} "
                            "(it must support truncation and padding='max_length')")
        ids.append(row)
        labels.append(lab)
    return SourceDataset(torch.tensor(ids, dtype=torch.int64), np.asarray(labels), pad_id=int(pad_id))


def _synthetic_source(source, n, seed, vocab_size, seq_len, split="train"):
    """n samples, balanced classes, of a seeded class-conditional distribution that both splits share:
    cifar10 x = template_y + 0.5 ε (templates from `seed` only, not from n or the split); conll2003 ids drawn
    half from the class's own band of the vocabulary. The split only picks the seed of the draw (labels, noise),
    so a probe trained on the train split generalises to the test split. conll2003: no padding; `pad_id` =
    SYNTHETIC_PAD_ID, an id the synthetic tokens never use."""
    k = 10 if source == "cifar10" else len(CONLL_TYPES)
    rng = np.random.default_rng([seed, 104729, SOURCE_SPLITS.index(split) + 1])   # this split's draw
    y = np.arange(n) % k
    rng.shuffle(y)
    if source == "cifar10":
        t = np.random.default_rng([seed, 104729, 0]).standard_normal((k, 3, 32, 32)).astype(np.float32)  # shared
        x = t[y] + 0.5 * rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        return SourceDataset(torch.from_numpy(x), y)
    if vocab_size < 3 + 2 * k:
        raise DataError(f"synthetic conll2003: vocab_size must be >= {3 + 2 * k}, got {vocab_size}")
    # token ids in [3, vocab_size): half the tokens of class c come from its own band (learnable signal)
    band = (vocab_size - 3) // k
    own = 3 + y[:, None] * band + rng.integers(0, band, (n, seq_len - 2))
    other = rng.integers(3, vocab_size, (n, seq_len - 2))
    body = np.where(rng.random((n, seq_len - 2)) < 0.5, own, other)
    x = np.concatenate([np.zeros((n, 1), np.int64), body, np.full((n, 1), 2)], 1)   # <s>=0 ... </s>=2
    return SourceDataset(torch.from_numpy(x.astype(np.int64)), y, pad_id=SYNTHETIC_PAD_ID)


# --------------------------------------------------------------------------------------------------
# Class-balanced batches (Alg. 1 outer loss: every class in a batch has >= 2 samples -> positive pairs)
# --------------------------------------------------------------------------------------------------
class ClassBalancedBatchSampler(Sampler):
    """Batches of `classes_per_batch` distinct classes × `samples_per_class` distinct samples each.
    Classes with fewer than samples_per_class members are never drawn. Each class cycles through a fresh
    permutation of its members; a new pass starts each epoch, seeded by (seed, epoch)."""

    def __init__(self, labels, classes_per_batch: int, samples_per_class: int, seed: int = 0):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if samples_per_class < 2:
            raise DataError(f"ClassBalancedBatchSampler: samples_per_class must be >= 2 (positive pairs), "
                            f"got {samples_per_class}")
        self.members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        self.eligible = sorted(c for c, m in self.members.items() if len(m) >= samples_per_class)
        if not 1 <= classes_per_batch <= len(self.eligible):
            raise DataError(f"ClassBalancedBatchSampler: {classes_per_batch} classes per batch requested but only "
                            f"{len(self.eligible)} classes have >= {samples_per_class} samples")
        self.k, self.m, self.seed, self.epoch = classes_per_batch, samples_per_class, seed, 0
        self.n_batches = max(1, sum(len(self.members[c]) for c in self.eligible) // (self.k * self.m))

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        pools = {c: list(rng.permutation(self.members[c])) for c in self.eligible}
        for _ in range(self.n_batches):
            batch = []
            for c in rng.choice(self.eligible, size=self.k, replace=False):
                if len(pools[c]) < self.m:                      # refill with a fresh pass (no duplicates)
                    pools[c] = list(rng.permutation(self.members[c]))
                batch += [int(pools[c].pop()) for _ in range(self.m)]
            yield batch
