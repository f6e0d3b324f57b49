"""train.py: both stages of every method of the MoNA paper, in one command.

    python train.py --task cifar100 --method mona            # the paper's setting (GPU server)
    python train.py --task cifar100 --method mona --demo     # tiny model + synthetic data, CPU, seconds
    torchrun --nproc_per_node=4 train.py --task ecg --method mona

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. This file implements the training protocol around the maths of the other modules:

| paper                                        | here                                          |
|----------------------------------------------|-----------------------------------------------|
| Eq. (1) vanilla fine-tuning                  | `stage2` (every method's stage 2)             |
| Alg. 1 stage 1, Eq. (5)-(6), Eq. (7)/(9)     | `stage1_mona` -> meta.meta_grad_exact/taylor  |
| §2.2 "Emb" (embedder warm-up)                | `stage1_emb`                                  |
| §2.2 ORCA (OTDD embedder alignment)          | `stage1_orca` -> losses.OTDDLoss              |
| Table 2 baselines                            | `METHODS`                                     |
| App. A.1, Tables 9 / 11 (hyper-parameters)   | data.TASKS (registry) + `STAGE1_DEFAULTS`     |
| Fig. 6 (λ, K inner steps), Table 6 ablations | `--lam`, `--inner-steps`, `--outer-loss`, `--no-inner-loss` |

Paper symbol -> code name: φ_e -> `model.embedder` parameters (`phi`), θ_f -> `model.encoder` parameters
(`theta_f`), θ_h -> `model.predictor`, θ^S_e0 -> `source.source_embedder` (frozen), α -> `--alpha`,
λ -> `--lam`, β (stage-1 learning rate) -> `--stage1-lr`, K -> `--inner-steps`.

Which parameters stage 1 trains: the paper (Alg. 1) updates only the target embedder φ_e. We do the same
by default for MoNA and Emb: the predictor θ_h stays at its random initialisation during stage 1 (it is
used inside L_inner, not updated) and is then trained in stage 2. `--stage1-train-head` also meta-learns
θ_h (meta.py differentiates whatever is in `phi`, second-order term included).

Only this module sees argparse; the library modules take explicit arguments. Infrastructure lives here:
devices, bf16 autocast, DDP, progress bars, checkpoints, resumption.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

# --------------------------------------------------------------------------------------------------
# Defaults in one visible block
# --------------------------------------------------------------------------------------------------
# Each method: which stage 1 runs, how the embedder starts (baselines.md §2.5), whether the body is
# pretrained, whether the body is frozen in stage 2. `ref` is where the paper defines it.
METHODS = {
    "scratch":    dict(stage1=None,   init="random", pretrained=False, frozen=False,
                       ref="Table 2 'Train-from-scratch': same architecture, random weights"),
    "finetune":   dict(stage1=None,   init="random", pretrained=True,  frozen=False,
                       ref="Eq. (1), Table 2 'Finetuning': all parameters, task loss"),
    "finetune++": dict(stage1=None,   init="source", pretrained=True,  frozen=False,
                       ref="Table 2 'Finetuning++': embedder initialised from the source embedder"),
    "frozen":     dict(stage1=None,   init="random", pretrained=True,  frozen=True,
                       ref="Table 2 'Frozen-encoder': body frozen, embedder + predictor trained"),
    "orca":       dict(stage1="orca", init="source", pretrained=True,  frozen=False,
                       ref="§2.2 / Table 2 'ORCA': stage 1 minimises OTDD to the source, then Eq. (1)"),
    "emb":        dict(stage1="emb",  init="source", pretrained=True,  frozen=False,
                       ref="§2.2, §3.1 'Emb': stage 1 trains the embedder on the task loss, body frozen"),
    "mona":       dict(stage1="mona", init="source", pretrained=True,  frozen=False,
                       ref="Alg. 1, Eq. (5)-(6): meta-learned embedder, then Eq. (1)"),
}
DEFAULT_BACKBONE = {"2d": "swin_base", "1d": "roberta_base"}   # §4: Swin-B (2D), RoBERTa-base (1D)
# Stage 1 epochs / AdamW lr β / weight decay come from the registry (data.TaskSpec.stage1_*: App. A.1,
# 10 epochs, 3e-5, 0.1); the rest of stage 1 is set here.
STAGE1_DEFAULTS = dict(
    alpha=1e-2,       # α, virtual SGD step (Eq. 3). Not stated in the paper: our choice, see README
    lam=0.5,          # λ, Eq. (5); Fig. 6(a)(b): best in [0.3, 0.5]
    inner_steps=1,    # K; §4.4: "we adopt the single step update"
    source_classes=10,  # source batch = classes × per-class samples, class-balanced (positives exist)
    source_per_class=4,
    orca_samples=2000,  # ORCA: target samples used for OTDD classes / k-means (baselines.md quirk 16)
    orca_maxsamples=128,
)
# --demo: tiny random body + synthetic data + a short schedule. A random tiny body needs a larger step than
# the paper's pretrained ones, hence lr 1e-3 with a 1-epoch warm-up (explicit flags still win).
DEMO = dict(epochs=4, stage1_epochs=1, batch_size=8, accum=1, max_train_samples=64, lr=1e-3, warmup_epochs=1,
            source_per_class=2, orca_samples=64, orca_maxsamples=16)
EXIT_USAGE, EXIT_NONFINITE = 2, 3


class RunError(Exception):
    """An expected mistake (bad argument, missing file, ...): printed as one line, no traceback."""


class NonFiniteLoss(RunError):
    """A NaN or infinite loss: the run stops and the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------------
# Command line (the only argparse in the project)
# --------------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="MoNA (ICML 2024) and its baselines: stage 1 (embedder) + stage 2 (fine-tuning).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--task", required=True, help="a task of data.TASKS (Tables 8, 10) or 'custom'")
    g.add_argument("--method", default="mona", help="one of: " + ", ".join(METHODS))
    g.add_argument("--backbone", default=None,
                   help="source model: a backbones.BACKBONES name or a local folder "
                        "(default: swin_base for 2D tasks, roberta_base for 1D, as in §4)")
    g.add_argument("--weights", default=None, help="local weight file/folder for --backbone (no network)")
    g.add_argument("--data-dir", default="data", help="root of the data layout (README, 'Data')")
    g.add_argument("--download", action="store_true",
                   help="download missing files where a stable public URL exists (CIFAR, PDEBench), checked by MD5")
    g.add_argument("--out", default=None, help="output folder (default runs/<task>-<method>)")
    g.add_argument("--stage", default="all", choices=["1", "2", "all"], help="run stage 1, stage 2 or both")
    g.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    g.add_argument("--seed", type=int, default=0, help="seed (ORCA's configs: 0)")
    g = p.add_argument_group("stage 2: fine-tuning, Eq. (1) (defaults: the task's row of Tables 9/11)")
    g.add_argument("--epochs", type=int, default=None, help="stage-2 epochs (Table 9/11 'Epoch')")
    g.add_argument("--batch-size", type=int, default=None, help="Table 9/11 'Batch Size'")
    g.add_argument("--accum", type=int, default=None, help="gradient accumulation (Table 9/11 'Grad. Accum.')")
    g.add_argument("--accum-reduction", default="mean", choices=["mean", "sum"],
                   help="mean: average micro-batch losses (ours); sum: ORCA's summed accumulation")
    g.add_argument("--lr", type=float, default=None, help="stage-2 learning rate (Table 9/11)")
    g.add_argument("--weight-decay", type=float, default=None, help="Table 9/11 'Weight Decay'")
    g.add_argument("--max-train-samples", type=int, default=None, help="subsample the training split")
    g = p.add_argument_group("stage 1 (MoNA, Emb, ORCA)")
    g.add_argument("--stage1-epochs", type=int, default=None, help="App. A.1: 10 (ORCA: its own 60, NinaPro 100)")
    g.add_argument("--stage1-lr", type=float, default=None, help="β, AdamW learning rate (App. A.1: 3e-5)")
    g.add_argument("--stage1-weight-decay", type=float, default=None, help="App. A.1: 0.1")
    g.add_argument("--stage1-train-head", action="store_true",
                   help="also train the predictor θ_h in stage 1 (paper: only φ_e)")
    g.add_argument("--alpha", type=float, default=STAGE1_DEFAULTS["alpha"],
                   help="α, virtual SGD step of Eq. (3) (not given in the paper)")
    g.add_argument("--lam", type=float, default=STAGE1_DEFAULTS["lam"], help="λ of Eq. (5); Fig. 6: [0.3, 0.5]")
    g.add_argument("--inner-steps", type=int, default=STAGE1_DEFAULTS["inner_steps"],
                   help="K virtual steps (Fig. 6c); the paper uses 1")
    g.add_argument("--meta", default="exact", choices=["exact", "taylor"],
                   help="exact: Eq. (7) differentiated through the virtual step; taylor: Eq. (9), App. A.3")
    g.add_argument("--hvp", default="autograd", choices=["autograd", "finite_difference"],
                   help="Hessian-vector product by double backward or by finite differences (DDP/flash-safe)")
    g.add_argument("--cache-outer-grad", action="store_true",
                   help="taylor only: compute ∇θf L_outer(θ_f0) once (θ_f is fixed in stage 1) and reuse it")
    g.add_argument("--outer-loss", default="align_uniform", choices=["align_uniform", "supcon", "davies_bouldin"],
                   help="L_outer: Eq. (4) (minimisation form) or a Table 6 ablation")
    g.add_argument("--no-inner-loss", action="store_true", help="Table 6 ablation: drop L_inner from Eq. (5)")
    g = p.add_argument_group("machine")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast on CUDA")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--tiny", action="store_true", help="tiny random-initialised backbone (tests, CPU)")
    g.add_argument("--synthetic-data", action="store_true", help="synthetic data in the task's exact shapes")
    g.add_argument("--demo", action="store_true", help="--tiny + --synthetic-data + a short schedule (CPU, seconds)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    return p


def resolve_config(args: argparse.Namespace) -> dict:
    """Merge the task's registry row, the method, --demo and explicit flags into one flat dict."""
    import data
    if args.method not in METHODS:
        raise RunError(f"unknown --method {args.method!r}; choose one of: {', '.join(METHODS)}")
    if args.task != "custom" and args.task not in data.TASKS:
        raise RunError(f"unknown --task {args.task!r}; choose one of: {', '.join(data.TASKS)}, custom")
    if args.task == "custom" and (args.demo or args.synthetic_data):
        raise RunError("--task custom has no synthetic data (it is your files in --data-dir): drop --demo and "
                       "--synthetic-data (--tiny alone gives the tiny body)")
    cfg = dict(vars(args))
    for k, v in STAGE1_DEFAULTS.items():           # settings without a flag
        cfg.setdefault(k, v)
    if args.demo:                                  # tiny + synthetic + short schedule; explicit flags win
        cfg["tiny"] = cfg["synthetic_data"] = True
        for k, v in DEMO.items():
            if k not in vars(args) or cfg[k] is None:
                cfg[k] = v
    cfg["method_ref"] = METHODS[args.method]["ref"]
    if cfg["backbone"] and not os.path.exists(cfg["backbone"]):
        import backbones
        if cfg["backbone"] not in backbones.BACKBONES and (os.sep in cfg["backbone"] or cfg["backbone"].startswith(".")):
            raise RunError(f"--backbone {cfg['backbone']!r}: no such folder; pass a name of backbones.BACKBONES "
                           f"({', '.join(backbones.BACKBONES)}) or an existing local folder")
    if cfg["weights"] and not os.path.exists(cfg["weights"]):
        raise RunError(f"--weights {cfg['weights']!r}: no such file or folder")
    for k in ("epochs", "batch_size", "accum", "lr", "weight_decay", "stage1_epochs", "max_train_samples"):
        if cfg[k] is not None and cfg[k] <= 0:
            raise RunError(f"--{k.replace('_', '-')} must be positive, got {cfg[k]}")
    if cfg["alpha"] < 0 or cfg["lam"] < 0 or cfg["inner_steps"] < 1:
        raise RunError("--alpha and --lam must be >= 0 and --inner-steps >= 1")
    if cfg["cache_outer_grad"] and cfg["meta"] != "taylor":
        raise RunError("--cache-outer-grad needs --meta taylor (the exact form needs ∇L_outer at θ_f*)")
    cfg["out"] = cfg["out"] or os.path.join("runs", f"{args.task}-{args.method}")
    return cfg



def fill_from_spec(cfg: dict, spec) -> dict:
    """Stage-2 defaults from the task's registry row (Tables 9/11); flags the user gave win."""
    for k in ("epochs", "batch_size", "accum", "lr", "weight_decay"):
        if cfg[k] is None:
            cfg[k] = getattr(spec, k)
    cfg["optimizer"], cfg["momentum"], cfg["clip"] = spec.optimizer, spec.momentum, spec.clip
    cfg.setdefault("warmup_epochs", spec.warmup_epochs)   # ORCA's WarmupLR (--demo: 1 epoch)
    cfg["decay_epochs"] = cfg["epochs"] if cfg["demo"] else spec.decay_epochs
    cfg["betas"] = list(spec.betas)
    if cfg["stage1_epochs"] is None:              # ORCA's own stage 1: 60 epochs, NinaPro 100 (baselines.md §3.4)
        cfg["stage1_epochs"] = spec.orca_epochs if cfg["method"] == "orca" else spec.stage1_epochs
    for k in ("stage1_lr", "stage1_weight_decay"):
        if cfg[k] is None:
            cfg[k] = getattr(spec, k)
    return cfg


# --------------------------------------------------------------------------------------------------
# Seeds, devices, distribution, files
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(cfg: dict, stage: int, epoch: int) -> int:
    """Every epoch reseeds everything from (seed, stage, epoch): a resumed run replays the same
    data order and dropout masks as an uninterrupted one, without saving RNG states."""
    return cfg["seed"] * 1_000_003 + stage * 10_007 + epoch


def setup_machine(cfg: dict) -> dict:
    """Device and (under torchrun) the process group: NCCL on GPUs, gloo on CPUs."""
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
    use_cuda = cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return dict(device=device, rank=rank, world=world, main=rank == 0)


def all_reduce_mean_(tensors, m: dict) -> None:
    """Average gradients over processes in place (stage 1: the meta-gradient of φ, meta-gradients.md §6 #13)."""
    if m["world"] > 1:
        for t in tensors:
            torch.distributed.all_reduce(t)
            t.div_(m["world"])


def barrier(m: dict) -> None:
    if m["world"] > 1:
        torch.distributed.barrier()


def autocast(cfg: dict, device: torch.device):
    """bf16 autocast where asked (`--precision bf16`); a no-op in fp32."""
    if cfg["precision"] == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text_atomic(text: str, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    """A checkpoint this module wrote ({"format": "mona-checkpoint-v1", "config", "model", ...}); the one
    reader of the project (probe.py and discrepancy.py use it too). RunError (one line) otherwise."""
    if not os.path.isfile(path):
        raise RunError(f"checkpoint {path!r}: no such file (train.py writes stage1_embedder.pt, last.pt and "
                       f"best.pt in its --out folder)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise RunError(f"checkpoint {path!r}: not readable ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "mona-checkpoint-v1" or "model" not in ckpt:
        raise RunError(f"checkpoint {path!r}: not a train.py checkpoint (no format 'mona-checkpoint-v1')")
    ckpt.setdefault("config", {})
    return ckpt


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, m: dict, workers: int = 0):
    """A DataLoader whose order depends only on `seed`; sharded over processes under torchrun."""
    sampler = None
    if m["world"] > 1 and shuffle:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, seed=seed)
        shuffle = False
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                                       generator=g, num_workers=workers, drop_last=False)


def progress(it, m: dict, cfg: dict, desc: str):
    from tqdm import tqdm
    disable = cfg["no_progress"] or not m["main"] or not sys.stderr.isatty()
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, disable=disable)


def check_finite(loss: torch.Tensor, where: str, out: str) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLoss(f"non-finite loss or gradient ({loss.item()}) at {where}; stopped, the last good checkpoint "
                            f"is kept in {out} (lower --lr or use --resume after fixing the cause)")


# --------------------------------------------------------------------------------------------------
# Building the pieces: task, source model θ^S, target model g_θ = h ∘ f ∘ e
# --------------------------------------------------------------------------------------------------
def build_run(cfg: dict, m: dict):
    import backbones, data, predictors
    td = data.load_task(cfg["task"], cfg["data_dir"], synthetic=cfg["synthetic_data"], download=cfg["download"],
                        max_train_samples=cfg["max_train_samples"], seed=cfg["seed"])
    spec = td.spec
    fill_from_spec(cfg, spec)
    method = METHODS[cfg["method"]]
    cfg["backbone"] = cfg["backbone"] or DEFAULT_BACKBONE[spec.dim]
    seed_everything(cfg["seed"])                       # the same random embedder/head for every method
    source = backbones.build_backbone(cfg["backbone"], tiny=cfg["tiny"], weights=cfg["weights"],
                                      pretrained=method["pretrained"] and not cfg["tiny"])
    if source.modality != spec.dim:
        raise RunError(f"--backbone {cfg['backbone']} is a {source.modality.upper()} body but task "
                       f"{spec.name} takes {spec.dim.upper()} inputs (use {DEFAULT_BACKBONE[spec.dim]})")
    if spec.dim == "1d" and spec.target_seq_len > source.max_tokens:
        # a body with fewer positions than the task's tokens (a --tiny one, or a short HF encoder): fewer,
        # longer patches so the sequence fits; the paper's bodies (RoBERTa: 512) never need this
        if m["main"]:
            print(f"note: {spec.name} asks for up to {spec.target_seq_len} tokens but {cfg['backbone']} takes "
                  f"{source.max_tokens}; using target_seq_len={source.max_tokens}", file=sys.stderr)
        spec = dataclasses.replace(spec, target_seq_len=source.max_tokens)
    model = predictors.build_target_model(spec, source, init=method["init"]).to(m["device"])
    source.to(m["device"])
    return td, spec, source, model


def task_objective(spec, td, device):
    """ℓ of Eq. (1) for this task, and the map from model output to prediction (identity, or ORCA's
    target de-normalisation for Darcy Flow, applied before the loss and the metric)."""
    import losses
    loss = losses.TASK_LOSSES[spec.loss](**spec.loss_kwargs)
    if td.output_decoder is None:
        return loss, (lambda out: out)
    decode = td.output_decoder.to(device)
    return (lambda out, y: loss(decode(out), y)), decode


def stage1_parameters(model, cfg: dict) -> dict:
    """φ: the parameters stage 1 trains. Paper (Alg. 1): the target embedder φ_e only."""
    phi = {f"embedder.{k}": p for k, p in model.embedder.named_parameters()}
    if cfg["stage1_train_head"]:
        phi.update({f"predictor.{k}": p for k, p in model.predictor.named_parameters()})
    return phi


def load_surrogate(cfg: dict, spec, source):
    """The labelled source surrogate {x_i^s, y_i^s} (§2.2, App. A.6): CIFAR-10 (2D) or CoNLL-2003 (1D)."""
    import data
    kw = dict(synthetic=cfg["synthetic_data"], seed=cfg["seed"], download=cfg["download"])
    if spec.source == "conll2003":
        if cfg["synthetic_data"]:                  # token ids inside the (tiny) body's vocabulary
            emb = getattr(source.source_embedder, "word_embeddings", None)
            kw["vocab_size"] = int(emb.num_embeddings) if emb is not None else 1000
        else:
            kw["tokenizer"] = load_tokenizer(cfg)
    ds = data.load_source_surrogate(spec.source, cfg["data_dir"], **kw)
    labels = getattr(ds, "labels", None)
    labels = [int(ds[i][1]) for i in range(len(ds))] if labels is None else [int(v) for v in labels]
    return ds, labels


def source_batches(surrogate, source, cfg: dict, m: dict, seed: int):
    """Endless class-balanced batches of the source surrogate (ds, labels), as source tokens e(x^s; θ^S_e0)
    from the frozen source embedder, with labels y^s; every batch holds ≥ 2 samples of each of its classes.
    The order depends only on `seed` (and the rank), so a resumed epoch sees the same source batches."""
    import data
    ds, labels = surrogate
    k = min(cfg["source_classes"], len(set(labels)))
    sampler = data.ClassBalancedBatchSampler(labels, k, cfg["source_per_class"], seed=seed + m["rank"])
    while True:
        for idx in sampler:
            xs, ys = zip(*(ds[i] for i in idx))
            xs, ys = torch.stack(xs).to(m["device"]), torch.as_tensor(ys).to(m["device"])
            with torch.no_grad():                      # θ^S_e0 is frozen and independent of φ
                tokens = source.source_embedder(xs)
            yield tokens, ys                           # (yield outside no_grad: it would leak to the caller)


def load_tokenizer(cfg: dict):
    """The source model's tokenizer (CoNLL-2003 surrogate of 1D tasks), from the hub or a local folder."""
    import backbones
    from transformers import AutoTokenizer
    name = cfg["backbone"]
    hub = getattr(backbones.BACKBONES.get(name), "hub_id", name)
    try:
        return AutoTokenizer.from_pretrained(cfg["weights"] or hub)
    except Exception as e:
        raise RunError(f"cannot load the tokenizer of {hub!r} ({type(e).__name__}); without network pass a "
                       f"local folder holding it with --weights, or use --synthetic-data") from None


def pooled_normalised(feats: torch.Tensor) -> torch.Tensor:
    # §3.2: "normalize these features onto a unit sphere": f_i^s = pool(f(e(x_i^s))) / ‖·‖₂   (B, d)
    return F.normalize(feats.mean(dim=1), dim=-1)


# --------------------------------------------------------------------------------------------------
# Stage 1: MoNA (Alg. 1), Emb (§2.2), ORCA (OTDD); each trains φ with the encoder at θ^S_f0
# --------------------------------------------------------------------------------------------------
def mona_losses(model, x, y, src_tokens, ys, task_loss, outer_fn, cfg: dict, device):
    """The two callables meta.py differentiates, built from our modules with functional_call:
    inner_loss(θ_f, φ) = L_inner = ℓ(h(f(e(x^t; φ_e); θ_f); θ_h), y^t)            (Eq. 1, 2)
    outer_loss(θ_f)    = L_outer({normalise(pool f(e(x^s; θ^S_e0); θ_f))}, y^s)  (Eq. 4)"""
    enc, emb, head = model.encoder, model.embedder, model.predictor
    head_fixed = dict(head.named_parameters())       # θ_h: fixed in stage 1 unless it is part of φ

    def inner_loss(theta_f: dict, phi: dict) -> torch.Tensor:
        emb_p = {k[len("embedder."):]: v for k, v in phi.items() if k.startswith("embedder.")}
        head_p = {k[len("predictor."):]: v for k, v in phi.items() if k.startswith("predictor.")} or head_fixed
        with autocast(cfg, device):
            tokens = functional_call(emb, emb_p, (x,))          # e(x^t; φ_e)            (B, N, D)
            feats = functional_call(enc, theta_f, (tokens,))   # f(·; θ_f)              (B, N', d)
            out = functional_call(head, head_p, (feats,))      # h(·; θ_h)              (B, K) or dense
        return task_loss(out.float(), y)                       # Eq. (1): ℓ(g_θ(x^t), y^t)

    def outer_loss(theta_f: dict) -> torch.Tensor:
        with autocast(cfg, device):
            feats = functional_call(enc, theta_f, (src_tokens,))  # f(e(x^s; θ^S_e0); θ_f)   (B_s, N', d)
        return outer_fn(pooled_normalised(feats.float()), ys)    # Eq. (4), minimisation form

    return inner_loss, outer_loss


def cached_outer_grad(model, batches, outer_fn, cfg: dict, m: dict, n_batches: int = 16) -> dict:
    """v = ∇_θf L_outer(θ^S_f0), averaged over source batches. In stage 1 the encoder stays at θ^S_f0,
    so v does not depend on φ (App. A.3, Eq. 9): computed once and reused by every Taylor step."""
    theta = {k: p.detach().requires_grad_() for k, p in model.encoder.named_parameters()}
    v = {k: torch.zeros_like(p) for k, p in theta.items()}
    for _ in range(n_batches):
        src_tokens, ys = next(batches)
        with autocast(cfg, m["device"]):
            feats = functional_call(model.encoder, theta, (src_tokens,))
        g = torch.autograd.grad(outer_fn(pooled_normalised(feats.float()), ys), list(theta.values()),
                                allow_unused=True, materialize_grads=True)
        for k, gk in zip(theta, g):
            v[k] += gk / n_batches                             # v = mean_b ∇_θf L_outer^b(θ_f0)
    all_reduce_mean_(v.values(), m)
    return v


def stage1(cfg: dict, m: dict, model, source, td, spec, state: dict, log) -> None:
    """Stage 1 of the two-stage methods: only φ is updated; the encoder is reset to (= stays at) θ^S_f0."""
    import losses
    kind = METHODS[cfg["method"]]["stage1"]
    if kind == "orca":
        return stage1_orca(cfg, m, model, source, td, spec, state, log)
    import meta
    task_loss, _ = task_objective(spec, td, m["device"])
    phi = stage1_parameters(model, cfg)
    enc_flags = [p.requires_grad for p in model.encoder.parameters()]
    for p in model.encoder.parameters():
        p.requires_grad_(False)                                # θ_f is not trained in stage 1
    opt = torch.optim.AdamW(phi.values(), lr=cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
    if state.get("stage") == 1 and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    outer_fn = losses.OUTER_LOSSES[cfg["outer_loss"]]
    surrogate = load_surrogate(cfg, spec, source) if kind == "mona" else None
    v = None
    if kind == "mona" and cfg["cache_outer_grad"]:
        v = cached_outer_grad(model, source_batches(surrogate, source, cfg, m, cfg["seed"]), outer_fn, cfg, m)
    start = state["epoch"] + 1 if state.get("stage") == 1 else 0
    model.train()
    for epoch in range(start, cfg["stage1_epochs"]):
        seed_everything(epoch_seed(cfg, 1, epoch))
        t0, sums, n = time.time(), {}, 0
        loader = make_loader(td.train, cfg["batch_size"], shuffle=True, seed=epoch_seed(cfg, 1, epoch), m=m,
                             workers=cfg["workers"])
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if kind == "mona":
            batches = source_batches(surrogate, source, cfg, m, seed=epoch_seed(cfg, 1, epoch))
        bar = progress(loader, m, cfg, f"stage 1 [{kind}] epoch {epoch + 1}/{cfg['stage1_epochs']}")
        for x, y in bar:
            x, y = x.to(m["device"]), y.to(m["device"])
            if kind == "mona":
                src_tokens, ys = next(batches)
                inner, outer = mona_losses(model, x, y, src_tokens, ys, task_loss, outer_fn, cfg, m["device"])
                common = dict(theta_f=dict(model.encoder.named_parameters()), phi=phi, alpha=cfg["alpha"],
                              lam=cfg["lam"], hvp=cfg["hvp"], inner_weight=0.0 if cfg["no_inner_loss"] else 1.0)
                if cfg["meta"] == "exact":                     # Eq. (7): through the virtual step
                    grads, st = meta.meta_grad_exact(inner, outer, steps=cfg["inner_steps"], **common)
                else:                                          # Eq. (9): Taylor first-order form
                    grads, st = meta.meta_grad_taylor(inner, None if v is not None else outer,
                                                      outer_grad=v, **common)
                loss = torch.tensor(st["inner_loss"])
            else:                                              # Emb: L_inner alone, body frozen
                with autocast(cfg, m["device"]):
                    out = model(x)
                loss = task_loss(out.float(), y)
                g = torch.autograd.grad(loss, list(phi.values()), allow_unused=True, materialize_grads=True)
                grads, st = dict(zip(phi, g)), {"inner_loss": loss.item()}
            all_reduce_mean_(grads.values(), m)
            # a finite L_inner can still come with a non-finite meta term (L_outer): check both; the gradient
            # is all-reduced first, so under torchrun every rank sees a NaN and all stop together
            local = loss if m["world"] == 1 else loss.new_zeros(())
            check_finite(local + sum(g.float().sum() for g in grads.values()), f"stage 1 epoch {epoch + 1}",
                         cfg["out"])
            for k, p in phi.items():
                p.grad = grads[k].detach().to(p.dtype)
            opt.step()                                         # φ_e ← φ_e − β ∇_φe L'_outer   (Alg. 1)
            opt.zero_grad(set_to_none=True)
            n += 1
            for k, val in st.items():
                sums[k] = sums.get(k, 0.0) + float(val)
            bar.set_postfix(loss=f"{st['inner_loss']:.4f}")
        row = {"stage": 1, "method": kind, "epoch": epoch + 1, "seconds": round(time.time() - t0, 3),
               **{k: s / max(n, 1) for k, s in sums.items()}}
        log(row, dict(stage=1, epoch=epoch, optimizer=opt.state_dict()))
        barrier(m)
    for p, flag in zip(model.encoder.parameters(), enc_flags):
        p.requires_grad_(flag)


def orca_target_labels(td, spec, n: int, seed: int) -> tuple[list, np.ndarray]:
    """ORCA's target classes: labels for single-label classification, else k = 10 k-means clusters of the
    flattened targets (baselines.md §3.2). DEVIATION from ORCA: computed on a random subset of n training
    samples, not on the full training set (which is ~200 GB for PSICOV; baselines.md quirk 16)."""
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
    """ORCA stage 1 (baselines.md §3): the embedder minimises the OTDD between the mean-pooled target
    embeddings of each target class and the labelled source embeddings; one optimizer step per epoch."""
    import losses
    src, _ = load_surrogate(cfg, spec, source)
    with torch.no_grad():                                      # source features: e(x^s; θ^S_e0), mean over tokens
        loader = torch.utils.data.DataLoader(src, batch_size=64)
        pairs = [(source.source_embedder(xs.to(m["device"])).mean(1), ys) for xs, ys in loader]
    src_x = torch.cat([p[0] for p in pairs]).float()           # (N_s, D)
    src_y = torch.cat([torch.as_tensor(p[1]) for p in pairs]).to(m["device"])
    otdd = losses.OTDDLoss(src_x, src_y)                      # source side computed once (quirk 17)
    idx, labels = orca_target_labels(td, spec, cfg["orca_samples"], cfg["seed"])
    classes = sorted(set(labels.tolist()))
    weights = {c: float((labels == c).mean()) for c in classes}  # w_c = |class c| / |train|
    lr = cfg["lr"] * 10 if cfg["lr"] <= 1e-3 else cfg["lr"]   # ORCA: lr ×10 when lr ≤ 1e-3 (quirk 18)
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


# --------------------------------------------------------------------------------------------------
# Stage 2: fine-tuning, Eq. (1) (identical for every method; baselines.md §4)
# --------------------------------------------------------------------------------------------------
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
    """ORCA's WarmupLR (baselines.md §4.2): linear warm-up over W steps, then linear decay reaching 0 at D.
    DEVIATION from ORCA: counted in optimizer steps, not micro-batches, and starting at 1/W instead of 0
    (ORCA's first micro-batch runs at lr 0); the shape over an epoch is the same."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (decay - step) / max(decay - warmup, 1))
    return factor


@torch.no_grad()
def evaluate(model, dataset, spec, objective, cfg: dict, device) -> tuple[float, float]:
    """Metric over the WHOLE split at once (not ORCA's chunk average, baselines.md quirk 4); lower is better.
    FSD50K / ECG pool their chunks / windows per clip / record first (`spec.group_reduce`)."""
    import losses
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
        pred, target = losses.aggregate_groups(pred, target, dataset.groups, spec.group_reduce)
    return float(losses.METRICS[spec.metric](pred, target, **spec.metric_kwargs)), total / max(len(dataset), 1)


def stage2(cfg: dict, m: dict, model, td, spec, state: dict, log) -> dict:
    """Eq. (1): θ^T* = argmin Σ ℓ(g_θT(x_i^t), y_i^t), all parameters (the body frozen for `frozen`).
    Accumulation averages the micro-batch losses of each optimizer step by default (the epoch's last step may
    hold fewer than accum; ORCA drops those) and `--accum-reduction sum` gives ORCA's sum, whose effective SGD
    learning rate is ×accum; clipping acts once per optimizer step on the accumulated gradient (ORCA clips
    every micro-batch, baselines.md §4.3)."""
    objective = task_objective(spec, td, m["device"])
    task_loss = objective[0]
    if METHODS[cfg["method"]]["frozen"]:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
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


# --------------------------------------------------------------------------------------------------
# The run: both stages, checkpoints, resumption, result.json
# --------------------------------------------------------------------------------------------------
def checkpoint_dict(cfg: dict, model, **extra) -> dict:
    return {"format": "mona-checkpoint-v1", "config": cfg, "model": model.state_dict(), **extra}


# settings a run may change when it continues (machine, paths, which stage); every other one must match
CONTINUE_FREE = {"resume", "stage", "out", "data_dir", "download", "weights", "device", "precision", "workers",
                 "no_progress", "method_ref"}


def check_same_run(saved: dict, cfg: dict, path: str, keys=None) -> None:
    """A run continues (--resume, or --stage 2 after --stage 1) only with the configuration that wrote `path`:
    a changed --lr, --epochs, --batch-size, ... would silently give a run that is neither."""
    for k in keys or [*cfg, *(k for k in saved if k not in cfg)]:      # flags first, in the parser's order
        if k not in CONTINUE_FREE and saved.get(k) != cfg.get(k):
            raise RunError(f"{path} was written with {k}={saved.get(k)!r}, this command has {k}={cfg.get(k)!r}: "
                           f"repeat the original command's flags, or use another --out")


def run(cfg: dict) -> dict:
    m = setup_machine(cfg)
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    last, emb_path = os.path.join(out, "last.pt"), os.path.join(out, "stage1_embedder.pt")
    state: dict = {}
    if os.path.exists(last):
        # without --resume, only `--stage 2` may continue a finished `--stage 1` run (its last.pt is in stage 1)
        if cfg["resume"] or (cfg["stage"] == "2" and os.path.exists(emb_path)):
            state = load_checkpoint(last)
        if not cfg["resume"] and state.get("stage") != 1:
            raise RunError(f"{out} already holds a run (last.pt): pass --resume to continue it, or another --out")
        cfg["backbone"] = cfg["backbone"] or state["config"].get("backbone")
    elif cfg["resume"] and m["main"]:
        print(f"note: --resume but no {last} yet; starting from the beginning", file=sys.stderr)

    td, spec, source, model = build_run(cfg, m)
    has_stage1 = METHODS[cfg["method"]]["stage1"] is not None
    if state:
        check_same_run(state["config"], cfg, last)
        if cfg["stage"] == "2" and state.get("stage") == 1 and state["epoch"] + 1 < cfg["stage1_epochs"]:
            raise RunError(f"--stage 2: stage 1 in {last} stopped after epoch {state['epoch'] + 1} of "
                           f"{cfg['stage1_epochs']}; finish it first (--resume with --stage 1 or all)")
        if cfg["stage"] == "1" and state.get("stage") == 2:
            raise RunError(f"--stage 1: {last} is already in stage 2 (stage 1 is finished, see {emb_path})")
        model.load_state_dict(state["model"])
    elif cfg["stage"] == "2" and has_stage1:
        if not os.path.exists(emb_path):
            raise RunError(f"--stage 2 for {cfg['method']} needs {emb_path}: run --stage 1 first")
        emb = load_checkpoint(emb_path)
        check_same_run(emb["config"], cfg, emb_path, keys=("task", "method", "backbone", "tiny", "synthetic_data"))
        model.load_state_dict(emb["model"])
    history = list(state.get("history", []))
    t_start = time.time() - state.get("seconds", 0.0)

    def log(row: dict, resume_state: dict) -> None:
        """Append one epoch row; write last.pt (atomically) then metrics.jsonl from the same history."""
        history.append(row)
        if m["main"]:
            save_atomic(checkpoint_dict(cfg, model, history=history, seconds=time.time() - t_start,
                                        **resume_state), last)
            write_text_atomic("".join(json.dumps(r) + "\n" for r in history), os.path.join(out, "metrics.jsonl"))
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        kill = os.environ.get("MONA_TEST_KILL_AFTER")      # test hook: simulate a kill after this epoch
        if kill == f"{row['stage']}:{row['epoch']}":
            raise KeyboardInterrupt(f"simulated kill after stage {row['stage']} epoch {row['epoch']}")

    if has_stage1 and cfg["stage"] in ("1", "all") and state.get("stage", 1) == 1:
        stage1(cfg, m, model, source, td, spec, state, log)
        if m["main"]:
            save_atomic(checkpoint_dict(cfg, model, stage=1, epoch=cfg["stage1_epochs"] - 1), emb_path)
        state = {}
    result = {"task": cfg["task"], "method": cfg["method"], "metric": spec.metric, "lower_is_better": True}
    if cfg["stage"] in ("2", "all"):
        best = stage2(cfg, m, model, td, spec, state, log)
        if m["main"]:
            objective = task_objective(spec, td, m["device"])
            test_last, _ = evaluate(model, td.test, spec, objective, cfg, m["device"])
            model.load_state_dict(load_checkpoint(os.path.join(out, "best.pt"))["model"])
            test_best, _ = evaluate(model, td.test, spec, objective, cfg, m["device"])
            result.update(best_val=best["score"], best_epoch=best["epoch"], test=test_best, test_last=test_last)
    result.update(epochs=cfg["epochs"], stage1_epochs=cfg["stage1_epochs"] if has_stage1 else 0,
                  seconds=round(time.time() - t_start, 2), config=cfg)
    if m["main"]:
        write_text_atomic(json.dumps(result, indent=2) + "\n", os.path.join(out, "result.json"))
        if "test" in result:
            print(f"{cfg['task']} / {cfg['method']}: test {spec.metric} = {result['test']:.4g} (model chosen on "
                  f"validation, epoch {result['best_epoch']}); last epoch {result['test_last']:.4g}; "
                  f"{result['seconds']:.1f} s -> {out}/result.json", flush=True)
    barrier(m)
    return result


def expected_errors() -> tuple:
    """Error classes of expected mistakes (bad arguments, files, shapes): printed as one line, no traceback.
    probe.py and discrepancy.py use the same list."""
    errors = [RunError]
    for mod, name in (("backbones", "BackboneError"), ("data", "DataError"), ("embedders", "EmbedderError"),
                      ("predictors", "PredictorError"), ("losses", "LossError"), ("meta", "MetaGradError")):
        try:
            errors.append(getattr(__import__(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)                   # argparse: usage + one line, exit 2
    errors = expected_errors()
    try:
        run(resolve_config(args))
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE if isinstance(e, NonFiniteLoss) else EXIT_USAGE
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
