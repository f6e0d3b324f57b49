"""Tasks, native-format loaders and source surrogates for MoNA (Ma et al., ICML 2024, arXiv 2406.18864).

Paper map
---------
| paper                                       | code                                                    |
|---------------------------------------------|---------------------------------------------------------|
| App. A.1, Table 8 (NAS-Bench-360 tasks)     | `TASKS` rows with benchmark "nb360"                      |
| App. A.1, Table 9 (stage-2 hyper-parameters)| `TaskSpec.batch_size ... decay_epochs` (+ datasets.md §5.1) |
| App. A.1, Table 10/11 (PDEBench tasks)      | `TASKS` rows with benchmark "pdebench"                   |
| App. A.1 stage 1: AdamW, lr 3e-5, wd 0.1, 10 epochs | `STAGE1`, copied into every `TaskSpec.stage1_*`   |
| §4 / App. A.6 source data: CIFAR-10, CoNLL-2003 | `load_source_surrogate`                              |
| App. A.2 1D embedder: N = L / stack_num tokens | `TaskSpec.target_seq_len`, `num_tokens()`             |
| Alg. 1 outer loss needs same-class source pairs | `ClassBalancedBatchSampler`                          |

| symbol            | code name                      | shape (per sample)                            |
|-------------------|--------------------------------|-----------------------------------------------|
| x (target input)  | `TaskData.train[i][0]`         | `spec.input_shape`: (C, L) or (C, H, W), float32 |
| y (target label)  | `TaskData.train[i][1]`         | int64 () / float32 (K,) multi-hot / float32 `spec.output_shape` |
| x^s, y^s (source) | `load_source_surrogate(...)[i]`| CIFAR-10 (3, 32, 32) float32 / CoNLL input_ids (32,) int64; label int64 () |
| K                 | `TaskSpec.num_classes`         | classes (point) or output channels (dense)    |

Data directory layout (`--data-dir` = `data_dir`), task by task, with where each file comes from
------------------------------------------------------------------------------------------------
NB360 files: NAS-Bench-360's Google shared drive (`NB360_DRIVE`, the location its README names); the per-file
S3 links below are NB360's "old links" and may be dead, so `download=True` does not use them.
PDEBench files: DaRUS (doi:10.18419/darus-2986), `https://darus.uni-stuttgart.de/api/access/datafile/<id>`, MD5 checked.

    cifar-100-python/{train,test}           cifar100   https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (download=True)
    s2_cifar100.gz                          spherical  gzip pickle {'train','test'} x {'images' (N,3,60,60), 'labels'}; S3 spherical/s2_cifar100.gz
    ninaPro/ninapro_{train,val,test}.npy    ninapro    (N, 52, 16) + ninaPro/label_{train,val,test}.npy; S3 ninapro/
    fsd50k/chunks/{tr,val,eval}.csv, lbl_map.json, <wav chunks>; fsd50k/noise_22050/*.wav
                                            fsd50k     from audio.zip (S3 audio/audio.zip): move its chunks/ and noise_22050/ here
    piececonst_r421_N1024_smooth{1,2}.mat   darcyflow  fields coeff, sol (1024, 421, 421); MATLAB v5 or v7.3 (HDF5)
    protein/{deepcov,psicov}.lst, protein/{deepcov,psicov}/{features/<id>.pkl, distance/<id>-cb.npy}
                                            psicov     from protein.zip (S3 protein.zip)
    cosmic/{train,test}_dirs.npy + the (3, H, W) .npy files they list (+ sky.npy per folder)
                                            cosmic     built from deepCR.ACS-WFC.{train,test}.tar by ORCA's preprocess_cosmic.py
    challenge2017.pkl                       ecg        pickle {'data': [1D arrays], 'label': ['N'|'A'|'O'|'~']}; S3 ECG/
    satellite_{train,test}.npy              satellite  pickled dict {'data' (N, 46), 'label' 1..24}; S3 satellite/
    deepsea_filtered.npz                    deepsea    x_{train,val,test} (N, 1000, 4), y_* (N, 36); S3 deepsea/
    1D_Advection_Sols_beta0.4.hdf5          advection             DaRUS 255674 (download=True)
    1D_Burgers_Sols_Nu1.0.hdf5              burgers               DaRUS 281365
    ReacDiff_Nu0.5_Rho1.0.hdf5              diffusion-reaction-1d DaRUS 133177
    1D_diff-sorp_NA_NA.h5                   diffusion-sorption    DaRUS 133020
    1D_CFD_Rand_Eta0.1_Zeta0.1_periodic_Train.hdf5  navier-stokes-1d DaRUS 164668 (η = ζ = 0.1, as ORCA; Table 10's 1.0 matches no file)
    2D_DarcyFlow_beta0.1_Train.hdf5         darcy-pde             DaRUS 133218
    2D_rdb_NA_NA.h5                         shallow-water         DaRUS 133021
    2D_diff-react_NA_NA.h5                  diffusion-reaction-2d DaRUS 133017
    cifar-10-batches-py/data_batch_{1..5}, test_batch
                                            source cifar10   https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (download=True)
    conll2003/eng.train (or train.txt), eng.testb (or test.txt; split="test", probe.py only)
                                            source conll2003 CoNLL-2003 (clips.uantwerpen.be/conll2003/ner; HF Hub `eriktks/conll2003`); no direct URL

Splits (baselines.md §5, quirk 1). The earlier public code (ORCA) trained on train+val and selected its "best"
checkpoint on the TEST set (`valid_split: False` -> val_loader = test_loader). Here every task has a validation
split for model selection and the test split is only for the final number:
- published validation split where the benchmark has one: CIFAR-100 and Spherical (last 10,000 of the 50,000
  training images, NB360's 40,000 / 10,000 cut), NinaPro (`*_val.npy`), FSD50K (`val.csv`), Darcy
  (smooth1[900:1000], NB360), PSICOV (first 100 of deepcov.lst, NB360), ECG (NB360 80/10/10 record split),
  Satellite (last len(test) rows of the train file, NB360), DeepSEA (`x_val`);
- otherwise `val_fraction` of the training part, drawn with the fixed `SPLIT_SEED` (same split for every run):
  Cosmic (NB360's 483 = 10%), all PDE tasks (train part = after PDEBench's test 10%), custom.
`max_train_samples` then subsamples the training split with `seed`. Normalisers are fitted on the training split.

Fixed loader bugs (baselines.md §5): one PDE target index for train and test (quirk 6: RD-1D t=29, DS/SW/RD-2D
last frame 100); deterministic Cosmic test/val (no sky augmentation, quirk 13) and no global `np.random.seed`
(quirk 24); Satellite validation disjoint from training (quirk 15); ECG test windows with a label-independent
stride (quirk 5); NinaPro uses plain cross-entropy (quirk 23); no cluster paths (quirk 22). Matched on purpose:
summed Darcy loss (quirk 11, `loss_kwargs`), 1D-CFD normalised space (quirk 7), RD-2D u(0) -> v(T) (quirk 8),
FSD50K one frozen chunk + augmentation per training clip (quirk 14), Burgers' 512 tokens (quirk 9).

What the training loop must do with a few tasks (all data, no task names):
- `spec.group_reduce` set (FSD50K "mean", ECG "vote"): pool outputs with
  `losses.aggregate_groups(pred, target, dataset.groups, spec.group_reduce)` before `losses.METRICS[spec.metric]`
  (clip = mean of its chunks' logits; record = majority vote of its windows);
- `TaskData.output_decoder` not None (Darcy, NB360): prediction = output_decoder(model output), as ORCA decodes
  its normalised output before the loss and the metric; targets are already in physical units;
- Cosmic targets hold IGNORE_VALUE (−1) on ignored pixels; `loss_kwargs` passes ignore_value to losses.bce.

Safety: pickles (`.pkl`, `.gz`, CIFAR batches, object `.npy`) are only ever read from paths under the
`data_dir` the user passed; never from a download of unknown origin (downloads are MD5-checked archives/HDF5).

Custom data (`load_task("custom", data_dir)`): `train_x.npy, train_y.npy, test_x.npy, test_y.npy` (optional
`val_x.npy, val_y.npy`, else `val_fraction` of train). x (N, C, L) -> 1D, (N, C, H, W) -> 2D. y integer (N,)
-> classification (cross-entropy / 0-1 error); integer/bool 0-1 (N, K) -> multi-label (BCE / 1-AUROC); float (N,)
or (N, K) -> point regression (MSE / MSE); y with x's spatial shape, (N, *S) or (N, C_out, *S) -> dense
(float: MSE / nRMSE; 0-1 integer: BCE / 1-AUROC). Defaults `CUSTOM_DEFAULTS`: AdamW, lr 1e-4, wd 1e-5, batch 32,
20 epochs, accum 1, clip 1, 1 warm-up epoch then linear decay to 0; 1D target_seq_len 512 (ORCA's default).
"""
from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from losses import IGNORE_VALUE   # Cosmic: ignored pixels in y; the one definition lives with the loss

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------
STAGE1 = dict(optimizer="adamw", lr=3e-5, weight_decay=0.1, epochs=10)   # App. A.1 (§4.4 says 5 epochs)
SPLIT_SEED = 0                 # validation carve: the same split for every run and seed
BETAS = (0.9, 0.98)            # Adam/AdamW betas of every ORCA config (datasets.md §5.1)
NB360_DRIVE = "https://drive.google.com/drive/folders/1OOp6UrCiP79mTIkCrUdjjHWDo8K0bJUw"
S3 = "https://pde-xd.s3.amazonaws.com/"
DARUS = "https://darus.uni-stuttgart.de/api/access/datafile/"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)    # ORCA's constants
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")        # source labels 0..3 of the CoNLL-2003 surrogate
CONLL_SEQ_LEN = 32                                 # ORCA's text_xs_32 (datasets.md §4.2)
SOURCE_SPLITS = ("train", "test")                  # load_source_surrogate(split=...): outer loss / probe test
CONLL_FILES = {"train": ("eng.train", "train.txt"), "test": ("eng.testb", "test.txt")}   # original / Hub export
CUSTOM_DEFAULTS = dict(batch_size=32, epochs=20, accum=1, optimizer="adamw", lr=1e-4, weight_decay=1e-5,
                       momentum=0.0, clip=1.0, warmup_epochs=1, decay_epochs=20)
FSD = dict(sr=22050, n_fft=1920, win=661, hop=220, n_mels=96, frames=102, top_db=80.0, offset=75.0)
NORM_EPS = 1e-5                                    # UnitGaussianNormalizer eps (FNO / ORCA)


class DataError(Exception):
    """Bad or missing data; the message is one line (train.py prints it without a traceback)."""


@dataclass(frozen=True)
class Download:
    filename: str           # written to data_dir/filename
    url: str
    md5: str | None
    extract: bool = False   # a .tar.gz to unpack in data_dir


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str                  # "nb360" | "pdebench" | "custom"
    dim: str                        # "1d" | "2d"
    input_shape: tuple              # (C, L) or (C, H, W)
    output: str                     # "point" | "dense"
    num_classes: int                # classes / labels (point) or output channels (dense)
    output_shape: tuple             # point (K,); dense (C_out, L) or (C_out, H, W)
    multilabel: bool
    loss: str                       # key of losses.TASK_LOSSES
    metric: str                     # key of losses.METRICS (lower is better)
    loss_kwargs: dict = field(default_factory=dict)
    metric_kwargs: dict = field(default_factory=dict)
    target_seq_len: int | None = None   # 1D: ORCA's tsl; tokens = L / stack_num (baselines.md §2.3)
    group_reduce: str | None = None     # eval: losses.aggregate_groups(how=...) over dataset.groups before the
                                        # metric: "mean" logits per clip (FSD50K), "vote" per record (ECG)
    # stage 2 (Tables 9 / 11, datasets.md §5.1); clip 0 = no clipping
    batch_size: int = 32
    epochs: int = 60
    accum: int = 1
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float = 0.0
    warmup_epochs: int = 5
    decay_epochs: int = 60
    betas: tuple = BETAS
    # stage 1 (App. A.1)
    source: str = "cifar10"             # "cifar10" (2D) | "conll2003" (1D)
    stage1_optimizer: str = STAGE1["optimizer"]
    stage1_lr: float = STAGE1["lr"]
    stage1_weight_decay: float = STAGE1["weight_decay"]
    stage1_epochs: int = STAGE1["epochs"]
    orca_epochs: int = 60               # ORCA's own stage 1 (`embedder_epochs`, baselines.md §3.4; NinaPro 100)
    # files
    reader: str = ""                    # key of READERS
    reader_kwargs: dict = field(default_factory=dict)
    files: tuple = ()                   # native files / folders, relative to data_dir
    downloads: tuple = ()               # Download records (stable URLs only)
    origin: str = ""                    # where the files come from (used in missing-file messages)
    description: str = ""


@dataclass
class TaskData:
    spec: TaskSpec
    train: Dataset
    val: Dataset
    test: Dataset
    output_decoder: torch.nn.Module | None = None   # Darcy (NB360): pred = z·(σ+eps) + μ (ORCA's y_normalizer)
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# The task registry (data, not branches)
# --------------------------------------------------------------------------------------------------
def _hp(bs, ep, acc, opt, lr, wd, mom, clip, w, d):
    return dict(batch_size=bs, epochs=ep, accum=acc, optimizer=opt, lr=lr, weight_decay=wd, momentum=mom,
                clip=clip, warmup_epochs=w, decay_epochs=d)


def _nb360(name, dim, ishape, output, k, oshape, loss, metric, hp, reader, files, origin, desc, **kw):
    return TaskSpec(name=name, benchmark="nb360", dim=dim, input_shape=ishape, output=output, num_classes=k,
                    output_shape=oshape, multilabel=kw.pop("multilabel", False), loss=loss, metric=metric,
                    source="cifar10" if dim == "2d" else "conll2003", reader=reader, files=files,
                    origin=origin, description=desc, **hp, **kw)


def _pde(name, dim, ishape, loss, hp, file, darus_id, md5, layout, desc, tsl=None, **rk):
    return TaskSpec(name=name, benchmark="pdebench", dim=dim, input_shape=ishape, output="dense", num_classes=1,
                    output_shape=ishape, multilabel=False, loss=loss, metric="nrmse", target_seq_len=tsl,
                    source="cifar10" if dim == "2d" else "conll2003", reader="pdebench",
                    reader_kwargs=dict(file=file, layout=layout, **rk), files=(file,),
                    downloads=(Download(file, DARUS + str(darus_id), md5),),
                    origin=f"PDEBench on DaRUS: {DARUS}{darus_id} (MD5 {md5})", description=desc, **hp)


def _drive(*old):
    return (f"NAS-Bench-360 Google Drive {NB360_DRIVE} (old S3 link(s): " + ", ".join(S3 + o for o in old)
            + "; no stable direct URL, so download=True cannot fetch it)")


_TASK_LIST = [
    TaskSpec(name="cifar100", benchmark="nb360", dim="2d", input_shape=(3, 32, 32), output="point",
             num_classes=100, output_shape=(100,), multilabel=False, loss="cross_entropy", metric="error",
             reader="cifar100", files=("cifar-100-python/train", "cifar-100-python/test"),
             downloads=(Download("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                 "eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
             origin="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (MD5 eb9058c3a382ffc7106e4002c42a8d85)",
             description="CIFAR-100 image classification (RandomCrop(32,4)+HFlip on train; CIFAR-100 mean/std)",
             **_hp(32, 60, 32, "sgd", 1e-4, 1e-3, 0.9, 0.0, 5, 200)),
    _nb360("spherical", "2d", (3, 60, 60), "point", 100, (100,), "cross_entropy", "error",
           _hp(32, 60, 4, "adamw", 1e-4, 0.1, 0.0, 0.0, 5, 60), "spherical", ("s2_cifar100.gz",),
           _drive("spherical/s2_cifar100.gz"), "Spherical CIFAR-100: images projected on the sphere, /255"),
    _nb360("ninapro", "2d", (1, 16, 52), "point", 18, (18,), "cross_entropy", "error",
           _hp(32, 60, 1, "adam", 1e-4, 1e-5, 0.0, 1.0, 5, 60), "ninapro",
           tuple(f"ninaPro/{p}_{s}.npy" for p in ("ninapro", "label") for s in ("train", "val", "test")),
           _drive("ninapro/ninapro_train.npy", "ninapro/label_train.npy"),
           "NinaPro DB5 EMG gestures: (52, 16) windows transposed to (1, 16, 52); ORCA's FocalLoss(γ=0) = CE",
           orca_epochs=100),
    _nb360("fsd50k", "2d", (1, 96, 102), "point", 200, (200,), "bce", "one_minus_map",
           _hp(32, 100, 1, "adam", 1e-4, 5e-5, 0.0, 0.0, 5, 100), "fsd50k",
           ("fsd50k/chunks/tr.csv", "fsd50k/chunks/val.csv", "fsd50k/chunks/eval.csv", "fsd50k/chunks/lbl_map.json"),
           _drive("audio/audio.zip"), "FSD50K sound events, 1-s chunks -> log-mel (96 x 102), 200 labels",
           multilabel=True, loss_kwargs={"pos_weight": 10.0}, group_reduce="mean"),
    _nb360("darcyflow", "2d", (3, 85, 85), "dense", 1, (1, 85, 85), "rel_l2", "rel_l2",
           _hp(4, 100, 1, "adamw", 1e-3, 5e-3, 0.0, 0.0, 5, 100), "darcyflow",
           ("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat"),
           _drive("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat"),
           "Darcy flow (FNO data): [a normalised, x, y] on 85x85 -> u; loss summed over the batch (ORCA)",
           loss_kwargs={"reduction": "sum"}),
    _nb360("psicov", "2d", (57, 512, 512), "dense", 1, (1, 512, 512), "mse", "mae8",
           _hp(1, 10, 32, "adam", 5e-6, 1e-5, 0.0, 0.0, 5, 100), "psicov",
           ("protein/deepcov.lst", "protein/psicov.lst"), _drive("protein.zip"),
           "PSICOV protein distance maps: 57 pair features -> Cβ distances (train clipped at 16 Å)"),
    _nb360("cosmic", "2d", (1, 128, 128), "dense", 1, (1, 128, 128), "bce", "one_minus_auroc_binarized",
           _hp(4, 60, 1, "adamw", 1e-3, 0.0, 0.0, 0.0, 5, 60), "cosmic",
           ("cosmic/train_dirs.npy", "cosmic/test_dirs.npy"),
           _drive("cosmic/deepCR.ACS-WFC.train.tar", "cosmic/deepCR.ACS-WFC.test.tar")
           + "; preprocess with ORCA src/datasets/preprocess_cosmic.py",
           "Cosmic-ray masks in Hubble images, crop [64:192, 64:192]; ignored pixels = -1 in y",
           loss_kwargs={"ignore_value": IGNORE_VALUE}),
    _nb360("ecg", "1d", (1, 1000), "point", 4, (4,), "cross_entropy", "one_minus_f1",
           _hp(4, 15, 16, "sgd", 1e-6, 0.1, 0.99, 0.0, 5, 200), "ecg", ("challenge2017.pkl",),
           _drive("ECG/challenge2017.pkl"), "PhysioNet 2017 AF: z-scored records cut into 1000-sample windows",
           target_seq_len=64, group_reduce="vote"),
    _nb360("satellite", "1d", (1, 46), "point", 24, (24,), "cross_entropy", "error",
           _hp(16, 60, 4, "adamw", 3e-5, 3e-6, 0.0, 0.0, 5, 60), "satellite",
           ("satellite_train.npy", "satellite_test.npy"), _drive("satellite/satellite_train.npy",
                                                                 "satellite/satellite_test.npy"),
           "Satellite land-cover time series (46 steps), labels 1..24 -> 0..23", target_seq_len=512),
    _nb360("deepsea", "1d", (4, 1000), "point", 36, (36,), "bce", "one_minus_auroc",
           _hp(16, 13, 1, "adam", 1e-5, 0.0, 0.0, 1.0, 10, 25), "deepsea", ("deepsea_filtered.npz",),
           _drive("deepsea/deepsea_filtered.npz"), "DeepSEA chromatin profiles from one-hot DNA (4, 1000)",
           multilabel=True, loss_kwargs={"pos_weight": 4.0}, target_seq_len=512),
    # PDEBench: input = state at t = 0, target = state at ORCA's index (min(t_train, ceil(T/rt)) - 1)·rt
    _pde("advection", "1d", (1, 256), "nrmse", _hp(4, 200, 1, "adam", 1e-4, 1e-5, 0.0, 1.0, 5, 200),
         "1D_Advection_Sols_beta0.4.hdf5", 255674, "d595bbfd2c659df995a93cd40d6ea568", "tensor",
         "1D advection β=0.4: u(0) -> u(t=2), x[::4]", tsl=512, rx=4, rt=5, t_train=200),
    # DEVIATION from ORCA's tsl 128: ORCA built the embedder for a declared length 256 (-> stack 2, 512 tokens
    # on the real 1024 input, quirk 9); tsl 512 gives the same 512 tokens for the true length 1024.
    _pde("burgers", "1d", (1, 1024), "rmse", _hp(4, 200, 1, "adam", 1e-5, 1e-5, 0.0, 1.0, 5, 200),
         "1D_Burgers_Sols_Nu1.0.hdf5", 281365, "9021eba35332d127306f11ef84c1a60f", "tensor",
         "1D Burgers ν=1.0: u(0) -> u(t_end)", tsl=512, rx=1, rt=5, t_train=200),
    _pde("diffusion-reaction-1d", "1d", (1, 1024), "nrmse",
         _hp(4, 200, 1, "sgd", 1e-3, 1e-5, 0.99, 1.0, 5, 200), "ReacDiff_Nu0.5_Rho1.0.hdf5", 133177,
         "69a429239778d529cd419ed5888ea835", "tensor",
         "1D diffusion-reaction ν=0.5 ρ=1: u(0) -> u(t=0.29) for train AND test (ORCA tested at 0.99)",
         tsl=256, rx=1, rt=1, t_train=30),
    _pde("diffusion-sorption", "1d", (1, 1024), "nrmse", _hp(4, 200, 1, "adamw", 1e-4, 0.0, 0.0, 1.0, 5, 200),
         "1D_diff-sorp_NA_NA.h5", 133020, "9d466d1213065619d087319e16d9a938", "groups",
         "1D diffusion-sorption: u(0) -> u(index 100) for train and test", tsl=32, rx=1, rt=1, t_train=101,
         cin=0, cout=0),
    _pde("navier-stokes-1d", "1d", (1, 3072), "rmse", _hp(4, 200, 1, "adamw", 1e-4, 1e-3, 0.0, 1.0, 5, 200),
         "1D_CFD_Rand_Eta0.1_Zeta0.1_periodic_Train.hdf5", 164668, "45655bd77d006ab539c52b7fbcf099b9", "cfd",
         "1D compressible NS (η=ζ=0.1): [ρ,p,v](0) -> (t=1), channel-major 3072, point-wise normalised",
         tsl=128, rx=1, rt=5, t_train=100),
    _pde("darcy-pde", "2d", (1, 64, 64), "nrmse", _hp(4, 100, 1, "adamw", 1e-4, 1e-5, 0.0, 0.0, 5, 200),
         "2D_DarcyFlow_beta0.1_Train.hdf5", 133218, "294f9a03a4aa16b0e386469ca8b471be", "darcy",
         "2D Darcy β=0.1 (PDEBench): a -> u, 128 -> 64 (::2)", rx=2),
    _pde("shallow-water", "2d", (1, 128, 128), "nrmse", _hp(4, 200, 1, "adamw", 1e-4, 0.0, 0.0, 1.0, 10, 200),
         "2D_rdb_NA_NA.h5", 133021, "75d838c47aa410694bdc912ea7f22282", "groups",
         "2D shallow water radial dam break: h(0) -> h(index 100)", rx=1, rt=1, t_train=101, cin=0, cout=0),
    _pde("diffusion-reaction-2d", "2d", (1, 128, 128), "nrmse",
         _hp(4, 200, 1, "adam", 1e-4, 1e-3, 0.0, 1.0, 5, 200), "2D_diff-react_NA_NA.h5", 133017,
         "b8d0b86064193195ddc30c33be5dc949", "groups",
         "2D diffusion-reaction: u(0) -> v(index 100) (ORCA's task definition, quirk 8)",
         rx=1, rt=1, t_train=101, cin=0, cout=1),
]
TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}
ALIASES = {"fsd": "fsd50k", "darcy": "darcyflow", "pdeadv": "advection", "pdebg": "burgers",   # ORCA config names
           "pderd": "diffusion-reaction-1d", "pdeds": "diffusion-sorption", "pde1dcfd": "navier-stokes-1d", "pdedc": "darcy-pde",
           "pdesw": "shallow-water", "pderd2d": "diffusion-reaction-2d"}
CIFAR10_DOWNLOAD = Download("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "c58f30108f718f92721af3b95e74349a", extract=True)


def get_task(name: str, data_dir: str | None = None) -> TaskSpec:
    """The registry row of `name` (also ORCA config names, e.g. 'PDEBG'); 'custom' needs `data_dir`."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key.replace("-", ""), ALIASES.get(key, key))
    if key == "custom":
        if data_dir is None:
            raise DataError("task 'custom' is defined by its files: pass data_dir holding train_x.npy, train_y.npy, "
                            "test_x.npy, test_y.npy")
        return _custom_arrays(data_dir)[0]
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}, custom")
    return TASKS[key]


def stack_num(seq_len: int, target_seq_len: int) -> int:
    """ORCA's patch length: the smallest divisor i of L with L / i <= target_seq_len."""
    return next(i for i in range(1, seq_len + 1) if seq_len % i == 0 and seq_len // i <= target_seq_len)


def num_tokens(spec: TaskSpec) -> int | None:
    """Tokens the 1D body sees, N = L / stack_num (App. A.2; baselines.md §2.3 'Tokens'); None for 2D."""
    if spec.dim != "1d":
        return None
    L = int(spec.input_shape[-1])
    return L // stack_num(L, spec.target_seq_len or 512)


# --------------------------------------------------------------------------------------------------
# Safe file access: one-line DataErrors instead of tracebacks deep inside pickle / numpy / h5py / scipy
# --------------------------------------------------------------------------------------------------
def _path(task: str, data_dir: str, rel: str, origin: str, downloadable: bool = False) -> str:
    p = os.path.join(data_dir, rel)
    if not os.path.exists(p):
        hint = " or let train.py --download (data.load_task(..., download=True)) fetch it" if downloadable else ""
        raise DataError(f"task '{task}': missing {p}; get it from {origin}{hint}")
    return p


def _bad(task: str, path: str, expected: str, found: str) -> DataError:
    return DataError(f"task '{task}': {path}: expected {expected}, found {found}")


def _corrupt(task: str, path: str, kind: str, err: BaseException) -> DataError:
    msg = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return DataError(f"task '{task}': cannot read {path} as {kind} (truncated or corrupted?): {msg}")


_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                  IndexError, KeyError, OSError, zlib.error, UnicodeDecodeError, MemoryError)


def _load_pickle(task: str, path: str, encoding: str = "ASCII"):
    """Unpickle a file under the user's data_dir (gzip-compressed when it ends in .gz)."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            return pickle.load(f, encoding=encoding)
    except _PICKLE_ERRORS as e:
        raise _corrupt(task, path, "a pickle", e) from None


def _load_npy(task: str, path: str, *, allow_pickle: bool = False, mmap: bool = True):
    """np.load of a .npy (memory-mapped when possible); object arrays only when allow_pickle (data_dir files)."""
    try:
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as e:
            if not (allow_pickle and "allow_pickle" in str(e)):
                raise
            return np.load(path, allow_pickle=True, encoding="bytes")
    except _PICKLE_ERRORS as e:
        raise _corrupt(task, path, "a .npy array", e) from None


def _npz_arrays(task: str, path: str, keys: tuple) -> dict:
    """Members of an .npz; stored (uncompressed) members are memory-mapped, deflated ones read whole."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _corrupt(task, path, "an .npz archive", e) from None
    with zf:
        names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        missing = [k for k in keys if k not in names]
        if missing:
            raise _bad(task, path, f"keys {list(keys)}", f"keys {sorted(names)}")
        out = {}
        for k in keys:
            info = zf.getinfo(names[k])
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    with open(path, "rb") as f:
                        f.seek(info.header_offset)
                        n_name, n_extra = struct.unpack("<HH", f.read(30)[26:30])
                        start = info.header_offset + 30 + n_name + n_extra
                        f.seek(start)
                        version = np.lib.format.read_magic(f)
                        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                else np.lib.format.read_array_header_2_0)
                        shape, fortran, dtype = read(f)
                        offset = f.tell()
                    if dtype.hasobject:
                        raise ValueError(f"member {k} holds Python objects")
                    if offset + int(np.prod(shape)) * dtype.itemsize > os.path.getsize(path):
                        raise ValueError(f"member {k} is cut short")
                    out[k] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                                       order="F" if fortran else "C")
                else:
                    out[k] = np.load(io.BytesIO(zf.read(names[k])), allow_pickle=False)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error) as e:
                raise _corrupt(task, path, f"an .npz archive (member {k})", e) from None
        return out


def _open_h5(task: str, path: str):
    import h5py
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise _corrupt(task, path, "an HDF5 file", e) from None


def _mat_fields(task: str, path: str, names: tuple, n_max: int, step: int, size: int) -> dict:
    """MATLAB fields (N, H, W) -> [rows, ::step, ::step][:, :size, :size]; v5 via scipy, v7.3 via h5py
    (HDF5, axes stored reversed: (W, H, N)), read lazily."""
    import h5py
    import scipy.io
    try:
        if h5py.is_hdf5(path):                       # v7.3 = HDF5 (scipy raises NotImplementedError)
            raise NotImplementedError
        mat = scipy.io.loadmat(path, variable_names=list(names))
    except NotImplementedError:
        f = _open_h5(task, path)
        with f:
            if any(n not in f for n in names):
                raise _bad(task, path, f"fields {list(names)}", f"fields {sorted(f.keys())}") from None
            out = {}
            for n in names:
                ds = f[n]
                if ds.ndim != 3:
                    raise _bad(task, path, f"{n} with 3 axes (v7.3: W, H, N)", f"shape {ds.shape}") from None
                a = ds[::step, ::step, :min(n_max, ds.shape[2])][:size, :size]    # (W', H', n)
                out[n] = np.ascontiguousarray(np.transpose(a, (2, 1, 0)), dtype=np.float32)
            return out
    except (ValueError, TypeError, OSError, EOFError, zlib.error, MemoryError) as e:
        raise _corrupt(task, path, "a MATLAB .mat file", e) from None
    if any(n not in mat for n in names):
        raise _bad(task, path, f"fields {list(names)}", f"fields {sorted(k for k in mat if not k.startswith('__'))}")
    out = {}
    for n in names:
        if mat[n].ndim != 3:
            raise _bad(task, path, f"{n} of shape (N, H, W)", f"shape {mat[n].shape}")
        out[n] = np.ascontiguousarray(mat[n][:n_max, ::step, ::step][:, :size, :size], dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------------------
# Downloads (opt-in): atomic (tmp file + os.replace), MD5-checked, archives extracted safely
# --------------------------------------------------------------------------------------------------
def download_file(url: str, dest: str, md5: str | None = None, *, timeout: float = 60.0) -> str:
    """Fetch `url` to `dest` atomically; a wrong MD5 or a short transfer leaves no file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(os.path.abspath(dest)))
    h = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
            expected = r.headers.get("Content-Length")
            n = 0
            while chunk := r.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                n += len(chunk)
        if expected is not None and n != int(expected):
            raise DataError(f"download {url}: got {n} of {expected} bytes; nothing was written to {dest}")
        if md5 is not None and h.hexdigest() != md5.lower():
            raise DataError(f"download {url}: MD5 {h.hexdigest()} != expected {md5}; nothing was written to {dest}")
        os.replace(tmp, dest)
        return dest
    except DataError:
        raise
    except Exception as e:  # network, HTTP status, incomplete read, disk
        raise DataError(f"download {url} failed ({type(e).__name__}: {e}); nothing was written to {dest}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _extract_tar(archive: str, dest_dir: str) -> None:
    """Unpack into a temporary folder inside dest_dir (rejecting links, devices and paths leaving it),
    then move each top-level entry into place with os.replace."""
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf.getmembers():
                target = os.path.realpath(os.path.join(tmp, m.name))
                if not (m.isfile() or m.isdir()) or not (target + os.sep).startswith(os.path.realpath(tmp) + os.sep):
                    raise DataError(f"{archive}: unsafe member {m.name!r} (link, device or path outside); not extracted")
            tf.extractall(tmp, filter="data")
        for name in os.listdir(tmp):
            dst = os.path.join(dest_dir, name)
            if os.path.isdir(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, name), dst)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt("download", archive, "a tar archive", e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fetch(data_dir: str, dl: Download) -> None:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, dl.filename)
    if not os.path.exists(path):
        download_file(dl.url, path, dl.md5)
    elif dl.md5 is not None and _md5(path) != dl.md5:
        raise DataError(f"{path} exists but its MD5 {_md5(path)} != {dl.md5} (from {dl.url}); delete it and retry")
    if dl.extract:
        _extract_tar(path, data_dir)


# --------------------------------------------------------------------------------------------------
# Datasets: views over index arrays (`subset` composes them; `groups` / `labels` follow the view)
# --------------------------------------------------------------------------------------------------
class IndexedDataset(Dataset):
    """Rows `idx` of an underlying store. Subclasses implement `_item(row) -> (x, y)`."""
    idx: np.ndarray
    _groups: np.ndarray | None = None     # per-row evaluation groups (clip / record ids)
    _labels: np.ndarray | None = None     # per-row single-label classes (class-balanced sampling)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return self._item(int(self.idx[i]))

    def subset(self, rel) -> "IndexedDataset":
        new = copy.copy(self)
        new.idx = self.idx[np.asarray(rel, dtype=np.int64)]
        return new

    @property
    def groups(self):
        return None if self._groups is None else self._groups[self.idx]

    @property
    def labels(self):
        return None if self._labels is None else self._labels[self.idx]


def _y_tensor(y, kind: str) -> torch.Tensor:
    if kind == "class":
        return torch.tensor(int(y), dtype=torch.int64)
    return torch.as_tensor(np.array(y, dtype=np.float32))


class ArrayDataset(IndexedDataset):
    """In-memory or memory-mapped arrays; x_fn turns one stored row into the float32 input."""

    def __init__(self, x, y, idx=None, *, x_fn=None, y_kind="class", groups=None):
        self.x, self.y, self.x_fn, self.y_kind = x, y, x_fn, y_kind
        self.idx = np.arange(len(x), dtype=np.int64) if idx is None else np.asarray(idx, dtype=np.int64)
        self._groups = None if groups is None else np.asarray(groups)
        self._labels = np.asarray(y).astype(np.int64) if y_kind == "class" else None

    def _item(self, r):
        x = np.asarray(self.x[r])
        x = self.x_fn(x) if self.x_fn is not None else x
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), _y_tensor(self.y[r], self.y_kind)


class GaussianDecoder(torch.nn.Module):
    """ORCA's UnitGaussianNormalizer.decode as a module: z·(σ + eps) + μ, σ/μ point-wise over training targets."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, eps: float = NORM_EPS):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.eps = eps

    def forward(self, z):
        return z * (self.std + self.eps) + self.mean


def _unit_gaussian(train: np.ndarray):
    """Point-wise mean and std (unbiased, as torch.std) over training samples (axis 0)."""
    return train.mean(0), train.std(0, ddof=1) if len(train) > 1 else np.zeros_like(train[0])


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
def _nb360_tail(n: int, train_share: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) as NB360's load_cifar100_train_data / load_scifar100_data (val_split 0.2):
    the first int(0.8 n) rows train, the rest validate (50,000 -> 40,000 / 10,000, datasets.md §2.0)."""
    n_tr = min(max(1, int(train_share * n)), n - 1)
    return np.arange(n_tr), np.arange(n_tr, n)


def _carve(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) from n training rows; val = val_fraction of them, fixed SPLIT_SEED."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------------------
# Per-format readers (one per native layout). reader(spec, data_dir, val_fraction, seed, **reader_kwargs)
#   -> (train, val, test, extras)
# --------------------------------------------------------------------------------------------------
def _key(d: dict, k: str):
    """dict lookup accepting str or bytes keys (Python-2 pickles)."""
    return d[k] if k in d else d[k.encode()]


def _has(d, k: str) -> bool:
    return isinstance(d, dict) and (k in d or k.encode() in d)


def _cifar_rows(task, path, label_key):
    d = _load_pickle(task, path, encoding="latin1")
    if not (_has(d, "data") and _has(d, label_key)):
        raise _bad(task, path, f"a dict with 'data' and '{label_key}'",
                   f"{type(d).__name__} with keys {sorted(map(str, d)) if isinstance(d, dict) else '-'}")
    x, y = np.asarray(_key(d, "data")), np.asarray(_key(d, label_key), dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise _bad(task, path, f"data (N, 3072) uint8 and {label_key} (N,)", f"data {x.shape}, labels {y.shape}")
    return x.reshape(-1, 3, 32, 32), y        # row = 1024 R, 1024 G, 1024 B, each 32x32 row-major


def _cifar_pixels(a, mean, std, augment: bool):
    """uint8 (3, 32, 32) -> [optional RandomCrop(32, padding 4) + HFlip] -> /255 -> Normalize(mean, std)."""
    x = a.astype(np.float32) / 255.0
    if augment:                                # torch RNG: seeded per DataLoader worker
        i, j = torch.randint(0, 9, (2,)).tolist()
        x = np.pad(x, ((0, 0), (4, 4), (4, 4)))[:, i:i + 32, j:j + 32]
        if torch.rand(()) < 0.5:
            x = x[:, :, ::-1]
    m, s = np.asarray(mean, np.float32)[:, None, None], np.asarray(std, np.float32)[:, None, None]
    return (x - m) / s                         # torchvision Normalize


def _read_cifar100(spec, data_dir, val_fraction, seed):
    tr, te = (_path(spec.name, data_dir, f, spec.origin, True) for f in spec.files)
    x, y = _cifar_rows(spec.name, tr, "fine_labels")
    xt, yt = _cifar_rows(spec.name, te, "fine_labels")
    t_idx, v_idx = _nb360_tail(len(x))                 # NB360: 40,000 / 10,000 (val without augmentation)
    fn = partial(_cifar_pixels, mean=CIFAR100_MEAN, std=CIFAR100_STD, augment=False)
    train = ArrayDataset(x, y, t_idx, x_fn=partial(_cifar_pixels, mean=CIFAR100_MEAN, std=CIFAR100_STD, augment=True))
    return train, ArrayDataset(x, y, v_idx, x_fn=fn), ArrayDataset(xt, yt, x_fn=fn), {"val_from": "published"}


def _div255(a):
    return np.asarray(a, np.float32) / 255.0


def _read_spherical(spec, data_dir, val_fraction, seed):
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    d = _load_pickle(spec.name, path, encoding="latin1")
    split = {}
    for s in ("train", "test"):
        if not (_has(d, s) and _has(_key(d, s), "images") and _has(_key(d, s), "labels")):
            raise _bad(spec.name, path, "{'train','test'} each with 'images' and 'labels'",
                       f"keys {sorted(map(str, d)) if isinstance(d, dict) else type(d).__name__}")
        im, lb = np.asarray(_key(_key(d, s), "images")), np.asarray(_key(_key(d, s), "labels")).astype(np.int64)
        if im.shape[1:] != (3, 60, 60) or len(im) != len(lb):
            raise _bad(spec.name, path, f"{s} images (N, 3, 60, 60), labels (N,)", f"{im.shape}, {lb.shape}")
        split[s] = (im, lb)
    t_idx, v_idx = _nb360_tail(len(split["train"][0]))   # NB360: 40,000 / 10,000
    (x, y), (xt, yt) = split["train"], split["test"]
    return (ArrayDataset(x, y, t_idx, x_fn=_div255), ArrayDataset(x, y, v_idx, x_fn=_div255),
            ArrayDataset(xt, yt, x_fn=_div255), {"val_from": "published"})


def _emg(a):
    return np.asarray(a, np.float32).T[None]        # (52, 16) -> (1, 16, 52)


def _read_ninapro(spec, data_dir, val_fraction, seed):
    out = []
    for s in ("train", "val", "test"):
        px = _path(spec.name, data_dir, f"ninaPro/ninapro_{s}.npy", spec.origin)
        py = _path(spec.name, data_dir, f"ninaPro/label_{s}.npy", spec.origin)
        x = _load_npy(spec.name, px, allow_pickle=True)
        y = np.asarray(_load_npy(spec.name, py, allow_pickle=True)).astype(np.int8).astype(np.int64)
        if x.ndim != 3 or x.shape[1:] != (52, 16) or len(x) != len(y):
            raise _bad(spec.name, px, "(N, 52, 16) with labels (N,)", f"{x.shape} with labels {y.shape}")
        if y.min() < 0 or y.max() >= spec.num_classes:
            raise _bad(spec.name, py, f"labels in 0..{spec.num_classes - 1}", f"range {y.min()}..{y.max()}")
        out.append(ArrayDataset(x, y, x_fn=_emg))
    return (*out, {"val_from": "published"})


def _read_satellite(spec, data_dir, val_fraction, seed):
    parts = []
    for f in spec.files:
        path = _path(spec.name, data_dir, f, spec.origin)
        d = _load_npy(spec.name, path, allow_pickle=True, mmap=False)
        d = d[()] if isinstance(d, np.ndarray) and d.dtype == object and d.shape == () else d
        if not (_has(d, "data") and _has(d, "label")):
            raise _bad(spec.name, path, "a pickled dict with 'data' (N, 46) and 'label' (N,)", f"{type(d).__name__}")
        x, y = np.asarray(_key(d, "data"), np.float32), np.asarray(_key(d, "label")).astype(np.int64) - 1
        if x.ndim != 2 or x.shape[1] != 46 or len(x) != len(y):
            raise _bad(spec.name, path, "data (N, 46) and label (N,)", f"{x.shape} and {y.shape}")
        if y.min() < 0 or y.max() >= 24:
            raise _bad(spec.name, path, "labels 1..24", f"range {y.min() + 1}..{y.max() + 1}")
        parts.append((x[:, None, :], y))
    (x, y), (xt, yt) = parts
    if len(xt) < len(x):                       # NB360: validation = last len(test) rows of the train file
        t_idx, v_idx, how = np.arange(len(x) - len(xt)), np.arange(len(x) - len(xt), len(x)), "published"
    else:
        (t_idx, v_idx), how = _carve(len(x), val_fraction), "carved"
    return ArrayDataset(x, y, t_idx), ArrayDataset(x, y, v_idx), ArrayDataset(xt, yt), {"val_from": how}


def _dna(a):
    return np.asarray(a, np.float32).T             # (1000, 4) one-hot -> (4, 1000)


def _read_deepsea(spec, data_dir, val_fraction, seed):
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    d = _npz_arrays(spec.name, path, keys)
    out = []
    for s in ("train", "val", "test"):
        x, y = d[f"x_{s}"], d[f"y_{s}"]
        if x.ndim != 3 or x.shape[1:] != (1000, 4) or y.shape != (len(x), 36):
            raise _bad(spec.name, path, f"x_{s} (N, 1000, 4) and y_{s} (N, 36)", f"{x.shape} and {y.shape}")
        out.append(ArrayDataset(x, y, x_fn=_dna, y_kind="float"))
    return (*out, {"val_from": "published"})


def _read_darcyflow(spec, data_dir, val_fraction, seed, r=5, s=85):
    p1, p2 = (_path(spec.name, data_dir, f, spec.origin) for f in spec.files)
    tr = _mat_fields(spec.name, p1, ("coeff", "sol"), 1000, r, s)    # ORCA: first 1000 of smooth1
    te = _mat_fields(spec.name, p2, ("coeff", "sol"), 100, r, s)     # first 100 of smooth2
    for p, d in ((p1, tr), (p2, te)):
        if d["coeff"].shape[1:] != (s, s) or d["sol"].shape != d["coeff"].shape:
            raise _bad(spec.name, p, "coeff, sol (N, 421, 421)", f"{d['coeff'].shape} / {d['sol'].shape} after ::5")
    n = len(tr["coeff"])
    n_val = n // 10                                    # NB360: smooth1[900:1000] of 1000
    a_mu, a_sd = _unit_gaussian(tr["coeff"][: n - n_val])
    u_mu, u_sd = _unit_gaussian(tr["sol"][: n - n_val])
    g = np.linspace(0, 1, s, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)                         # gx varies along W, gy along H ('xy' indexing)

    def inputs(a):
        # UnitGaussianNormalizer.encode: (a − μ)/(σ + eps), then channels [a, x, y]
        a = (a - a_mu) / (a_sd + NORM_EPS)
        return np.concatenate([a[:, None], np.broadcast_to(gx, a.shape)[:, None],
                               np.broadcast_to(gy, a.shape)[:, None]], 1).astype(np.float32)

    x, y, xt, yt = inputs(tr["coeff"]), tr["sol"][:, None], inputs(te["coeff"]), te["sol"][:, None]
    train = ArrayDataset(x, y, np.arange(n - n_val), y_kind="float")
    val = ArrayDataset(x, y, np.arange(n - n_val, n), y_kind="float")
    # y stays in physical units; ORCA's model output is decoded with the target normaliser (quirk 11 notes)
    return train, val, ArrayDataset(xt, yt, y_kind="float"), {
        "output_decoder": GaussianDecoder(u_mu[None], u_sd[None]), "val_from": "published"}


# ---- PSICOV ----------------------------------------------------------------------------------------
def _psicov_input(task, path) -> np.ndarray:
    """57 channels (L, L): ss, pssm, sa, entropy each tiled along rows then columns, + ccmpred, freecon, potential."""
    f = _load_pickle(task, path, encoding="latin1")
    need = ("seq", "ss", "pssm", "sa", "entropy", "ccmpred", "freecon", "potential")
    if not isinstance(f, dict) or any(not _has(f, k) for k in need):
        found = sorted(map(str, f)) if isinstance(f, dict) else type(f).__name__
        raise _bad(task, path, f"a dict with keys {list(need)}", f"keys {found}")
    L = len(_key(f, "seq"))
    ss, pssm = np.asarray(_key(f, "ss")), np.asarray(_key(f, "pssm"))
    sa, ent = np.asarray(_key(f, "sa")), np.asarray(_key(f, "entropy"))
    pairs = [np.asarray(_key(f, k)) for k in ("ccmpred", "freecon", "potential")]
    if ss.shape != (3, L) or pssm.shape != (L, 22) or sa.shape != (L,) or ent.shape != (L,) \
            or any(p.shape != (L, L) for p in pairs):
        raise _bad(task, path, f"ss (3, L), pssm (L, 22), sa/entropy (L,), pair maps (L, L) with L={L}",
                   f"ss {ss.shape}, pssm {pssm.shape}, sa {sa.shape}, entropy {ent.shape}, "
                   f"maps {[p.shape for p in pairs]}")
    rows = [*ss, *pssm.T, sa, ent]                       # 3 + 22 + 1 + 1 = 27 per-residue features (L,)
    X = np.empty((57, L, L), np.float32)
    for c, v in enumerate(rows):
        X[2 * c] = v[None, :]                            # a[i, k] = v[k]
        X[2 * c + 1] = v[:, None]                        # a.T
    X[54:] = np.stack(pairs)
    return X


def _psicov_target(task, path, L) -> np.ndarray:
    """Cβ distances: < 1 Å -> 1, diagonal interpolated from its neighbours (NB360 / ORCA get_map)."""
    try:
        ly, _, cb = _load_npy(task, path, allow_pickle=True, mmap=False)
    except (ValueError, TypeError) as e:
        raise _bad(task, path, "a pickled tuple (length, sequence, distance map)", str(e)) from None
    Y = np.array(cb, dtype=np.float64)
    if int(ly) != L or Y.shape != (L, L):
        raise _bad(task, path, f"length {L} and map ({L}, {L}) as in the features", f"length {ly}, map {Y.shape}")
    with np.errstate(invalid="ignore"):
        Y[Y < 1.0] = 1.0
    Y[0, 0], Y[L - 1, L - 1] = Y[0, 1], Y[L - 1, L - 2]
    for q in range(1, L - 1):
        if np.isnan(Y[q, q]):
            continue
        lo, hi = Y[q, q - 1], Y[q, q + 1]
        Y[q, q] = 1.0 if np.isnan(lo) and np.isnan(hi) else hi if np.isnan(lo) else lo if np.isnan(hi) else (lo + hi) / 2
    return Y


class PsicovDataset(IndexedDataset):
    """One protein per item, built on access: pad 5 px each side in a 512 window (input pad 0, label pad 100 Å);
    train: random 512 crop when longer, labels clipped at 16 Å; val/test: unclipped, top-left window."""

    def __init__(self, task, root, ids, subdir, *, train: bool, window=512, pad=10):
        self.task, self.root, self.ids, self.subdir = task, root, list(ids), subdir
        self.train, self.window, self.pad = train, window, pad
        self.idx = np.arange(len(self.ids), dtype=np.int64)

    def _item(self, r):
        pdb, d = self.ids[r], os.path.join(self.root, self.subdir)
        fpath, dpath = os.path.join(d, "features", pdb + ".pkl"), os.path.join(d, "distance", pdb + "-cb.npy")
        for p in (fpath, dpath):
            if not os.path.exists(p):
                raise DataError(f"task '{self.task}': missing {p} (listed in {self.subdir}.lst); from protein.zip")
        X = _psicov_input(self.task, fpath)
        L, h, W = X.shape[1], self.pad // 2, self.window
        Y = _psicov_target(self.task, dpath, L)
        Xp = np.zeros((57, L + self.pad, L + self.pad), np.float32)
        Xp[:, h:h + L, h:h + L] = X
        Yp = np.full((L + self.pad, L + self.pad), 100.0)
        Yp[h:h + L, h:h + L] = Y
        l = L + self.pad
        if l <= W:
            XX, YY = np.zeros((57, W, W), np.float32), np.full((W, W), 100.0)
            XX[:, :l, :l], YY[:l, :l] = Xp, Yp
        else:
            rx, ry = (torch.randint(0, l - W + 1, (2,)).tolist() if self.train else (0, 0))
            XX, YY = Xp[:, rx:rx + W, ry:ry + W], Yp[rx:rx + W, ry:ry + W]
        if self.train:
            YY = np.where(YY > 16.0, 16.0, YY)          # label_engineering '16.0' (padding 100 -> 16 too)
        XX, YY = np.nan_to_num(XX, nan=0.0), np.nan_to_num(YY, nan=0.0)
        return torch.from_numpy(np.ascontiguousarray(XX)), torch.from_numpy(YY[None].astype(np.float32))


def _read_list(task, path):
    with open(path) as f:
        ids = [ln.split()[0] for ln in f if ln.strip()]
    if not ids:
        raise _bad(task, path, "one protein id per line", "an empty list")
    return ids


def _read_psicov(spec, data_dir, val_fraction, seed):
    root = os.path.join(data_dir, "protein")
    dc = _read_list(spec.name, _path(spec.name, data_dir, spec.files[0], spec.origin))
    ps = _read_list(spec.name, _path(spec.name, data_dir, spec.files[1], spec.origin))
    n_val = max(1, min(100, len(dc) // 10)) if len(dc) > 1 else 0        # NB360: deepcov_list[:100]
    if n_val == 0:
        raise _bad(spec.name, os.path.join(root, "deepcov.lst"), "at least 2 training proteins", f"{len(dc)}")
    return (PsicovDataset(spec.name, root, dc[n_val:], "deepcov", train=True),
            PsicovDataset(spec.name, root, dc[:n_val], "deepcov", train=False),
            PsicovDataset(spec.name, root, ps, "psicov", train=False), {"val_from": "published"})


# ---- Cosmic ----------------------------------------------------------------------------------------
class CosmicDataset(IndexedDataset):
    """deepCR (3, H, W) stacks [image, CR mask, ignore] cropped to [64:192, 64:192]. The ignore mask travels
    inside the target: y = where(ignore, IGNORE_VALUE = −1, CR mask), so losses.bce(ignore_value=−1) applies
    ORCA's mask(img) = img·(1 − ignore) to output and target. Train only: + sky·U(−0.9, 3) when the folder has
    sky.npy (ORCA also augmented the test set, quirk 13). `ignore(i)` returns item i's ignore mask."""

    def __init__(self, task, data_dir, paths, *, train: bool):
        self.task, self.data_dir, self.paths, self.train = task, data_dir, list(paths), train
        self.idx = np.arange(len(self.paths), dtype=np.int64)

    def _resolve(self, p):
        rel = str(p)[2:] if str(p).startswith("./") else str(p)
        for base in (self.data_dir, os.path.join(self.data_dir, "cosmic")):
            if os.path.exists(os.path.join(base, rel)):
                return os.path.join(base, rel)
        raise DataError(f"task '{self.task}': missing {os.path.join(self.data_dir, rel)} (listed in cosmic/*_dirs.npy)")

    def _stack(self, r):
        path = self._resolve(self.paths[r])
        a = _load_npy(self.task, path, mmap=False)
        if a.ndim != 3 or a.shape[0] not in (2, 3) or a.shape[1] < 192 or a.shape[2] < 192:
            raise _bad(self.task, path, "[image, mask, ignore] of shape (3, H>=192, W>=192)", f"shape {a.shape}")
        a = np.asarray(a[:, 64:192, 64:192], np.float32)
        ignore = a[2] if a.shape[0] == 3 else np.zeros_like(a[0])
        return path, a[0], a[1], ignore

    def ignore(self, i):
        return torch.from_numpy(self._stack(int(self.idx[i]))[3][None].copy())

    def _item(self, r):
        path, image, mask, ignore = self._stack(r)
        sky_path = os.path.join(os.path.dirname(path), "sky.npy")
        if self.train and os.path.exists(sky_path):
            sky = _load_npy(self.task, sky_path, mmap=False)
            k = int(os.path.basename(path).split("_")[0]) - 1
            image = image + float(np.asarray(sky).reshape(-1)[k]) * float(torch.empty(()).uniform_(-0.9, 3.0))
        y = np.where(ignore > 0.5, IGNORE_VALUE, mask).astype(np.float32)
        return torch.from_numpy(image[None].copy()), torch.from_numpy(y[None])


def _read_cosmic(spec, data_dir, val_fraction, seed):
    lists = []
    for f in spec.files:
        p = _path(spec.name, data_dir, f, spec.origin)
        a = np.asarray(_load_npy(spec.name, p, allow_pickle=True, mmap=False)).reshape(-1)
        if len(a) == 0 or not all(isinstance(v, (str, bytes, np.str_)) for v in a):
            raise _bad(spec.name, p, "a 1-D array of relative .npy paths", f"{a.dtype} array of {len(a)}")
        lists.append([v.decode() if isinstance(v, bytes) else str(v) for v in a])
    t_idx, v_idx = _carve(len(lists[0]), val_fraction)
    tr = [lists[0][i] for i in t_idx]
    va = [lists[0][i] for i in v_idx]
    return (CosmicDataset(spec.name, data_dir, tr, train=True), CosmicDataset(spec.name, data_dir, va, train=False),
            CosmicDataset(spec.name, data_dir, lists[1], train=False), {"val_from": "carved"})


# ---- ECG -------------------------------------------------------------------------------------------
ECG_LABELS = {"N": 0, "A": 1, "O": 2, "~": 3}
ECG_STRIDE = {0: 500, 1: 83, 2: 250, 3: 25}            # ORCA/NB360 training strides (class-dependent)


class WindowDataset(IndexedDataset):
    """Windows (record, start) of z-scored 1D records; `groups` = record ids (majority vote per record)."""

    def __init__(self, records, labels, windows, window=1000):
        self.records, self.rec_labels, self.windows, self.window = records, labels, windows, window
        self.idx = np.arange(len(windows), dtype=np.int64)
        self._groups = windows[:, 0].copy()
        self._labels = labels[windows[:, 0]]

    def _item(self, r):
        rec, start = self.windows[r]
        x = np.zeros(self.window, np.float32)
        seg = self.records[rec][start:start + self.window]
        x[:len(seg)] = seg
        return torch.from_numpy(x[None]), torch.tensor(int(self.rec_labels[rec]), dtype=torch.int64)


def _windows(records, labels, rec_ids, *, train: bool, window=1000):
    """slide_and_cut: starts range(0, len − window, stride); train stride by class, eval stride 500 for all
    (DEVIATION from ORCA's label-dependent test stride, quirk 5); a record too short for one window gives one
    zero-padded window (eval only)."""
    out = []
    for r in rec_ids:
        stride = ECG_STRIDE[int(labels[r])] if train else 500
        starts = list(range(0, len(records[r]) - window, stride))
        if not starts and not train:
            starts = [0]
        out += [(r, s) for s in starts]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _read_ecg(spec, data_dir, val_fraction, seed):
    from sklearn.model_selection import train_test_split
    path = _path(spec.name, data_dir, spec.files[0], spec.origin)
    d = _load_pickle(spec.name, path, encoding="latin1")
    if not (_has(d, "data") and _has(d, "label")) or len(_key(d, "data")) != len(_key(d, "label")):
        raise _bad(spec.name, path, "a dict {'data': [1D arrays], 'label': ['N'|'A'|'O'|'~']} of equal length",
                   f"{type(d).__name__} {sorted(map(str, d)) if isinstance(d, dict) else ''}")
    raw = [_key(d, "label")[i] for i in range(len(_key(d, "label")))]
    raw = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    if any(v not in ECG_LABELS for v in raw):
        raise _bad(spec.name, path, "labels in N, A, O, ~", f"{sorted(set(raw) - set(ECG_LABELS))}")
    labels = np.asarray([ECG_LABELS[v] for v in raw], np.int64)
    records = []
    for a in _key(d, "data"):
        a = np.asarray(a, np.float64).reshape(-1)
        records.append(((a - a.mean()) / (a.std() if a.std() > 0 else 1.0)).astype(np.float32))  # z-score
    ids = np.arange(len(records))
    # NB360 record split: 80 % train, then the remaining 20 % halved into val / test (random_state 0)
    tr, rest = train_test_split(ids, test_size=0.2, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, random_state=0)
    mk = lambda r, t: WindowDataset(records, labels, _windows(records, labels, np.sort(r), train=t))
    return mk(tr, True), mk(va, False), mk(te, False), {"val_from": "published"}


# ---- FSD50K ----------------------------------------------------------------------------------------
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
    `seed` (ORCA freezes them for all epochs, quirk 14). eval: one item per chunk; `groups` = clip ids."""

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


def _read_fsd50k(spec, data_dir, val_fraction, seed):
    paths = [_path(spec.name, data_dir, f, spec.origin) for f in spec.files]
    try:
        with open(paths[3]) as f:
            lbl_map = json.load(f)
    except (ValueError, OSError) as e:
        raise _corrupt(spec.name, paths[3], "JSON", e) from None
    if not isinstance(lbl_map, dict) or len(lbl_map) != spec.num_classes:
        raise _bad(spec.name, paths[3], f"a JSON map of {spec.num_classes} label names -> index",
                   f"{type(lbl_map).__name__} of {len(lbl_map) if hasattr(lbl_map, '__len__') else '?'}")
    root = os.path.join(data_dir, "fsd50k")
    noise_dir = os.path.join(root, "noise_22050")
    noise = sorted(os.path.join(noise_dir, f) for f in os.listdir(noise_dir) if f.endswith(".wav")) \
        if os.path.isdir(noise_dir) else []
    out = []
    for split, p in zip(("train", "val", "test"), paths[:3]):
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or any(k not in rows[0] for k in ("files", "labels", "ext")):
            raise _bad(spec.name, p, "CSV columns files, labels, ext", f"columns {list(rows[0]) if rows else 'none'}")
        y = np.zeros((len(rows), spec.num_classes), np.float32)
        for i, row in enumerate(rows):
            for name in row["labels"].split(","):
                if name not in lbl_map:
                    raise _bad(spec.name, p, "labels listed in lbl_map.json", f"unknown label {name!r} (row {i + 2})")
                y[i, int(lbl_map[name])] = 1.0
        files = [_resolve_chunk(root, row["files"]) for row in rows]
        out.append(FSDDataset(spec.name, files, y, np.asarray([row["ext"] for row in rows]), noise,
                              train=split == "train", seed=seed))
    return (*out, {"val_from": "published"})


# ---- PDEBench ----------------------------------------------------------------------------------------
def _t_index(T: int, rt: int, t_train: int) -> int:
    """ORCA's target frame, in file indices: reduced index min(t_train, ceil(T/rt)) − 1, times rt.
    Used for train AND test (fix of quirk 6: ORCA's test set fell back to t_train = 100)."""
    return (min(t_train, math.ceil(T / rt)) - 1) * rt


class PDEDataset(IndexedDataset):
    """Lazy (input, target) pairs from a PDEBench HDF5 file: each access reads only the two frames it needs
    (h5py hyperslabs), so memory grows with the samples used, not with the file. One handle per process."""

    def __init__(self, task, path, keys, layout, t_idx, rx, cin=0, cout=0, norm=None):
        self.task, self.path, self.keys, self.layout = task, path, keys, layout
        self.t_idx, self.rx, self.cin, self.cout, self.norm = t_idx, rx, cin, cout, norm
        self.idx = np.arange(len(keys), dtype=np.int64)
        self._f, self._pid = None, None

    def __getstate__(self):                       # DataLoader workers reopen the file
        return {**self.__dict__, "_f": None, "_pid": None}

    def _file(self):
        if self._f is None or self._pid != os.getpid():
            self._f, self._pid = _open_h5(self.task, self.path), os.getpid()
        return self._f

    def _pair(self, k):
        f, r, t = self._file(), self.rx, self.t_idx
        if self.layout == "tensor":                       # tensor (N, T, X)
            ds = f["tensor"]
            return ds[k, 0, ::r][None], ds[k, t, ::r][None]
        if self.layout == "darcy":                        # nu (N, X, Y) -> tensor (N, 1, X, Y)
            return f["nu"][k, ::r, ::r][None], f["tensor"][k, 0, ::r, ::r][None]
        if self.layout == "cfd":                          # [ρ, p, v] channel-major -> (1, 3X)
            x = np.concatenate([f[n][k, 0, ::r] for n in ("density", "pressure", "Vx")])[None]
            y = np.concatenate([f[n][k, t, ::r] for n in ("density", "pressure", "Vx")])[None]
            return x, y
        g = f[k]["data"]                                  # groups: data (T, *S, V)
        sl = (slice(None, None, r),) * (g.ndim - 2)
        return g[(0, *sl, self.cin)][None], g[(t, *sl, self.cout)][None]

    def _item(self, r):
        try:
            x, y = self._pair(self.keys[r])
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise _corrupt(self.task, self.path, f"PDEBench HDF5 (sample {self.keys[r]})", e) from None
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if self.norm is not None:                         # 1D-CFD: point-wise (v − μ_x)/(σ_x + eps) on x AND y
            mu, sd = self.norm
            x, y = (x - mu) / (sd + NORM_EPS), (y - mu) / (sd + NORM_EPS)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def _check_shape(task, path, what, shape, expected):
    if tuple(shape) != tuple(expected):
        raise _bad(task, path, f"{what} of shape {tuple(expected)}", f"shape {tuple(shape)}")


def _read_pdebench(spec, data_dir, val_fraction, seed, *, file, layout, rx, rt=1, t_train=1, cin=0, cout=0):
    dl = spec.downloads[0]
    path = _path(spec.name, data_dir, file, spec.origin, downloadable=True)
    f = _open_h5(spec.name, path)
    S = tuple(int(v) * rx for v in spec.input_shape[1:])         # native spatial size (ORCA's ::rx of it)
    if layout == "cfd":
        S = (S[0] // 3,)
    try:
        if layout in ("tensor", "cfd"):
            names = ("tensor",) if layout == "tensor" else ("density", "pressure", "Vx")
            for n in names:
                if n not in f:
                    raise _bad(spec.name, path, f"datasets {list(names)}", f"{sorted(f.keys())}")
            N, T = f[names[0]].shape[:2]
            for n in names:
                _check_shape(spec.name, path, n, f[n].shape, (N, T, *S))
            keys = list(range(N))
        elif layout == "darcy":
            if "tensor" not in f or "nu" not in f:
                raise _bad(spec.name, path, "datasets 'tensor' (N,1,128,128) and 'nu' (N,128,128)", f"{sorted(f.keys())}")
            N, T = f["nu"].shape[0], 1
            _check_shape(spec.name, path, "nu", f["nu"].shape, (N, *S))
            _check_shape(spec.name, path, "tensor", f["tensor"].shape, (N, 1, *S))
            keys = list(range(N))
        else:
            import h5py
            keys = sorted(f.keys())
            if not keys or not isinstance(f[keys[0]], h5py.Group) or "data" not in f[keys[0]]:
                raise _bad(spec.name, path, "groups '0000'... each with 'data' (T, *S, V)", f"{keys[:3]}")
            shp = f[keys[0]]["data"].shape
            T = shp[0]
            if shp[1:-1] != S or shp[-1] <= max(cin, cout):
                raise _bad(spec.name, path, f"group data of shape (T, {', '.join(map(str, S))}, >{max(cin, cout)})",
                           f"{shp}")
    except DataError:
        f.close()
        raise
    t_idx = _t_index(T, rt, t_train) if layout != "darcy" else 0
    n = len(keys)
    if n < 3:
        f.close()
        raise _bad(spec.name, path, "at least 3 samples", f"{n}")
    # PDEBench split: single file -> first 10 % test; grouped -> last 10 % of sorted keys test
    n_test = max(1, int(n * 0.1)) if layout != "groups" else max(1, n - int(n * 0.9))
    if layout == "groups":
        test_keys, train_keys = keys[n - n_test:], keys[:n - n_test]
    else:
        test_keys, train_keys = keys[:n_test], keys[n_test:]
    t_rel, v_rel = _carve(len(train_keys), val_fraction)
    norm = None
    if layout == "cfd":                                  # UnitGaussianNormalizer fitted on training inputs
        tr_idx = [train_keys[i] for i in t_rel]
        x0 = np.concatenate([f[n][:, 0, ::rx] for n in ("density", "pressure", "Vx")], 1)[tr_idx]   # (n, 3X)
        mu, sd = _unit_gaussian(x0.astype(np.float32))
        norm = (mu[None].astype(np.float32), sd[None].astype(np.float32))
        del x0
    f.close()
    mk = lambda ks: PDEDataset(spec.name, path, ks, layout, t_idx, rx, cin, cout, norm)
    train = mk([train_keys[i] for i in t_rel])
    val = mk([train_keys[i] for i in v_rel])
    return train, val, mk(test_keys), {"val_from": "carved", "target_index": t_idx, "file_md5": dl.md5}


READERS = {"cifar100": _read_cifar100, "spherical": _read_spherical, "ninapro": _read_ninapro,
           "fsd50k": _read_fsd50k, "darcyflow": _read_darcyflow, "psicov": _read_psicov, "cosmic": _read_cosmic,
           "ecg": _read_ecg, "satellite": _read_satellite, "deepsea": _read_deepsea, "pdebench": _read_pdebench}


# --------------------------------------------------------------------------------------------------
# Synthetic data: exact task shapes and label types, a learnable signal, generated per index (no download)
# --------------------------------------------------------------------------------------------------
class SyntheticDataset(IndexedDataset):
    """x = class template(s) + noise (point tasks); y = a point-wise function of mean_c(x) (dense tasks;
    binary for BCE tasks). Deterministic in (seed, split, index); nothing is held in memory."""

    def __init__(self, spec: TaskSpec, n: int, seed: int, split: int):
        self.spec, self.seed, self.split = spec, seed, split
        self.idx = np.arange(n, dtype=np.int64)
        self.kind = "class" if spec.output == "point" and not spec.multilabel else "float"
        if spec.output == "point":
            t = np.random.default_rng([seed, 7919]).standard_normal((spec.num_classes, *spec.input_shape))
            self.templates = t.astype(np.float32)
            self._labels = np.array([self._label(np.random.default_rng([seed, split, i])) for i in range(n)]) \
                if self.kind == "class" else None

    def _label(self, rng):
        return int(rng.integers(self.spec.num_classes))

    def _item(self, r):
        s, rng = self.spec, np.random.default_rng([self.seed, self.split, r])
        if s.output == "point" and not s.multilabel:
            y = self._label(rng)
            x = self.templates[y] + 0.5 * rng.standard_normal(s.input_shape, dtype=np.float32)
            return torch.from_numpy(x.astype(np.float32)), torch.tensor(y, dtype=torch.int64)
        if s.output == "point":                          # multi-hot, at least one positive
            y = (rng.random(s.num_classes) < 0.2).astype(np.float32)
            y[int(rng.integers(s.num_classes))] = 1.0
            x = np.tensordot(y, self.templates, axes=1) + 0.5 * rng.standard_normal(s.input_shape, dtype=np.float32)
            return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
        x = rng.standard_normal(s.input_shape, dtype=np.float32)
        m = x.mean(0)                                    # (*S)
        if s.loss == "bce":
            y = np.broadcast_to((m > 0.5).astype(np.float32), s.output_shape)
        else:
            y = np.stack([np.tanh(m) * (c + 1) + 1.0 for c in range(s.output_shape[0])])
        return torch.from_numpy(x), torch.from_numpy(np.array(y, dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# Custom data
# --------------------------------------------------------------------------------------------------
def _custom_arrays(data_dir):
    task = "custom"
    hint = ("custom data: write train_x.npy, train_y.npy, test_x.npy, test_y.npy (optional val_x.npy, val_y.npy) "
            "with numpy.save")
    arrs = {}
    for s in ("train", "val", "test"):
        for v in ("x", "y"):
            p = os.path.join(data_dir, f"{s}_{v}.npy")
            if os.path.exists(p):
                arrs[s, v] = _load_npy(task, p)
            elif s != "val":
                raise DataError(f"task 'custom': missing {p}; {hint}")
    if (("val", "x") in arrs) != (("val", "y") in arrs):
        raise DataError(f"task 'custom': {data_dir} has only one of val_x.npy / val_y.npy; give both or neither")
    splits = [s for s in ("train", "val", "test") if (s, "x") in arrs]
    x0, y0 = arrs["train", "x"], arrs["train", "y"]
    if x0.ndim not in (3, 4):
        raise DataError(f"task 'custom': train_x.npy must be (N, C, L) [1D] or (N, C, H, W) [2D], found shape {x0.shape}")
    for s in splits:
        x, y = arrs[s, "x"], arrs[s, "y"]
        if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
            raise DataError(f"task 'custom': {s}_x/{s}_y must be numeric arrays, found {x.dtype} / {y.dtype}")
        if x.shape[1:] != x0.shape[1:]:
            raise DataError(f"task 'custom': {s}_x.npy has per-sample shape {x.shape[1:]}, train_x.npy {x0.shape[1:]}")
        if y.shape[1:] != y0.shape[1:]:
            raise DataError(f"task 'custom': {s}_y.npy has per-sample shape {y.shape[1:]}, train_y.npy {y0.shape[1:]}")
        if len(x) != len(y):
            raise DataError(f"task 'custom': {s}_x.npy has {len(x)} samples but {s}_y.npy has {len(y)}")
        if len(x) == 0:
            raise DataError(f"task 'custom': {s}_x.npy is empty")
        for nm, a in ((f"{s}_x.npy", x), (f"{s}_y.npy", y)):
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise DataError(f"task 'custom': {nm} contains NaN or inf values; clean or impute them first")
    dim, C, S = ("1d" if x0.ndim == 3 else "2d"), int(x0.shape[1]), tuple(int(v) for v in x0.shape[2:])
    ys = [arrs[s, "y"] for s in splits]
    is_int = y0.dtype.kind in "iub"
    binary = is_int and all(np.isin(np.unique(np.asarray(y)), [0, 1]).all() for y in ys)
    if y0.shape[1:] == S or (y0.ndim == x0.ndim and y0.shape[2:] == S):           # dense
        if is_int and not binary:
            raise DataError("task 'custom': dense integer targets must be 0/1 masks; save real-valued targets as float")
        k = 1 if y0.shape[1:] == S else int(y0.shape[1])
        output, oshape, ml, ykind = "dense", (k, *S), False, "float"
        loss, metric = ("bce", "one_minus_auroc") if binary else ("mse", "nrmse")
    elif y0.ndim == 1 and is_int:
        k = int(max(int(np.max(y)) for y in ys)) + 1
        if min(int(np.min(y)) for y in ys) < 0 or k < 2:
            raise DataError(f"task 'custom': class labels must be integers 0..K-1 with K >= 2, found range "
                            f"{min(int(np.min(y)) for y in ys)}..{k - 1}")
        output, loss, metric, oshape, ml, ykind = "point", "cross_entropy", "error", (k,), False, "class"
    elif y0.ndim in (1, 2):
        k = 1 if y0.ndim == 1 else int(y0.shape[1])
        ml = binary and y0.ndim == 2                 # 0/1 integer (N, K): multi-label; float: regression
        output, oshape, ykind = "point", (k,), "float"
        loss, metric = ("bce", "one_minus_auroc") if ml else ("mse", "mse")
    else:
        raise DataError(f"task 'custom': train_y.npy shape {y0.shape} fits none of (N,) classes/values, (N, K), "
                        f"(N, {', '.join(map(str, S))}) or (N, C_out, {', '.join(map(str, S))}) for x {x0.shape}")
    spec = TaskSpec(name="custom", benchmark="custom", dim=dim, input_shape=(C, *S), output=output, num_classes=k,
                    output_shape=oshape, multilabel=ml, loss=loss, metric=metric,
                    target_seq_len=512 if dim == "1d" else None, source="cifar10" if dim == "2d" else "conll2003",
                    reader="custom", origin=hint, description=f"user data from {data_dir}", **CUSTOM_DEFAULTS)
    return spec, arrs, ykind


def _read_custom(data_dir, val_fraction):
    spec, arrs, ykind = _custom_arrays(data_dir)

    def mk(s, idx=None):
        y = arrs[s, "y"] if ykind == "class" else _ReshapedY(arrs[s, "y"], spec.output_shape)
        return ArrayDataset(arrs[s, "x"], y, idx, y_kind=ykind)
    if ("val", "x") in arrs:
        return spec, mk("train"), mk("val"), mk("test"), "published"
    t_idx, v_idx = _carve(len(arrs["train", "x"]), val_fraction)
    return spec, mk("train", t_idx), mk("train", v_idx), mk("test"), "carved"


class _ReshapedY:
    """y rows as float32 of a fixed per-sample shape (custom scalar regression -> (1,), dense -> (C_out, *S))."""

    def __init__(self, y, shape):
        self.y, self.shape = y, shape

    def __getitem__(self, r):
        return np.asarray(self.y[r], np.float32).reshape(self.shape)

    def __len__(self):
        return len(self.y)


# --------------------------------------------------------------------------------------------------
# load_task
# --------------------------------------------------------------------------------------------------
def load_task(name: str, data_dir: str | None = None, *, synthetic: bool = False, max_train_samples: int | None = None,
              seed: int = 0, download: bool = False, val_fraction: float = 0.1,
              synthetic_sizes: tuple = (64, 16, 16)) -> TaskData:
    """Train / val / test datasets of a task, yielding (x float32 of spec.input_shape, y) pairs.

    synthetic=True: no files; `synthetic_sizes` samples per split in the task's exact shapes (seeded).
    download=True: fetch missing files that have a stable URL (CIFAR-100, PDEBench), MD5-checked.
    val_fraction: share of the training part held out when the benchmark has no published validation split.
    max_train_samples: a seeded random subset of the training split (val and test untouched)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    spec = get_task(name) if str(name).strip().lower() != "custom" else None
    extras: dict = {}
    if synthetic:
        if spec is None:
            raise DataError("task 'custom' has no synthetic data: it is defined by your files (drop synthetic=True)")
        train, val, test = (SyntheticDataset(spec, int(n), seed, i) for i, n in enumerate(synthetic_sizes))
        extras["val_from"] = "synthetic"
    else:
        if data_dir is None:
            raise DataError(f"task '{name}': pass data_dir (train.py --data-dir) or use synthetic data (--synthetic-data)")
        if spec is None:
            spec, train, val, test, how = _read_custom(data_dir, val_fraction)
            extras["val_from"] = how
        else:
            if download:
                for dl in spec.downloads:
                    if not all(os.path.exists(os.path.join(data_dir, f)) for f in spec.files):
                        _fetch(data_dir, dl)
            train, val, test, extras = READERS[spec.reader](spec, data_dir, val_fraction, seed, **spec.reader_kwargs)
    if max_train_samples is not None and max_train_samples < len(train):
        if max_train_samples < 1:
            raise DataError(f"max_train_samples must be >= 1, got {max_train_samples}")
        rel = np.sort(np.random.default_rng(seed).choice(len(train), int(max_train_samples), replace=False))
        train = train.subset(rel)
    decoder = extras.pop("output_decoder", None)
    return TaskData(spec, train, val, test, output_decoder=decoder,
                    info={**extras, "sizes": (len(train), len(val), len(test))})


# --------------------------------------------------------------------------------------------------
# Source surrogates (stage 1 outer loss): CIFAR-10 (2D bodies) and CoNLL-2003 (1D bodies)
# --------------------------------------------------------------------------------------------------
class SourceDataset(IndexedDataset):
    """(x^s, y^s) pairs held in memory; `labels` for ClassBalancedBatchSampler."""

    def __init__(self, x: torch.Tensor, y: np.ndarray):
        self.x, self._labels = x, np.asarray(y, np.int64)
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
    xs, ys = zip(*(_cifar_rows("cifar10", _path("cifar10", data_dir, f"cifar-10-batches-py/{f}", origin, True),
                                "labels") for f in files))
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
    seq_len (RoBERTa: <s> mention </s></s> sentence </s> <pad>...), label = its type (PER, ORG, LOC, MISC).
    DEVIATION from ORCA's undocumented text_xs_32 features (datasets.md §4.2): an entity-typing formulation of
    CoNLL-2003 with whole-sample labels; we return token ids, the frozen source embedder makes the features."""
    origin = ("CoNLL-2003 (https://www.clips.uantwerpen.be/conll2003/ner/ annotations + Reuters RCV1 text, or the "
              "Hugging Face Hub dataset eriktks/conll2003 exported to CoNLL text); no stable direct URL")
    cands = [os.path.join(data_dir, "conll2003", f) for f in CONLL_FILES[split]]
    path = next((p for p in cands if os.path.exists(p)), None)
    if path is None:
        raise DataError(f"source 'conll2003' ({split} split): missing {cands[0]} (or {cands[1]}); "
                        f"get it from {origin}")
    if tokenizer is None:
        raise DataError("source 'conll2003': pass tokenizer= (the source model's, e.g. roberta-base's "
                        "AutoTokenizer) to turn the text into input_ids")
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
    return SourceDataset(torch.tensor(ids, dtype=torch.int64), np.asarray(labels))


def _synthetic_source(source, n, seed, vocab_size, seq_len, split="train"):
    """n samples, balanced classes, of a seeded class-conditional distribution that both splits share:
    cifar10 x = template_y + 0.5 ε (templates from `seed` only, not from n or the split); conll2003 ids drawn
    half from the class's own band of the vocabulary. The split only picks the seed of the draw (labels, noise),
    so a probe trained on the train split generalises to the test split."""
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
    return SourceDataset(torch.from_numpy(x.astype(np.int64)), y)


def load_source_surrogate(source: str, data_dir: str | None = None, *, synthetic: bool = False, tokenizer=None,
                          max_samples: int = 5000, seed: int = 0, vocab_size: int = 1000,
                          seq_len: int = CONLL_SEQ_LEN, download: bool = False, n_synthetic: int = 200,
                          split: str = "train") -> Dataset:
    """Labelled source data (x^s, y^s): the stage-1 outer loss uses split="train" (ORCA: 5,000 samples);
    probe.py trains its linear probe on "train" and reports the error on "test".
    cifar10: x (3, 32, 32) float32 normalised with ORCA's CIFAR-10 mean/std; y 0..9. "train": data_batch_1..5
      after a once-drawn crop/flip; "test": test_batch, no augmentation.
    conll2003: x input_ids (seq_len,) int64 (see `_conll`); y 0..3 = PER, ORG, LOC, MISC. "train": eng.train
      (or train.txt); "test": eng.testb (or test.txt).
    synthetic: n_synthetic samples, balanced classes; CoNLL ids in [3, vocab_size) between <s>=0 and </s>=2;
      "test" is another seeded draw from the same class-conditional distribution as "train"."""
    if source not in ("cifar10", "conll2003"):
        raise DataError(f"unknown source surrogate {source!r}; choose cifar10 or conll2003")
    if split not in SOURCE_SPLITS:
        raise DataError(f"source '{source}': unknown split {split!r}; choose one of {', '.join(SOURCE_SPLITS)}")
    if synthetic:
        return _synthetic_source(source, min(n_synthetic, max_samples), seed, vocab_size, seq_len, split)
    if data_dir is None:
        raise DataError(f"source '{source}': pass data_dir (train.py --data-dir) or use synthetic data")
    if source == "cifar10":
        return _cifar10(data_dir, max_samples, seed, download, split)
    return _conll(data_dir, tokenizer, max_samples, seed, seq_len, split)


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
