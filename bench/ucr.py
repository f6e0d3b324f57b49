"""UCR/UEA `.ts` files -> the `--task custom` folder format (groundwork for the CPU-scale transfer benchmark of
MoNA, Ma et al., ICML 2024, arXiv 2406.18864, on real pretrained weights).

Paper map: none of the paper's tables; MoNA's 1D experiments (Tables 1, 2) use NAS-Bench-360, and Table 5 brings
"your own modality" through `train.py --task custom`. This benchmark adds four small public time-series problems
from the UCR/UEA archives that a CPU can train on, written in that custom format (train_x.npy (N, C, L) float32,
train_y.npy (N,) int64 classes 0..K-1 or (N,) float32 targets, test_x.npy, test_y.npy; no val files, so the
custom reader carves its validation split from train).

| benchmark folder | file stem      | train/test | C x L             | target                                |
|------------------|----------------|------------|-------------------|---------------------------------------|
| osuleaf          | OSULeaf        | 200/242    | 1 x 427           | 6 classes                             |
| basicmotions     | BasicMotions   | 40/40      | 6 x 100           | 4 classes                             |
| japanesevowels   | JapaneseVowels | 270/370    | 12 x 7..29 -> 26  | 9 classes                             |
| tecator          | Tecator        | 172/43     | 1 x 100           | fat content (%), standardised (below) |

The `.ts` format (sktime / aeon "ts File Format v1.0", https://www.sktime.net/en/stable/api_reference/
file_specifications/ts.html), as `read_ts` parses it:
  - `#` lines: comments (the description block), skipped anywhere; blank lines skipped;
  - header lines `@key value` (key case-insensitive): @problemName, @timeStamps, @missing, @univariate,
    @dimensions, @equalLength, @seriesLength, `@classLabel true a b c` / `@classLabel false`,
    `@targetLabel true|false`; unknown keys are kept in meta["other"]; `@data` ends the header;
  - then one case per line: dimensions separated by ':', values by ',', the label (if any) last;
    `?` (or NaN) is a missing value -> NaN. `@timeStamps true` files ((t, v) tuples) are refused.
Every malformed input raises one ValueError line naming the file, the line and what was expected.

Design decisions of `to_custom_folder` (all recorded in the folder's meta.json):
  - class labels -> int64 0..K-1 in the order of the @classLabel header (so class k means the same in both files);
  - no per-series z-normalisation. OSULeaf is already z-normalised per series (mean 0, std 1 per case, checked
    by `main`); the other three are not, and their level/amplitude carries the label (training files:
    BasicMotions' mean per-series std of accelerometer x is 0.3 for Standing, 1.3 Walking, 7.2 Badminton,
    11.0 Running; JapaneseVowels' per-series channel means spread across utterances about as much as or more
    than the values vary within one (first six channels: std 0.13..0.44 vs 0.10..0.23); Tecator's mean
    absorbance correlates with fat content, r = 0.48).
    Values are kept as published (float32). Optional `normalize="channel"`: one affine map per channel from
    TRAIN statistics, applied to both files (information preserving; not used by the CLI: the embedder's
    LayerNorm follows the patch projection, so the input scale only conditions the first linear map);
  - regression targets (Tecator) are standardised with the TRAIN mean/std (`standardize_target=True`):
    `--task custom` trains with MSE at lr 1e-4 for 20 epochs, and raw fat percentages (mean ~18, std ~12)
    would leave a zero-initialised head hundreds of MSE units away for the whole run. The reported test MSE is
    in units of the train variance: MSE_raw = MSE * std**2 (meta.json: target_mean, target_std);
  - variable-length series (JapaneseVowels, 7..29 frames) are linearly resampled (np.interp on a common
    [0, 1] time axis, per channel) to one length: `length=` if given, else the longest TRAINING series (26
    frames; the test file's 29-frame utterances are resampled down, so no test statistic shapes the inputs;
    equal-length files keep their length). Chosen over padding because the 1D path (patches -> body -> average pooling,
    no attention mask) would treat pad frames as signal and weight each utterance by its length; resampling
    keeps every position real and each utterance weighted alike (speaker identity lies in the LPC cepstra,
    not the duration; the original lengths are kept in meta.json). `length=` also resamples long
    equal-length series, to trade resolution for fewer 1D tokens (the CLI prints how many tokens the custom
    reader's 1D embedder makes of each folder; the CLI keeps every published length);
  - missing values: linear interpolation in time inside each channel, the ends filled with the nearest
    observed value, an all-missing channel set to 0 (the custom reader refuses NaN). None of the four
    benchmark sets has missing values.

Run: python bench/ucr.py SKTIME_DATA_DIR OUT_DIR [--length osuleaf=128 ...]
   (SKTIME_DATA_DIR = sktime/datasets/data, holding OSULeaf/OSULeaf_TRAIN.ts etc.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

BENCHMARK = {"osuleaf": "OSULeaf", "basicmotions": "BasicMotions", "japanesevowels": "JapaneseVowels",
             "tecator": "Tecator"}
_BOOL_KEYS = ("timestamps", "missing", "univariate", "equallength", "classlabel", "targetlabel")
_INT_KEYS = ("dimensions", "serieslength")


def _bool(path, ln, key, word):
    w = word.lower()
    if w not in ("true", "false"):
        raise ValueError(f"{path} line {ln}: @{key} expects true or false, found {word!r}")
    return w == "true"


def _value(path, ln, case, dim, tok):
    t = tok.strip()
    if t == "?" or t.lower() == "nan":
        return np.nan
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"{path} line {ln}: case {case}, dimension {dim}: expected a number or '?', "
                         f"found {t!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{path} line {ln}: case {case}, dimension {dim}: infinite value {t!r}")
    return v


def read_ts(path):
    """Parse a `.ts` file. Returns (X, y, meta): X a list of (C, L_i) float64 arrays (NaN = missing), y a
    numpy array of label strings (classification), floats (regression) or None (no labels), meta a dict of
    the header (problem_name, dimensions, equal_length, series_length, class_labels, target, ...) plus what was
    found (n_cases, min/max length, has_missing)."""
    path = os.fspath(path)
    head = {"other": {}}
    X, y = [], []
    in_data = False
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        try:
            lines = list(f)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text (expected a .ts file)") from None
    for ln, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            if in_data:
                raise ValueError(f"{path} line {ln}: header line {line[:40]!r} after @data (expected a case)")
            parts = line[1:].split()
            key = parts[0].lower() if parts else ""
            args = parts[1:]
            if key == "data":
                if args:
                    raise ValueError(f"{path} line {ln}: @data takes no value, found {' '.join(args)!r}")
                in_data = True
            elif key == "problemname":
                head["problem_name"] = " ".join(args)
            elif key in _BOOL_KEYS:
                if not args or (key != "classlabel" and len(args) != 1):
                    raise ValueError(f"{path} line {ln}: @{parts[0]} expects one value true or false, found "
                                     f"{' '.join(args)!r}")
                head[key] = _bool(path, ln, parts[0], args[0])
                if key == "classlabel":
                    if head[key] and len(args) < 2:
                        raise ValueError(f"{path} line {ln}: '@classLabel true' must list the class labels")
                    if not head[key] and len(args) > 1:
                        raise ValueError(f"{path} line {ln}: '@classLabel false' takes no labels")
                    if len(set(args[1:])) != len(args[1:]):
                        raise ValueError(f"{path} line {ln}: @classLabel lists a label twice: {' '.join(args[1:])}")
                    head["class_labels"] = list(args[1:]) if head[key] else None
            elif key in _INT_KEYS:
                if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
                    raise ValueError(f"{path} line {ln}: @{parts[0]} expects one positive integer, found "
                                     f"{' '.join(args)!r}")
                head[key] = int(args[0])
            elif key:
                head["other"][key] = " ".join(args)
            else:
                raise ValueError(f"{path} line {ln}: expected '@key value', found {line[:40]!r}")
            continue
        if not in_data:
            raise ValueError(f"{path} line {ln}: data before @data (expected a '#' comment or an '@' header line)")
        if head.get("timestamps"):
            raise ValueError(f"{path}: @timeStamps true ((time, value) tuples) is not supported by this reader")
        if head.get("univariate") and head.get("dimensions", 1) != 1:
            raise ValueError(f"{path}: @univariate true but @dimensions {head['dimensions']} (expected 1)")
        if head.get("classlabel") and head.get("targetlabel"):
            raise ValueError(f"{path}: both @classLabel true and @targetLabel true (expected at most one label)")
        labelled = bool(head.get("classlabel") or head.get("targetlabel"))
        fields = line.split(":")
        case = len(X)
        if labelled:
            if len(fields) < 2:
                raise ValueError(f"{path} line {ln}: case {case}: expected dimensions then ':label', found no ':'")
            *fields, lab = fields
            lab = lab.strip()
            if head.get("classlabel"):
                if lab not in head["class_labels"]:
                    raise ValueError(f"{path} line {ln}: case {case}: label {lab!r} is not one of the @classLabel "
                                     f"labels {head['class_labels']}")
                y.append(lab)
            else:
                try:
                    y.append(float(lab))
                except ValueError:
                    raise ValueError(f"{path} line {ln}: case {case}: expected a numeric @targetLabel value, "
                                     f"found {lab!r}") from None
        dims = head.get("dimensions", 1 if head.get("univariate") else None)
        if dims is None and X:
            dims = X[0].shape[0]
        if dims is not None and len(fields) != dims:
            raise ValueError(f"{path} line {ln}: case {case}: expected {dims} dimension(s) separated by ':'"
                             f"{' then the label' if labelled else ''}, found {len(fields)}")
        chans = []
        for d, field in enumerate(fields):
            toks = field.split(",")
            if not field.strip() or any(not t.strip() for t in toks):
                raise ValueError(f"{path} line {ln}: case {case}, dimension {d}: empty value (expected "
                                 "comma-separated numbers)")
            chans.append([_value(path, ln, case, d, t) for t in toks])
        lens = {len(c) for c in chans}
        if len(lens) != 1:
            raise ValueError(f"{path} line {ln}: case {case}: dimensions of different lengths {sorted(lens)} "
                             "(expected one length per case)")
        L = lens.pop()
        if head.get("equallength") and "serieslength" in head and L != head["serieslength"]:
            raise ValueError(f"{path} line {ln}: case {case}: {L} values per dimension, @seriesLength says "
                             f"{head['serieslength']}")
        if head.get("equallength") and X and L != X[0].shape[1]:
            raise ValueError(f"{path} line {ln}: case {case}: {L} values per dimension, earlier cases have "
                             f"{X[0].shape[1]} and @equalLength is true")
        X.append(np.asarray(chans, dtype=np.float64))
    if not in_data:
        raise ValueError(f"{path}: no @data line (expected a .ts header ending in @data)")
    if not X:
        raise ValueError(f"{path}: no cases after @data")
    lengths = [x.shape[1] for x in X]
    meta = {"path": path, "problem_name": head.get("problem_name"), "timestamps": head.get("timestamps", False),
            "missing": head.get("missing"), "univariate": head.get("univariate"),
            "dimensions": int(X[0].shape[0]), "equal_length": head.get("equallength"),
            "series_length": head.get("serieslength"), "class_labels": head.get("class_labels"),
            "target": bool(head.get("targetlabel")), "other": head["other"], "n_cases": len(X),
            "min_length": min(lengths), "max_length": max(lengths),
            "has_missing": bool(any(np.isnan(x).any() for x in X))}
    if head.get("classlabel"):
        yv = np.asarray(y, dtype=str)
    elif head.get("targetlabel"):
        yv = np.asarray(y, dtype=np.float64)
    else:
        yv = None
    return X, yv, meta


def _fill_missing(x):
    """(C, L) with NaN -> linear interpolation in time per channel, ends = nearest observed, all-NaN -> 0."""
    x = x.copy()
    t = np.arange(x.shape[1])
    for c in range(x.shape[0]):
        ok = ~np.isnan(x[c])
        if not ok.any():
            x[c] = 0.0
        elif not ok.all():
            x[c] = np.interp(t, t[ok], x[c, ok])       # np.interp holds the end values outside the observed range
    return x


def _resample(x, length):
    """(C, L_i) -> (C, length) by linear interpolation on a common [0, 1] time axis (identity if L_i == length)."""
    L = x.shape[1]
    if L == length:
        return x
    if L == 1:
        return np.repeat(x, length, axis=1)
    src, dst = np.linspace(0.0, 1.0, L), np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, ch) for ch in x])


def to_custom_folder(train_ts, test_ts, out_dir, *, length=None, normalize="none", standardize_target=True):
    """Write out_dir/{train,test}_{x,y}.npy (the `--task custom` format) and meta.json from two .ts files.
    length: resample every series to this many points (default: the longest training series; equal-length data
    is then kept as is). normalize: "none" (values as published) or "channel" (per-channel
    mean/std of the training file, applied to both). Returns the meta dict written to meta.json."""
    if normalize not in ("none", "channel"):
        raise ValueError(f"to_custom_folder: normalize must be 'none' or 'channel', got {normalize!r}")
    if length is not None and (int(length) != length or length < 1):
        raise ValueError(f"to_custom_folder: length must be a positive integer, got {length!r}")
    (Xtr, ytr, mtr), (Xte, yte, mte) = read_ts(train_ts), read_ts(test_ts)
    for m, yv in ((mtr, ytr), (mte, yte)):
        if yv is None:
            raise ValueError(f"{m['path']}: no labels (@classLabel false and @targetLabel false); "
                             "--task custom needs class labels or targets")
    if mtr["class_labels"] != mte["class_labels"] or mtr["target"] != mte["target"]:
        raise ValueError(f"{test_ts}: label header {mte['class_labels'] or 'targetLabel'} differs from "
                         f"{train_ts}'s {mtr['class_labels'] or 'targetLabel'}")
    if mtr["dimensions"] != mte["dimensions"]:
        raise ValueError(f"{test_ts}: {mte['dimensions']} dimensions, {train_ts} has {mtr['dimensions']}")
    equal = mtr["min_length"] == mtr["max_length"] == mte["min_length"] == mte["max_length"]
    L = int(length) if length is not None else mtr["max_length"]      # from the training file only
    xs = [np.stack([_resample(_fill_missing(x), L) for x in X]).astype(np.float32) for X in (Xtr, Xte)]
    meta = {"train_file": os.path.basename(os.fspath(train_ts)), "test_file": os.path.basename(os.fspath(test_ts)),
            "problem_name": mtr["problem_name"], "shape": [int(v) for v in xs[0].shape[1:]],
            "original_lengths": {"train": [mtr["min_length"], mtr["max_length"]],
                                 "test": [mte["min_length"], mte["max_length"]]},
            "length_handling": "as published" if (equal and L == mtr["max_length"]) else
            f"linear resampling to {L} points", "missing_filled": bool(mtr["has_missing"] or mte["has_missing"]),
            "normalize": normalize}
    if normalize == "channel":
        mu = xs[0].mean(axis=(0, 2), keepdims=True)
        sd = xs[0].std(axis=(0, 2), keepdims=True)
        sd = np.where(sd > 0, sd, 1.0).astype(np.float32)
        xs = [((x - mu) / sd).astype(np.float32) for x in xs]
        meta["channel_mean"], meta["channel_std"] = mu.ravel().tolist(), sd.ravel().tolist()
    if mtr["class_labels"] is not None:
        index = {c: k for k, c in enumerate(mtr["class_labels"])}
        ys = [np.asarray([index[c] for c in yv], dtype=np.int64) for yv in (ytr, yte)]
        meta["classes"] = mtr["class_labels"]
    else:
        mu_y, sd_y = (float(ytr.mean()), float(ytr.std())) if standardize_target else (0.0, 1.0)
        sd_y = sd_y if sd_y > 0 else 1.0
        ys = [((yv - mu_y) / sd_y).astype(np.float32) for yv in (ytr, yte)]
        meta["target_mean"], meta["target_std"] = mu_y, sd_y
        meta["target_standardized"] = bool(standardize_target)
    os.makedirs(out_dir, exist_ok=True)
    for split, x, yv in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
        np.save(os.path.join(out_dir, f"{split}_x.npy"), x)
        np.save(os.path.join(out_dir, f"{split}_y.npy"), yv)
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return meta


def _per_series_znormed(X, tol=1e-3):
    """True when every channel of every case has mean ~0 and std ~1 (already z-normalised per series)."""
    return all(abs(np.nanmean(ch)) < tol and abs(np.nanstd(ch) - 1) < 0.01 for x in X for ch in x)


def find_sktime_data() -> str | None:
    """The folder of sktime's bundled .ts files (sktime/datasets/data, holding OSULeaf/OSULeaf_TRAIN.ts, ...):
    $SKTIME_DATA if it is a folder, else the installed sktime package's (pip install sktime==1.2.0), else None.
    No fixed path: the real-file checks of the tests run wherever one of the two is there."""
    env = os.environ.get("SKTIME_DATA")
    if env:
        return env if os.path.isdir(env) else None
    import importlib.util
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    return folder if os.path.isdir(folder) else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", help="sktime/datasets/data (holds OSULeaf/OSULeaf_TRAIN.ts, ...)")
    ap.add_argument("out_dir", help="writes OUT_DIR/{" + ",".join(BENCHMARK) + "}/")
    ap.add_argument("--length", action="append", default=[], metavar="NAME=L",
                    help="resample benchmark NAME to L points (e.g. osuleaf=128); repeatable")
    a = ap.parse_args(argv)
    lengths = {}
    for item in a.length:
        name, _, val = item.partition("=")
        if name not in BENCHMARK or not val.isdigit() or int(val) < 1:
            ap.error(f"--length expects NAME=L with NAME in {list(BENCHMARK)} and L >= 1, got {item!r}")
        lengths[name] = int(val)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from data import get_task, num_tokens  # noqa: E402  (the reader train.py uses: checks the folder)
    print(f"{'folder':<15} {'train_x':<18} {'test_x':<18} {'y':<30} {'1D tokens':>9}  notes")
    for name, stem in BENCHMARK.items():
        tr, te = (os.path.join(a.data_dir, stem, f"{stem}_{s}.ts") for s in ("TRAIN", "TEST"))
        out = os.path.join(a.out_dir, name)
        meta = to_custom_folder(tr, te, out, length=lengths.get(name))
        xtr, xte = (np.load(os.path.join(out, f"{s}_x.npy"), mmap_mode="r") for s in ("train", "test"))
        ytr = np.load(os.path.join(out, "train_y.npy"))
        spec = get_task("custom", out)
        y_desc = (f"{len(meta['classes'])} classes {ytr.dtype}" if "classes" in meta else
                  f"{ytr.dtype} (y - {meta['target_mean']:.2f}) / {meta['target_std']:.2f}")
        notes = [meta["length_handling"]]
        if _per_series_znormed(read_ts(tr)[0]):
            notes.append("z-normalised per series in the file")
        print(f"{name:<15} {str(xtr.shape):<18} {str(xte.shape):<18} {y_desc:<30} {num_tokens(spec):>9}  "
              f"{'; '.join(notes)}")


if __name__ == "__main__":
    main()
