"""Tests for readers/sources.py: the CIFAR-10 and CoNLL-2003 source surrogates read through data.load_source_surrogate
from tiny native files (oracles: numpy slicing of the batches we wrote, the tokenizer itself for CoNLL ids),
their synthetic stand-ins, and the class-balanced batch sampler."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
from readers import sources  # noqa: E402
from data import DataError  # noqa: E402
from data_helpers import _write_cifar  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Source surrogates
# --------------------------------------------------------------------------------------------------
def test_cifar10_surrogate_native(tmp_path):
    rng = np.random.default_rng(13)
    batches = [_write_cifar(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", 10, "labels", rng, bytes_keys=True)
               for i in range(1, 6)]
    ds = data.load_source_surrogate("cifar10", tmp_path, max_samples=30, seed=0)
    assert len(ds) == 30 and ds.labels.min() >= 0 and ds.labels.max() <= 9
    allx = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    ally = np.concatenate([b[b"labels"] for b in batches])
    mean, std = np.array(sources.CIFAR10_MEAN)[:, None, None], np.array(sources.CIFAR10_STD)[:, None, None]
    for j in (0, 17):                   # brute force over the 9 × 9 crops × 2 flips drawn once
        x, y = ds[j]
        a = np.pad(allx[ds.rows[j]] / 255.0, ((0, 0), (4, 4), (4, 4)))
        cands = [(c[:, :, ::-1] if fl else c) for i in range(9) for k in range(9) for fl in (0, 1)
                 for c in [a[:, i:i + 32, k:k + 32]]]
        assert min(np.abs((c - mean) / std - x.numpy()).max() for c in cands) < 1e-5
        assert int(y) == ally[ds.rows[j]]


CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
visits VBZ I-VP O
Germany NNP I-NP I-LOC
France NNP I-NP B-LOC
"""


def _tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def test_conll_surrogate_native(tmp_path):
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "eng.train").write_text(CONLL)
    m = sources.conll_mentions(str(tmp_path / "conll2003" / "eng.train"))
    assert [(" ".join(w), sources.CONLL_TYPES[t]) for _, w, t in m] == [
        ("EU", "ORG"), ("German", "MISC"), ("Peter Blackburn", "PER"), ("Germany", "LOC"), ("France", "LOC")]
    tok = _tokenizer(CONLL.split())
    ds = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0)
    assert len(ds) == 5 and sorted(ds.labels.tolist()) == [0, 1, 2, 2, 3]
    for j in range(5):
        x, y = ds[j]
        sent, ment, lab = next(mm for mm in m if mm[2] == int(y) and
                               tok(" ".join(mm[1]), " ".join(mm[0]), truncation=True, max_length=32,
                                   padding="max_length")["input_ids"] == x.tolist())
        assert x.dtype == torch.int64 and x.shape == (32,)
    with pytest.raises(DataError, match="tokenizer"):
        data.load_source_surrogate("conll2003", tmp_path)


def test_missing_surrogate_messages_name_source_dir_and_its_layout(tmp_path):
    """No dead end: each message names train.py --source-dir, what to put in it, and never --synthetic-data
    (it would replace the task's data too, and --task custom refuses it)."""
    def msg(*args, **kw):
        with pytest.raises(DataError) as e:
            data.load_source_surrogate(*args, **kw)
        m = str(e.value)
        assert "\n" not in m and "synthetic" not in m and "--source-dir" in m, m
        return m
    m = msg("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in m and "--download" in m
    assert "cifar-10-python.tar.gz" in m and "2D" in m
    m = msg("conll2003", tmp_path, tokenizer=object())
    assert str(tmp_path / "conll2003" / "eng.train") in m and "train.txt" in m and "1D" in m
    assert "tokenizer" in m and "eng.testb" in m
    m = msg("conll2003", tmp_path, tokenizer=object(), split="test")
    assert str(tmp_path / "conll2003" / "eng.testb") in m and "test.txt" in m
    for source, layout in (("cifar10", "cifar-10-batches-py/"), ("conll2003", "conll2003/eng.train")):
        assert layout in msg(source, None)


def test_synthetic_surrogates():
    c = data.load_source_surrogate("cifar10", synthetic=True)
    assert c[0][0].shape == (3, 32, 32) and c[0][0].dtype == torch.float32 and set(c.labels.tolist()) == set(range(10))
    t = data.load_source_surrogate("conll2003", synthetic=True, vocab_size=50)
    x = torch.stack([t[i][0] for i in range(len(t))])
    assert x.shape == (200, 32) and x.dtype == torch.int64 and int(x.max()) < 50 and set(t.labels.tolist()) == {0, 1, 2, 3}


def test_pad_id_marks_padding(tmp_path):
    """pad_id: the tokenizer's pad token (CoNLL-2003), an id the synthetic tokens never use; callers build
    attention_mask = (ids != pad_id). Sequences are still padded to seq_len."""
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "eng.train").write_text(CONLL)
    tok = _tokenizer(CONLL.split())
    for seq_len in (32, 20):
        ds = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0, seq_len=seq_len)
        assert ds.pad_id == tok.pad_token_id == 1
        for j in range(len(ds)):
            ids = ds[j][0]
            mask = ids != ds.pad_id
            assert ids.shape == (seq_len,) and mask[0] and ids[0] == 0             # <s> ... then padding only
            k = int(mask.sum())
            assert mask[:k].all() and not mask[k:].any() and ids[k - 1] == 2       # </s> closes the real tokens
    assert (ds.x == ds.pad_id).any()                                               # short sentences do pad
    t = data.load_source_surrogate("conll2003", synthetic=True, vocab_size=50)
    x = torch.stack([t[i][0] for i in range(len(t))])
    assert t.pad_id == sources.SYNTHETIC_PAD_ID and not (x == t.pad_id).any()      # never used: all real tokens
    assert data.load_source_surrogate("cifar10", synthetic=True).pad_id is None
    tok.pad_token = None
    with pytest.raises(DataError, match="no pad token") as e:
        data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok)
    assert "\n" not in str(e.value)


def test_cifar10_surrogate_test_split(tmp_path):
    """split="test" reads test_batch only, subsamples it with the seed and applies no augmentation."""
    rng = np.random.default_rng(21)
    te = _write_cifar(tmp_path / "cifar-10-batches-py" / "test_batch", 25, "labels", rng, bytes_keys=True)
    with pytest.raises(DataError, match="data_batch_1"):              # the train split reads other files
        data.load_source_surrogate("cifar10", tmp_path, max_samples=10)
    ds = data.load_source_surrogate("cifar10", tmp_path, max_samples=10, seed=3, split="test")
    allx, ally = te[b"data"].reshape(-1, 3, 32, 32), np.asarray(te[b"labels"])
    mean, std = np.array(sources.CIFAR10_MEAN)[:, None, None], np.array(sources.CIFAR10_STD)[:, None, None]
    assert len(ds) == 10 and len(set(ds.rows.tolist())) == 10 and ds.rows.max() < 25
    np.testing.assert_array_equal(ds.rows, np.sort(np.random.default_rng(3).choice(25, 10, replace=False)))
    for j in range(10):                  # exactly the normalised pixels: no crop, no flip
        x, y = ds[j]
        np.testing.assert_allclose(x.numpy(), (allx[ds.rows[j]] / 255.0 - mean) / std, atol=1e-5)
        assert int(y) == ally[ds.rows[j]]
    full = data.load_source_surrogate("cifar10", tmp_path, max_samples=5000, split="test")
    assert full.rows.tolist() == list(range(25))
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load_source_surrogate("cifar10", tmp_path, split="val")


CONLL_TEST = """-DOCSTART- -X- -X- O

Japan NNP I-NP B-LOC
beats VBZ I-VP O
Syria NNP I-NP B-LOC
in IN I-PP O
Asian JJ I-NP B-MISC
Cup NNP I-NP I-MISC
. . O O

Nadim NNP I-NP B-PER
Ladki NNP I-NP I-PER
"""


@pytest.mark.parametrize("name", ["eng.testb", "test.txt"])
def test_conll_surrogate_test_split(tmp_path, name):
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "eng.train").write_text(CONLL)
    with pytest.raises(DataError) as e:                             # only the train file exists
        data.load_source_surrogate("conll2003", tmp_path, tokenizer=object(), split="test")
    assert "eng.testb" in str(e.value) and "test.txt" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "conll2003" / name).write_text(CONLL_TEST)
    tok = _tokenizer((CONLL + CONLL_TEST).split())
    m = sources.conll_mentions(str(tmp_path / "conll2003" / name))
    assert [(" ".join(w), sources.CONLL_TYPES[t]) for _, w, t in m] == [
        ("Japan", "LOC"), ("Syria", "LOC"), ("Asian Cup", "MISC"), ("Nadim Ladki", "PER")]
    ds = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0, split="test")
    expected = sorted((tok(" ".join(w), " ".join(s), truncation=True, max_length=32, padding="max_length")
                       ["input_ids"], t) for s, w, t in m)
    assert sorted((ds[j][0].tolist(), int(ds[j][1])) for j in range(len(ds))) == expected
    train = data.load_source_surrogate("conll2003", tmp_path, tokenizer=tok, seed=0)
    assert len(train) == 5 and not {tuple(r) for r, _ in expected} & {tuple(train[j][0].tolist()) for j in range(5)}


def _nearest_centroid_error(x_fit, y_fit, x_eval, y_eval, k):
    """0-1 error of the nearest class mean (fitted on one set) on another set: brute-force distances."""
    c = np.stack([x_fit[y_fit == j].mean(0) for j in range(k)])       # (k, D)
    d = ((x_eval[:, None, :] - c[None]) ** 2).sum(-1)                 # (n, k)
    return float(np.mean(d.argmin(1) != y_eval))


def test_synthetic_surrogate_test_split_same_distribution():
    def arrays(ds):
        return torch.stack([ds[i][0] for i in range(len(ds))]).reshape(len(ds), -1).numpy(), ds.labels

    tr = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4))
    te = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, split="test", n_synthetic=60))
    again = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, split="test", n_synthetic=60))
    other = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=5))
    small = arrays(data.load_source_surrogate("cifar10", synthetic=True, seed=4, n_synthetic=30))
    np.testing.assert_array_equal(te[0], again[0])                       # seeded
    assert te[0].shape == (60, 3072) and set(te[1].tolist()) == set(range(10))
    assert np.abs(tr[0][:, None, :] - te[0][None]).max(-1).min() > 0.5  # a fresh draw, no repeated sample
    assert _nearest_centroid_error(*tr, *te, 10) == 0.0                   # same class templates
    assert _nearest_centroid_error(*small, *te, 10) == 0.0               # ... whatever the number of samples
    assert _nearest_centroid_error(*other, *te, 10) > 0.5                # another seed: other templates
    # conll2003: every split draws half its tokens from the class's band of the vocabulary
    V, k = 50, len(sources.CONLL_TYPES)
    for split in ("train", "test"):
        x, y = arrays(data.load_source_surrogate("conll2003", synthetic=True, vocab_size=V, seed=4, split=split))
        band = (x[:, 1:-1] - 3) // ((V - 3) // k)                        # (n, 30) band of each body token
        votes = np.stack([(band == c).sum(1) for c in range(k)], 1)      # (n, k)
        assert np.mean(votes.argmax(1) == y) > 0.95
        if split == "train":
            x_train = x
    assert not np.array_equal(x, x_train)


# --------------------------------------------------------------------------------------------------
# Class-balanced batches
# --------------------------------------------------------------------------------------------------
def test_class_balanced_batch_sampler():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3 + [3] * 1 + [4] * 5)
    s = sources.ClassBalancedBatchSampler(labels, classes_per_batch=3, samples_per_class=2, seed=0)
    batches = [b for _ in range(3) for b in s]
    assert len(batches) == 3 * len(s) and len(s) == 25 // 6
    for b in batches:
        assert len(b) == 6 and len(set(b)) == 6
        counts = np.bincount(labels[b], minlength=5)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2] and counts[3] == 0
    assert [list(b) for b in sources.ClassBalancedBatchSampler(labels, 3, 2, seed=0)] == batches[:len(s)]
    with pytest.raises(DataError, match="only 4 classes"):
        sources.ClassBalancedBatchSampler(labels, 5, 2)
    with pytest.raises(DataError, match=">= 2"):
        sources.ClassBalancedBatchSampler(labels, 2, 1)
    loader = torch.utils.data.DataLoader(data.load_source_surrogate("cifar10", synthetic=True),
                                         batch_sampler=sources.ClassBalancedBatchSampler(
                                             data.load_source_surrogate("cifar10", synthetic=True).labels, 4, 3))
    xb, yb = next(iter(loader))
    assert xb.shape == (12, 3, 32, 32) and sorted(np.bincount(yb.numpy())[np.bincount(yb.numpy()) > 0]) == [3] * 4
