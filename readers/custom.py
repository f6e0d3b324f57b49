"""Your own data for MoNA (Ma et al., ICML 2024, arXiv 2406.18864): Table 5's "your own modality" as .npy files.

Paper map
---------
| paper                                                 | code                                                  |
|-------------------------------------------------------|-------------------------------------------------------|
| Table 5: a modality of your own (the paper: AudioSet, ESC-50, UCF101 features) | `read_custom` (via data.load_task("custom", dir)) |
| §2.1 the task loss ℓ and its metric                   | `infer_target` (the table below), `--target-kind`     |
| App. A.2 1D embedder: N = L / stack_num tokens of C × stack_num values | `default_patch_length`, `--patch-length` |
| the run's start-up line                               | `describe_task`                                       |

| symbol                 | code                               | shape                                         |
|------------------------|------------------------------------|-----------------------------------------------|
| x (your input)         | `{split}_x.npy`                    | (N, C, L) -> 1D path, (N, C, H, W) -> 2D path |
| y (your target)        | `{split}_y.npy`                    | (N,), (N, K), (N, *S) or (N, C_out, *S)       |
| p (patch length)       | `info["patch_length"]`             | values per token along L = the embedder's stack_num |
| N = L_pad / p (tokens) | `TaskSpec.target_seq_len`          | L_pad = L, or L rounded up to a multiple of p |

Files: `train_x.npy, train_y.npy, test_x.npy, test_y.npy` (optional `val_x.npy, val_y.npy`; else the "strict"
protocol carves `val_fraction` of train, and "paper" trains on train + val). Arrays are memory-mapped; each item
is read (and copied) alone, so a file larger than memory works.

What train_y.npy becomes (the dtype decides between classes and values, the shape between point and dense;
`--target-kind` / load_task(target_kind=...) overrides the kind):
| train_y.npy per sample     | dtype                          | kind           | outputs        | loss / metric          |
|----------------------------|--------------------------------|----------------|----------------|------------------------|
| ()                         | integer or bool                | classification | K = max + 1    | cross_entropy / error  |
| ()                         | float                          | regression     | 1              | mse / mse              |
| (K,)                       | integer or bool, all 0 or 1    | multilabel     | K labels       | bce / one_minus_auroc  |
| (K,)                       | float, or integers not all 0/1 | regression     | K              | mse / mse              |
| x's grid S or (C_out, *S)  | float                          | dense          | C_out channels | mse / nrmse            |
| x's grid S or (C_out, *S)  | integer or bool, all 0 or 1    | dense          | C_out masks    | bce / one_minus_auroc  |
Float labels 0., 1., 2. are values (regression): the start-up line (`describe_task`) says so and names
`--target-kind classification`; float 0/1 (N, K) targets likewise name `--target-kind multilabel`. Overrides:
classification needs (N,) integer-valued labels >= 0; multilabel (N, K) 0/1 targets; regression (N,) or (N, K)
targets (also integer ones, or (N, L) ones the shape would read as dense); dense targets on x's grid.

Patch length (1D path only; a paper task keeps ORCA's embedder, where a token's length follows only the body's
512 positions). The 1D embedder projects a token of C × p values and LayerNorms it: with the projection bias at 0
the LayerNorm keeps the direction of those C·p values and drops their scale, so a token of one value keeps only
its sign (a 3-class sine task of length 128 stays at chance with p = 1). Default: p0 = max(⌈VALUES_PER_TOKEN / C⌉,
⌈L / MAX_TOKENS⌉) (at least 8 values per token, at most 512 tokens), capped at L; then
  - p = the smallest divisor of L in [p0, 2·p0] (no padding, at most half the tokens of p0), else
  - point tasks: p = p0, and x is zero-padded at the end to L_pad = ⌈L / p⌉·p (as ORCA's 2D embedder pads its
    image to a multiple of the patch); dense tasks: the smallest divisor of L >= p0 (never padding: every
    output position must be a real one; a prime L gives one token of L values, --patch-length 1 the other end).
Why 8: on that sine task (tiny random body, 300 samples, AdamW lr 1e-3, 15 epochs, 2 seeds) the test error is
68-70 % with 1 value per token, 49-51 % with 2, 15-16 % with 4, 2-8 % with 8 and 0 % with 16; at L = 512, 4 values
per token still gave 58-64 %. 8 keeps the scale the LayerNorm drops to 1/8 of a token's values and leaves L/8
tokens for the body to relate. `--patch-length p` sets p: any 1 <= p <= L with ⌈L/p⌉ <= 512 for point tasks
(padded when p does not divide L), a divisor of L with L/p <= 512 for dense ones. A body with fewer than 512
positions (the --tiny one: 128) gets fewer, longer patches in train.py; `describe_task` reports the patch the
embedder computes from the spec it is given.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np

from readers.fileio import DataError, _load_npy
from readers.splits import ArrayDataset, ConcatRows, _carve

TARGET_KINDS = ("classification", "multilabel", "regression", "dense")
VALUES_PER_TOKEN = 8           # a 1D token carries at least C·p >= 8 values (module docstring: "Why 8")
MAX_TOKENS = 512               # RoBERTa's positions (ORCA's default target_seq_len)
CUSTOM_DEFAULTS = dict(batch_size=32, epochs=20, accum=1, optimizer="adamw", lr=1e-4, weight_decay=1e-5,
                       momentum=0.0, clip=1.0, warmup_epochs=1, decay_epochs=20,
                       stage1_steps=100, stage1_lr=3e-5, alpha=1e-2)
LOSSES = {("classification", False): ("cross_entropy", "error"), ("regression", False): ("mse", "mse"),
          ("multilabel", True): ("bce", "one_minus_auroc"), ("dense", True): ("bce", "one_minus_auroc"),
          ("dense", False): ("mse", "nrmse")}          # (kind, BCE on 0/1 targets) -> (loss, metric)
HINT = ("custom data: write train_x.npy, train_y.npy, test_x.npy, test_y.npy (optional val_x.npy, val_y.npy) "
        "with numpy.save")
_CHUNK = 1 << 22               # values scanned at a time (finite / value checks of memory-mapped files)


def _err(msg: str) -> DataError:
    return DataError(f"task 'custom': {msg}")


def _chunks(a):
    step = max(1, _CHUNK // max(1, int(np.prod(a.shape[1:]))))
    for i in range(0, len(a), step):
        yield np.asarray(a[i:i + step])


# --------------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------------
def _read_arrays(data_dir):
    arrs = {}
    for s in ("train", "val", "test"):
        for v in ("x", "y"):
            p = os.path.join(data_dir, f"{s}_{v}.npy")
            if os.path.exists(p):
                arrs[s, v] = _load_npy("custom", p)
            elif s != "val":
                raise _err(f"missing {p}; {HINT}")
    if (("val", "x") in arrs) != (("val", "y") in arrs):
        raise _err(f"{data_dir} has only one of val_x.npy / val_y.npy; give both or neither")
    splits = [s for s in ("train", "val", "test") if (s, "x") in arrs]
    x0, y0 = arrs["train", "x"], arrs["train", "y"]
    if x0.ndim not in (3, 4):
        raise _err(f"train_x.npy must be (N, C, L) [1D] or (N, C, H, W) [2D], found shape {x0.shape}")
    for s in splits:
        x, y = arrs[s, "x"], arrs[s, "y"]
        if x.dtype.kind not in "fiub" or y.dtype.kind not in "fiub":
            raise _err(f"{s}_x/{s}_y must be numeric arrays, found {x.dtype} / {y.dtype}")
        if x.shape[1:] != x0.shape[1:]:
            raise _err(f"{s}_x.npy has per-sample shape {x.shape[1:]}, train_x.npy {x0.shape[1:]}")
        if y.shape[1:] != y0.shape[1:]:
            raise _err(f"{s}_y.npy has per-sample shape {y.shape[1:]}, train_y.npy {y0.shape[1:]}")
        if len(x) != len(y):
            raise _err(f"{s}_x.npy has {len(x)} samples but {s}_y.npy has {len(y)}")
        if len(x) == 0:
            raise _err(f"{s}_x.npy is empty")
        for nm, a in ((f"{s}_x.npy", x), (f"{s}_y.npy", y)):
            if a.dtype.kind == "f" and not all(np.isfinite(c).all() for c in _chunks(a)):
                raise _err(f"{nm} contains NaN or inf values; clean or impute them first")
    return arrs, splits


# --------------------------------------------------------------------------------------------------
# What the targets are: the table of the module docstring, and --target-kind
# --------------------------------------------------------------------------------------------------
def _values(ys):
    """(min, max, all integer-valued, all in {0, 1}) over every split's targets, read in chunks."""
    lo, hi, whole, binary = np.inf, -np.inf, True, True
    for y in ys:
        for c in _chunks(y):
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
            whole = whole and (c.dtype.kind in "iub" or bool((c == np.round(c)).all()))
            binary = binary and bool(np.isin(c, (0, 1)).all())
    return lo, hi, whole, binary


def infer_target(x_shape, y_shape, y_dtype, ys, target_kind=None) -> dict:
    """kind, loss, metric, outputs and the words for the start-up line, from train_y's shape and dtype (the
    table above) or `target_kind`; a one-line DataError when the override cannot apply."""
    S, is_int = tuple(x_shape[2:]), y_dtype.kind in "iub"
    dense_shape = tuple(y_shape[1:]) == S or (len(y_shape) == len(x_shape) and tuple(y_shape[2:]) == S)
    lo, hi, whole, binary = _values(ys)
    fl = "integer" if is_int else "float"
    if target_kind is None:
        if dense_shape:
            kind = "dense"
            if is_int and not binary:
                raise _err("dense integer targets must be 0/1 masks; save real-valued targets as float")
        elif len(y_shape) == 1 and is_int:
            kind = "classification"
        elif len(y_shape) in (1, 2):
            kind = "multilabel" if is_int and binary and len(y_shape) == 2 else "regression"
        else:
            raise _err(f"train_y.npy shape {tuple(y_shape)} fits none of (N,) classes/values, (N, K), "
                       f"(N, {', '.join(map(str, S))}) or (N, C_out, {', '.join(map(str, S))}) for x {tuple(x_shape)}")
    elif target_kind not in TARGET_KINDS:
        raise _err(f"--target-kind (target_kind) must be one of {', '.join(TARGET_KINDS)} (or unset: inferred), "
                   f"got {target_kind!r}")
    else:
        kind, flag = target_kind, f"--target-kind {target_kind}"
        if kind == "classification" and len(y_shape) != 1:
            raise _err(f"{flag} needs labels of shape (N,), train_y.npy is {tuple(y_shape)}")
        if kind == "classification" and not whole:
            raise _err(f"{flag}: train_y.npy holds non-integer values ({lo:g}..{hi:g}); classes are integers 0..K-1")
        if kind == "multilabel" and len(y_shape) != 2:
            raise _err(f"{flag} needs 0/1 targets of shape (N, K), train_y.npy is {tuple(y_shape)}")
        if kind == "multilabel" and not binary:
            raise _err(f"{flag}: train_y.npy holds values other than 0 and 1 ({lo:g}..{hi:g})")
        if kind == "regression" and len(y_shape) not in (1, 2):
            raise _err(f"{flag} needs point targets (N,) or (N, K), train_y.npy is {tuple(y_shape)}; "
                       "per-position targets are --target-kind dense")
        if kind == "dense" and not dense_shape:
            raise _err(f"{flag}: train_y.npy per-sample shape {tuple(y_shape[1:])} is neither x's grid {S} "
                       f"nor (C_out, {', '.join(map(str, S))})")
        if kind == "dense" and is_int and not binary:
            raise _err(f"{flag}: integer targets must be 0/1 masks; save real-valued targets as float")
    bce = binary and (kind == "multilabel" or (kind == "dense" and is_int))    # float dense 0/1 stays MSE
    loss, metric = LOSSES[kind, bce]
    why = "set by --target-kind" if target_kind is not None else ""
    if kind == "classification":
        k = int(hi) + 1
        if lo < 0 or k < 2:
            raise _err(f"class labels must be integers 0..K-1 with K >= 2, found range {lo:g}..{hi:g}")
        out = dict(output="point", k=k, oshape=(k,), ykind="class",
                   words=f"{k} classes" + _paren(f"{fl} labels {lo:g}..{hi:g}", why))
    elif kind == "dense":
        k = 1 if tuple(y_shape[1:]) == S else int(y_shape[1])
        out = dict(output="dense", k=k, oshape=(k, *S), ykind="float",
                   words=_plural(k, "output channel") + _paren("0/1 masks" if bce else "", why))
    else:
        k = 1 if len(y_shape) == 1 else int(y_shape[1])
        if target_kind is None and not is_int and whole and len(y_shape) == 1 and lo >= 0:
            why = f"all integers {lo:g}..{hi:g}: read as values, --target-kind classification if they are classes"
        elif target_kind is None and not is_int and binary and len(y_shape) == 2:
            why = "all 0/1: read as values, --target-kind multilabel if they are labels"
        out = dict(output="point", k=k, oshape=(k,), ykind="float",
                   words=_plural(k, "label" if kind == "multilabel" else "output") + _paren(f"{fl} targets", why))
    return dict(kind=kind, loss=loss, metric=metric, multilabel=kind == "multilabel", **out)


def _paren(*parts) -> str:
    parts = [p for p in parts if p]
    return f" ({', '.join(parts)})" if parts else ""


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


# --------------------------------------------------------------------------------------------------
# The 1D patch length (App. A.2's stack_num): a token carries several values
# --------------------------------------------------------------------------------------------------
def _divisors(L: int) -> list[int]:
    return [d for d in range(1, L + 1) if L % d == 0]


def default_patch_length(C: int, L: int, dense: bool) -> tuple[int, int]:
    """(p, L_pad): the rule of the module docstring. C·p >= VALUES_PER_TOKEN unless p = L; L_pad / p <= MAX_TOKENS."""
    p0 = min(L, max(-(-VALUES_PER_TOKEN // C), -(-L // MAX_TOKENS)))      # ⌈8 / C⌉, ⌈L / 512⌉, at most L
    d = next(d for d in range(p0, L + 1) if L % d == 0)                      # smallest divisor >= p0 (L is one)
    if dense or d <= 2 * p0:
        return d, L
    return p0, -(-L // p0) * p0                                              # zero-pad to a multiple of p0


def check_patch_length(p, L: int, dense: bool) -> tuple[int, int]:
    """(p, L_pad) for `--patch-length p`, or a one-line DataError listing the valid values."""
    ok = isinstance(p, (int, np.integer)) and not isinstance(p, bool)
    if dense:
        valid = [d for d in _divisors(L) if L // d <= MAX_TOKENS]
        if not (ok and p in valid):
            raise _err(f"--patch-length {p} does not fit a dense 1D task of length {L} (each output position "
                       f"belongs to one token, so p divides L, and L/p <= {MAX_TOKENS}); valid values: "
                       f"{', '.join(map(str, valid))}")
        return int(p), L
    lo = -(-L // MAX_TOKENS)
    if not (ok and lo <= p <= L):
        raise _err(f"--patch-length {p} does not fit length {L}; valid values: {lo}..{L} (at most {MAX_TOKENS} "
                   f"tokens; a divisor of {L} needs no padding: {', '.join(map(str, _divisors(L)))})")
    return int(p), -(-L // int(p)) * int(p)


def _pad_end(a, n: int):
    """(C, L) -> (C, L + n), zeros at the end (a new, writable array)."""
    return np.pad(np.asarray(a, np.float32), ((0, 0), (0, n)))


# --------------------------------------------------------------------------------------------------
# The task: a TaskSpec's fields and its splits
# --------------------------------------------------------------------------------------------------
def custom_task(data_dir, target_kind=None, patch_length=None):
    """(TaskSpec fields, arrays, info) of the folder `data_dir`; info holds what describe_task reports."""
    arrs, splits = _read_arrays(data_dir)
    x0, y0 = arrs["train", "x"], arrs["train", "y"]
    t = infer_target(x0.shape, y0.shape, y0.dtype, [arrs[s, "y"] for s in splits], target_kind)
    dim, C, S = ("1d" if x0.ndim == 3 else "2d"), int(x0.shape[1]), tuple(int(v) for v in x0.shape[2:])
    info = dict(kind=t["kind"], words=t["words"], ykind=t["ykind"], length=S[0] if dim == "1d" else None,
                patch_length=None, how="--target-kind" if target_kind is not None else "inferred")
    tsl, ishape = None, (C, *S)
    if dim == "1d":
        dense = t["output"] == "dense"
        p, L_pad = default_patch_length(C, S[0], dense) if patch_length is None else \
            check_patch_length(patch_length, S[0], dense)
        tsl, ishape = L_pad // p, (C, L_pad)              # ORCA's rule on (L_pad, L_pad / p) gives stack_num = p
        info.update(patch_length=p, padded_length=L_pad)
    elif patch_length is not None:
        raise _err(f"--patch-length is for 1D inputs (N, C, L); train_x.npy is 2D {tuple(x0.shape)}, which the "
                   "2D embedder cuts into patches of its 224 x 224 resize")
    fields = dict(name="custom", benchmark="custom", dim=dim, input_shape=ishape, output=t["output"],
                  num_classes=t["k"], output_shape=t["oshape"], multilabel=t["multilabel"], loss=t["loss"],
                  metric=t["metric"], target_seq_len=tsl, source="cifar10" if dim == "2d" else "conll2003",
                  reader="custom", origin=HINT, description=f"user data from {data_dir}", eval_chunk=0,
                  **CUSTOM_DEFAULTS)              # no ORCA evaluation to reproduce: whole set, our metric
    return fields, arrs, info


def read_custom(data_dir, val_fraction, protocol, target_kind=None, patch_length=None):
    """(TaskSpec fields, train, val, test, extras) under `protocol`; extras: val_from and info["custom"]."""
    fields, arrs, info = custom_task(data_dir, target_kind, patch_length)
    pad = fields["input_shape"][-1] - info["length"] if fields["dim"] == "1d" else 0
    x_fn = partial(_pad_end, n=pad) if pad else None

    def mk(*splits, idx=None):                     # several splits: their rows read as one store
        x, y = (ConcatRows(*(arrs[s, v] for s in splits)) for v in ("x", "y"))
        y = y if info["ykind"] == "class" else _ReshapedY(y, fields["output_shape"])
        return ArrayDataset(x, y, idx, x_fn=x_fn, y_kind=info["ykind"])
    has_val = ("val", "x") in arrs
    if protocol == "paper":                        # train + val files merged, no validation split
        train, val, how = mk("train", "val") if has_val else mk("train"), None, None
    elif has_val:
        train, val, how = mk("train"), mk("val"), "published"
    else:
        t_idx, v_idx = _carve(len(arrs["train", "x"]), val_fraction)
        train, val, how = mk("train", idx=t_idx), mk("train", idx=v_idx), "carved"
    return fields, train, val, mk("test"), {"val_from": how, "custom": info}


class _ReshapedY:
    """y rows as float32 of a fixed per-sample shape (custom scalar regression -> (1,), dense -> (C_out, *S))."""

    def __init__(self, y, shape):
        self.y, self.shape = y, shape

    def __getitem__(self, r):
        return np.asarray(self.y[r], np.float32).reshape(self.shape)

    def __len__(self):
        return len(self.y)


# --------------------------------------------------------------------------------------------------
# The start-up line
# --------------------------------------------------------------------------------------------------
def _kind_of(spec) -> str:
    if spec.output == "dense":
        return "dense"
    return "multilabel" if spec.multilabel else "classification" if spec.loss == "cross_entropy" else "regression"


def describe_task(td) -> str:
    """One line: the kind and its outputs (with what was inferred and how to change it), loss / metric, the 1D or
    2D path, the 1D tokens and patch length (as the embedder computes them from the spec: ORCA's rule on
    target_seq_len, so a spec a body shortened is reported as it runs), and n_train/n_val/n_test."""
    from embedders import compute_stack_num as stack_num      # ORCA's rule, the 1D embedder's own
    s, info = td.spec, td.info.get("custom")
    C, grid = s.input_shape[0], s.input_shape[1:]
    if info is not None:
        head = f"custom task: {info['kind']}, {info['words']}"
    else:
        k = s.num_classes
        head = f"task {s.name}: {_kind_of(s)}, " + (f"{k} classes" if _kind_of(s) == "classification" else
                                                   _plural(k, "label" if s.multilabel else "output channel"
                                                           if s.output == "dense" else "output"))
    L0 = info["length"] if info is not None and s.dim == "1d" else grid[-1]      # 1D: L before any padding
    shown = (L0,) if s.dim == "1d" else grid
    path = f"{s.dim.upper()} path ({_plural(C, 'channel')} x {' x '.join(map(str, shown))})"
    parts = [head, f"{s.loss} / {s.metric}", path]
    if s.dim == "1d":
        L = grid[-1]
        p = stack_num(L, s.target_seq_len or MAX_TOKENS)
        v = C * p
        how = ("" if C == 1 else f"{p} steps x {C} channels, ") + \
              (f"--patch-length {p}" if info is not None else "ORCA's embedder")
        if L != L0:
            how += f"; padded {L0} -> {L} with zeros"
        if info is not None and v < VALUES_PER_TOKEN and p < L:
            how += f"; only {_plural(v, 'value')} per token: its LayerNorm keeps the direction, not the scale"
        parts.append(f"{_plural(L // p, 'token')} of {_plural(v, 'value')} ({how})")
    n_tr, n_va, n_te = td.info["sizes"]
    return ", ".join(parts) + f", {n_tr}/{n_va}/{n_te} train/val/test samples"
