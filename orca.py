"""orca.py: the ORCA baseline's first stage, embedder alignment by the Optimal Transport Dataset Distance.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864, §2.2 and Table 2 (the "ORCA" row): ORCA (Shen et al., ICML 2023,
github.com/sjunhongshen/ORCA) first trains the target embedder to minimise the OTDD (Alvarez-Melis & Fusi,
NeurIPS 2020) between target and source embeddings, then fine-tunes everything (stage2.py). MoNA's own
stage 1 is in stage1.py; this module is the baseline's.

Paper map
---------
| paper / ORCA                                          | here                                         |
|-------------------------------------------------------|----------------------------------------------|
| §2.2, Table 2 "ORCA": stage 1 minimises OTDD          | `stage1_orca` (ORCA's `get_tgt_model`, src/embedder.py) |
| OTDD between labelled datasets                        | `OTDDLoss`                                   |
| debiased entropic OT (Sinkhorn divergence)            | `sinkhorn_divergence`, `_sinkhorn`, `_ot_value` |
| pseudo-classes of non-classification targets          | `orca_target_labels` (ORCA's `infer_labels`) |
| per-class draws of each epoch (ORCA's `load_by_class`) | `class_pools`, `orca_draw_size`             |
| embedder schedule (ORCA's StepLR lambda)              | `orca_step_lr`                               |

| symbol                                  | code name          | shape                                      |
|-----------------------------------------|--------------------|--------------------------------------------|
| source features x_i^s (mean over tokens of e(x_i^s; θ^S_e0)) | `x_s` / `src_x` | (N_s, D)                 |
| source labels y_i^s                     | `y_s` / `src_y`    | (N_s,)                                     |
| target features of one class c          | `x_t` / `feats`    | (n_c, D), mean over tokens of e(x^t; φ_e)  |
| class weight w_c = |class c| / |train|  | `weights[c]`       | scalar                                     |
| ground cost, transport plan             | `C`, `P`           | (n, m)                                     |
| entropic regularisation ε (`entreg`)    | `eps`              | 0.1                                        |
| OT_ε(α, β); S_ε = OT_ε(α, β) − ½OT_ε(α, α) − ½OT_ε(β, β) | `_ot_value`; `sinkhorn_divergence` | scalars |

OTDD is optimal transport between two *labelled* datasets with the ground cost
    d((x, y), (x', y'))² = ‖x − x'‖² + W²(α_y, α'_y'),   α_y = the feature cloud of class y,
so two samples are close when their features are close AND their classes are distributed alike.
ORCA calls the vendored `otdd` package (src/otdd/, on geomloss/KeOps); we write the few lines it needs in
torch: entropic OT with log-domain Sinkhorn, debiased (Sinkhorn divergence), cost ½‖x − x'‖² as geomloss's
p = 2, ε = `entreg` = 0.1 (ORCA's setting), and gradients by the envelope theorem (∂OT_ε/∂C = transport
plan), so no graph is kept through the Sinkhorn iterations.

ORCA's protocol (src/embedder.py, src/task_configs.py, src/configs/*.yaml) and where we depart from it
-------------------------------------------------------------------------------------------------------
- Source: 5,000 source-surrogate samples (CIFAR-10 images through the pretrained patch embedding, or
  CoNLL-2003 token embeddings), mean over tokens; computed once. Same here (data.load_source_surrogate).
- Target classes: the labels for single-label classification; for regression, dense and multi-label tasks
  (Darcy, PSICOV, Cosmic, FSD50K, DeepSEA, PDEs) k = 10 k-means clusters of the flattened targets.
  ORCA clusters and splits by class over the FULL training set in memory (≈ 200 GB for PSICOV); we fit the
  k-means on a random subset of 2,000 training samples (train.py `orca_samples`) and assign EVERY training sample
  to a cluster in one pass (DEVIATION, `orca_target_labels`), so the per-class index lists cover the whole set.
- OTDD call (`otdd` in src/embedder.py): exact inner OT (label-to-label distances are debiased entropic OT
  between class clouds), debiased outer loss, p = 2, entreg = 0.1, target labels all zero, i.e. each call
  compares the labelled source set with ONE target class treated as a single label. The label distances are
  stored as numbers (`.item()` in otdd's `pwdist_exact`), so the label term is a constant for the gradient
  (`OTDDLoss` detaches it too). ORCA recomputes the
  source label-to-label distances on every call; `OTDDLoss` computes them once (same values).
- Loop (`class_pools`): per epoch, visit the classes in random order; from each draw afresh, as ORCA's
  reshuffled per-class loaders (`load_by_class`), whole batches of the stage-1 batch size (train.py
  `--stage1-batch-size`, default the task's batch size as ORCA) until more than `maxsamples` are collected
  (data.TaskSpec.orca_maxsamples: 128; PSICOV and DeepSEA 64); classes with one sample are skipped;
  loss = w_c · OTDD(features), w_c = |class c| / |train|; backward; ONE optimizer step per epoch.
- Optimizer: the task's stage-2 optimizer and weight decay, lr ×10 when lr ≤ 1e-3
  (`get_optimizer_scheduler(module='embedder')`; `--stage1-lr` / `--stage1-weight-decay` replace them); schedule
  ORCA's StepLR lambda ×0.2 per milestone passed, factor 0.2^#{m ∈ (20, 40, 60): epoch > m}, stepped per epoch
  (`orca_step_lr`: epochs 0-20 at the full rate, 21-40 ×0.2, 41-60 ×0.04).
- Epochs: `embedder_epochs` = 60 for every task, 100 for NinaPro (data.TaskSpec.orca_epochs).
- The embedder starts from the source-derived initialisation (ORCA's `embedder_init(...,
  train_embedder=True)` in src/utils.py: the pretrained patch projection tiled over the input channels),
  as Finetuning++ and MoNA do (embedders.init_embedder_from_source).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from support.runtime import all_reduce_mean_, barrier, check_finite, epoch_seed, seed_everything
from stage1 import load_surrogate, source_mask
from stage2 import make_optimizer


# -------------------------------------------------------------------------------------------------
# Entropic optimal transport (log-domain Sinkhorn) and the Sinkhorn divergence
# -------------------------------------------------------------------------------------------------


def _sinkhorn(C: torch.Tensor, eps: float, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropic OT between uniform measures with cost C (n, m): returns (OT_ε value, plan P), without grad.
    Log-domain dual updates f_i = −ε' log Σ_j b_j exp((g_j − C_ij)/ε'), g_j likewise, with ε-scaling
    (ε' halves from max C down to ε, one update each, as geomloss anneals) and then `iters` updates at ε."""
    with torch.no_grad():
        n, m = C.shape
        log_a = torch.full((n,), -math.log(n), dtype=C.dtype, device=C.device)
        log_b = torch.full((m,), -math.log(m), dtype=C.dtype, device=C.device)
        f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
        schedule, e = [], max(float(C.max()), eps)
        while e > eps:
            schedule.append(e)
            e /= 2
        for e in schedule + [eps] * iters:
            # f_i = −ε log Σ_j b_j exp((g_j − C_ij)/ε)
            f = -e * torch.logsumexp((g[None, :] - C) / e + log_b[None, :], dim=1)
            # g_j = −ε log Σ_i a_i exp((f_i − C_ij)/ε)
            g = -e * torch.logsumexp((f[:, None] - C) / e + log_a[:, None], dim=0)
        # P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε);  OT_ε = ⟨a, f⟩ + ⟨b, g⟩ (the dual value at the optimum)
        P = torch.exp((f[:, None] + g[None, :] - C) / eps + log_a[:, None] + log_b[None, :])
        return log_a.exp() @ f + log_b.exp() @ g, P


def _ot_value(C: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """OT_ε(C) whose gradient w.r.t. C is the optimal plan (envelope theorem; Danskin)."""
    value, P = _sinkhorn(C.detach(), eps, iters)
    # value: OT_ε;  d OT_ε / d C = P  →  value + ⟨P, C − sg(C)⟩ has that value and that gradient
    return value + (P * (C - C.detach())).sum()


def _sq_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ½‖x_i − y_j‖² = ½(‖x_i‖² + ‖y_j‖² − 2 x_i·y_j), geomloss's cost for p = 2   (n, m)
    # One matrix product instead of an (n, m, D) difference tensor (2,000 × 2,000 × 384 floats for a CPU-sized
    # source set: ~20x slower); in float64, so the cancellation on near pairs stays ~1e-13 relative; the clamp
    # only removes round-off below 0 (the diagonal of x against itself).
    x64, y64 = x.double(), y.double()
    sq = (x64 * x64).sum(-1)[:, None] + (y64 * y64).sum(-1)[None, :] - 2.0 * x64 @ y64.T
    return (0.5 * sq.clamp_min(0.0)).to(x.dtype)


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, eps: float = 0.1, iters: int = 100,
                        C_xy=None, C_xx=None, C_yy=None) -> torch.Tensor:
    """Debiased entropic OT: S_ε(α, β) = OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β) ≥ 0, = 0 iff α = β.
    Uniform weights on the rows of x (n, d) and y (m, d); cost ½‖x − y‖² unless cost matrices are given."""
    C_xy = _sq_dist(x, y) if C_xy is None else C_xy
    C_xx = _sq_dist(x, x) if C_xx is None else C_xx
    C_yy = _sq_dist(y, y) if C_yy is None else C_yy
    # S_ε = OT_ε(x, y) − ½ OT_ε(x, x) − ½ OT_ε(y, y)
    return _ot_value(C_xy, eps, iters) - 0.5 * _ot_value(C_xx, eps, iters) - 0.5 * _ot_value(C_yy, eps, iters)


# -------------------------------------------------------------------------------------------------
# The Optimal Transport Dataset Distance (Alvarez-Melis & Fusi, NeurIPS 2020)
# -------------------------------------------------------------------------------------------------


class OTDDLoss:
    """OTDD between a fixed labelled source set (features x_s (N, D), labels y_s (N,)) and a target set
    (x_t (n, D), labels y_t (n,) or None = one label, as ORCA calls it), differentiable w.r.t. x_t.

    d((x, y), (x', y'))² = ½‖x − x'‖² + S_ε(α_y, α'_y')   (label distance: debiased OT between class clouds)
    OTDD = S_ε over the joint (feature, label) samples with that cost.
    The label distances are numbers, not functions of x_t, as in ORCA's otdd package (`pwdist_exact` in
    src/otdd/otdd/pytorch/wasserstein.py stores each one with `.item()`): the gradient flows through the feature
    cost only. With one target label (ORCA's call) W(y, y') is then a constant per source row, which moves
    neither the transport plan nor the gradient: d OTDD / d x_t is the gradient of the plain Sinkhorn divergence
    between source and target features. (The logged value keeps the label term.)
    Source-side quantities (class-to-class distances, the source self-term) do not depend on the target
    embedder, so they are computed once here (ORCA's call passes load_prev_dyy1=None, so OTDD recomputes them
    on every call).
    The source self-term costs an N × N matrix: ORCA uses N = 5,000 source samples."""

    def __init__(self, x_s: torch.Tensor, y_s: torch.Tensor, eps: float = 0.1, iters: int = 100):
        self.x_s, self.y_s, self.eps, self.iters = x_s.detach(), y_s.detach(), eps, iters
        self.classes = torch.unique(self.y_s)
        self.clouds = [self.x_s[self.y_s == c] for c in self.classes]
        k = len(self.classes)
        W = torch.zeros(k, k, dtype=x_s.dtype, device=x_s.device)
        for i in range(k):                                  # W_ij = S_ε(α_i, α_j) between source classes
            for j in range(i + 1, k):
                W[i, j] = W[j, i] = sinkhorn_divergence(self.clouds[i], self.clouds[j], eps, iters).detach()
        self.code = torch.searchsorted(self.classes, self.y_s)        # class index of each source sample
        C_ss = _sq_dist(self.x_s, self.x_s) + W[self.code][:, self.code]
        self.self_term = _sinkhorn(C_ss, eps, iters)[0]                # OT_ε(source, source), constant

    def __call__(self, x_t: torch.Tensor, y_t: torch.Tensor | None = None) -> torch.Tensor:
        y_t = torch.zeros(len(x_t), dtype=torch.long, device=x_t.device) if y_t is None else y_t
        t_classes = torch.unique(y_t)
        t_code = torch.searchsorted(t_classes, y_t)
        t_clouds = [x_t[y_t == c] for c in t_classes]
        # label distances source class i ↔ target class j: S_ε(α_i, α'_j)   (k_s, k_t), numbers as in ORCA's
        # otdd (`.item()`): constants for the gradient
        with torch.no_grad():
            W_st = torch.stack([torch.stack([sinkhorn_divergence(a, b, self.eps, self.iters) for b in t_clouds])
                                for a in self.clouds])
            # target class ↔ target class distances   (k_t, k_t)
            W_tt = torch.stack([torch.stack([sinkhorn_divergence(a, b, self.eps, self.iters) if i != j
                                             else a.new_zeros(()) for j, b in enumerate(t_clouds)])
                                for i, a in enumerate(t_clouds)])
        # joint costs: ½‖x − x'‖² + W(y, y')
        C_st = _sq_dist(self.x_s, x_t) + W_st[self.code][:, t_code]
        C_tt = _sq_dist(x_t, x_t) + W_tt[t_code][:, t_code]
        # OTDD = OT_ε(s, t) − ½ OT_ε(s, s) − ½ OT_ε(t, t)
        return (_ot_value(C_st, self.eps, self.iters) - 0.5 * self.self_term
                - 0.5 * _ot_value(C_tt, self.eps, self.iters))


# -------------------------------------------------------------------------------------------------
# ORCA's stage 1: pseudo-labels, per-class pools, then one OTDD step per epoch
# -------------------------------------------------------------------------------------------------


def orca_target_labels(td, spec, n: int, seed: int, workers: int = 0) -> np.ndarray:
    """The class of EVERY training sample (N,): its label for single-label classification, else one of k = 10
    k-means clusters of the flattened targets (ORCA's `infer_labels`, src/embedder.py).
    DEVIATION from ORCA: k-means is fitted on a random subset of n training samples, then every training sample
    is assigned to its nearest centre; ORCA fits on the full training set, which it materialises in memory
    (3,356 × 57 × 512 × 512 float32 ≈ 200 GB for PSICOV). Here one pass over the set keeps one int per sample."""
    N = len(td.train)
    if spec.loss == "cross_entropy":                           # single-label classes (not point regression)
        labels = getattr(td.train, "labels", None)
        if labels is None:
            labels = [int(td.train[i][1]) for i in range(N)]
        return np.asarray(labels, dtype=np.int64)
    from sklearn.cluster import KMeans
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(N, size=min(n, N), replace=False).tolist())
    flat = np.stack([np.asarray(td.train[i][1], dtype=np.float32).reshape(-1) for i in idx])
    km = KMeans(n_clusters=min(10, len(idx)), n_init=3, random_state=seed).fit(flat)
    if len(idx) == N:                                          # the subset is the whole set
        return km.labels_.astype(np.int64)
    loader = torch.utils.data.DataLoader(td.train, batch_size=64, shuffle=False, num_workers=workers)
    return np.concatenate([km.predict(y.float().reshape(len(y), -1).numpy()) for _, y in loader]).astype(np.int64)


def orca_draw_size(maxsamples: int, batch_size: int) -> int:
    """Samples ORCA draws from one class per epoch (before capping at the class size): its class loader (batch
    `batch_size`, shuffled) yields batches until MORE than `maxsamples` are collected (`datanum > maxsamples`)."""
    return (maxsamples // batch_size + 1) * batch_size


def class_pools(members: dict, draw: int, rng: np.random.Generator) -> list:
    """One epoch of ORCA's stage 1 (`load_by_class` loaders, reshuffled every epoch): the classes in random
    order, from each a fresh random draw of min(|class|, draw) of its members. [(class, indices), ...]"""
    return [(int(c), members[c][rng.permutation(len(members[c]))[:draw]]) for c in rng.permutation(sorted(members))]


def orca_step_lr(epoch: int, milestones=(20, 40, 60), base: float = 0.2) -> float:
    """ORCA's StepLR lambda (`get_scheduler` in src/task_configs.py), a LambdaLR stepped once per epoch:
    factor = base^k, k = #{milestones m : epoch > m} (0-based epoch), so epochs 0-20 run at the full rate."""
    return base ** sum(epoch > m for m in milestones)


def stage1_orca(cfg: dict, m: dict, model, source, td, spec, state: dict, log) -> None:
    """ORCA stage 1 (`get_tgt_model` in src/embedder.py): the embedder minimises the OTDD between the
    mean-pooled target embeddings of each target class and the labelled source embeddings; one optimizer
    step per epoch (see the module docstring for ORCA's settings)."""
    from backbones import masked_mean
    src, _ = load_surrogate(cfg, spec, source)
    feats_s, ys_s = [], []
    with torch.no_grad():              # source features: e(x^s; θ^S_e0), mean over (real) tokens   (N_s, D)
        for xs, ys in torch.utils.data.DataLoader(src, batch_size=64):
            xs = xs.to(m["device"])
            # DEVIATION from ORCA (1D): its precomputed text features average all 32 positions, padding included;
            # we average the real tokens only (attention mask ids != pad_id)
            feats_s.append(masked_mean(source.source_embedder(xs), source_mask(src, xs)).float())
            ys_s.append(torch.as_tensor(ys))
    otdd = OTDDLoss(torch.cat(feats_s), torch.cat(ys_s).to(m["device"]))  # source side once (ORCA: every call)
    labels = orca_target_labels(td, spec, cfg["orca_samples"], cfg["seed"], cfg["workers"])
    members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    weights = {c: len(idx) / len(labels) for c, idx in members.items()}   # w_c = |class c| / |train|
    draw = orca_draw_size(cfg["orca_maxsamples"], cfg["stage1_batch_size"])
    # ORCA: the task's stage-2 optimizer, lr ×10 when ≤ 1e-3 (or --stage1-lr / --stage1-weight-decay; train.py)
    opt = make_optimizer(cfg, model.embedder.parameters(), cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, orca_step_lr)
    if state.get("stage") == 1 and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    start = state["epoch"] + 1 if state.get("stage") == 1 else 0
    for epoch in range(start, cfg["stage1_epochs"]):
        seed_everything(epoch_seed(cfg, 1, epoch))
        t0, total, seen = time.time(), 0.0, 0
        opt.zero_grad(set_to_none=True)
        for c, idx in class_pools(members, draw, np.random.default_rng(epoch_seed(cfg, 1, epoch))):
            if len(idx) < 2:                                   # ORCA: a class needs > 1 sample
                continue
            feats = []
            for lo in range(0, len(idx), cfg["stage1_batch_size"]):   # target embeddings, mean over tokens
                x = torch.stack([td.train[int(i)][0] for i in idx[lo:lo + cfg["stage1_batch_size"]]])
                feats.append(model.embedder(x.to(m["device"])).mean(1).float())
            loss = weights[c] * otdd(torch.cat(feats))         # w_c · OTDD   (n_c, D) target class c
            check_finite(loss, f"stage 1 (orca) epoch {epoch + 1}", cfg["out"])
            loss.backward()
            total, seen = total + loss.item(), seen + len(idx)
        all_reduce_mean_([p.grad for p in model.embedder.parameters() if p.grad is not None], m)
        lr = sched.get_last_lr()[0]
        opt.step()                                             # one step per epoch, as ORCA
        sched.step()
        row = {"stage": 1, "method": "orca", "epoch": epoch + 1, "otdd": total, "lr": lr, "samples": seen,
               "seconds": round(time.time() - t0, 3)}
        log(row, dict(stage=1, epoch=epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict()))
        barrier(m)
