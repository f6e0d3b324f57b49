"""Tests for data.py: the task registry against the paper's Tables 9/11 and ORCA's 1D token counts, synthetic
data, custom data, and the messages for missing files. The native readers have their own tests
(test_nb360.py, test_fsd50k.py, test_pdebench.py, test_sources.py, test_fileio.py)."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
from data import DataError, load_task  # noqa: E402
from data_helpers import _check_item  # noqa: E402

try:                                   # the keys losses.py / metrics.py really have (else the keys they are meant to have)
    import losses
    import metrics
    LOSS_KEYS, METRIC_KEYS = set(losses.TASK_LOSSES), set(metrics.METRICS)
except ImportError:
    LOSS_KEYS = {"cross_entropy", "bce", "focal", "rel_l2", "mse", "rmse", "nrmse"}
    METRIC_KEYS = {"error", "one_minus_auroc", "one_minus_auroc_binarized", "one_minus_map", "one_minus_f1",
                   "rel_l2", "mae8", "nrmse", "mse"}


# --------------------------------------------------------------------------------------------------
# Registry against the paper / reference tables
# --------------------------------------------------------------------------------------------------
PAPER_HP = {
    "cifar100": (32, 60, 32, "sgd", 1e-4, 1e-3), "spherical": (32, 60, 4, "adamw", 1e-4, 1e-1),
    "ninapro": (32, 60, 1, "adam", 1e-4, 1e-5), "fsd50k": (32, 100, 1, "adam", 1e-4, 5e-5),
    "darcyflow": (4, 100, 1, "adamw", 1e-3, 5e-3), "psicov": (1, 10, 32, "adam", 5e-6, 1e-5),
    "cosmic": (4, 60, 1, "adamw", 1e-3, 0.0), "ecg": (4, 15, 16, "sgd", 1e-6, 1e-1),
    "satellite": (16, 60, 4, "adamw", 3e-5, 3e-6), "deepsea": (16, 13, 1, "adam", 1e-5, 0.0),
    "advection": (4, 200, 1, "adam", 1e-4, 1e-5), "burgers": (4, 200, 1, "adam", 1e-5, 1e-5),
    "diffusion-reaction-1d": (4, 200, 1, "sgd", 1e-3, 1e-5), "diffusion-sorption": (4, 200, 1, "adamw", 1e-4, 0.0),
    "navier-stokes-1d": (4, 200, 1, "adamw", 1e-4, 1e-3), "darcy-pde": (4, 100, 1, "adamw", 1e-4, 1e-5),
    "shallow-water": (4, 200, 1, "adamw", 1e-4, 0.0), "diffusion-reaction-2d": (4, 200, 1, "adam", 1e-4, 1e-3),
}


ORCA_TOKENS = {"ecg": 50, "satellite": 46, "deepsea": 500, "advection": 256, "burgers": 512,   # ORCA Embeddings1D
               "diffusion-reaction-1d": 256, "diffusion-sorption": 32, "navier-stokes-1d": 128}


def test_registry_matches_paper_tables():
    assert set(data.TASKS) == set(PAPER_HP)
    for name, hp in PAPER_HP.items():
        s = data.TASKS[name]
        assert (s.batch_size, s.epochs, s.accum, s.optimizer, s.lr, s.weight_decay) == hp, name
        assert s.loss in LOSS_KEYS and s.metric in METRIC_KEYS, name
        assert (s.stage1_optimizer, s.stage1_lr, s.stage1_weight_decay, s.stage1_epochs) == ("adamw", 3e-5, 0.1, 10)
        assert s.source == ("cifar10" if s.dim == "2d" else "conll2003")
        assert len(s.input_shape) == (2 if s.dim == "1d" else 3)
        assert s.output_shape == ((s.num_classes,) if s.output == "point" else (s.num_classes, *s.input_shape[1:]))
        assert s.files and s.origin and s.description and s.reader in data.READERS
    assert data.TASKS["fsd50k"].loss_kwargs == {"pos_weight": 10.0} and data.TASKS["fsd50k"].multilabel
    assert data.TASKS["deepsea"].loss_kwargs == {"pos_weight": 4.0} and data.TASKS["deepsea"].multilabel
    assert data.TASKS["ecg"].momentum == 0.99 and data.TASKS["cifar100"].momentum == 0.9
    assert data.TASKS["shallow-water"].warmup_epochs == 10 and data.TASKS["deepsea"].decay_epochs == 25


def test_target_seq_len_gives_orca_token_counts():
    for name, tokens in ORCA_TOKENS.items():
        assert data.num_tokens(data.TASKS[name]) == tokens, name
    try:                                   # the embedder's own rule, where that module is present
        from embedders import compute_stack_num
    except ImportError:
        return
    for name, tokens in ORCA_TOKENS.items():
        s = data.TASKS[name]
        assert s.input_shape[-1] // compute_stack_num(s.input_shape[-1], s.target_seq_len) == tokens


def test_get_task_names_aliases_and_unknown():
    assert data.get_task("PDEBG").name == "burgers" and data.get_task("darcy_pde").name == "darcy-pde"
    with pytest.raises(DataError, match="unknown task 'imagenet'.*cifar100.*custom"):
        data.get_task("imagenet")
    with pytest.raises(DataError, match="unknown task"):
        load_task("imagenet", synthetic=True)
    with pytest.raises(DataError, match="custom"):
        data.get_task("custom")


# --------------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(data.TASKS))
def test_synthetic_every_task(name):
    td = load_task(name, synthetic=True, seed=3)
    assert (len(td.train), len(td.val), len(td.test)) == (64, 16, 16)
    for ds in (td.train, td.val, td.test):
        _check_item(td.spec, *ds[0])
    x0, y0 = td.train[0]
    x1, y1 = load_task(name, synthetic=True, seed=3).train[0]       # seeded
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    if td.spec.loss == "bce" and td.spec.output == "dense":
        assert set(torch.unique(y0).tolist()) <= {0.0, 1.0}


def test_synthetic_signal_is_learnable():
    td = load_task("cifar100", synthetic=True, synthetic_sizes=(200, 1, 1))
    T = td.train.templates.reshape(100, -1)                            # nearest template classifies
    hits = [int((T @ td.train[i][0].numpy().ravel()).argmax()) == int(td.train[i][1]) for i in range(len(td.train))]
    assert np.mean(hits) > 0.9                                         # chance 0.01
    ds = load_task("advection", synthetic=True).train                  # dense: y is a function of x
    x, y = ds[0]
    assert torch.allclose(y, torch.tanh(x.mean(0, keepdim=True)) + 1.0)


def test_max_train_samples_subsamples_training_only():
    td = load_task("ecg", synthetic=True, max_train_samples=10, seed=1)
    assert (len(td.train), len(td.val), len(td.test)) == (10, 16, 16)
    assert set(td.train.idx) < set(range(64))


# --------------------------------------------------------------------------------------------------
# Custom data
# --------------------------------------------------------------------------------------------------
def _disjoint_cover(train, val, n):
    a, b = set(train.idx.tolist()), set(val.idx.tolist())
    assert not a & b and a | b == set(range(n))


def _save(d, **arrs):
    for k, v in arrs.items():
        np.save(d / f"{k}.npy", v)


def test_custom_inference(tmp_path):
    rng = np.random.default_rng(14)
    cases = {   # (train_x, train_y, expected dim, output, loss, metric, output_shape)
        "cls1d": (rng.standard_normal((20, 2, 50)), rng.integers(0, 3, 20), "1d", "point", "cross_entropy", "error", (3,)),
        "reg2d": (rng.standard_normal((20, 1, 8, 8)), rng.standard_normal(20), "2d", "point", "mse", "mse", (1,)),
        "ml": (rng.standard_normal((20, 1, 30)), (rng.random((20, 5)) < .5).astype(np.int64), "1d", "point", "bce",
               "one_minus_auroc", (5,)),
        "dense2d": (rng.standard_normal((20, 3, 8, 8)), rng.standard_normal((20, 8, 8)), "2d", "dense", "mse", "nrmse",
                    (1, 8, 8)),
        "dense1d": (rng.standard_normal((20, 1, 40)), rng.standard_normal((20, 2, 40)), "1d", "dense", "mse", "nrmse",
                    (2, 40)),
    }
    for key, (x, y, dim, out, loss, metric, oshape) in cases.items():
        d = tmp_path / key
        d.mkdir()
        _save(d, train_x=x, train_y=y, test_x=x[:4], test_y=y[:4])
        td = load_task("custom", d)
        s = td.spec
        assert (s.dim, s.output, s.loss, s.metric, s.output_shape) == (dim, out, loss, metric, oshape), key
        assert s.input_shape == x.shape[1:] and (len(td.train), len(td.val), len(td.test)) == (18, 2, 4)
        _disjoint_cover(td.train, td.val, 20)
        xi, yi = td.test[1]
        _check_item(s, xi, yi)
        assert torch.allclose(xi, torch.from_numpy(x[1]).float())
        assert data.get_task("custom", d) == s
    d = tmp_path / "withval"
    d.mkdir()
    x, y = cases["cls1d"][:2]
    _save(d, train_x=x, train_y=y, test_x=x[:4], test_y=y[:4], val_x=x[:3], val_y=y[:3])
    td = load_task("custom", d)
    assert (len(td.train), len(td.val)) == (20, 3) and td.info["val_from"] == "published"


@pytest.mark.parametrize("arrays, pattern", [
    (dict(train_x=np.zeros((5, 2, 8)), train_y=np.zeros(4, int), test_x=np.zeros((2, 2, 8)), test_y=np.zeros(2, int)),
     "train_x.npy has 5 samples but train_y.npy has 4"),
    (dict(train_x=np.zeros((5, 8)), train_y=np.zeros(5, int), test_x=np.zeros((2, 8)), test_y=np.zeros(2, int)),
     r"must be \(N, C, L\).*found shape \(5, 8\)"),
    (dict(train_x=np.full((5, 1, 8), np.nan), train_y=np.arange(5) % 2, test_x=np.zeros((2, 1, 8)),
          test_y=np.zeros(2, int)), "NaN"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2, test_x=np.zeros((2, 1, 9)), test_y=np.zeros(2, int)),
     "per-sample shape"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2, val_x=np.zeros((2, 1, 8)), test_x=np.zeros((2, 1, 8)),
          test_y=np.zeros(2, int)), "only one of val_x"),
    (dict(train_x=np.zeros((5, 1, 8)), train_y=np.arange(5) % 2), "missing .*test_x.npy"),
])
def test_custom_errors(tmp_path, arrays, pattern):
    _save(tmp_path, **arrays)
    with pytest.raises(DataError, match=pattern) as e:
        load_task("custom", tmp_path)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# Missing files: the message names the path and where the file comes from
# --------------------------------------------------------------------------------------------------
def test_missing_files_name_path_and_source(tmp_path):
    with pytest.raises(DataError) as e:
        load_task("spherical", tmp_path)
    msg = str(e.value)
    assert "'spherical'" in msg and str(tmp_path / "s2_cifar100.gz") in msg and "drive.google.com" in msg
    assert "download=True cannot" in msg and "\n" not in msg
    with pytest.raises(DataError) as e:
        load_task("burgers", tmp_path)
    assert str(tmp_path / "1D_Burgers_Sols_Nu1.0.hdf5") in str(e.value) and "darus" in str(e.value)
    assert "download=True" in str(e.value)
    with pytest.raises(DataError, match="data_dir"):
        load_task("ecg")
    with pytest.raises(DataError, match="eng.train"):
        data.load_source_surrogate("conll2003", tmp_path, tokenizer=object())
