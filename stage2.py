"""stage2.py: the second stage of every method, vanilla fine-tuning (Eq. 1), and its evaluation.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. Stage 2 is the same loop for every method of Table 2: the methods differ in the embedder
it starts from (stage 1, or the initialisation) and Frozen-encoder keeps the body frozen. App. A.1 says it
"basically follow[s] the setups in ORCA", whose loop is `train_one_epoch` in src/main.py
(github.com/sjunhongshen/ORCA).

Paper map
---------
| paper                                              | here                                          |
|----------------------------------------------------|-----------------------------------------------|
| Eq. (1) θ^T* = argmin_θ Σ_i ℓ(g_θ(x_i^t), y_i^t)   | `stage2`                                      |
| ℓ per task (Tables 8 and 10 "Loss")                | losses.task_objective -> losses.TASK_LOSSES   |
| Tables 9 / 11: optimizer, lr, weight decay         | `make_optimizer` (the task's registry row)    |
| ORCA's learning-rate schedule (WarmupLR)           | `orca_warmup_lr` (paper), `warmup_linear` (strict) |
| Tables 1, 2, 4: test error, lower is better        | `evaluate`, `test_scores` -> metrics.METRICS  |

| paper symbol          | code name                    | shape                                        |
|-----------------------|------------------------------|----------------------------------------------|
| θ^T = (φ_e, θ_f, θ_h) | `model.parameters()`, `params` | every parameter that requires grad         |
| g_θ(x^t)              | `out = net(x)`               | (B, K) logits or dense (B, C, *spatial)      |
| ℓ                     | `task_loss`                  | scalar                                       |
| lr                    | `cfg["lr"]` × schedule factor(step) |                                       |

Two protocols (`cfg["protocol"]`, train.py `--protocol`):
- "paper" (ORCA's `train_one_epoch` and `evaluate`, as the paper ran them): the loss of each micro-batch is
  summed into the gradient (`--accum-reduction sum`: not divided by accum, an effective SGD learning rate
  ×accum), the gradient norm is clipped after EVERY micro-batch (the partial sum), the schedule advances every
  micro-batch from factor 0, and the micro-batches left over at the end of an epoch (fewer than accum) are
  discarded without a step. There is no validation split: the test set is scored every epoch (ORCA's
  "validation" loader is its test loader), the last epoch is the headline, the best test score over epochs is
  reported apart as ORCA-compatible and optimistic, and no checkpoint is selected (no best.pt).
- "strict" (ours): micro-batch losses averaged per optimizer step (the epoch's short last step too), clipping
  once per step on the accumulated gradient, the schedule counted in optimizer steps starting at 1/W, model
  selection on the validation split (best.pt).

Metric definitions (`metric_definitions`): "corrected" = spec.metric over the whole split, pooled per clip /
record (spec.group_reduce); "paper" = ORCA's definition: spec.paper_metric, its pooling spec.paper_group_reduce,
averaged over chunks of spec.eval_chunk outputs (metrics.chunk_average, ORCA's `evaluate`), on td.test_orca
(ORCA's test-time treatment) when the task has one. Where they differ, both are reported in both protocols.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import time
import warnings

import numpy as np
import torch

import losses
import metrics
from support.runtime import (RunError, autocast, barrier, check_finite, checkpoint_dict, epoch_seed, load_checkpoint,
                     make_loader, progress, save_atomic, seed_everything)

BEST_ON_TEST_NOTE = "ORCA-compatible, optimistic: best test score over epochs"


# --------------------------------------------------------------------------------------------------
# The objective of Eq. (1) and the optimizer of Tables 9 / 11
# --------------------------------------------------------------------------------------------------
def make_optimizer(cfg: dict, params, lr: float, weight_decay: float | None = None):
    """The task's optimizer (Tables 9/11) with its weight decay (or `weight_decay`), SGD momentum and Adam
    betas (ORCA's configs)."""
    name, betas = cfg["optimizer"], tuple(cfg["betas"])
    wd = cfg["weight_decay"] if weight_decay is None else weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"] or 0.0, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
    raise RunError(f"unknown optimizer {name!r} in the task registry (sgd, adam, adamw)")


def orca_warmup_lr(warmup: int, decay: int):
    """ORCA's WarmupLR (`get_scheduler` in src/task_configs.py) as it runs there: W and D in MICRO-batches
    (warmup_epochs · n, decay_epochs · n, n = batches per epoch), factor = step/W for step < W (the first
    micro-batch at lr 0), then (D − step)/(D − W).
    DEVIATION from ORCA: floored at 0 (ORCA's turns negative past D, which none of its configs reaches)."""
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return step / warmup
        return max(0.0, (decay - step) / max(decay - warmup, 1))
    return factor


def warmup_linear(warmup: int, decay: int):
    """The strict protocol's form of ORCA's WarmupLR: factor = (step+1)/W for step < W, then (D − step)/(D − W),
    floored at 0. DEVIATION from ORCA: counted in optimizer steps, not micro-batches, and starting at 1/W
    instead of 0 (ORCA's first micro-batch runs at lr 0); the shape over an epoch is the same."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (decay - step) / max(decay - warmup, 1))
    return factor


# --------------------------------------------------------------------------------------------------
# Evaluation: outputs of a whole split, the two metric definitions, the test scores of a model
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, dataset, spec, objective, cfg: dict, device):
    """Outputs of a split in order, batches of cfg["batch_size"] (ORCA's eval loader: the task's batch size):
    (pred, target) as numpy and the mean loss PER SAMPLE (a loss summed over the batch, Darcy's
    reduction "sum" as ORCA, is already Σ_i ℓ_i; a mean one is multiplied back by the batch length)."""
    task_loss, decode = objective
    summed = spec.loss_kwargs.get("reduction") == "sum"
    model.eval()
    preds, targets, total = [], [], 0.0
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=False):
        with autocast(cfg, device):
            out = model(x.to(device)).float()
        loss = task_loss(out, y.to(device)).item()
        # Σ_i ℓ_i over the batch
        total += loss if summed else loss * len(x)
        preds.append(decode(out).cpu())
        targets.append(y.cpu())
    model.train()
    # mean over the split: (1/N) Σ_i ℓ_i
    return torch.cat(preds).numpy(), torch.cat(targets).numpy(), total / max(len(dataset), 1)


def metric_definitions(spec, seed: int = 0) -> dict:
    """{"corrected": ours, "paper": ORCA's}: METRICS key, its kwargs, per-group pooling, chunk (0 = whole set) and
    the order the outputs are scored in (None: the split's; a seed: ORCA's shuffled test sets, one permutation
    seeded by the run's `seed`); the paper's is scored on td.test_orca (ORCA's test-time treatment) where the task
    has one."""
    paper_kw = dict(spec.paper_metric_kwargs) if spec.paper_metric else {**spec.metric_kwargs,
                                                                          **spec.paper_metric_kwargs}
    return {"corrected": dict(metric=spec.metric, kwargs=dict(spec.metric_kwargs), group=spec.group_reduce,
                              chunk=0, order_seed=None),
            "paper": dict(metric=spec.paper_metric or spec.metric, kwargs=paper_kw, group=spec.paper_group_reduce,
                          chunk=int(spec.eval_chunk), order_seed=seed if spec.orca_test_shuffled else None)}


def definitions_differ(spec, td) -> bool:
    """Whether the paper's and our test metric can give different numbers on this task's test set (a chunk
    of at least the whole set is the whole set)."""
    defs = metric_definitions(spec)
    p, c = defs["paper"], defs["corrected"]
    whole = p["chunk"] <= 0 or p["chunk"] >= len(td.test)
    return (td.test_orca is not None or not whole or p["metric"] != c["metric"] or p["kwargs"] != c["kwargs"]
            or p["group"] != c["group"])


def score(pred, target, groups, d: dict, batch_size: int) -> float:
    """One metric definition `d` on a split's outputs (lower is better): pooled per group first when
    d["group"] (clip = mean of its chunks' logits, record = majority vote), then the metric over the whole set
    or, for chunk > 0, ORCA's mean over chunks of ≥ chunk outputs (metrics.chunk_average), in the order of
    a seeded permutation where d["order_seed"] is set (ORCA's shuffled test sets: ECG, DeepSEA)."""
    if d["group"] and groups is not None:
        pred, target = metrics.aggregate_groups(pred, target, groups, d["group"])
    if d.get("order_seed") is not None:
        perm = np.random.default_rng(d["order_seed"]).permutation(len(pred))
        pred, target = pred[perm], target[perm]
    fn = metrics.METRICS[d["metric"]]
    if d["chunk"] > 0:
        return float(metrics.chunk_average(fn, pred, target, chunk=d["chunk"], batch_size=batch_size, **d["kwargs"]))
    return float(fn(pred, target, **d["kwargs"]))


def evaluate(model, dataset, spec, objective, cfg: dict, device, variant: str = "corrected") -> tuple[float, float]:
    """(score, mean loss per sample) of one split under one metric definition (default: ours, whole split)."""
    pred, target, loss = predict(model, dataset, spec, objective, cfg, device)
    d = metric_definitions(spec, cfg["seed"])["paper"] if variant == "paper" else dict(
        metric=spec.metric, kwargs=dict(spec.metric_kwargs), group=spec.group_reduce, chunk=0)   # no paper fields
    return score(pred, target, getattr(dataset, "groups", None), d, cfg["batch_size"]), loss


def test_scores(model, td, spec, objective, cfg: dict, device) -> dict:
    """The test score of `model` under each definition: {"paper": v} where both coincide, else also
    {"corrected": v}; the paper's on td.test_orca when the task has one, else on td.test."""
    defs = metric_definitions(spec, cfg["seed"])
    pred, target, _ = predict(model, td.test, spec, objective, cfg, device)
    groups = getattr(td.test, "groups", None)
    if not definitions_differ(spec, td):
        return {"paper": score(pred, target, groups, defs["corrected"], cfg["batch_size"])}
    out = {"corrected": score(pred, target, groups, defs["corrected"], cfg["batch_size"])}
    if td.test_orca is not None:
        pred, target, _ = predict(model, td.test_orca, spec, objective, cfg, device)
        groups = getattr(td.test_orca, "groups", None)
    out["paper"] = score(pred, target, groups, defs["paper"], cfg["batch_size"])
    return out


def paper_test_score(model, td, spec, objective, cfg: dict, device) -> tuple[float, float]:
    """Under the paper protocol, every epoch: the test set scored as ORCA's `evaluate` scores its
    validation (= test) loader, with the paper's definition on td.test_orca when given. (score, loss)."""
    return evaluate(model, td.test_orca if td.test_orca is not None else td.test, spec, objective, cfg, device,
                    variant="paper")


def final_result(cfg: dict, model, td, spec, best: dict, device) -> dict:
    """result.json's test keys (train.py writes the file): the last model's test scores, and under strict those
    of the validation-selected model in best.pt. `test` = the headline: paper → the last epoch under the
    paper's metric; strict → the selected model under ours ("corrected"; "paper" when both coincide)."""
    objective = losses.task_objective(spec, td, device)
    last = test_scores(model, td, spec, objective, cfg, device)
    paper = cfg["protocol"] == "paper"
    if paper:
        chosen = last
    else:
        model.load_state_dict(load_checkpoint(os.path.join(cfg["out"], "best.pt"))["model"])
        chosen = test_scores(model, td, spec, objective, cfg, device)
    variant = "paper" if (paper or "corrected" not in last) else "corrected"
    defs = metric_definitions(spec)
    res = {"metric": defs[variant]["metric"], "metric_variant": variant, "test": chosen[variant],
           "test_last": last[variant]}
    if paper:
        res.update(test_best_on_test=best["score"], test_best_on_test_epoch=best["epoch"],
                   test_best_on_test_note=BEST_ON_TEST_NOTE)
    else:
        res.update(best_val=best["score"], best_epoch=best["epoch"])
    if "corrected" in last:
        res["variants"] = {v: {"metric": defs[v]["metric"], "test": chosen[v], "test_last": last[v]}
                           for v in ("paper", "corrected")}
    if spec.orca_test_shuffled:                        # the paper metric's chunks follow this permutation
        res["paper_test_order_seed"] = cfg["seed"]
    return res


# --------------------------------------------------------------------------------------------------
# The stage-2 loop
# --------------------------------------------------------------------------------------------------
def stage2(cfg: dict, m: dict, model, td, spec, state: dict, log) -> dict:
    """Eq. (1): θ^T* = argmin Σ ℓ(g_θT(x_i^t), y_i^t), every parameter that requires grad (train.run freezes
    the body first for `frozen`). The protocol (module docstring) sets the accumulation mechanics, the
    schedule and what is evaluated each epoch; `--accum-reduction` sets sum or mean. Returns the best
    epoch's {"score", "epoch"}: on validation (strict, saved as best.pt) or on test (paper, nothing saved)."""
    paper = cfg["protocol"] == "paper"
    accum, mean = cfg["accum"], cfg["accum_reduction"] == "mean"
    objective = losses.task_objective(spec, td, m["device"])
    task_loss = objective[0]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg, params, cfg["lr"])
    batches = math.ceil(len(td.train) / (cfg["batch_size"] * m["world"]))   # micro-batches per epoch, per process
    if paper:      # ORCA: W, D in micro-batches, stepped every micro-batch
        factor = orca_warmup_lr(cfg["warmup_epochs"] * batches, cfg["decay_epochs"] * batches)
        if batches < accum and m["main"]:
            print(f"note: {batches} micro-batches per epoch < accum {accum}: under --protocol paper the leftover "
                  f"micro-batches of an epoch are discarded (ORCA), so no optimizer step is taken", file=sys.stderr)
    else:          # ours: W, D in optimizer steps
        steps = math.ceil(batches / accum)
        factor = warmup_linear(cfg["warmup_epochs"] * steps, cfg["decay_epochs"] * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    best = dict(score=math.inf, epoch=-1)
    start = 0
    if state.get("stage") == 2:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        best, start = state["best"], state["epoch"] + 1
    net = model
    if m["world"] > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[m["device"]] if m["device"].type == "cuda" else None)
    for epoch in range(start, cfg["epochs"]):
        seed_everything(epoch_seed(cfg, 2, epoch))
        t0, total, n, lr_used = time.time(), 0.0, 0, None
        loader = make_loader(td.train, cfg["batch_size"], shuffle=True, seed=epoch_seed(cfg, 2, epoch), m=m,
                             workers=cfg["workers"])
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        opt.zero_grad(set_to_none=True)              # ORCA: also discards the previous epoch's leftover
        bar = progress(loader, m, cfg, f"stage 2 epoch {epoch + 1}/{cfg['epochs']}")
        for i, (x, y) in enumerate(bar):
            if paper:      # ORCA: a step after every accum-th micro-batch; the leftover ones never step
                step_now, group = (i + 1) % accum == 0, accum
            else:          # ours: the epoch's last, shorter group steps too, averaged over its own size
                step_now = (i + 1) % accum == 0 or i + 1 == len(loader)
                group = min(accum, len(loader) - i // accum * accum)        # micro-batches in this step
            sync = net.no_sync() if (m["world"] > 1 and not step_now) else contextlib.nullcontext()
            with sync:
                with autocast(cfg, m["device"]):
                    out = net(x.to(m["device"]))
                loss = task_loss(out.float(), y.to(m["device"]))      # Eq. (1): ℓ(g_θ(x^t), y^t)
                if m["world"] == 1:                  # under DDP: checked on the all-reduced gradient below
                    check_finite(loss, f"stage 2 epoch {epoch + 1} batch {i + 1}", cfg["out"])
                # ∇ += ∇ℓ_i / group (mean) or ∇ℓ_i (sum: ORCA, an effective SGD lr ×accum)
                (loss / group if mean else loss).backward()
            if paper and cfg["clip"]:
                # ORCA: clip the partial sum after every micro-batch (under DDP the non-final micro-batches'
                # partial sums are each process's own)
                torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
            if step_now:
                # ‖∇‖ of the (all-reduced) gradient: every rank sees the same value, so all stop together
                norm = torch.nn.utils.clip_grad_norm_(params, (cfg["clip"] or math.inf) if not paper else math.inf)
                check_finite(norm, f"stage 2 epoch {epoch + 1} batch {i + 1}", cfg["out"])
                lr_used = opt.param_groups[0]["lr"]          # the rate this step trains with (logged)
                opt.step()                                     # θ ← θ − lr · (update of ∇_θ Eq. (1))
                opt.zero_grad(set_to_none=True)
                if not paper:
                    sched.step()
            if paper:                                          # ORCA: the schedule advances every micro-batch
                with warnings.catch_warnings():                # (also before the first optimizer step: on purpose)
                    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
                    sched.step()
            total, n = total + loss.item(), n + 1
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        # lr: the rate of the epoch's last optimizer step (None if it took none), not the schedule's next value
        # (after the last epoch that is 0, ORCA's end point, at which nothing trains)
        row = {"stage": 2, "epoch": epoch + 1, "train_loss": total / max(n, 1), "lr": lr_used}
        if m["main"] and paper:          # ORCA's val_loader is its test loader: scored every epoch, nothing saved
            row["test_score"], row["test_loss"] = paper_test_score(model, td, spec, objective, cfg, m["device"])
            if row["test_score"] < best["score"] or best["epoch"] < 0:
                best = dict(score=row["test_score"], epoch=epoch + 1)
        elif m["main"]:
            row["val_score"], row["val_loss"] = evaluate(model, td.val, spec, objective, cfg, m["device"])
            if row["val_score"] < best["score"] or best["epoch"] < 0:   # selection on VALIDATION only
                best = dict(score=row["val_score"], epoch=epoch + 1)
                save_atomic(checkpoint_dict(cfg, model, stage=2, epoch=epoch), os.path.join(cfg["out"], "best.pt"))
        row["seconds"] = round(time.time() - t0, 3)
        log(row, dict(stage=2, epoch=epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict(), best=best))
        barrier(m)
    return best
