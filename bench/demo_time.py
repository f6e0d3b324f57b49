"""Wall time of the embedded default, `python train.py --task <task> --method <method> --demo`. Not a test.

    python bench/demo_time.py                       # cifar100 / mona (the README's demo command)
    python bench/demo_time.py ecg advection         # more tasks, every method each

Each run is a fresh process (imports included, as a user sees it) writing to a temporary folder; the
table gives wall seconds per run and the stage split read back from metrics.jsonl. Aim: under 2 minutes
for cifar100 / mona on a 2-core CPU.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(task: str, method: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--task", task, "--method", method,
                               "--demo", "--no-progress", "--out", os.path.join(out, "run")],
                              cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return dict(task=task, method=method, wall=wall, error=proc.stderr.strip().splitlines()[-1])
        rows = [json.loads(line) for line in open(os.path.join(out, "run", "metrics.jsonl"))]
        stage = {s: sum(r["seconds"] for r in rows if r["stage"] == s) for s in (1, 2)}
        return dict(task=task, method=method, wall=wall, stage1=stage[1], stage2=stage[2])


def main(argv):
    jobs = [("cifar100", "mona")] if not argv else [(t, m) for t in argv for m in
                                                     ("scratch", "finetune", "finetune++", "frozen", "orca", "emb", "mona")]
    print(f"{'task':<12} {'method':<11} {'wall s':>7} {'stage 1 s':>9} {'stage 2 s':>9}")
    for task, method in jobs:
        r = run(task, method)
        if "error" in r:
            print(f"{task:<12} {method:<11} {r['wall']:7.1f}  FAILED: {r['error']}")
        else:
            print(f"{task:<12} {method:<11} {r['wall']:7.1f} {r['stage1']:9.1f} {r['stage2']:9.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
