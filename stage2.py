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
| ℓ per task (Tables 8 and 10 "Loss")                | `task_objective` -> losses.TASK_LOSSES        |
| Tables 9 / 11: optimizer, lr, weight decay         | `make_optimizer` (the task's registry row)    |
| ORCA's learning-rate schedule (WarmupLR)           | `warmup_linear`                               |
| Tables 1, 2, 4: test error, lower is better        | `evaluate` -> metrics.METRICS                 |

| paper symbol          | code name                    | shape                                        |
|-----------------------|------------------------------|----------------------------------------------|
| θ^T = (φ_e, θ_f, θ_h) | `model.parameters()`, `params` | every parameter that requires grad         |
| g_θ(x^t)              | `out = net(x)`               | (B, K) logits or dense (B, C, *spatial)      |
| ℓ                     | `task_loss`                  | scalar                                       |
| lr                    | `cfg["lr"]` × `warmup_linear(W, D)(step)` | W, D in optimizer steps         |

Where we depart from ORCA's stage 2 on purpose: the model is chosen on a VALIDATION split (ORCA's configs set
`valid_split: False`, so its validation loader is the test loader and its "best" checkpoint is chosen on
test); metrics are computed over the whole split, not averaged over chunks; accumulation averages
micro-batches by default and clips once per optimizer step (`--accum-reduction sum` restores ORCA's sum).
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import torch

import losses
import metrics
from runtime import (RunError, autocast, barrier, check_finite, checkpoint_dict, epoch_seed, make_loader, progress,
                     save_atomic, seed_everything)


# --------------------------------------------------------------------------------------------------
# The objective of Eq. (1) and the optimizer of Tables 9 / 11
# --------------------------------------------------------------------------------------------------
def task_objective(spec, td, device):
    """ℓ of Eq. (1) for this task, and the map from model output to prediction (identity, or ORCA's
    target de-normalisation for Darcy Flow, applied before the loss and the metric)."""
    loss = losses.TASK_LOSSES[spec.loss](**spec.loss_kwargs)
    if td.output_decoder is None:
        return loss, (lambda out: out)
    decode = td.output_decoder.to(device)
    return (lambda out, y: loss(decode(out), y)), decode


def make_optimizer(cfg: dict, params, lr: float):
    """The task's optimizer (Tables 9/11) with its weight decay, SGD momentum and Adam betas (ORCA's configs)."""
    name, wd, betas = cfg["optimizer"], cfg["weight_decay"], tuple(cfg["betas"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"] or 0.0, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
    raise RunError(f"unknown optimizer {name!r} in the task registry (sgd, adam, adamw)")


def warmup_linear(warmup: int, decay: int):
    """ORCA's WarmupLR (`get_scheduler` in src/task_configs.py): linear warm-up over W steps, then linear
    decay reaching 0 at D, i.e. factor = step/W for step < W, then (D − step)/(D − W).
    DEVIATION from ORCA: counted in optimizer steps, not micro-batches, and starting at 1/W instead of 0
    (ORCA's first micro-batch runs at lr 0); the shape over an epoch is the same."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (decay - step) / max(decay - warmup, 1))
    return factor


# --------------------------------------------------------------------------------------------------
# Evaluation over a whole split, and the stage-2 loop
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, dataset, spec, objective, cfg: dict, device) -> tuple[float, float]:
    """Metric over the WHOLE split at once (not ORCA's average over chunks of ~1,000 samples, see metrics.py);
    lower is better. FSD50K / ECG pool their chunks / windows per clip / record first (`spec.group_reduce`)."""
    task_loss, decode = objective
    model.eval()
    preds, targets, total = [], [], 0.0
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=cfg["batch_size"], shuffle=False):
        with autocast(cfg, device):
            out = model(x.to(device)).float()
        total += task_loss(out, y.to(device)).item() * len(x)
        preds.append(decode(out).cpu())
        targets.append(y.cpu())
    model.train()
    pred, target = torch.cat(preds).numpy(), torch.cat(targets).numpy()
    if spec.group_reduce and getattr(dataset, "groups", None) is not None:
        pred, target = metrics.aggregate_groups(pred, target, dataset.groups, spec.group_reduce)
    return float(metrics.METRICS[spec.metric](pred, target, **spec.metric_kwargs)), total / max(len(dataset), 1)


def stage2(cfg: dict, m: dict, model, td, spec, state: dict, log) -> dict:
    """Eq. (1): θ^T* = argmin Σ ℓ(g_θT(x_i^t), y_i^t), every parameter that requires grad (train.run freezes
    the body first for `frozen`).
    Accumulation averages the micro-batch losses of each optimizer step by default (the epoch's last step may
    hold fewer than accum; ORCA drops those) and `--accum-reduction sum` gives ORCA's sum, whose effective SGD
    learning rate is ×accum; clipping acts once per optimizer step on the accumulated gradient (ORCA clips
    every micro-batch; `train_one_epoch` in src/main.py)."""
    objective = task_objective(spec, td, m["device"])
    task_loss = objective[0]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg, params, cfg["lr"])
    batches = math.ceil(len(td.train) / (cfg["batch_size"] * m["world"]))
    steps = math.ceil(batches / cfg["accum"])                  # optimizer steps per epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_linear(cfg["warmup_epochs"] * steps, cfg["decay_epochs"] * steps))
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
        t0, total, n = time.time(), 0.0, 0
        loader = make_loader(td.train, cfg["batch_size"], shuffle=True, seed=epoch_seed(cfg, 2, epoch), m=m,
                             workers=cfg["workers"])
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        opt.zero_grad(set_to_none=True)
        bar = progress(loader, m, cfg, f"stage 2 epoch {epoch + 1}/{cfg['epochs']}")
        for i, (x, y) in enumerate(bar):
            step_now = (i + 1) % cfg["accum"] == 0 or i + 1 == len(loader)
            group = min(cfg["accum"], len(loader) - i // cfg["accum"] * cfg["accum"])  # micro-batches in this step
            sync = net.no_sync() if (m["world"] > 1 and not step_now) else contextlib.nullcontext()
            with sync:
                with autocast(cfg, m["device"]):
                    out = net(x.to(m["device"]))
                loss = task_loss(out.float(), y.to(m["device"]))      # Eq. (1): ℓ(g_θ(x^t), y^t)
                if m["world"] == 1:                  # under DDP: checked on the all-reduced gradient below
                    check_finite(loss, f"stage 2 epoch {epoch + 1} batch {i + 1}", cfg["out"])
                (loss / group if cfg["accum_reduction"] == "mean" else loss).backward()
            if step_now:
                # ‖∇‖ of the (all-reduced) gradient: every rank sees the same value, so all stop together
                norm = torch.nn.utils.clip_grad_norm_(params, cfg["clip"] or math.inf)
                check_finite(norm, f"stage 2 epoch {epoch + 1} batch {i + 1}", cfg["out"])
                opt.step()                                     # θ ← θ − lr · (update of ∇_θ Eq. (1))
                sched.step()
                opt.zero_grad(set_to_none=True)
            total, n = total + loss.item(), n + 1
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        row = {"stage": 2, "epoch": epoch + 1, "train_loss": total / max(n, 1), "lr": sched.get_last_lr()[0]}
        if m["main"]:
            row["val_score"], row["val_loss"] = evaluate(model, td.val, spec, objective, cfg, m["device"])
            if row["val_score"] < best["score"] or best["epoch"] < 0:   # selection on VALIDATION only
                best = dict(score=row["val_score"], epoch=epoch + 1)
                save_atomic(checkpoint_dict(cfg, model, stage=2, epoch=epoch), os.path.join(cfg["out"], "best.pt"))
        row["seconds"] = round(time.time() - t0, 3)
        log(row, dict(stage=2, epoch=epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict(), best=best))
        barrier(m)
    return best
