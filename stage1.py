"""stage1.py: the first stage of MoNA (Alg. 1, the knowledge alignment stage) and of the Emb baseline.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. Stage 1 trains only the target embedder φ_e while the encoder stays at its pretrained
θ^S_f0; stage 2 (stage2.py) then fine-tunes everything. ORCA's stage 1 is in orca.py.

Paper map
---------
| paper                                            | here                                              |
|--------------------------------------------------|---------------------------------------------------|
| Alg. 1, the loop over target batches            | `stage1` (kind "mona")                            |
| Alg. 1, one iteration: Eq. (3), (5)-(6), (7) / (9) | `mona_step` -> meta.meta_grad_exact / _taylor  |
| Eq. (2) L_inner and Eq. (4) L_outer as functions of (θ_f, φ) | `mona_losses`                         |
| App. A.3, Eq. (9): ∇_θf L_outer at the fixed θ^S_f0 | `cached_outer_grad` (`--cache-outer-grad`)     |
| §2.2, §3.1 "Emb": task loss, body frozen         | `stage1` (kind "emb"), `emb_step`                 |
| §3.2 "normalize these features onto a unit sphere" | `pooled_normalised`                             |
| §2.2, App. A.6 source surrogate {x_i^s, y_i^s}    | `load_surrogate`, `source_batches`               |

| paper symbol | code name                              | shape                                          |
|--------------|----------------------------------------|------------------------------------------------|
| φ_e          | `phi` ("embedder.*" parameters)        | dict name -> tensor                            |
| θ_f          | `theta_f` (model.encoder parameters)   | dict name -> tensor                            |
| θ_h          | model.predictor (fixed unless `--stage1-train-head`) |                                  |
| θ^S_e0       | `source.source_embedder` (frozen)      |                                                |
| x^t, y^t     | `x`, `y`                               | (B, C, ...) and the task's target              |
| e(x^s; θ^S_e0), y^s | `src_tokens`, `ys`              | (B_s, N, D), (B_s,)                            |
| (1D source) real tokens | `src_mask` = (ids != pad_id), None for 2D | (B_s, T) bool                       |
| f_i^s        | `pooled_normalised(source.readout(feats, src_mask))` | (B_s, d), unit rows              |
| α, λ, β, K   | `--alpha`, `--lam`, `--stage1-lr`, `--inner-steps` | scalars                            |
| stage-1 length | `--stage1-epochs` (App. A.1: 10), or `--stage1-steps` optimizer steps (`stage1_epochs_for`; the default on your own data) | |

Which parameters stage 1 trains: the paper (Alg. 1) updates only the target embedder φ_e. We do the same
by default for MoNA and Emb: the predictor θ_h stays at its random initialisation during stage 1 (it is
used inside L_inner, not updated) and is then trained in stage 2. `--stage1-train-head` also meta-learns
θ_h (meta.py differentiates whatever is in `phi`, second-order term included).

Source features: a CoNLL-2003 source batch is padded to a fixed length, so the encoder gets the attention
mask (ids != pad_id) and the features are pooled by the body's one readout, `source.readout` (masked mean
over real tokens for Swin / BERT-family, the documented choice for ViT/CLIP), the readout of the
classification head; image sources have no padding and pass no mask.

Target batch: `--stage1-batch-size` target samples per step (default: the stage-2 batch size; train.py).

Stage-1 rows of metrics.jsonl (MoNA): the mean over the epoch's steps of meta.py's stats: inner_loss =
L_inner(θ_f, φ), outer_loss = L_outer(θ_f*), inner_grad_norm, meta_norm and meta_ratio (`META_RATIO` below says
what it means; the run prints it at the start of stage 1).
"""
from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

import losses
import meta
from support.runtime import (RunError, all_reduce_mean_, autocast, barrier, check_finite, epoch_seed, is_main_process,
                             make_loader, progress, seed_everything)

META_RATIO = ("meta_ratio = ‖λ·meta term‖ / ‖∇_φ L_inner‖: the weight of MoNA's alignment term "
              "λ·dL_outer(θ_f − α∇L_inner)/dφ against the task-loss gradient of φ (near 0: stage 1 acts as Emb's)")


# --------------------------------------------------------------------------------------------------
# The pieces of stage 1: φ, the source surrogate, pooled features
# --------------------------------------------------------------------------------------------------
def stage1_parameters(model, cfg: dict) -> dict:
    """φ: the parameters stage 1 trains. Paper (Alg. 1): the target embedder φ_e only."""
    phi = {f"embedder.{k}": p for k, p in model.embedder.named_parameters()}
    if cfg["stage1_train_head"]:
        phi.update({f"predictor.{k}": p for k, p in model.predictor.named_parameters()})
    return phi


def _vocab_size(source) -> int:
    """Rows of a 1D body's word-embedding table (the ids its source embedder accepts)."""
    return int(source.source_embedder.embeddings.word_embeddings.num_embeddings)


def tiny_stand_in(cfg: dict, spec, source) -> bool:
    """--tiny on real task data: the synthetic source of the body's modality stands in for the surrogate when the
    real one cannot serve: always for 1D (a tiny body's vocabulary cannot take the tokenizer's ids), for 2D when
    --source-dir holds no CIFAR-10 batches (and no --download). Never for a real body: its surrogate is read, or
    the run stops with one line."""
    if cfg["synthetic_data"] or not source.tiny:
        return False
    if spec.source == "conll2003":
        return True
    return not cfg["download"] and not os.path.exists(os.path.join(cfg["source_dir"], "cifar-10-batches-py",
                                                                    "data_batch_1"))


def load_surrogate(cfg: dict, spec, source):
    """The labelled source surrogate {x_i^s, y_i^s} (§2.2, App. A.6): CIFAR-10 (2D) or CoNLL-2003 (1D), read from
    --source-dir (default --data-dir); synthetic with --synthetic-data (--demo: readers/primitives.py's), and with
    --tiny where the real one cannot serve (`tiny_stand_in`, said in one line). For CoNLL-2003 a missing file is
    reported before the tokenizer is looked up (it needs the hub or a local folder), so the first message names
    what is really missing."""
    import data
    from readers.sources import CONLL_FILES
    stand_in = tiny_stand_in(cfg, spec, source)
    kw = dict(synthetic=cfg["synthetic_data"] or stand_in, seed=cfg["seed"], download=cfg["download"],
              demo=cfg["demo"])
    if stand_in and is_main_process():
        name = {"cifar10": "CIFAR-10", "conll2003": "CoNLL-2003"}[spec.source]
        why = ("a tiny body's vocabulary cannot take real text" if spec.source == "conll2003" else
               f"{os.path.join(cfg['source_dir'], 'cifar-10-batches-py')} is not there")
        print(f"source surrogate ({cfg['method']}): the synthetic {name} stand-in of readers/sources.py, because "
              f"--tiny ({why}); it checks the pipeline, it holds no real source knowledge (a real body reads the "
              f"real surrogate: README, 'Your own data')", flush=True)
    if spec.source == "conll2003":
        if kw["synthetic"]:                        # token ids inside the (tiny) body's vocabulary
            kw["vocab_size"] = _vocab_size(source)
        elif any(os.path.exists(os.path.join(cfg["source_dir"], "conll2003", f)) for f in CONLL_FILES["train"]):
            kw["tokenizer"] = tok = load_tokenizer(cfg)
            if len(tok) > _vocab_size(source):
                raise RunError(f"the tokenizer of {cfg['backbone']} has {len(tok)} ids but its body's vocabulary "
                               f"{_vocab_size(source)}: pass a body folder saved with its own tokenizer")
    ds = data.load_source_surrogate(spec.source, cfg["source_dir"], **kw)
    labels = getattr(ds, "labels", None)
    labels = [int(ds[i][1]) for i in range(len(ds))] if labels is None else [int(v) for v in labels]
    return ds, labels


def source_mask(ds, xs: torch.Tensor):
    """(B, T) attention mask of a batch of source token ids, 1 = real token: (ids != ds.pad_id) for a padded
    text surrogate; None for image sources (nothing is padded)."""
    pad_id = getattr(ds, "pad_id", None)
    return None if pad_id is None else xs != pad_id


def source_batches(surrogate, source, cfg: dict, m: dict, seed: int):
    """Endless class-balanced batches of the source surrogate (ds, labels), as source tokens e(x^s; θ^S_e0)
    from the frozen source embedder, their attention mask (None for images) and labels y^s; every batch holds
    ≥ 2 samples of each of its classes. The order depends only on `seed` (and the rank), so a resumed epoch
    sees the same source batches."""
    import data
    ds, labels = surrogate
    k = min(cfg["source_classes"], len(set(labels)))
    sampler = data.ClassBalancedBatchSampler(labels, k, cfg["source_per_class"], seed=seed + m["rank"])
    while True:
        for idx in sampler:
            xs, ys = zip(*(ds[i] for i in idx))
            xs, ys = torch.stack(xs).to(m["device"]), torch.as_tensor(ys).to(m["device"])
            mask = source_mask(ds, xs)                 # (B_s, T) 1 = real token, or None
            with torch.no_grad():                      # θ^S_e0 is frozen and independent of φ
                tokens = source.source_embedder(xs)
            yield tokens, mask, ys                     # (yield outside no_grad: it would leak to the caller)


def load_tokenizer(cfg: dict):
    """The source model's tokenizer (CoNLL-2003 surrogate of 1D tasks), from a local folder, the hub or its cache.
    An unreachable hub (backbone_loading's 3 s probe) fails at once, instead of huggingface_hub's ~50 s of
    retries, with a one-line RunError that says what works instead."""
    import backbones
    from support.backbone_loading import _hub_offline, _one_line
    from transformers import AutoTokenizer
    name = cfg["backbone"]
    where = cfg["weights"] or getattr(backbones.BACKBONES.get(name), "hub_id", name)
    offline = not os.path.isdir(where) and _hub_offline()
    try:
        return AutoTokenizer.from_pretrained(where, local_files_only=offline)
    except Exception as e:  # noqa: BLE001 (hub client and tokenizer classes raise many types)
        reason = "the Hugging Face Hub is unreachable and it is not in the local cache" if offline else _one_line(e)
        synthetic = "" if cfg["task"] == "custom" else ", or --synthetic-data (no files at all)"
        raise RunError(f"cannot load the tokenizer of {where!r}, which turns the CoNLL-2003 source surrogate "
                       f"({os.path.join(cfg['source_dir'], 'conll2003', 'eng.train')}) into token ids: {reason}; pass "
                       f"a local folder holding the body and its tokenizer (save_pretrained) as --backbone DIR, or "
                       f"as --weights DIR with --backbone {name}{synthetic}") from None


def pooled_normalised(pooled: torch.Tensor) -> torch.Tensor:
    # §3.2: "normalize these features onto a unit sphere": f_i^s = readout(f(e(x_i^s))) / ‖·‖₂   (B, d)
    return F.normalize(pooled, dim=-1)


# --------------------------------------------------------------------------------------------------
# Stage 1: MoNA (Alg. 1) and Emb (§2.2); both train φ with the encoder at θ^S_f0
# --------------------------------------------------------------------------------------------------
def source_features(encoder, theta_f: dict, source, src_tokens, src_mask, cfg: dict, device) -> torch.Tensor:
    """f_i^s = normalise(readout(f(e(x^s; θ^S_e0); θ_f))) with θ_f swapped in by functional_call   (B_s, d)."""
    with autocast(cfg, device):
        # f(e(x^s; θ^S_e0); θ_f), prefix tokens kept for the readout   (B_s, P + N', d)
        feats = functional_call(encoder, theta_f, (src_tokens,),
                                {"attention_mask": src_mask, "return_prefix": True})
    return pooled_normalised(source.readout(feats.float(), src_mask))


def mona_losses(model, source, x, y, src_tokens, src_mask, ys, task_loss, outer_fn, cfg: dict, device):
    """The two callables meta.py differentiates, built from our modules with functional_call:
    inner_loss(θ_f, φ) = L_inner = ℓ(h(f(e(x^t; φ_e); θ_f); θ_h), y^t)                 (Eq. 1, 2)
    outer_loss(θ_f)    = L_outer({normalise(readout f(e(x^s; θ^S_e0); θ_f))}, y^s)    (Eq. 4)"""
    def inner_loss(theta_f: dict, phi: dict) -> torch.Tensor:
        # θ_f and φ ("embedder.*", and "predictor.*" with --stage1-train-head) swapped into the target model;
        # θ_h stays the model's own (fixed in stage 1) unless it is part of φ
        params = {**{f"encoder.{k}": v for k, v in theta_f.items()}, **phi}
        with autocast(cfg, device):
            out = functional_call(model, params, (x,))         # g_θ(x^t) = h(f(e(x^t; φ_e); θ_f); θ_h)
        return task_loss(out.float(), y)                       # Eq. (1): ℓ(g_θ(x^t), y^t)

    def outer_loss(theta_f: dict) -> torch.Tensor:
        # Eq. (4), minimisation form, on f_i^s = normalise(readout(f(e(x^s; θ^S_e0); θ_f)))
        return outer_fn(source_features(model.encoder, theta_f, source, src_tokens, src_mask, cfg, device), ys)

    return inner_loss, outer_loss


def cached_outer_grad(model, source, batches, outer_fn, cfg: dict, m: dict, n_batches: int = 16) -> dict:
    """v = ∇_θf L_outer(θ^S_f0), averaged over source batches. In stage 1 the encoder stays at θ^S_f0,
    so v does not depend on φ (App. A.3, Eq. 9): computed once and reused by every Taylor step."""
    theta = {k: p.detach().requires_grad_() for k, p in model.encoder.named_parameters()}
    v = {k: torch.zeros_like(p) for k, p in theta.items()}
    for _ in range(n_batches):
        src_tokens, src_mask, ys = next(batches)
        f_s = source_features(model.encoder, theta, source, src_tokens, src_mask, cfg, m["device"])
        g = torch.autograd.grad(outer_fn(f_s, ys), list(theta.values()), allow_unused=True, materialize_grads=True)
        for k, gk in zip(theta, g):
            v[k] += gk / n_batches                             # v = mean_b ∇_θf L_outer^b(θ_f0)
    all_reduce_mean_(v.values(), m)
    return v


def stage1_epochs_for(steps: int, n_train: int, batch_size: int, world: int = 1) -> int:
    """Passes over a training set of n_train samples (sharded over `world` processes, last batch kept) that hold
    `steps` optimizer steps (--stage1-steps); `stage1` stops at exactly `steps`."""
    per_epoch = math.ceil(math.ceil(n_train / world) / batch_size)
    return math.ceil(steps / per_epoch)


def stage1(cfg: dict, m: dict, model, source, td, spec, state: dict, log, *, kind: str) -> None:
    """Stage 1 of MoNA (kind "mona", Alg. 1) or Emb (kind "emb", §2.2): epochs of `mona_step` / `emb_step` over
    the target training set; only φ is updated, the encoder stays at θ^S_f0. ORCA's stage 1 is orca.stage1_orca."""
    assert kind in ("mona", "emb"), kind
    task_loss, _ = losses.task_objective(spec, td, m["device"])
    phi = stage1_parameters(model, cfg)
    enc_flags = [p.requires_grad for p in model.encoder.parameters()]
    for p in model.encoder.parameters():
        p.requires_grad_(False)                                # θ_f is not trained in stage 1
    # β: AdamW on φ (App. A.1)
    opt = torch.optim.AdamW(phi.values(), lr=cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
    if state.get("stage") == 1 and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    outer_fn = losses.OUTER_LOSSES[cfg["outer_loss"]]
    surrogate = load_surrogate(cfg, spec, source) if kind == "mona" else None
    v = None
    if kind == "mona" and cfg["cache_outer_grad"]:
        v = cached_outer_grad(model, source, source_batches(surrogate, source, cfg, m, cfg["seed"]), outer_fn, cfg, m)
    start = state["epoch"] + 1 if state.get("stage") == 1 else 0
    model.train()
    if kind == "mona" and m["main"]:
        print(f"stage 1 [mona]: {META_RATIO}", flush=True)
    for epoch in range(start, cfg["stage1_epochs"]):
        seed_everything(epoch_seed(cfg, 1, epoch))
        t0, sums, n, samples = time.time(), {}, 0, 0
        loader = make_loader(td.train, cfg["stage1_batch_size"], shuffle=True, seed=epoch_seed(cfg, 1, epoch), m=m,
                             workers=cfg["workers"])
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if kind == "mona":
            batches = source_batches(surrogate, source, cfg, m, seed=epoch_seed(cfg, 1, epoch))
        bar = progress(loader, m, cfg, f"stage 1 [{kind}] epoch {epoch + 1}/{cfg['stage1_epochs']}")
        # --stage1-steps: the run's length is a number of optimizer steps; the last pass stops at it
        budget = cfg["stage1_steps"] - epoch * len(loader) if cfg.get("stage1_steps") else len(loader)
        for x, y in bar:
            if n >= budget:
                break
            x, y = x.to(m["device"]), y.to(m["device"])
            if kind == "mona":
                st = mona_step(model, source, phi, opt, x, y, next(batches), task_loss, outer_fn, v, cfg, m, epoch)
            else:
                st = emb_step(model, phi, opt, x, y, task_loss, cfg, m, epoch)
            n, samples = n + 1, samples + len(x)
            for k, val in st.items():
                sums[k] = sums.get(k, 0.0) + float(val)
            bar.set_postfix(loss=f"{st['inner_loss']:.4f}")
        row = {"stage": 1, "method": kind, "epoch": epoch + 1, "steps": n, "samples": samples,
               "seconds": round(time.time() - t0, 3), **{k: s / max(n, 1) for k, s in sums.items()}}
        log(row, dict(stage=1, epoch=epoch, optimizer=opt.state_dict()))
        barrier(m)
    for p, flag in zip(model.encoder.parameters(), enc_flags):
        p.requires_grad_(flag)


def mona_step(model, source, phi: dict, opt, x, y, source_batch, task_loss, outer_fn, v, cfg: dict, m: dict,
              epoch: int) -> dict:
    """One iteration of Alg. 1 (its loop body): a target batch {x^t, y^t} and a source batch {x^s, y^s} in; φ
    moves along ∇_φ [L_inner + λ L_outer(θ_f*)] (Eq. 5-6) while θ_f stays at θ^S_f0 (Alg. 1 resets it every
    iteration: the virtual step lives in meta.py's parameter dicts only). `v`: the cached ∇_θf L_outer(θ^S_f0)
    (--cache-outer-grad) or None. Returns the step's stats (meta.py: inner_loss, outer_loss, meta_ratio, ...)."""
    src_tokens, src_mask, ys = source_batch
    # L_inner(θ_f, φ) on the target batch (Eq. 2) and L_outer(θ_f) on the source batch (Eq. 4), as functions
    inner, outer = mona_losses(model, source, x, y, src_tokens, src_mask, ys, task_loss, outer_fn, cfg, m["device"])
    common = dict(theta_f=dict(model.encoder.named_parameters()), phi=phi, alpha=cfg["alpha"], lam=cfg["lam"],
                  hvp=cfg["hvp"], inner_weight=0.0 if cfg["no_inner_loss"] else 1.0)
    if cfg["meta"] == "exact":
        # Eq. (3) θ_f* = θ_f − α ∇_θf L_inner, then Eq. (5)-(7): ∇_φ [L_inner(θ_f, φ) + λ L_outer(θ_f*(φ))]
        grads, st = meta.meta_grad_exact(inner, outer, steps=cfg["inner_steps"], **common)
    else:
        # Eq. (9), App. A.3: ∇_φ [L_inner − λα ⟨∇_θf L_outer(θ_f), ∇_θf L_inner(θ_f, φ)⟩]
        grads, st = meta.meta_grad_taylor(inner, None if v is not None else outer, outer_grad=v, **common)
    # Alg. 1: φ_e ← φ_e − β ∇_φe L'_outer   (AdamW)
    _update(opt, phi, grads, torch.tensor(st["inner_loss"]), m, f"stage 1 epoch {epoch + 1}", cfg["out"])
    return st


def emb_step(model, phi: dict, opt, x, y, task_loss, cfg: dict, m: dict, epoch: int) -> dict:
    """One step of Emb's stage 1 (§2.2): φ moves along ∇_φ L_inner alone, the body frozen."""
    with autocast(cfg, m["device"]):
        out = model(x)
    # Eq. (1) on the target batch: ℓ(h(f(e(x^t; φ_e); θ_f); θ_h), y^t)
    loss = task_loss(out.float(), y)
    g = torch.autograd.grad(loss, list(phi.values()), allow_unused=True, materialize_grads=True)
    _update(opt, phi, dict(zip(phi, g)), loss, m, f"stage 1 epoch {epoch + 1}", cfg["out"])
    return {"inner_loss": loss.item()}


def _update(opt, phi: dict, grads: dict, loss, m: dict, where: str, out: str) -> None:
    """φ ← optimizer step with `grads` (averaged over processes under torchrun); stops on a non-finite value."""
    all_reduce_mean_(grads.values(), m)
    # a finite L_inner can still come with a non-finite meta term (L_outer): check both; the gradient
    # is all-reduced first, so under torchrun every rank sees a NaN and all stop together
    local = loss if m["world"] == 1 else loss.new_zeros(())
    check_finite(local + sum(g.float().sum() for g in grads.values()), where, out)
    for k, p in phi.items():
        p.grad = grads[k].detach().to(p.dtype)
    opt.step()
    opt.zero_grad(set_to_none=True)
