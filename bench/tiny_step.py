"""Seconds per MoNA stage-1 step (one `stage1.mona_step`: Alg. 1's loop body) with the demo's tiny bodies. Not a test.

    python bench/tiny_step.py                       # cifar100 (tiny Swin, 2D) and ecg (tiny RoBERTa, 1D), 10 steps each
    python bench/tiny_step.py --steps 20 --profile  # and a cProfile of the 2D steps (top 25 by cumulative time)
    python bench/tiny_step.py --compare OLD_TREE    # the same, alternating with a copy of the repository at OLD_TREE

The step is built as `train.py --task T --method mona --demo` builds it (train.resolve_config, train.build_run,
the demo's stage-1 batch of 8 target samples and 10 classes x 2 source samples), then timed after two warm-up
steps; the median over `--steps` steps is printed. `--compare` runs this script from OLD_TREE (an older checkout
holding the same bench/tiny_step.py) in a child process, alternating tasks and trees, so that both are measured
in one run on the same (possibly busy) machine. One thread (torch.set_num_threads(1)) unless --threads says other.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build(task: str):
    """(the step as a closure, its config) for `--task task --method mona --demo`."""
    import torch

    import losses
    import stage1
    import train
    from support.runtime import setup_machine
    cfg = train.resolve_config(train.get_parser().parse_args(["--task", task, "--method", "mona", "--demo",
                                                               "--no-progress", "--out", "/nonexistent"]))
    m = setup_machine(cfg)
    td, spec, source, model = train.build_run(cfg, m)
    task_loss, _ = losses.task_objective(spec, td, m["device"])
    phi = stage1.stage1_parameters(model, cfg)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(phi.values(), lr=cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
    outer_fn = losses.OUTER_LOSSES[cfg["outer_loss"]]
    surrogate = stage1.load_surrogate(cfg, spec, source)
    batches = stage1.source_batches(surrogate, source, cfg, m, seed=0)
    loader = torch.utils.data.DataLoader(td.train, batch_size=cfg["stage1_batch_size"], shuffle=False)
    x, y = next(iter(loader))
    model.train()

    def step():
        return stage1.mona_step(model, source, phi, opt, x, y, next(batches), task_loss, outer_fn, None, cfg, m, 0)
    return step, cfg


def time_steps(task: str, steps: int, profile: bool = False) -> dict:
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        step, cfg = build(task)
    for _ in range(2):                                   # warm-up
        step()
    times = []
    if profile:
        import cProfile
        import pstats
        pr = cProfile.Profile()
        pr.enable()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if profile:
        pr.disable()
        pstats.Stats(pr, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    return dict(task=task, median_s=statistics.median(times), min_s=min(times), steps=steps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["cifar100", "ecg"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="cProfile the timed steps (stderr)")
    p.add_argument("--compare", metavar="OLD_TREE", default=None,
                   help="also time the copy of the repository at OLD_TREE, alternating with this one")
    p.add_argument("--json", action="store_true", help="one JSON line per task (used by --compare)")
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    rows = []
    for task in args.tasks:
        trees = [("this", None)] + ([("old", args.compare)] if args.compare else [])
        for name, tree in trees:
            if tree is None:
                r = time_steps(task, args.steps, args.profile)
            else:
                cmd = [sys.executable, os.path.join(tree, "bench", "tiny_step.py"), "--tasks", task, "--steps",
                       str(args.steps), "--threads", str(args.threads), "--json"]
                r = json.loads(subprocess.run(cmd, cwd=tree, capture_output=True, text=True, check=True)
                               .stdout.strip().splitlines()[-1])
            rows.append(dict(r, tree=name))
            if args.json:
                print(json.dumps(r), flush=True)
    if not args.json:
        print(f"{'task':<10} {'tree':<5} {'median s/step':>13} {'min s/step':>10}  ({args.steps} steps, "
              f"{args.threads} thread(s))")
        for r in rows:
            print(f"{r['task']:<10} {r['tree']:<5} {r['median_s']:13.3f} {r['min_s']:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
