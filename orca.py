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
  ORCA clusters and splits by class over the FULL training set (≈ 200 GB for PSICOV); we use a random
  subset of `--orca-samples` (2,000) training samples (DEVIATION, `orca_target_labels`).
- OTDD call (`otdd` in src/embedder.py): exact inner OT (label-to-label distances are debiased entropic OT
  between class clouds), debiased outer loss, p = 2, entreg = 0.1, target labels all zero, i.e. each call
  compares the labelled source set with ONE target class treated as a single label. ORCA recomputes the
  source label-to-label distances on every call; `OTDDLoss` computes them once (same values).
- Loop: per epoch, visit the classes in random order; from each take up to `maxsamples` (128) samples;
  loss = w_c · OTDD(features); backward; ONE optimizer step per epoch, after all classes.
- Optimizer: the task's stage-2 optimizer and weight decay, lr ×10 when lr ≤ 1e-3
  (`get_optimizer_scheduler(module='embedder')`); schedule ×0.2 at epochs 20, 40, 60, stepped per epoch.
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

from runtime import all_reduce_mean_, barrier, check_finite, epoch_seed, seed_everything
from stage1 import load_surrogate
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
    # ½‖x_i − y_j‖², geomloss's cost for p = 2   (n, m)
    return 0.5 * (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)


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
        # label distances source class i ↔ target class j: S_ε(α_i, α'_j)   (k_s, k_t), differentiable in x_t
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
# ORCA's stage 1: pseudo-labels, then one OTDD step per epoch
# -------------------------------------------------------------------------------------------------


def orca_target_labels(td, spec, n: int, seed: int) -> tuple[list, np.ndarray]:
    """ORCA's target classes: labels for single-label classification, else k = 10 k-means clusters of the
    flattened targets (ORCA's `infer_labels`, src/embedder.py). DEVIATION from ORCA: computed on a random
    subset of n training samples, not on the full training set, which ORCA materialises in memory
    (3,356 × 57 × 512 × 512 float32 ≈ 200 GB for PSICOV)."""
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(td.train), size=min(n, len(td.train)), replace=False).tolist())
    ys = [td.train[i][1] for i in idx]
    if spec.loss == "cross_entropy":                           # single-label classes (not point regression)
        return idx, np.asarray([int(y) for y in ys])
    from sklearn.cluster import KMeans
    flat = np.stack([np.asarray(y, dtype=np.float32).reshape(-1) for y in ys])
    k = min(10, len(idx))
    return idx, KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(flat)


def stage1_orca(cfg: dict, m: dict, model, source, td, spec, state: dict, log) -> None:
    """ORCA stage 1 (`get_tgt_model` in src/embedder.py): the embedder minimises the OTDD between the
    mean-pooled target embeddings of each target class and the labelled source embeddings; one optimizer
    step per epoch (see the module docstring for ORCA's settings)."""
    src, _ = load_surrogate(cfg, spec, source)
    with torch.no_grad():                                      # source features: e(x^s; θ^S_e0), mean over tokens
        loader = torch.utils.data.DataLoader(src, batch_size=64)
        pairs = [(source.source_embedder(xs.to(m["device"])).mean(1), ys) for xs, ys in loader]
    src_x = torch.cat([p[0] for p in pairs]).float()           # (N_s, D)
    src_y = torch.cat([torch.as_tensor(p[1]) for p in pairs]).to(m["device"])
    otdd = OTDDLoss(src_x, src_y)                             # source side computed once (ORCA: every call)
    idx, labels = orca_target_labels(td, spec, cfg["orca_samples"], cfg["seed"])
    classes = sorted(set(labels.tolist()))
    weights = {c: float((labels == c).mean()) for c in classes}  # w_c = |class c| / |train|
    lr = cfg["lr"] * 10 if cfg["lr"] <= 1e-3 else cfg["lr"]   # ORCA: lr ×10 when lr ≤ 1e-3
    opt = make_optimizer(cfg, model.embedder.parameters(), lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 40, 60], gamma=0.2)
    if state.get("stage") == 1 and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    start = state["epoch"] + 1 if state.get("stage") == 1 else 0
    for epoch in range(start, cfg["stage1_epochs"]):
        seed_everything(epoch_seed(cfg, 1, epoch))
        t0, total = time.time(), 0.0
        opt.zero_grad(set_to_none=True)
        for c in np.random.permutation(classes):
            members = [i for i, l in zip(idx, labels) if l == c]
            members = [members[j] for j in np.random.permutation(len(members))[: cfg["orca_maxsamples"]]]
            x = torch.stack([td.train[i][0] for i in members]).to(m["device"])
            feats = model.embedder(x).mean(1).float()          # target embeddings, mean over tokens (n_c, D)
            loss = weights[int(c)] * otdd(feats)   # w_c · OTDD
            check_finite(loss, f"stage 1 (orca) epoch {epoch + 1}", cfg["out"])
            loss.backward()
            total += loss.item()
        all_reduce_mean_([p.grad for p in model.embedder.parameters() if p.grad is not None], m)
        opt.step()                                             # one step per epoch, as ORCA
        sched.step()
        row = {"stage": 1, "method": "orca", "epoch": epoch + 1, "otdd": total,
               "seconds": round(time.time() - t0, 3)}
        log(row, dict(stage=1, epoch=epoch, optimizer=opt.state_dict(), scheduler=sched.state_dict()))
        barrier(m)
