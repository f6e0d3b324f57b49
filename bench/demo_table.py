"""Every method of Table 2 on the demo (`train.py --demo`), over seeds fixed in advance: a table and a figure. Not a test.

    python bench/demo_table.py                  # cifar100 (2D) and ecg (1D), 7 methods, seeds 0 1 2 (~2 min a seed)
    python bench/demo_table.py --seeds 0        # one seed
    python bench/demo_table.py --out DIR        # write DIR/demo.md and DIR/demo.png (default bench/results)

The demo's data (readers/primitives.py) build the source and the target from the same primitives, the target seen
through another form (a fixed colour mixing for 2D, waveforms instead of token ids for 1D), and its tiny bodies
were pretrained on the source (support/demo.py), so a pretrained body can help. Each run is
`train.py --task T --method M --demo --seed S` with nothing else changed, called in this process one after the
other (train.main, one thread, the demo body cached on the first run). The numbers are the headline `test` of
result.json: the last epoch's test score under the paper protocol (cifar100: 0-1 error in %; ecg: 1 − F1, a
fraction; lower is better). The seed sets the data draw, the initialisation and the order. Nothing was tuned
on this table; the seeds were fixed before the first run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TASKS = ("cifar100", "ecg")
METHODS = ("scratch", "finetune", "finetune++", "frozen", "orca", "emb", "mona")
SEEDS = (0, 1, 2)                       # fixed before the first run
RESULTS = os.path.join(ROOT, "bench", "results")


def run_one(task: str, method: str, seed: int, work: str) -> dict:
    """One demo run in this process; its result.json's headline, metric and seconds."""
    import train
    out = os.path.join(work, f"{task}-{method}-s{seed}")
    buf = io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = train.main(["--task", task, "--method", method, "--demo", "--seed", str(seed), "--no-progress",
                         "--out", out])
    if rc != 0:
        raise SystemExit(f"{task} / {method} / seed {seed} failed ({rc}): {buf.getvalue().strip()[-500:]}")
    r = json.load(open(os.path.join(out, "result.json")))
    return dict(task=task, method=method, seed=seed, test=r["test"], metric=r["metric"], wall=time.time() - t0)


def summary(rows: list) -> dict:
    """(task, method) -> (mean, sample sd, values in seed order)."""
    out = {}
    for t in TASKS:
        for m in METHODS:
            v = [r["test"] for r in sorted(rows, key=lambda r: r["seed"]) if r["task"] == t and r["method"] == m]
            if v:
                out[t, m] = (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, v)
    return out


def markdown(rows: list, seeds, seconds: float) -> str:
    s = summary(rows)
    metric = {t: next(r["metric"] for r in rows if r["task"] == t) for t in TASKS if any(r["task"] == t for r in rows)}
    unit = {"error": "0-1 error, %", "one_minus_f1": "1 − F1"}
    head = " | ".join(f"{t} ({unit.get(metric[t], metric[t])})" for t in metric)
    lines = [f"# The demo: every method on data that share primitives (`python bench/demo_table.py`)\n",
             f"Seeds {', '.join(map(str, seeds))} (fixed in advance); mean ± sample sd over seeds, then the values in seed "
             f"order. Lower is better. `train.py --task T --method M --demo --seed S`, nothing else changed; "
             f"{seconds:.0f} s for the whole table on this machine (one thread).\n",
             f"| method | {head} |", "|---|" + "---|" * len(metric)]
    for m in METHODS:
        cells = []
        for t in metric:
            mean, sd, v = s.get((t, m), (None, None, []))
            fmt = "{:.1f}" if metric[t] == "error" else "{:.3f}"
            cells.append("–" if mean is None else
                         f"{fmt.format(mean)} ± {fmt.format(sd)} ({', '.join(fmt.format(x) for x in v)})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = summary(rows)
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        ms = [m for m in METHODS if (t, m) in s]
        ax.bar(range(len(ms)), [s[t, m][0] for m in ms], yerr=[s[t, m][1] for m in ms], color="#9ab", capsize=3)
        for i, m in enumerate(ms):
            ax.plot([i] * len(s[t, m][2]), s[t, m][2], "k.", ms=4)
        ax.set_xticks(range(len(ms)), ms, rotation=30)
        metric = next(r["metric"] for r in rows if r["task"] == t)
        ax.set_title(f"--demo {t}: test {metric} (lower is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--out", default=RESULTS, help="folder for demo.md and demo.png")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rows, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for task in args.tasks:
                for method in METHODS:
                    r = run_one(task, method, seed, work)
                    rows.append(r)
                    print(f"{task:<9} {method:<11} seed {seed}: test {r['metric']} {r['test']:.4g}  ({r['wall']:.1f} s)",
                          flush=True)
    text = markdown(rows, args.seeds, time.time() - t0)
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "demo.md"), "w") as f:
        f.write(text)
    figure(rows, os.path.join(args.out, "demo.png"))
    print(f"-> {os.path.join(args.out, 'demo.md')}, {os.path.join(args.out, 'demo.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
