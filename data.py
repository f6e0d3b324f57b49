"""The task registry and the loading API of MoNA (Ma et al., ICML 2024, arXiv 2406.18864): start reading here.

Paper map
---------
| paper                                       | code                                                    |
|---------------------------------------------|---------------------------------------------------------|
| App. A.1, Table 8 (NAS-Bench-360 tasks)     | `TASKS` rows with benchmark "nb360"                      |
| App. A.1, Table 9 (stage-2 hyper-parameters)| `TaskSpec.batch_size ... decay_epochs` (*)               |
| App. A.1, Table 10/11 (PDEBench tasks)      | `TASKS` rows with benchmark "pdebench"                   |
| App. A.1 stage 1: AdamW, lr 3e-5, wd 0.1, 10 epochs | `STAGE1`, copied into every `TaskSpec.stage1_*`   |
| paper §4, App. A.6: source data CIFAR-10, CoNLL-2003 | `load_source_surrogate`                          |
| App. A.2 1D embedder: N = L / stack_num tokens | `TaskSpec.target_seq_len`, `num_tokens()`             |
| Alg. 1 outer loss needs same-class source pairs | `ClassBalancedBatchSampler` (in readers/sources.py)          |
| Table 5, your own modality                  | `load_task("custom", ...)`, `describe_task` (readers/custom.py) |
(*) clip, momentum, warm-up / decay epochs and betas, which the paper does not list, come from ORCA's configs
(github.com/sjunhongshen/ORCA, `src/configs/<task>.yaml`); the values the paper lists agree with them.

| symbol            | code name                      | shape (per sample)                            |
|-------------------|--------------------------------|-----------------------------------------------|
| x (target input)  | `TaskData.train[i][0]`         | `spec.input_shape`: (C, L) or (C, H, W), float32 |
| y (target label)  | `TaskData.train[i][1]`         | int64 () / float32 (K,) multi-hot / float32 `spec.output_shape` |
| x^s, y^s (source) | `load_source_surrogate(...)[i]`| CIFAR-10 (3, 32, 32) float32 / CoNLL input_ids (32,) int64; label int64 () |
| K                 | `TaskSpec.num_classes`         | classes (point) or output channels (dense)    |

Modules of the data pipeline (each reads in one sitting; this one is where a reader starts)
--------------------------------------------------------------------------------------------
| module      | holds                                                                                  |
|-------------|----------------------------------------------------------------------------------------|
| data.py     | `TaskSpec`, `TASKS`, `get_task`; `load_task`, `load_source_surrogate`; synthetic data            |
| readers/custom.py   | your own data (Table 5): what the arrays mean, the 1D patch length, `describe_task`      |
| readers/nb360.py    | NAS-Bench-360 readers: CIFAR-100, Spherical, NinaPro, Satellite, DeepSEA, Darcy, PSICOV, Cosmic, ECG |
| readers/fsd50k.py   | the FSD50K reader and its log-mel features                                             |
| readers/pdebench.py | the PDEBench HDF5 reader (lazy: two frames per sample)                                 |
| readers/sources.py  | source surrogates (CIFAR-10, CoNLL-2003, synthetic) and `ClassBalancedBatchSampler`    |
| readers/splits.py   | `IndexedDataset` / `ArrayDataset` views, validation splits, ORCA's UnitGaussianNormalizer |
| readers/fileio.py   | `DataError`; safe pickle / .npy / .npz / HDF5 / .mat readers; MD5-checked downloads    |
Each reader module's docstring lists the bugs of the earlier loaders (ORCA's) it fixes and the behaviours it
keeps on purpose.

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

Protocols (`load_task(protocol=...)`; train.py --protocol, default "paper")
"paper": as the paper ran it (App. A.1 follows ORCA, whose configs all set `valid_split: False`): train on what
ORCA trained on, built natively so training augmentation reaches every sample; no validation split (`val` None:
ORCA's "validation" was the test set). "strict": a validation split for model selection, the benchmark's
published one where it has one, else `val_fraction` of the training part drawn with the fixed `SPLIT_SEED`.
| task                | paper: training set (ORCA)          | strict: train / val                | test_orca (both protocols)     |
|---------------------|-------------------------------------|------------------------------------|--------------------------------|
| cifar100, spherical | all 50,000 training images          | first 40,000 / last 10,000 (NB360) | None                           |
| ninapro             | train + val files (3,297)           | train / val files                  | None                           |
| fsd50k              | tr.csv (ORCA leaves val.csv unused) | tr.csv / val.csv                   | None                           |
| darcyflow           | smooth1[:1000]                      | smooth1[:900] / [900:1000] (NB360) | None                           |
| psicov              | all of deepcov.lst                  | deepcov.lst[100:] / [:100] (NB360) | None                           |
| cosmic              | all train dirs                      | 90 % / 10 % carve (NB360's 483)    | test + sky·U(−0.9, 3), fixed seed |
| ecg                 | 90 % of the records (ORCA's 90/10)  | 80 % / 10 % (NB360's 80/10/10)     | windows at the label stride    |
| satellite           | the whole train file                | all but / its last len(test) rows  | None                           |
| deepsea             | x_train + x_val                     | x_train / x_val                    | None                           |
| PDEBench (8 tasks)  | the whole non-test 90 %             | 90 % / 10 % carve of it            | ORCA's frame where it differs (*) |
| custom              | train (+ val files)                 | val files, else a carve            | None                           |
(*) target index 99 for Diffusion-Reaction 1D (train 29), Diffusion-Sorption, Shallow-Water, Diffusion-Reaction 2D
(train 100). Test files are the same in both protocols; ECG's test records differ (ORCA's 10 % vs NB360's).
`max_train_samples` then subsamples the training split with `seed`. Normalisers are fitted on the training split.

What the training loop must do with a few tasks (all data, no task names):
- `spec.group_reduce` set (FSD50K "mean", ECG "vote"): pool outputs with
  `metrics.aggregate_groups(pred, target, dataset.groups, spec.group_reduce)` before `metrics.METRICS[spec.metric]`
  (clip = mean of its chunks' logits; record = majority vote of its windows);
- ORCA's number (paper variant): `spec.paper_metric or spec.metric` with `paper_metric_kwargs`, after
  `spec.paper_group_reduce` pooling, per chunk of `spec.eval_chunk` (metrics.chunk_average), on `test_orca or test`;
- `TaskData.output_decoder` not None (Darcy, NB360): prediction = output_decoder(model output), as ORCA decodes
  its normalised output before the loss and the metric; targets are already in physical units;
- Cosmic targets hold IGNORE_VALUE (−1) on ignored pixels; `loss_kwargs` passes ignore_value to losses.bce.

Safety: pickles are only ever read from paths under the `data_dir` the user passed (readers/fileio.py).

Custom data (`load_task("custom", data_dir, target_kind=None, patch_length=None)`): `train_x.npy, train_y.npy,
test_x.npy, test_y.npy` (optional `val_x.npy, val_y.npy`); readers/custom.py holds the rules (what y becomes, the
1D patch length) and `describe_task`, the start-up line. Defaults `CUSTOM_DEFAULTS`: AdamW, lr 1e-4, wd 1e-5,
batch 32, 20 epochs, accum 1, clip 1, 1 warm-up epoch then linear decay to 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from readers.custom import CUSTOM_DEFAULTS, TARGET_KINDS, custom_task, describe_task, read_custom  # noqa: F401
from readers.fileio import DataError, Download, _fetch
from readers.fsd50k import _read_fsd50k
from embedders import compute_stack_num
from losses import IGNORE_VALUE   # Cosmic: ignored pixels in y; the one definition lives with the loss
from readers.nb360 import (_read_cifar100, _read_cosmic, _read_darcyflow, _read_deepsea, _read_ecg, _read_ninapro,
                   _read_psicov, _read_satellite, _read_spherical)
from readers.pdebench import _read_pdebench
from readers.primitives import PrimitiveTask, source_images, source_tokens
from readers.sources import (CONLL_SEQ_LEN, SOURCE_DIR, SOURCE_LAYOUT, SOURCE_SPLITS, SYNTHETIC_PAD_ID, SourceDataset,
                             _cifar10, _conll, _synthetic_source)
from readers.sources import ClassBalancedBatchSampler  # noqa: F401  (data.ClassBalancedBatchSampler, as train.py uses it)
from readers.splits import PROTOCOLS, ArrayDataset, ConcatRows, IndexedDataset, _carve, _check_protocol, _need  # noqa: F401

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------
STAGE1 = dict(optimizer="adamw", lr=3e-5, weight_decay=0.1, epochs=10,   # App. A.1 (paper §4.4 says 5 epochs)
              alpha=1e-2)                 # α: not in the paper; 0.01 for the paper tasks (bench/README.md)
BETAS = (0.9, 0.98)            # Adam/AdamW betas of every ORCA config (`src/configs/*.yaml`; the paper gives none)
NB360_DRIVE = "https://drive.google.com/drive/folders/1OOp6UrCiP79mTIkCrUdjjHWDo8K0bJUw"
S3 = "https://pde-xd.s3.amazonaws.com/"
DARUS = "https://darus.uni-stuttgart.de/api/access/datafile/"


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
    metric: str                     # key of metrics.METRICS (lower is better)
    loss_kwargs: dict = field(default_factory=dict)
    metric_kwargs: dict = field(default_factory=dict)
    target_seq_len: int | None = None   # 1D: ORCA's tsl; tokens = L / stack_num (ORCA Embeddings1D)
    group_reduce: str | None = None     # eval: metrics.aggregate_groups(how=...) over dataset.groups before the
                                        # metric: "mean" logits per clip (FSD50K), "vote" per record (ECG)
    # ORCA's evaluation (src/task_configs.py: get_metric, src/main.py: evaluate, src/configs/<task>.yaml)
    paper_metric: str | None = None     # key of metrics.METRICS with ORCA's definition; None = the same as `metric`
    paper_metric_kwargs: dict = field(default_factory=dict)
    paper_group_reduce: str | None = None   # ORCA's pooling of dataset.groups before its metric; None = per item
    eval_chunk: int = 1000              # eval_batch_size: metric per chunk of >= eval_chunk outputs, averaged; 0 = whole set
    orca_maxsamples: int = 128          # ORCA stage 1: samples per class per OTDD term (`maxsamples`)
    orca_test: str | None = None        # ORCA's test-time treatment where it differs from ours (TaskData.test_orca)
    # ORCA scores this test set in a random order (ECG: `load_ecg` permutes the test windows; DeepSEA: its test
    # loader has shuffle=True), so which samples share a chunk of eval_chunk is random: the paper definition
    # scores one permutation seeded by the run's --seed (stage2.score), the corrected one the whole set
    orca_test_shuffled: bool = False
    # stage 2 (Tables 9 / 11; what they omit from ORCA's src/configs/<task>.yaml); clip 0 = no clipping
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
    stage1_steps: int | None = None     # MoNA / Emb stage-1 length in optimizer steps (custom data); None: epochs
    alpha: float = STAGE1["alpha"]      # α of Eq. (3), not given in the paper (bench/README.md: the α sweep)
    orca_epochs: int = 60               # ORCA's own stage 1 (`embedder_epochs` of its configs; NinaPro 100)
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
    val: Dataset | None                             # None under protocol "paper"
    test: Dataset
    output_decoder: torch.nn.Module | None = None   # Darcy (NB360): pred = z·(σ+eps) + μ (ORCA's y_normalizer)
    info: dict = field(default_factory=dict)        # sizes (n_train, n_val, n_test), protocol, val_from, ...
    test_orca: Dataset | None = None                # the test set with ORCA's test-time treatment (spec.orca_test)


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


def _pde(name, dim, ishape, loss, hp, file, darus_id, md5, layout, desc, tsl=None, eval_chunk=1000, orca_test=None,
         **rk):
    # metric: ORCA's nmse is the per-sample nRMSE over all grid points (C = 1 here), as ours: paper_metric None
    return TaskSpec(name=name, benchmark="pdebench", dim=dim, input_shape=ishape, output="dense", num_classes=1,
                    output_shape=ishape, multilabel=False, loss=loss, metric="nrmse", target_seq_len=tsl,
                    source="cifar10" if dim == "2d" else "conll2003", reader="pdebench",
                    reader_kwargs=dict(file=file, layout=layout, **rk), files=(file,),
                    downloads=(Download(file, DARUS + str(darus_id), md5),), eval_chunk=eval_chunk,
                    orca_test=orca_test, origin=f"PDEBench on DaRUS: {DARUS}{darus_id} (MD5 {md5})",
                    description=desc, **hp)


_ORCA_FRAME = "the test target at ORCA's frame (load_pde's test set falls back to t_train 100)"


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
           multilabel=True, loss_kwargs={"pos_weight": 10.0}, group_reduce="mean",
           paper_metric="one_minus_map_orca", paper_group_reduce="mean", eval_chunk=0),   # ORCA: clips, whole set
    _nb360("darcyflow", "2d", (3, 85, 85), "dense", 1, (1, 85, 85), "rel_l2", "rel_l2",
           _hp(4, 100, 1, "adamw", 1e-3, 5e-3, 0.0, 0.0, 5, 100), "darcyflow",
           ("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat"),
           _drive("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat"),
           "Darcy flow (FNO data): [a normalised, x, y] on 85x85 -> u; loss summed over the batch (ORCA)",
           loss_kwargs={"reduction": "sum"}),
    _nb360("psicov", "2d", (57, 512, 512), "dense", 1, (1, 512, 512), "mse", "mae8",
           _hp(1, 10, 32, "adam", 5e-6, 1e-5, 0.0, 0.0, 5, 100), "psicov",
           ("protein/deepcov.lst", "protein/psicov.lst"), _drive("protein.zip"),
           "PSICOV protein distance maps: 57 pair features -> Cβ distances (train clipped at 16 Å)",
           # ORCA's psicov_mae scores each protein (eval_batch_size 1) with the FIRST protein's length
           paper_metric="mae8_orca", eval_chunk=1, orca_maxsamples=64),
    _nb360("cosmic", "2d", (1, 128, 128), "dense", 1, (1, 128, 128), "bce", "one_minus_auroc_binarized",
           _hp(4, 60, 1, "adamw", 1e-3, 0.0, 0.0, 0.0, 5, 60), "cosmic",
           ("cosmic/train_dirs.npy", "cosmic/test_dirs.npy"),
           _drive("cosmic/deepCR.ACS-WFC.train.tar", "cosmic/deepCR.ACS-WFC.test.tar")
           + "; preprocess with ORCA src/datasets/preprocess_cosmic.py",
           "Cosmic-ray masks in Hubble images, crop [64:192, 64:192]; ignored pixels = -1 in y",
           # metric = ORCA's inv_auroc exactly (logit > 0 after mask(); ignored pixels -> prediction 0, target 0 =
           # true negatives): paper_metric None. ORCA differs only in its test images (test_orca: sky term)
           loss_kwargs={"ignore_value": IGNORE_VALUE}, orca_test="sky·U(−0.9, 3) on the test images (fixed seed)"),
    _nb360("ecg", "1d", (1, 1000), "point", 4, (4,), "cross_entropy", "one_minus_f1",
           _hp(4, 15, 16, "sgd", 1e-6, 0.1, 0.99, 0.0, 5, 200), "ecg", ("challenge2017.pkl",),
           _drive("ECG/challenge2017.pkl"), "PhysioNet 2017 AF: z-scored records cut into 1000-sample windows",
           target_seq_len=64, group_reduce="vote",       # ORCA: ecg_f1 (the same F1) on windows, not records
           paper_group_reduce=None, orca_test="test windows at the label-dependent stride, no record groups",
           orca_test_shuffled=True),
    _nb360("satellite", "1d", (1, 46), "point", 24, (24,), "cross_entropy", "error",
           _hp(16, 60, 4, "adamw", 3e-5, 3e-6, 0.0, 0.0, 5, 60), "satellite",
           ("satellite_train.npy", "satellite_test.npy"), _drive("satellite/satellite_train.npy",
                                                                 "satellite/satellite_test.npy"),
           "Satellite land-cover time series (46 steps), labels 1..24 -> 0..23", target_seq_len=512),
    _nb360("deepsea", "1d", (4, 1000), "point", 36, (36,), "bce", "one_minus_auroc",
           _hp(16, 13, 1, "adam", 1e-5, 0.0, 0.0, 1.0, 10, 25), "deepsea", ("deepsea_filtered.npz",),
           _drive("deepsea/deepsea_filtered.npz"), "DeepSEA chromatin profiles from one-hot DNA (4, 1000)",
           multilabel=True, loss_kwargs={"pos_weight": 4.0}, target_seq_len=512, orca_maxsamples=64,
           paper_metric="one_minus_auroc_orca",             # ORCA's auroc ranks float32 σ(logit), ties above ~16.6
           orca_test_shuffled=True),
    # PDEBench: input = state at t = 0, target = state at ORCA's index (min(t_train, ceil(T/rt)) - 1)·rt
    _pde("advection", "1d", (1, 256), "nrmse", _hp(4, 200, 1, "adam", 1e-4, 1e-5, 0.0, 1.0, 5, 200),
         "1D_Advection_Sols_beta0.4.hdf5", 255674, "d595bbfd2c659df995a93cd40d6ea568", "tensor",
         "1D advection β=0.4: u(0) -> u(t=2), x[::4]", tsl=512, rx=4, rt=5, t_train=200),
    # DEVIATION from ORCA's tsl 128: ORCA built the embedder for a declared length 256 (`get_config` in
    # src/task_configs.py; -> stack 2, 512 tokens on the real 1024 input); tsl 512 gives the same 512 tokens
    # for the true length 1024.
    _pde("burgers", "1d", (1, 1024), "rmse", _hp(4, 200, 1, "adam", 1e-5, 1e-5, 0.0, 1.0, 5, 200),
         "1D_Burgers_Sols_Nu1.0.hdf5", 281365, "9021eba35332d127306f11ef84c1a60f", "tensor",
         "1D Burgers ν=1.0: u(0) -> u(t_end)", tsl=512, rx=1, rt=5, t_train=200),
    _pde("diffusion-reaction-1d", "1d", (1, 1024), "nrmse",
         _hp(4, 200, 1, "sgd", 1e-3, 1e-5, 0.99, 1.0, 5, 200), "ReacDiff_Nu0.5_Rho1.0.hdf5", 133177,
         "69a429239778d529cd419ed5888ea835", "tensor",
         "1D diffusion-reaction ν=0.5 ρ=1: u(0) -> u(t=0.29) for train AND test (ORCA tested at 0.99)",
         tsl=256, rx=1, rt=1, t_train=30, orca_test=_ORCA_FRAME),
    _pde("diffusion-sorption", "1d", (1, 1024), "nrmse", _hp(4, 200, 1, "adamw", 1e-4, 0.0, 0.0, 1.0, 5, 200),
         "1D_diff-sorp_NA_NA.h5", 133020, "9d466d1213065619d087319e16d9a938", "groups",
         "1D diffusion-sorption: u(0) -> u(index 100) for train and test", tsl=32, rx=1, rt=1, t_train=101,
         cin=0, cout=0, orca_test=_ORCA_FRAME),
    _pde("navier-stokes-1d", "1d", (1, 3072), "rmse", _hp(4, 200, 1, "adamw", 1e-4, 1e-3, 0.0, 1.0, 5, 200),
         "1D_CFD_Rand_Eta0.1_Zeta0.1_periodic_Train.hdf5", 164668, "45655bd77d006ab539c52b7fbcf099b9", "cfd",
         "1D compressible NS (η=ζ=0.1): [ρ,p,v](0) -> (t=1), channel-major 3072, point-wise normalised",
         tsl=128, rx=1, rt=5, t_train=100),
    _pde("darcy-pde", "2d", (1, 64, 64), "nrmse", _hp(4, 100, 1, "adamw", 1e-4, 1e-5, 0.0, 0.0, 5, 200),
         "2D_DarcyFlow_beta0.1_Train.hdf5", 133218, "294f9a03a4aa16b0e386469ca8b471be", "darcy",
         "2D Darcy β=0.1 (PDEBench): a -> u, 128 -> 64 (::2)", rx=2, eval_chunk=100),     # PDEDC.yaml
    _pde("shallow-water", "2d", (1, 128, 128), "nrmse", _hp(4, 200, 1, "adamw", 1e-4, 0.0, 0.0, 1.0, 10, 200),
         "2D_rdb_NA_NA.h5", 133021, "75d838c47aa410694bdc912ea7f22282", "groups",
         "2D shallow water radial dam break: h(0) -> h(index 100)", rx=1, rt=1, t_train=101, cin=0, cout=0,
         orca_test=_ORCA_FRAME),
    _pde("diffusion-reaction-2d", "2d", (1, 128, 128), "nrmse",
         _hp(4, 200, 1, "adam", 1e-4, 1e-3, 0.0, 1.0, 5, 200), "2D_diff-react_NA_NA.h5", 133017,
         "b8d0b86064193195ddc30c33be5dc949", "groups",
         "2D diffusion-reaction: u(0) -> v(index 100) (ORCA's task definition)",
         rx=1, rt=1, t_train=101, cin=0, cout=1, orca_test=_ORCA_FRAME),
]
TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}
ALIASES = {"fsd": "fsd50k", "darcy": "darcyflow", "pdeadv": "advection", "pdebg": "burgers",   # ORCA config names
           "pderd": "diffusion-reaction-1d", "pdeds": "diffusion-sorption", "pde1dcfd": "navier-stokes-1d", "pdedc": "darcy-pde",
           "pdesw": "shallow-water", "pderd2d": "diffusion-reaction-2d"}


def get_task(name: str, data_dir: str | None = None) -> TaskSpec:
    """The registry row of `name` (also ORCA config names, e.g. 'PDEBG'); 'custom' needs `data_dir`."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key.replace("-", ""), ALIASES.get(key, key))
    if key == "custom":
        if data_dir is None:
            raise DataError("task 'custom' is defined by its files: pass data_dir holding train_x.npy, train_y.npy, "
                            "test_x.npy, test_y.npy")
        return TaskSpec(**custom_task(data_dir)[0])
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}, custom")
    return TASKS[key]


def num_tokens(spec: TaskSpec) -> int | None:
    """Tokens the 1D body sees, N = L / stack_num (App. A.2; ORCA Embeddings1D.get_stack_num); None for 2D."""
    if spec.dim != "1d":
        return None
    L = int(spec.input_shape[-1])
    return L // compute_stack_num(L, spec.target_seq_len or 512)   # ORCA's rule, the 1D embedder's own


# --------------------------------------------------------------------------------------------------
# Readers: spec.reader -> reader(spec, data_dir, val_fraction, seed, **spec.reader_kwargs)
#   -> (train, val, test, extras); one per native layout, in readers/nb360.py, readers/fsd50k.py and readers/pdebench.py
# --------------------------------------------------------------------------------------------------
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
        if s.metric == "mae8":   # PSICOV: a protein of length L, label padding around it (train 16 Å, test 100 Å)
            L, pad = int(rng.integers(64, 400)), (100.0 if self.split else 16.0)
            y[:, :5], y[:, :, :5], y[:, L + 5:], y[:, :, L + 5:] = pad, pad, pad, pad
        return torch.from_numpy(x), torch.from_numpy(np.array(y, dtype=np.float32))


# --------------------------------------------------------------------------------------------------
# load_task
# --------------------------------------------------------------------------------------------------
def load_task(name: str, data_dir: str | None = None, *, protocol: str = "strict", synthetic: bool = False,
              max_train_samples: int | None = None, seed: int = 0, download: bool = False, val_fraction: float = 0.1,
              synthetic_sizes: tuple = (64, 16, 16), target_kind: str | None = None,
              patch_length: int | None = None, demo: bool = False) -> TaskData:
    """Train / val / test datasets of a task, yielding (x float32 of spec.input_shape, y) pairs.

    protocol: "paper" (what ORCA trained on, val None) or "strict" (a validation split); see "Protocols" above.
    synthetic=True: no files; `synthetic_sizes` samples per split in the task's exact shapes (seeded); the val
      size is unused under "paper"; tasks with `spec.orca_test` get a synthetic test_orca of the test size.
    download=True: fetch missing files that have a stable URL (CIFAR-100, PDEBench), MD5-checked.
    val_fraction: share of the training part held out (strict) when the benchmark has no published validation split.
    max_train_samples: a seeded random subset of the training split (val and test untouched).
    TaskData.test_orca: the test set with ORCA's test-time treatment where it differs from ours, else None.
    target_kind, patch_length (--task custom only; readers/custom.py): override the inferred kind of the targets
      ("classification", "multilabel", "regression", "dense") and the 1D patch length (values per token along L);
      TaskData.info["custom"] holds what was inferred, `describe_task(td)` says it in one line.
    demo=True (train.py --demo, with synthetic=True): a single-label point task is built from the primitives its
      source shares (readers/primitives.py: `PrimitiveTask`, at most 10 classes, 1D tokens of the embedder's
      patch), so a pretrained body can help; other tasks keep the plain synthetic data.
    An empty split raises a one-line DataError naming the file and the counts."""
    _check_protocol(protocol)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    spec = get_task(name) if str(name).strip().lower() != "custom" else None
    for flag, v in (("--target-kind (target_kind)", target_kind), ("--patch-length (patch_length)", patch_length)):
        if spec is not None and v is not None:
            raise DataError(f"task '{spec.name}': {flag} is only for --task custom; the paper's tasks keep their "
                            "registry row and ORCA's embedder")
    extras: dict = {}
    if synthetic:
        if spec is None:
            raise DataError("task 'custom' has no synthetic data: it is defined by your files (drop synthetic=True / "
                            "--synthetic-data)")
        n_tr, n_va, n_te = (int(n) for n in synthetic_sizes)
        make = SyntheticDataset
        if demo and spec.output == "point" and not spec.multilabel:      # shared primitives (readers/primitives.py)
            patch = compute_stack_num(spec.input_shape[-1], spec.target_seq_len or 512) if spec.dim == "1d" else None
            make = lambda spec, n, seed, split: PrimitiveTask(spec, n, seed, split, patch)   # noqa: E731
        train, test = make(spec, n_tr, seed, 0), make(spec, n_te, seed, 2)
        val = make(spec, n_va, seed, 1) if protocol == "strict" else None
        extras = {"val_from": "synthetic" if val is not None else None,
                  "test_orca": make(spec, n_te, seed, 3) if spec.orca_test else None}
        where = f"synthetic_sizes {tuple(synthetic_sizes)}"
    else:
        if data_dir is None and spec is None:
            raise DataError("task 'custom': pass data_dir (train.py --data-dir) holding train_x.npy, train_y.npy, "
                            "test_x.npy, test_y.npy (optional val_x.npy, val_y.npy)")
        if data_dir is None:
            raise DataError(f"task '{name}': pass data_dir (train.py --data-dir) or use synthetic data (--synthetic-data)")
        if spec is None:
            fields, train, val, test, extras = read_custom(data_dir, val_fraction, protocol, target_kind, patch_length)
            spec = TaskSpec(**fields)
        else:
            if download:
                for dl in spec.downloads:
                    if not all(os.path.exists(os.path.join(data_dir, f)) for f in spec.files):
                        _fetch(data_dir, dl)
            train, val, test, extras = READERS[spec.reader](spec, data_dir, val_fraction, seed, protocol,
                                                            **spec.reader_kwargs)
        where = ", ".join(os.path.join(data_dir, f) for f in spec.files) or data_dir
    test_orca = extras.pop("test_orca", None)
    splits = {"train": train, "val": val, "test": test, "test_orca": test_orca}   # readers check theirs; the rest:
    _need(spec.name, where, protocol, {k: None if d is None else len(d) for k, d in splits.items()})
    if max_train_samples is not None and max_train_samples < len(train):
        if max_train_samples < 1:
            raise DataError(f"max_train_samples must be >= 1, got {max_train_samples}")
        rel = np.sort(np.random.default_rng(seed).choice(len(train), int(max_train_samples), replace=False))
        train = train.subset(rel)
    decoder = extras.pop("output_decoder", None)
    info = {**extras, "protocol": protocol, "sizes": (len(train), 0 if val is None else len(val), len(test))}
    return TaskData(spec, train, val, test, output_decoder=decoder, info=info, test_orca=test_orca)


# --------------------------------------------------------------------------------------------------
# Source surrogates (stage 1 outer loss): CIFAR-10 (2D bodies) and CoNLL-2003 (1D bodies); readers in readers/sources.py
# --------------------------------------------------------------------------------------------------
def load_source_surrogate(source: str, data_dir: str | None = None, *, synthetic: bool = False, tokenizer=None,
                          max_samples: int = 5000, seed: int = 0, vocab_size: int = 1000,
                          seq_len: int = CONLL_SEQ_LEN, download: bool = False, n_synthetic: int = 200,
                          split: str = "train", demo: bool = False) -> Dataset:
    """Labelled source data (x^s, y^s): the stage-1 outer loss uses split="train" (ORCA: 5,000 samples);
    probe.py trains its linear probe on "train" and reports the error on "test".
    cifar10: x (3, 32, 32) float32 normalised with ORCA's CIFAR-10 mean/std; y 0..9. "train": data_batch_1..5
      after a once-drawn crop/flip; "test": test_batch, no augmentation.
    conll2003: x input_ids (seq_len,) int64 (see `_conll`); y 0..3 = PER, ORG, LOC, MISC. "train": eng.train
      (or train.txt); "test": eng.testb (or test.txt).
    synthetic: n_synthetic samples, balanced classes; CoNLL ids in [3, vocab_size) between <s>=0 and </s>=2;
      "test" is another seeded draw from the same class-conditional distribution as "train".
    demo=True (with synthetic): the source built from the primitives the demo's target shares (readers/primitives.py:
      images of two 8 x 8 patterns, or ids from two vocabulary bands; 10 / 4 classes), same shapes."""
    if source not in ("cifar10", "conll2003"):
        raise DataError(f"unknown source surrogate {source!r}; choose cifar10 or conll2003")
    if split not in SOURCE_SPLITS:
        raise DataError(f"source '{source}': unknown split {split!r}; choose one of {', '.join(SOURCE_SPLITS)}")
    if synthetic and demo:
        n, key = min(n_synthetic, max_samples), SOURCE_SPLITS.index(split)
        if source == "cifar10":
            x, y = source_images(n, seed, key)
            return SourceDataset(torch.from_numpy(x), y)
        x, y = source_tokens(n, seed, key, vocab_size, seq_len)
        return SourceDataset(torch.from_numpy(x), y, pad_id=SYNTHETIC_PAD_ID)
    if synthetic:
        return _synthetic_source(source, min(n_synthetic, max_samples), seed, vocab_size, seq_len, split)
    if data_dir is None:
        raise DataError(f"source '{source}': pass data_dir, the DIR of {SOURCE_DIR}, holding "
                        f"{SOURCE_LAYOUT[source]}")
    if source == "cifar10":
        return _cifar10(data_dir, max_samples, seed, download, split)
    return _conll(data_dir, tokenizer, max_samples, seed, seq_len, split)
