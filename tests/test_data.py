"""Tests for data.py: the task registry against the paper's Tables 9/11, ORCA's 1D token counts and ORCA's
evaluation settings (src/configs/*.yaml), the two protocols on synthetic data, and the messages for
missing files and bad arguments. The native readers have their own tests
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
ORCA_METRIC_KEYS = {"mae8_orca", "one_minus_auroc_orca", "one_minus_map_orca"}   # ORCA's definitions (metrics.py)


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


ORCA_EVAL = {   # ORCA src/configs/<task>.yaml: eval_batch_size, maxsamples; src/task_configs.py: get_metric
    "cifar100": (1000, 128), "spherical": (1000, 128), "ninapro": (1000, 128), "fsd50k": (0, 128),
    "darcyflow": (1000, 128), "psicov": (1, 64), "cosmic": (1000, 128), "ecg": (1000, 128),
    "satellite": (1000, 128), "deepsea": (1000, 64), "darcy-pde": (100, 128)}


def test_registry_orca_evaluation_fields():
    for name, s in data.TASKS.items():
        chunk, maxs = ORCA_EVAL.get(name, (1000, 128))           # the other PDE configs: 1000, 128
        assert (s.eval_chunk, s.orca_maxsamples) == (chunk, maxs), name
        assert s.paper_metric is None or s.paper_metric in METRIC_KEYS | ORCA_METRIC_KEYS, name
        assert isinstance(s.paper_metric_kwargs, dict)
        assert s.paper_group_reduce == ("mean" if name == "fsd50k" else None), name   # ECG: ORCA scores windows
    assert {n: s.paper_metric for n, s in data.TASKS.items() if s.paper_metric} == {
        "psicov": "mae8_orca", "deepsea": "one_minus_auroc_orca", "fsd50k": "one_minus_map_orca"}
    assert {n for n, s in data.TASKS.items() if s.orca_test} == {
        "cosmic", "ecg", "diffusion-reaction-1d", "diffusion-sorption", "shallow-water", "diffusion-reaction-2d"}
    assert data.TASKS["cosmic"].metric == "one_minus_auroc_binarized" and not data.TASKS["cosmic"].paper_metric


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


@pytest.mark.parametrize("name", list(data.TASKS))
def test_synthetic_paper_protocol(name):
    td = load_task(name, synthetic=True, seed=3, protocol="paper")
    st = load_task(name, synthetic=True, seed=3, protocol="strict")
    assert td.val is None and td.info["sizes"] == (64, 0, 16) and td.info["protocol"] == "paper"
    assert st.info["sizes"] == (64, 16, 16) and st.info["protocol"] == "strict"
    assert torch.equal(td.train[5][0], st.train[5][0]) and torch.equal(td.test[5][0], st.test[5][0])
    for t in (td, st):                           # a synthetic test_orca where ORCA's test treatment differs
        assert (t.test_orca is not None) == bool(td.spec.orca_test)
        if t.test_orca is not None:
            assert len(t.test_orca) == 16
            _check_item(td.spec, *t.test_orca[0])
    assert load_task(name, synthetic=True).info["protocol"] == "strict"     # the library default


def test_bad_protocol_and_empty_synthetic_split():
    with pytest.raises(DataError, match="protocol must be one of paper, strict.*'bogus'") as e:
        load_task("cifar100", synthetic=True, protocol="bogus")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="custom"):                  # protocol is checked before anything else
        load_task("custom", protocol="paper")
    with pytest.raises(DataError, match=r"synthetic_sizes \(8, 0, 4\) gives an empty val split.*train 8, val 0, test 4"):
        load_task("ecg", synthetic=True, synthetic_sizes=(8, 0, 4))
    assert load_task("ecg", synthetic=True, synthetic_sizes=(8, 0, 4), protocol="paper").info["sizes"] == (8, 0, 4)


def test_concat_rows_reads_parts_as_one_store():
    a, b = np.arange(6).reshape(3, 2), np.arange(10, 14).reshape(2, 2)
    c = data.ConcatRows(a, b)
    assert len(c) == 5 and [c[i].tolist() for i in range(5)] == np.concatenate([a, b]).tolist()
    assert np.asarray(c).tolist() == np.concatenate([a, b]).tolist()
    ds = data.ArrayDataset(data.ConcatRows(a[:, None], b[:, None]), data.ConcatRows(np.array([0, 1, 2]), np.array([3, 4])))
    assert ds.labels.tolist() == [0, 1, 2, 3, 4] and ds[4][0].tolist() == [[12.0, 13.0]]


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


def test_synthetic_psicov_targets_carry_label_padding_that_mae8_can_read():
    # the synthetic PSICOV test split must look like NB360's: a protein of length L inside 100 Å label padding,
    # so both MAE8 definitions can infer L (before: every row was "protein" and mae8 refused L = 507)
    import metrics
    td = load_task("psicov", synthetic=True, synthetic_sizes=(2, 2, 2), protocol="strict")
    y = torch.stack([td.test[i][1] for i in range(2)]).numpy()
    L = metrics._infer_psicov_lengths(y[:, 0], metrics.PSICOV_OFFSET, metrics.PSICOV_PAD_VALUE)
    assert ((64 <= L) & (L < 400)).all(), L
    pred = y + 0.5
    assert np.isfinite(metrics.mae8(pred, y)) and np.isfinite(metrics.METRICS["mae8_orca"](pred, y))
