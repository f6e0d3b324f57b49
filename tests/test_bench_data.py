"""Tests for the benchmark data builders in bench/: the UCR/UEA `.ts` reader and its `--task custom` folders
(bench/ucr.py), and the CoNLL-2003-format source surrogate (bench/conll_surrogate.py). Oracles: tiny .ts files
written here with known values, numpy's own interpolation, the repository's readers (data.get_task /
load_task for custom folders, sources.conll_mentions and data.load_source_surrogate for CoNLL files).
The checks on the real UCR files run only where sktime's data folder is found (ucr.find_sktime_data: $SKTIME_DATA or
an installed sktime); the rest always runs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import conll_surrogate as cs  # noqa: E402
import data  # noqa: E402
from readers import sources  # noqa: E402
import ucr  # noqa: E402


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


UNI = """# a comment
#another one
@problemName Toy
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true b a c

@data
1,2,3,4:a
0.5,-1,2e1,0:c
4,3,2,1:b
"""


# --------------------------------------------------------------------------------------------------
# the .ts reader
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_univariate_classification(tmp_path, newline):
    X, y, meta = ucr.read_ts(_write(tmp_path / "toy_TRAIN.ts", UNI.replace("\n", newline)))
    assert len(X) == 3 and all(x.shape == (1, 4) and x.dtype == np.float64 for x in X)
    np.testing.assert_array_equal(X[1], [[0.5, -1, 20, 0]])
    assert y.tolist() == ["a", "c", "b"]
    assert meta["problem_name"] == "Toy" and meta["class_labels"] == ["b", "a", "c"] and not meta["target"]
    assert meta["dimensions"] == 1 and meta["min_length"] == meta["max_length"] == 4 and not meta["has_missing"]


def test_read_multivariate_variable_length_missing(tmp_path):
    text = ("@problemName MV\n@timeStamps false\n@missing true\n@univariate false\n@dimensions 2\n"
            "@equalLength false\n@classLabel true x y\n@data\n"
            "1,2,3:4,5,6:x\n"
            "1,?,3,4,5:0,0,0,0,NaN:y\n"
            "7:8:x\n")
    X, y, meta = ucr.read_ts(_write(tmp_path / "mv.ts", text))
    assert [x.shape for x in X] == [(2, 3), (2, 5), (2, 1)] and y.tolist() == ["x", "y", "x"]
    assert np.isnan(X[1][0, 1]) and np.isnan(X[1][1, 4]) and np.isnan(X[1]).sum() == 2
    assert meta["dimensions"] == 2 and (meta["min_length"], meta["max_length"]) == (1, 5) and meta["has_missing"]


def test_read_regression_target(tmp_path):
    text = "@problemName R\n@univariate true\n@equalLength true\n@targetLabel true\n@data\n1,2:3.5\n2,3:-1e-1\n"
    X, y, meta = ucr.read_ts(_write(tmp_path / "r.ts", text))
    assert y.dtype == np.float64 and y.tolist() == [3.5, -0.1] and meta["target"] and meta["class_labels"] is None


def test_read_unlabelled(tmp_path):
    X, y, meta = ucr.read_ts(_write(tmp_path / "u.ts", "@univariate true\n@classLabel false\n@data\n1,2\n3,4\n"))
    assert y is None and len(X) == 2


HEAD = "@problemName Bad\n@univariate false\n@dimensions 2\n@equalLength true\n@seriesLength 3\n@classLabel true a b\n"


@pytest.mark.parametrize("body, line, expect", [
    ("@data\n1,2,3:4,5,6:a\n1,2,3:a\n", 9, "expected 2 dimension"),             # a dimension missing
    ("@data\n1,2,3:4,x,6:a\n", 8, "expected a number"),                        # not a number
    ("@data\n1,2,3:4,5,6:z\n", 8, "not one of the @classLabel"),               # undeclared label
    ("@data\n1,2,3:4,5,6,7:a\n", 8, "dimensions of different lengths"),        # ragged case
    ("@data\n1,2:4,5:a\n", 8, "@seriesLength says 3"),                          # wrong length
    ("@data\n1,,3:4,5,6:a\n", 8, "empty value"),                               # empty value
    ("@data\n1,2,3:4,5,6:a\n@classLabel true a\n", 9, "after @data"),          # header after data
    ("1,2,3:4,5,6:a\n@data\n", 7, "before @data"),                             # data before the header ends
    ("@missing maybe\n@data\n", 7, "true or false"),                            # bad boolean
    ("@dimensions two\n@data\n", 7, "positive integer"),                        # bad integer
])
def test_malformed_lines_name_file_and_line(tmp_path, body, line, expect):
    path = _write(tmp_path / "bad_TRAIN.ts", HEAD + body)
    with pytest.raises(ValueError) as e:
        ucr.read_ts(path)
    msg = str(e.value)
    assert path in msg and f"line {line}:" in msg and expect in msg and "\n" not in msg


@pytest.mark.parametrize("text, expect", [("@univariate true\n", "no @data"), ("@univariate true\n@data\n", "no cases"),
                                          ("@timeStamps true\n@data\n(0,1),(1,2)\n", "not supported"),
                                          ("@univariate true\n@dimensions 3\n@data\n1:2:3\n", "expected 1"),
                                          ("@classLabel true a\n@targetLabel true\n@data\n1:a\n", "at most one")])
def test_malformed_files(tmp_path, text, expect):
    path = _write(tmp_path / "f.ts", text)
    with pytest.raises(ValueError, match=expect) as e:
        ucr.read_ts(path)
    assert path in str(e.value)


# --------------------------------------------------------------------------------------------------
# to_custom_folder -> what train.py --task custom reads
# --------------------------------------------------------------------------------------------------
def test_custom_folder_classification(tmp_path):
    tr = _write(tmp_path / "toy_TRAIN.ts", UNI)
    te = _write(tmp_path / "toy_TEST.ts", UNI.replace("1,2,3,4:a", "9,9,9,9:c"))
    out = tmp_path / "out"
    meta = ucr.to_custom_folder(tr, te, out)
    x, y = np.load(out / "train_x.npy"), np.load(out / "train_y.npy")
    assert x.shape == (3, 1, 4) and x.dtype == np.float32 and y.dtype == np.int64 and y.shape == (3,)
    assert y.tolist() == [1, 2, 0]                          # a, c, b in the header's order "b a c"
    assert np.load(out / "test_y.npy").tolist() == [2, 2, 0]
    np.testing.assert_array_equal(x[1, 0], [0.5, -1, 20, 0])   # values as published (no z-normalisation)
    assert meta["classes"] == ["b", "a", "c"] and json.load(open(out / "meta.json"))["classes"] == ["b", "a", "c"]
    spec = data.get_task("custom", str(out))                # the reader train.py uses
    assert spec.dim == "1d" and spec.input_shape == (1, 4) and spec.num_classes == 3 and spec.loss == "cross_entropy"
    td = data.load_task("custom", str(out))
    assert len(td.test) == 3


def test_custom_folder_variable_length_and_missing(tmp_path):
    def case(vals, lab):
        return ",".join("?" if v is None else str(v) for v in vals) + ":" + ",".join(str(2 * (v or 0)) for v in vals) \
            + f":{lab}"
    head = ("@problemName V\n@missing true\n@univariate false\n@dimensions 2\n@equalLength false\n"
            "@classLabel true p q\n@data\n")
    tr = _write(tmp_path / "v_TRAIN.ts", head + "\n".join([case([0, 1, 2, 3, 4], "p"), case([0, 3], "q"),
                                                             case([1, None, 3, None], "q")]) + "\n")
    te = _write(tmp_path / "v_TEST.ts", head + "\n".join([case(list(range(9)), "p"), case([5], "q")]) + "\n")
    out = tmp_path / "out"
    meta = ucr.to_custom_folder(tr, te, out)
    x, xt = np.load(out / "train_x.npy"), np.load(out / "test_x.npy")
    assert x.shape == (3, 2, 5) and xt.shape == (2, 2, 5)            # the longest training series: 5 points
    np.testing.assert_allclose(x[0, 0], [0, 1, 2, 3, 4])             # already 5 long: unchanged
    np.testing.assert_allclose(x[1, 0], np.linspace(0, 3, 5))         # a line stays a line under resampling
    # '?' filled first (1, 2, 3, 3: inside interpolated, the end held), then 4 -> 5 points at t = 0, .75, 1.5, 2.25, 3
    np.testing.assert_allclose(x[2, 0], [1, 1.75, 2.5, 3, 3])
    np.testing.assert_allclose(xt[0, 0], np.linspace(0, 8, 5))        # longer test series resampled down
    np.testing.assert_allclose(xt[1], [[5] * 5, [10] * 5])            # a single point held
    assert np.isfinite(x).all() and meta["missing_filled"] and meta["original_lengths"]["test"] == [1, 9]
    assert data.get_task("custom", str(out)).input_shape == (2, 5)
    ucr.to_custom_folder(tr, te, tmp_path / "o16", length=16)
    assert np.load(tmp_path / "o16" / "train_x.npy").shape == (3, 2, 16)


def test_custom_folder_regression_and_channel_norm(tmp_path):
    head = "@problemName R\n@univariate true\n@equalLength true\n@targetLabel true\n@data\n"
    tr = _write(tmp_path / "r_TRAIN.ts", head + "1,2,3:10\n2,3,4:20\n3,4,8:36\n")
    te = _write(tmp_path / "r_TEST.ts", head + "0,0,0:15\n")
    out = tmp_path / "out"
    meta = ucr.to_custom_folder(tr, te, out, normalize="channel")
    y, yt = np.load(out / "train_y.npy"), np.load(out / "test_y.npy")
    assert y.dtype == np.float32 and y.shape == (3,)
    raw = np.array([10, 20, 36.0])
    assert meta["target_mean"] == pytest.approx(raw.mean()) and meta["target_std"] == pytest.approx(raw.std())
    np.testing.assert_allclose(y * meta["target_std"] + meta["target_mean"], raw, rtol=1e-6)
    np.testing.assert_allclose(yt, [(15 - raw.mean()) / raw.std()], rtol=1e-6)
    x = np.load(out / "train_x.npy")
    assert abs(x.mean()) < 1e-6 and abs(x.std() - 1) < 1e-5                  # train statistics
    spec = data.get_task("custom", str(out))
    assert spec.loss == "mse" and spec.output_shape == (1,)
    m2 = ucr.to_custom_folder(tr, te, tmp_path / "raw", standardize_target=False)
    assert np.load(tmp_path / "raw" / "train_y.npy").tolist() == [10, 20, 36] and m2["target_std"] == 1.0


def test_custom_folder_refuses_mismatched_files(tmp_path):
    tr = _write(tmp_path / "a_TRAIN.ts", UNI)
    te = _write(tmp_path / "a_TEST.ts", UNI.replace("@classLabel true b a c", "@classLabel true a b c"))
    with pytest.raises(ValueError, match="label header"):
        ucr.to_custom_folder(tr, te, tmp_path / "o")
    with pytest.raises(ValueError, match="normalize"):
        ucr.to_custom_folder(tr, tr, tmp_path / "o", normalize="series")


BENCH = {"osuleaf": ((200, 1, 427), (242, 1, 427), 6), "basicmotions": ((40, 6, 100), (40, 6, 100), 4),
         "japanesevowels": ((270, 12, 26), (370, 12, 26), 9), "tecator": ((172, 1, 100), (43, 1, 100), None)}


def test_sktime_data_is_found_without_a_fixed_path(tmp_path, monkeypatch):
    """The real-file checks find sktime's data from $SKTIME_DATA or an installed sktime package, not from a fixed
    temporary path that only one machine had."""
    import importlib.util
    monkeypatch.setenv("SKTIME_DATA", str(tmp_path))
    assert ucr.find_sktime_data() == str(tmp_path)
    monkeypatch.setenv("SKTIME_DATA", str(tmp_path / "missing"))
    assert ucr.find_sktime_data() is None
    monkeypatch.delenv("SKTIME_DATA")
    pkg = tmp_path / "site" / "sktime"
    (pkg / "datasets" / "data" / "OSULeaf").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    assert ucr.find_sktime_data() == str(pkg / "datasets" / "data")


def test_real_benchmark_folders(tmp_path, capsys):
    SKTIME_DATA = ucr.find_sktime_data()
    if SKTIME_DATA is None:
        pytest.skip("sktime's data sets are not here: set SKTIME_DATA to sktime/datasets/data (an unpacked "
                    "sktime-1.2.0 wheel) or pip install sktime==1.2.0; the written-file tests cover the reader")
    ucr.main([SKTIME_DATA, str(tmp_path)])
    printed = capsys.readouterr().out
    for name, (trs, tes, k) in BENCH.items():
        d = tmp_path / name
        x, xt = np.load(d / "train_x.npy"), np.load(d / "test_x.npy")
        y, yt = np.load(d / "train_y.npy"), np.load(d / "test_y.npy")
        assert x.shape == trs and xt.shape == tes and x.dtype == xt.dtype == np.float32 and np.isfinite(x).all()
        assert name in printed and str(trs) in printed
        spec = data.get_task("custom", str(d))
        if k is None:
            assert y.dtype == np.float32 and spec.loss == "mse" and abs(y.mean()) < 1e-5
        else:
            assert y.dtype == np.int64 and set(y.tolist()) == set(range(k)) == set(yt.tolist())
            assert spec.num_classes == k
    X, _, _ = ucr.read_ts(os.path.join(SKTIME_DATA, "OSULeaf", "OSULeaf_TRAIN.ts"))
    assert ucr._per_series_znormed(X)                                           # OSULeaf is z-normalised per series
    X, _, _ = ucr.read_ts(os.path.join(SKTIME_DATA, "BasicMotions", "BasicMotions_TRAIN.ts"))
    assert not ucr._per_series_znormed(X)


# --------------------------------------------------------------------------------------------------
# the CoNLL-2003-format surrogate
# --------------------------------------------------------------------------------------------------
def _mentions(path):
    return [(" ".join(s), " ".join(m), sources.CONLL_TYPES[t]) for s, m, t in sources.conll_mentions(str(path))]


def test_surrogate_deterministic(tmp_path):
    a = cs.write_surrogate(tmp_path / "a", n_train=300, n_test=120, seed=3)
    b = cs.write_surrogate(tmp_path / "b", n_train=300, n_test=120, seed=3)
    c = cs.write_surrogate(tmp_path / "c", n_train=300, n_test=120, seed=4)
    for pa, pb, pc in zip(a, b, c):
        assert open(pa, "rb").read() == open(pb, "rb").read() != open(pc, "rb").read()
    assert [os.path.relpath(p, tmp_path / "a") for p in a] == [os.path.join("conll2003", "eng.train"),
                                                              os.path.join("conll2003", "eng.testb")]


def test_surrogate_parsed_balanced_and_ambiguous(tmp_path):
    tr_path, te_path = cs.write_surrogate(tmp_path, n_train=800, n_test=400, seed=0)
    text = open(tr_path, encoding="utf-8").read()
    assert text.startswith("-DOCSTART- -X- -X- O\n\n") and all(len(ln.split()) == 4 for ln in text.splitlines() if ln)
    for path, n in ((tr_path, 800), (te_path, 400)):
        ms = _mentions(path)
        assert n <= len(ms) <= n + 3
        counts = {t: sum(m[2] == t for m in ms) for t in sources.CONLL_TYPES}
        assert all(0.2 <= c / len(ms) <= 0.3 for c in counts.values()), counts
    tr, te = _mentions(tr_path), _mentions(te_path)
    types = {}
    for _, m, t in tr:
        types.setdefault(m, set()).add(t)
    shared = {m for m, ts in types.items() if len(ts) > 1}
    assert len(shared) >= 10 and {"Jordan", "Washington"} & shared
    # the same sentence, two mentions, two types: only the mention segment of the pair tells them apart
    by_sent = {}
    for s, m, t in tr:
        by_sent.setdefault(s, set()).add(t)
    assert any(len(ts) > 1 for ts in by_sent.values())
    # nothing lexical carries over but the ambiguous names: unambiguous names and frames are split
    amb = set(cs.AMBIGUOUS)
    assert not ({m for _, m, _ in tr} - amb) & ({m for _, m, _ in te} - amb)
    inv = cs.split_inventory(0)
    assert not set(inv["train"][0]) & set(inv["test"][0])
    assert sorted(inv["train"][0] + inv["test"][0]) == sorted(cs.FRAMES)


def test_surrogate_iob_schemes_agree(tmp_path):
    p1 = cs.write_surrogate(tmp_path / "iob1", n_train=400, n_test=50, seed=1, scheme="iob1")[0]
    p2 = cs.write_surrogate(tmp_path / "iob2", n_train=400, n_test=50, seed=1, scheme="iob2")[0]
    assert _mentions(p1) == _mentions(p2)
    tags1 = [ln.split()[-1] for ln in open(p1, encoding="utf-8") if ln.strip() and not ln.startswith("-DOC")]
    tags2 = [ln.split()[-1] for ln in open(p2, encoding="utf-8") if ln.strip() and not ln.startswith("-DOC")]
    assert sum(t.startswith("B-") for t in tags1) < sum(t.startswith("B-") for t in tags2)   # IOB1: B- only when needed
    with pytest.raises(ValueError, match="scheme"):
        cs.to_conll([], scheme="bio")


def test_surrogate_through_load_source_surrogate(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    cs.write_surrogate(tmp_path, n_train=200, n_test=80, seed=0)
    words = open(tmp_path / "conll2003" / "eng.train", encoding="utf-8").read().split()
    vocab = {"[CLS]": 0, "[PAD]": 1, "[SEP]": 2, "[UNK]": 3, **{w: i + 4 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 0), ("[SEP]", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    for split, n in (("train", 200), ("test", 80)):
        ds = data.load_source_surrogate("conll2003", str(tmp_path), tokenizer=tok, split=split, seed=0)
        assert n <= len(ds) <= n + 3 and set(ds.labels.tolist()) == {0, 1, 2, 3}
        x, y = ds[0]
        assert tuple(x.shape) == (sources.CONLL_SEQ_LEN,) and int(x[0]) == 0


# ---------------------------------------------------------------------------------------------------------
# bench/real_weights.py and bench/sweep.py: the table, the run claims, the sweep's selection rule
# ---------------------------------------------------------------------------------------------------------
def test_results_table_ranks_among_the_methods_with_a_result():
    import real_weights as rw
    scores = {("osuleaf", "finetune"): [10.0, 12.0], ("osuleaf", "mona"): [20.0], ("osuleaf", "emb"): [10.0, 12.0],
              ("tecator", "finetune"): [1.0], ("tecator", "mona"): [0.5]}
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in rw.table(scores).splitlines() if ln.startswith("| ")}
    assert "11.00 ± 1.41 (n=2)" in rows["finetune"] and "20.00 (n=1)" in rows["mona"]
    assert rows["finetune"].endswith("| 1.75 (2 tasks) |")        # tied 1st-2nd on osuleaf (1.5), 2nd on tecator
    assert rows["mona"].endswith("| 2.00 (2 tasks) |") and rows["emb"].endswith("| 1.50 (1 tasks) |")
    assert rows["orca"].endswith("| – |")


def test_a_run_is_claimed_once_and_a_dead_claim_is_taken_over(tmp_path):
    import real_weights as rw
    out = str(tmp_path / "runs" / "t-mona-s0")
    assert rw._claim(out) and not rw._claim(out)                 # held by this (live) process
    with open(out + ".lock", "w") as f:
        f.write("999999999")                                     # no such process
    assert rw._claim(out) and open(out + ".lock").read() == str(os.getpid())


def test_runner_takes_the_asked_seeds_seed_major_and_skips_finished_and_claimed_runs(tmp_path, monkeypatch):
    import real_weights as rw
    ran = []

    def fake_run(cmd, out, threads):                             # what run_claimed does, minus train.py
        assert os.path.isabs(out) and os.path.isabs(cmd[cmd.index("--out") + 1])   # recorded in checkpoints
        ran.append((os.path.basename(out), cmd[cmd.index("--seed") + 1]))
        os.remove(out + ".lock")
        return "ok"

    monkeypatch.setattr(rw, "run_claimed", fake_run)
    runs = tmp_path / "runs"
    os.makedirs(runs / "a-mona-s0")
    (runs / "a-mona-s0" / "result.json").write_text("{}")          # finished: skipped
    assert rw._claim(str(runs / "b-emb-s1"))                      # claimed by a live runner: skipped
    paths = {"data": str(tmp_path / "tasks"), "body": "body", "source": "src"}
    monkeypatch.chdir(tmp_path)
    rw.run_all(paths, ".", methods=("emb", "mona"), tasks=("a", "b"), seeds=(1, 0))   # a relative --work
    assert ran == [("a-emb-s1", "1"), ("a-mona-s1", "1"), ("b-mona-s1", "1"),
                   ("a-emb-s0", "0"), ("b-emb-s0", "0"), ("b-mona-s0", "0")]
    with pytest.raises(SystemExit):                               # only the seeds fixed in advance
        rw.main(["--seeds", "3", "--table-only", "--work", str(tmp_path)])
    # the prepared folder's parts, as the runner and the sweep pass them to train.py: absolute from a relative --work
    assert rw.work_paths(".") == {k: str(tmp_path / v) for k, v in
                                  (("body", "minilm"), ("data", "tasks"), ("source", "source"))}


def test_runs_json_and_compare_against_a_reference(tmp_path, capsys):
    import real_weights as rw
    for name, test, last in (("osuleaf-mona-s0", 50.0, 49.0), ("osuleaf-mona-s2", 40.0, 41.0),
                             ("tecator-finetune++-s1", 1.04, 1.05)):
        os.makedirs(tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "result.json").write_text(json.dumps(
            {"test": test, "test_last": last, "best_epoch": 3, "seconds": 9.5, "config": {}}))
    runs = rw.per_run(str(tmp_path))
    assert list(runs) == ["osuleaf-mona-s0", "osuleaf-mona-s2", "tecator-finetune++-s1"]
    assert runs["osuleaf-mona-s2"] == {"test": 40.0, "test_last": 41.0, "best_epoch": 3, "seconds": 9.5}
    assert rw.collect(runs) == {("osuleaf", "mona"): [50.0, 40.0], ("tecator", "finetune++"): [1.04]}
    reference = {"osuleaf-mona-s0": {"test": 50.0, "test_last": 49.0}, "osuleaf-mona-s2": {"test": 40.0,
                 "test_last": 41.25}, "osuleaf-emb-s0": {"test": 1.0, "test_last": 1.0}}
    text = rw.compare(runs, reference)
    assert text.splitlines()[-1] == "1 of 2 runs identical to the reference; largest difference 0.250"
    assert "osuleaf-mona-s2" in text and "differs by 0.250" in text and "osuleaf-emb-s0" not in text
    assert rw.main(["--work", str(tmp_path), "--table-only"]) == 0       # writes runs.json beside the tables
    assert json.loads((tmp_path / "runs.json").read_text()) == runs
    assert rw.main(["--work", str(tmp_path), "--table-only", "--compare", str(tmp_path / "runs.json")]) == 0
    assert "3 of 3 runs identical to the reference" in capsys.readouterr().out
    assert rw.main(["--work", str(tmp_path), "--table-only", "--compare", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert rw.main(["--work", str(tmp_path / "nowhere"), "--table-only"]) == 2      # nothing run there yet
    assert "no runs/ folder" in capsys.readouterr().err
    # --records: recorded runs the folder does not hold join the tables; the folder's own runs replace theirs
    recorded = {"osuleaf-mona-s0": {"test": 99.0, "test_last": 99.0, "best_epoch": 1, "seconds": 1.0},
                "osuleaf-emb-s1": {"test": 30.0, "test_last": 31.0, "best_epoch": 2, "seconds": 1.0}}
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    assert rw.main(["--work", str(tmp_path), "--table-only", "--records", str(tmp_path / "recorded.json")]) == 0
    merged = json.loads((tmp_path / "runs.json").read_text())
    assert merged == {**runs, "osuleaf-emb-s1": recorded["osuleaf-emb-s1"]}
    assert "| emb | 30.00 (n=1) |" in (tmp_path / "results.md").read_text()


def test_runners_started_together_prepare_the_work_folder_one_at_a_time(tmp_path, monkeypatch):
    """The README starts two runners at once: the second waits while the first unpacks the body and writes the
    task folders (else it could train on a half-written checkpoint)."""
    import threading
    import time
    import real_weights as rw
    events = []

    def slow_prepare(wheels, work):
        events.append("in")
        time.sleep(0.3)
        events.append("out")
        return {}

    monkeypatch.setattr(rw, "_prepare", slow_prepare)
    runners = [threading.Thread(target=rw.prepare, args=("wheels", str(tmp_path / "work"))) for _ in range(2)]
    for t in runners:
        t.start()
    for t in runners:
        t.join()
    assert events == ["in", "out", "in", "out"]


def test_sweep_chooses_the_lowest_mean_validation_error_and_the_earlier_row_on_ties(tmp_path):
    import sweep
    rows = [dict(alpha=0.01), dict(alpha=0.1), dict(alpha=1.0)]
    vals = {0.01: (10.0, 30.0), 0.1: (0.0, 40.0), 1.0: (5.0, 25.0)}   # means 20, 20, 15
    for r in rows:
        for t, v in zip(sweep.TASKS, vals[r["alpha"]]):
            d = sweep.run_dir(str(tmp_path), t, r)
            os.makedirs(d)
            json.dump({"best_val": v, "test": 0.0}, open(os.path.join(d, "result.json"), "w"))
            open(os.path.join(d, "metrics.jsonl"), "w").write(json.dumps({"stage": 2, "epoch": 1}) + "\n")
    assert sweep.best(str(tmp_path), rows) == dict(alpha=1.0)
    assert sweep.best(str(tmp_path), rows[:2]) == dict(alpha=0.01)     # a tie: the earlier row


def test_sweep_table_of_a_folder_with_no_sweep_is_one_line(tmp_path, capsys):
    import sweep
    assert sweep.main(["--work", str(tmp_path / "nowhere"), "--table-only"]) == 2    # nothing swept there yet
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep/ folder" in err


def _minilm_like(tmp_path):
    """A folder shaped like all-MiniLM-L6-v2's (a bare BertModel and its fast tokenizer; tiny and random here) whose
    word-level vocabulary covers the surrogate written to tmp_path/src. Returns the folder."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    cs.write_surrogate(tmp_path / "src", n_train=120, n_test=40, seed=0)
    words = open(tmp_path / "src" / "conll2003" / "eng.train", encoding="utf-8").read().split()
    vocab = {"[CLS]": 0, "[PAD]": 1, "[SEP]": 2, "[UNK]": 3, **{w: i + 4 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 0), ("[SEP]", 2)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                         cls_token="[CLS]", sep_token="[SEP]").save_pretrained(tmp_path / "body")
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=37, pad_token_id=1,
                                     architectures=["BertModel"])
    transformers.BertModel(config).save_pretrained(tmp_path / "body")
    return tmp_path / "body"


def test_custom_mona_runs_with_a_body_folder_and_the_surrogate_folder_alone(tmp_path, monkeypatch):
    """The user's command on their own data, `train.py --task custom --data-dir D --backbone FOLDER --source-dir S`
    and nothing else, with a folder shaped like all-MiniLM-L6-v2's (a bare BertModel and its fast tokenizer; tiny
    and random here) and this surrogate: MoNA runs both stages with the custom defaults (100 stage-1 steps)."""
    from readers import custom
    import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)                  # train.py's default --out, runs/custom-mona
    _minilm_like(tmp_path)
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "task")
    for split, n in (("train", 50), ("test", 12)):
        y = np.arange(n) % 3
        np.save(tmp_path / "task" / f"{split}_x.npy", rng.normal(size=(n, 2, 24)).astype(np.float32) + y[:, None, None])
        np.save(tmp_path / "task" / f"{split}_y.npy", y)
    assert train.main(["--task", "custom", "--data-dir", "task", "--backbone", "body", "--source-dir", "src"]) == 0
    rows = [json.loads(ln) for ln in open(tmp_path / "runs" / "custom-mona" / "metrics.jsonl", encoding="utf-8")]
    s1 = [r for r in rows if r["stage"] == 1]
    assert s1[0]["method"] == "mona" and sum(r["steps"] for r in s1) == custom.CUSTOM_DEFAULTS["stage1_steps"]
    assert all(np.isfinite(r["meta_ratio"]) and r["meta_ratio"] > 0 for r in s1)
    assert len([r for r in rows if r["stage"] == 2]) == custom.CUSTOM_DEFAULTS["epochs"]


@pytest.mark.parametrize("script", ["probe.py", "discrepancy.py"])
def test_analyses_write_no_weight_loading_bars_into_a_log(tmp_path, script):
    """Redirected output (the benchmark's logs) holds the result or the one error line, not the progress bars that
    transformers draws while it loads a body folder's weights."""
    body = _minilm_like(tmp_path)
    if script == "probe.py":                     # Fig. 3 on the surrogate: runs, prints its table
        args = ["--backbone", str(body), "--data-dir", str(tmp_path / "src"), "--max-samples", "20", "--no-tsne",
                "--out", str(tmp_path / "p")]
    else:                                        # Fig. 4 on a head-less body: loads it, then its one error line
        rng = np.random.default_rng(0)
        os.makedirs(tmp_path / "task")
        for split, n in (("train", 20), ("test", 6)):
            np.save(tmp_path / "task" / f"{split}_x.npy", rng.normal(size=(n, 2, 24)).astype(np.float32))
            np.save(tmp_path / "task" / f"{split}_y.npy", np.arange(n) % 3)
        args = ["--task", "custom", "--data-dir", str(tmp_path / "task"), "--backbone", str(body)]
    r = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                       cwd=tmp_path, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == (0 if script == "probe.py" else 2), out[-2000:]
    assert "Loading weights" not in out and "\r" not in out and "it/s" not in out, out[-2000:]
    assert "Traceback" not in out
