"""Check bench/scale.py's estimates on a CUDA machine in minutes: a few real steps of every method on one 2D task
(CIFAR-100, Swin-B) and one 1D task (ECG, RoBERTa-base), random weights, fp32 and bf16. Not a test.

    python bench/gpu_check.py                       # writes bench/results/gpu_check.json and prints a table
    python bench/gpu_check.py --tasks cifar100 --steps 3 --precisions bf16

For each task × step kind × precision: the same step as scale.py's record (stage-2 micro-batch at the paper's batch
size, Emb and every MoNA meta-gradient mode at the stage-1 batch; ORCA's stage 1 is left out: it never runs the
body), run `--steps` times after one warm-up; measured torch.cuda.max_memory_allocated() above the resident state,
the median step time, the achieved FLOP/s (scale.py's FLOP count / time), beside scale.py's estimate from
bench/results/scale.json. The resident state (parameters, optimizer state) is counted in both. A step that runs
out of memory is recorded as such (the table's "does not fit" is then confirmed). Without CUDA: one line, exit 1.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["cifar100", "ecg"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=3, help="measured steps per case (after one warm-up)")
    p.add_argument("--out", default=os.path.join(RESULTS, "gpu_check.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA device (torch.cuda.is_available() is False); the CPU estimates are in "
              "bench/results/scale.json (python bench/scale.py)", file=sys.stderr)
        return 1
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import data
    import losses
    import predictors
    import scale
    import stage1
    from stage2 import make_optimizer

    estimates = {}
    if os.path.exists(scale.OUT):
        with open(scale.OUT) as f:
            for r in json.load(f).get("records", []):
                estimates[(r["task"], r["method"], r["meta"], r["hvp"], r["cache_outer_grad"], r["stage"],
                           r["precision"])] = r
    dev = torch.device("cuda")
    scale.M.update(device=dev)
    rows = []
    for task in args.tasks:
        spec = data.TASKS[task]
        source = scale.body_of(spec)
        model = predictors.build_target_model(spec, source, init="source")
        model.to(dev)
        source.to(dev)
        cases = [("finetune", None, None, False, "2"), ("frozen", None, None, False, "2"),
                 ("emb", None, None, False, "1")]
        cases += [("mona", m, h, c, "1") for m, h, c in scale.MONA_MODES]
        for precision in args.precisions:
            for method, meta, hvp, cache, stage in cases:
                cfg = scale.run_config(task, method, meta or "exact", hvp or "autograd", cache, precision)
                cfg["device"] = "cuda"
                est = estimates.get((task, method, meta, hvp, cache, stage, precision), {})
                row = dict(task=task, method=method, meta=meta, hvp=hvp, cache_outer_grad=cache, stage=stage,
                           precision=precision, batch=cfg["batch_size"] if stage == "2" else cfg["stage1_batch_size"],
                           estimated_peak_bytes=est.get("peak_bytes"), flops_per_step=est.get("flops_per_step"))
                try:
                    row.update(_measure(model, source, spec, cfg, method, stage, args.steps, dev, scale, losses,
                                        stage1, make_optimizer))
                except torch.OutOfMemoryError:
                    row["measured"] = "out of memory"
                for p_ in model.parameters():
                    p_.grad = None
                model.encoder.requires_grad_(True)
                torch.cuda.empty_cache()
                if isinstance(row.get("seconds_per_step"), float) and row["flops_per_step"]:
                    row["achieved_tflops"] = row["flops_per_step"] / row["seconds_per_step"] / 1e12
                if row.get("peak_bytes") and row["estimated_peak_bytes"]:
                    row["estimate_error"] = row["estimated_peak_bytes"] / row["peak_bytes"] - 1
                rows.append(row)
                print(_line(row), flush=True)
        del model
        scale._SOURCES.clear()
        torch.cuda.empty_cache()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)
    print(f"wrote {args.out}")
    return 0


def _measure(model, source, spec, cfg, method, stage, steps, dev, scale, losses, stage1, make_optimizer) -> dict:
    """Warm-up + `steps` real steps of one case; peak bytes (max_memory_allocated) of the measured steps, their
    median time."""
    task_loss = losses.task_objective(spec, type("TD", (), {"output_decoder": None})(), dev)[0]
    model.train()
    if stage == "2":
        if method == "frozen":
            model.encoder.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(cfg, params, cfg["lr"])
        x, y = scale.inputs(spec, cfg["batch_size"])

        def step():
            scale.stage2_microbatch(model, spec, cfg, x, y, params, task_loss)
            opt.step()
            opt.zero_grad(set_to_none=cfg["accum"] == 1)
    else:
        outer_fn = losses.OUTER_LOSSES[cfg["outer_loss"]]
        phi = stage1.stage1_parameters(model, cfg)
        model.encoder.requires_grad_(False)
        opt = torch.optim.AdamW(phi.values(), lr=cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
        x, y = scale.inputs(spec, cfg["stage1_batch_size"])
        batch = scale.source_batch(spec, source, cfg)
        v = stage1.cached_outer_grad(model, source, iter([batch]), outer_fn, cfg, scale.M, n_batches=1) \
            if cfg["cache_outer_grad"] else None

        def step():
            if method == "mona":
                stage1.mona_step(model, source, phi, opt, x, y, batch, task_loss, outer_fn, v, cfg, scale.M, 0)
            else:
                stage1.emb_step(model, phi, opt, x, y, task_loss, cfg, scale.M, 0)
    step()                                             # warm-up: optimizer state, cuBLAS handles
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return dict(peak_bytes=torch.cuda.max_memory_allocated(), seconds_per_step=statistics.median(times))


def _line(r: dict) -> str:
    mode = f"{r['meta']}/{r['hvp']}{'/cached' if r['cache_outer_grad'] else ''}" if r["meta"] else ""
    what = f"{r['task']:<9} {r['method']:<8} {mode:<32} stage {r['stage']} {r['precision']} batch {r['batch']}"
    if r.get("measured") == "out of memory":
        return f"{what}: out of memory (estimate {_gib(r['estimated_peak_bytes'])})"
    return (f"{what}: peak {_gib(r['peak_bytes'])} (estimate {_gib(r['estimated_peak_bytes'])}), "
            f"{r['seconds_per_step']:.3f} s/step, {r.get('achieved_tflops', float('nan')):.1f} TFLOP/s")


def _gib(b) -> str:
    return "n/a" if b is None else f"{b / 2 ** 30:.2f} GiB"


if __name__ == "__main__":
    sys.exit(main())
