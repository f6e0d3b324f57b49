"""train.py: both stages of every method of the MoNA paper, in one command.

    python train.py --task cifar100 --method mona            # the paper's setting (GPU server)
    python train.py --task cifar100 --method mona --demo     # tiny model + synthetic data, CPU, seconds
    torchrun --nproc_per_node=4 train.py --task ecg --method mona

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. This file is the command line and the story of a run, read top to bottom: defaults,
flags, configuration, building the model, stage 1, stage 2, result.json. The loops and the machinery they
need live in modules named for them.

Paper map
---------
| paper                                        | where                                            |
|----------------------------------------------|--------------------------------------------------|
| Eq. (1) vanilla fine-tuning                  | stage2.py `stage2` (every method's stage 2)      |
| Alg. 1 stage 1, Eq. (5)-(6), Eq. (7)/(9)     | stage1.py `stage1` -> meta.meta_grad_exact/taylor |
| §2.2 "Emb" (embedder warm-up)                | stage1.py `stage1`                               |
| §2.2 ORCA (OTDD embedder alignment)          | orca.py `stage1_orca`                            |
| Table 2 baselines                            | `METHODS` (here)                                 |
| App. A.1, Tables 9 / 11 (hyper-parameters)   | data.TASKS (registry) + `STAGE1_DEFAULTS` (here) |
| Fig. 6 (λ, K inner steps), Table 6 ablations | `--lam`, `--inner-steps`, `--outer-loss`, `--no-inner-loss` |
| App. A.1 "basically follow[s] ORCA": the protocol | `--protocol paper` (default) / `strict`; stage2.py  |
| (no equation) seeds, devices, DDP, bf16, checkpoints, resumption | runtime.py                   |

Paper symbol -> code name: φ_e -> `model.embedder` parameters (`phi`), θ_f -> `model.encoder` parameters
(`theta_f`), θ_h -> `model.predictor`, θ^S_e0 -> `source.source_embedder` (frozen), α -> `--alpha`,
λ -> `--lam`, β (stage-1 learning rate) -> `--stage1-lr`, K -> `--inner-steps`.

Protocols (`--protocol`, resolved into the configuration, so a run continues only under its own): "paper" is
ORCA's stage-2 protocol as the paper ran it (data.load_task(protocol="paper"): train + validation merged where
ORCA merged them, no validation split; summed accumulation, per-micro-batch clipping and schedule; the test set
scored every epoch; headline = the last epoch's test score under ORCA's metric, the best test score over epochs
reported apart as ORCA-compatible and optimistic; no best.pt, as nothing is selected). "strict" is ours: a
validation split selects the model (best.pt), averaged accumulation, the corrected metric as headline. Where
the two metric definitions differ, result.json holds both (`variants`) under either protocol (stage2.py).

Only this module declares command-line flags (discrepancy.py and probe.py take the ones they share with it
from `add_shared_arguments`); the library modules take explicit arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from orca import stage1_orca
from runtime import (NonFiniteLoss, RunError, barrier, checkpoint_dict, load_checkpoint, save_atomic,
                     seed_everything, setup_machine, write_text_atomic)
from stage1 import stage1
from stage2 import final_result, stage2


# --------------------------------------------------------------------------------------------------
# Defaults in one visible block
# --------------------------------------------------------------------------------------------------
# Each method: which stage 1 runs, how the embedder starts ("random": the layers' own initialisation;
# "source": the source's patch embedding tiled over the target channels, embedders.init_embedder_from_source,
# as ORCA's `embedder_init(..., train_embedder=True)`), whether the body is pretrained, whether the body is
# frozen in stage 2. `ref` is where the paper defines it.
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
    orca_samples=2000,  # target samples ORCA's k-means is fitted on (then every training sample is assigned; orca.py)
)
# --demo: tiny random body + synthetic data + a short schedule. A random tiny body needs a larger step than
# the paper's pretrained ones, hence lr 1e-3 with a 1-epoch warm-up (explicit flags still win).
DEMO = dict(epochs=4, stage1_epochs=1, batch_size=8, accum=1, max_train_samples=64, lr=1e-3, warmup_epochs=1,
            source_per_class=2, orca_samples=64)
EXIT_USAGE, EXIT_NONFINITE = 2, 3


# --------------------------------------------------------------------------------------------------
# Command line (train.py's; discrepancy.py and probe.py add the shared options from here)
# --------------------------------------------------------------------------------------------------
def add_shared_arguments(p: argparse.ArgumentParser) -> None:
    """The options train.py, discrepancy.py and probe.py share, declared once with one default each.

    Each help names its default itself (%(default)s), so train.py's ArgumentDefaultsHelpFormatter adds
    nothing and the analyses' plain formatter prints the same text: the three --help outputs agree."""
    g = p.add_argument_group("source model, data and seed (the same in train.py, discrepancy.py and probe.py)")
    g.add_argument("--backbone", metavar="NAME_OR_PATH", default=None,
                   help="source model M^s: a backbones.BACKBONES name or a local folder (default: %(default)s, "
                        "i.e. the (first) checkpoint's when one is read, else the body of §4 for the task's inputs: "
                        "swin_base for 2D, roberta_base for 1D; probe.py, which has no task, takes swin_base)")
    g.add_argument("--weights", metavar="PATH", default=None,
                   help="local weight file/folder for --backbone (no network) (default: %(default)s)")
    g.add_argument("--tiny", action="store_true",
                   help="tiny random-initialised backbone, for tests and the CPU (default: %(default)s)")
    g.add_argument("--data-dir", metavar="DIR", default="data",
                   help="root of the data layout: the tasks' folders and the source surrogates' "
                        "cifar-10-batches-py/ and conll2003/ (README, 'Data') (default: %(default)s)")
    g.add_argument("--synthetic-data", action="store_true",
                   help="synthetic data in the exact shapes of the task and of the source surrogate, no files "
                        "needed (default: %(default)s)")
    g.add_argument("--seed", metavar="S", type=int, default=0,
                   help="seed of everything random: data order and subsamples, random initialisations (--tiny), "
                        "Alg. 2's random (B, π), t-SNE (default: %(default)s, as in ORCA's configs)")


def get_parser() -> argparse.ArgumentParser:
    """train.py's flags; defaults are shown by --help (ArgumentDefaultsHelpFormatter)."""
    p = argparse.ArgumentParser(
        description="MoNA (ICML 2024) and its baselines: stage 1 (embedder) + stage 2 (fine-tuning).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("what to run")
    g.add_argument("--task", required=True, help="a task of data.TASKS (Tables 8, 10) or 'custom'")
    g.add_argument("--method", default="mona", help="one of: " + ", ".join(METHODS))
    g.add_argument("--download", action="store_true",
                   help="download missing files where a stable public URL exists (CIFAR, PDEBench), checked by MD5")
    g.add_argument("--out", default=None, help="output folder (default runs/<task>-<method>)")
    g.add_argument("--stage", default="all", choices=["1", "2", "all"], help="run stage 1, stage 2 or both")
    g.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    g.add_argument("--protocol", default="paper", choices=["paper", "strict"],
                   help="paper: ORCA's stage-2 protocol as the paper ran it (App. A.1): train on train+val where ORCA "
                        "merged them, no validation split, summed accumulation, test scored every epoch, headline = "
                        "last epoch's test score under ORCA's metric; strict: a validation split selects the model "
                        "(best.pt), averaged accumulation, headline under the corrected metric")
    add_shared_arguments(p)
    g = p.add_argument_group("stage 2: fine-tuning, Eq. (1) (defaults: the task's row of Tables 9/11)")
    g.add_argument("--epochs", type=int, default=None, help="stage-2 epochs (Table 9/11 'Epoch')")
    g.add_argument("--batch-size", type=int, default=None, help="Table 9/11 'Batch Size'")
    g.add_argument("--accum", type=int, default=None, help="gradient accumulation (Table 9/11 'Grad. Accum.')")
    g.add_argument("--accum-reduction", default=None, choices=["mean", "sum"],
                   help="sum: ORCA's summed accumulation (the loss is not divided by accum: an effective SGD lr "
                        "×accum, as Table 9's rates were tuned); mean: average the micro-batch losses. "
                        "Default: sum under --protocol paper, mean under strict")
    g.add_argument("--lr", type=float, default=None, help="stage-2 learning rate (Table 9/11)")
    g.add_argument("--weight-decay", type=float, default=None, help="Table 9/11 'Weight Decay'")
    g.add_argument("--max-train-samples", type=int, default=None, help="subsample the training split")
    g = p.add_argument_group("stage 1 (MoNA, Emb, ORCA)")
    g.add_argument("--stage1-epochs", type=int, default=None, help="App. A.1: 10 (ORCA: its own 60, NinaPro 100)")
    g.add_argument("--stage1-batch-size", type=int, default=None,
                   help="target samples per stage-1 batch (MoNA, Emb; ORCA: the granularity of its per-class draws). "
                        "The paper does not state it; default: the stage-2 --batch-size, as ORCA's stage 1 uses its "
                        "task batch size")
    g.add_argument("--stage1-lr", type=float, default=None,
                   help="β, stage-1 learning rate (App. A.1: AdamW 3e-5; ORCA: the stage-2 optimizer at the stage-2 "
                        "lr ×10 when ≤ 1e-3)")
    g.add_argument("--stage1-weight-decay", type=float, default=None,
                   help="stage-1 weight decay (App. A.1: 0.1; ORCA: the stage-2 weight decay)")
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
    # Summed accumulation is part of the paper's protocol (ORCA's `train_one_epoch`), averaging of ours;
    # an explicit --accum-reduction wins in both
    cfg["accum_reduction"] = cfg["accum_reduction"] or ("sum" if cfg["protocol"] == "paper" else "mean")
    for k in ("epochs", "batch_size", "accum", "lr", "weight_decay", "stage1_epochs", "max_train_samples",
              "stage1_batch_size", "stage1_lr"):
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
    if cfg["stage1_epochs"] is None:              # ORCA's own stage 1: 60 epochs, NinaPro 100 (`embedder_epochs`)
        cfg["stage1_epochs"] = spec.orca_epochs if cfg["method"] == "orca" else spec.stage1_epochs
    # Stage-1 target batch: the paper does not state it; ORCA's stage 1 draws its target classes with the task's
    # batch size (`load_by_class` in src/embedder.py), so the stage-2 batch size is the default (Table 9/11)
    cfg["stage1_batch_size"] = cfg["stage1_batch_size"] or cfg["batch_size"]
    cfg["orca_maxsamples"] = spec.orca_maxsamples      # ORCA's per-class cap (`maxsamples`: 128; PSICOV, DeepSEA 64)
    if cfg["method"] == "orca":
        # ORCA's stage 1 (`get_optimizer_scheduler(module='embedder')`, src/task_configs.py): the task's stage-2
        # optimizer and weight decay, lr ×10 when lr ≤ 1e-3; --stage1-lr / --stage1-weight-decay replace them
        if cfg["stage1_lr"] is None:
            cfg["stage1_lr"] = cfg["lr"] * 10 if cfg["lr"] <= 1e-3 else cfg["lr"]
        if cfg["stage1_weight_decay"] is None:
            cfg["stage1_weight_decay"] = cfg["weight_decay"]
    for k in ("stage1_lr", "stage1_weight_decay"):     # MoNA / Emb: AdamW, App. A.1
        if cfg[k] is None:
            cfg[k] = getattr(spec, k)
    return cfg


# --------------------------------------------------------------------------------------------------
# Building the pieces: task, source model θ^S, target model g_θ = h ∘ f ∘ e
# --------------------------------------------------------------------------------------------------
def build_run(cfg: dict, m: dict):
    import backbones, data, predictors
    td = data.load_task(cfg["task"], cfg["data_dir"], protocol=cfg["protocol"], synthetic=cfg["synthetic_data"],
                        download=cfg["download"], max_train_samples=cfg["max_train_samples"], seed=cfg["seed"])
    spec = td.spec
    fill_from_spec(cfg, spec)
    method = METHODS[cfg["method"]]
    cfg["backbone"] = cfg["backbone"] or DEFAULT_BACKBONE[spec.dim]
    seed_everything(cfg["seed"])                       # the same random embedder/head for every method
    source = backbones.build_backbone(cfg["backbone"], tiny=cfg["tiny"], weights=cfg["weights"],
                                      pretrained=method["pretrained"])
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


# --------------------------------------------------------------------------------------------------
# The run: both stages, checkpoints, resumption, result.json
# --------------------------------------------------------------------------------------------------
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
        check_same_run(emb["config"], cfg, emb_path, keys=("task", "method", "backbone", "tiny", "synthetic_data",
                                                              "protocol"))
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
        kind = METHODS[cfg["method"]]["stage1"]
        if kind == "orca":                             # §2.2: ORCA's OTDD alignment (orca.py)
            stage1_orca(cfg, m, model, source, td, spec, state, log)
        else:                                          # Alg. 1 (MoNA) or the Emb warm-up (stage1.py)
            stage1(cfg, m, model, source, td, spec, state, log, kind=kind)
        if m["main"]:
            save_atomic(checkpoint_dict(cfg, model, stage=1, epoch=cfg["stage1_epochs"] - 1), emb_path)
        state = {}
    n_train, n_val, n_test = td.info["sizes"]
    result = {"task": cfg["task"], "method": cfg["method"], "protocol": cfg["protocol"], "metric": spec.metric,
              "lower_is_better": True, "n_train": n_train, "n_val": n_val, "n_test": n_test}
    if cfg["stage"] in ("2", "all"):
        if METHODS[cfg["method"]]["frozen"]:           # Table 2 "Frozen-encoder": the body is not trained
            for p in model.encoder.parameters():
                p.requires_grad_(False)
        best = stage2(cfg, m, model, td, spec, state, log)
        if m["main"]:                                  # test scores under both metric definitions (stage2.py)
            result.update(final_result(cfg, model, td, spec, best, m["device"]))
    result.update(epochs=cfg["epochs"], stage1_epochs=cfg["stage1_epochs"] if has_stage1 else 0,
                  seconds=round(time.time() - t_start, 2), config=cfg)
    if m["main"]:
        write_text_atomic(json.dumps(result, indent=2) + "\n", os.path.join(out, "result.json"))
        if "test" in result:
            print(summary_line(result, out), flush=True)
    barrier(m)
    return result


def summary_line(r: dict, out: str) -> str:
    """The run's one-line summary: the protocol, and which number is which."""
    which = f"{r['metric_variant']} metric" if "variants" in r else "paper and corrected metrics coincide"
    head = f"{r['task']} / {r['method']} [--protocol {r['protocol']}]: test {r['metric']} ({which})"
    if r["protocol"] == "paper":
        line = (f"{head} = {r['test']:.4g} at the last epoch (headline); best test over epochs "
                f"{r['test_best_on_test']:.4g} (ORCA-compatible, optimistic)")
    else:
        line = (f"{head} = {r['test']:.4g} for the model chosen on validation (epoch {r['best_epoch']}); "
                f"last epoch {r['test_last']:.4g}")
    other = {"paper": "corrected", "corrected": "paper"}[r["metric_variant"]]
    if "variants" in r:
        v = r["variants"][other]
        line += f"; {other} metric ({v['metric']}): {v['test']:.4g}"
    return f"{line}; {r['seconds']:.1f} s -> {out}/result.json"


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
