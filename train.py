"""train.py: every method of the MoNA paper, both stages, in one command.

    python train.py --task cifar100 --method mona            # the paper's setting (GPU server)
    python train.py --task cifar100 --method mona --demo     # tiny model + synthetic data, CPU, seconds
    torchrun --nproc_per_node=4 train.py --task ecg --method mona

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. `run()` tells a run's story in the paper's order: the task and the model, stage 1, stage 2,
the result. Above it, every default in one block; below it, how the model is built, how flags and the task's
registry row become one configuration, and the command line. Resume checks, the run's files and one-line
errors live in support/ (runs.py, cli.py), out of the story.

Paper map
---------
| paper                                        | where                                            |
|----------------------------------------------|--------------------------------------------------|
| Table 2 methods                              | `METHODS` (here)                                 |
| Alg. 1 stage 1 (one iteration)               | stage1.py `mona_step` -> meta.py (Eq. 3, 5-9)    |
| §2.2 "Emb" (embedder warm-up)                | stage1.py `emb_step`                             |
| §2.2 ORCA (OTDD embedder alignment)          | orca.py `stage1_orca`                            |
| Eq. (1) fine-tuning (every method's stage 2) | stage2.py `stage2`                               |
| App. A.1, Tables 9 / 11 (hyper-parameters)   | data.TASKS (registry) + `STAGE1_DEFAULTS` (here) |
| Fig. 6 (λ, K inner steps), Table 6 ablations | `--lam`, `--inner-steps`, `--outer-loss`, `--no-inner-loss` |
| the two protocols (`--protocol`)             | stage2.py (its docstring explains both)          |

Paper symbol -> code name: φ_e -> `model.embedder` parameters (`phi`), θ_f -> `model.encoder` parameters
(`theta_f`), θ_h -> `model.predictor`, θ^S_e0 -> `source.source_embedder` (frozen), α -> `--alpha`,
λ -> `--lam`, β (stage-1 learning rate) -> `--stage1-lr`, K -> `--inner-steps`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import backbones
import data
import predictors
from orca import stage1_orca
from readers.custom import CUSTOM_DEFAULTS
from stage1 import stage1, stage1_epochs_for
from stage2 import final_result, stage2
from support import cli, demo, runs
from support.runtime import RunError, is_main_process, quiet_libraries, seed_everything, setup_machine


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
# Stage 1 epochs / AdamW lr β / weight decay come from the registry (data.TaskSpec.stage1_*: App. A.1,
# 10 epochs, 3e-5, 0.1); the rest of stage 1 is set here.
STAGE1_DEFAULTS = dict(
    lam=0.5,          # λ, Eq. (5); Fig. 6(a)(b): best in [0.3, 0.5]
    inner_steps=1,    # K; §4.4: "we adopt the single step update"
    meta="exact", hvp="autograd", outer_loss="align_uniform",
    source_classes=10,  # source batch = classes × per-class samples, class-balanced (positives exist)
    source_per_class=4,
    orca_samples=2000,  # target samples ORCA's k-means is fitted on (then every training sample is assigned; orca.py)
)
# Flags only some methods read (ignored by the others, with a note): flag -> the methods that read them
_S1 = ("orca", "emb", "mona")
_PHI_S1 = ("emb", "mona")        # stage 1 = steps of φ on the target loss (stage1.py); ORCA's is OTDD (orca.py)
METHOD_FLAGS = dict(stage1_epochs=_S1, stage1_steps=_PHI_S1, stage1_batch_size=_S1, stage1_lr=_S1,
                    stage1_weight_decay=_S1, stage1_train_head=_PHI_S1, source_dir=("orca", "mona"),
                    **{k: ("mona",) for k in ("alpha", "lam", "inner_steps", "meta", "hvp", "cache_outer_grad",
                                              "outer_loss", "no_inner_loss")})
# --demo: a tiny body pretrained for a few seconds on the synthetic source of its modality (support/demo.py), task
# data made of the same primitives (readers/primitives.py; DEMO_SIZES train / val / test samples) and a short
# schedule. A tiny body needs larger steps than the paper's pretrained ones: stage-2 lr 1e-3 with a 1-epoch
# warm-up, and stage-1 lr 1e-3 (at the registry's 3e-5, one epoch of steps barely moves φ). Explicit flags win.
DEMO = dict(epochs=4, stage1_epochs=1, batch_size=8, accum=1, lr=1e-3, warmup_epochs=1,
            stage1_lr=1e-3, source_per_class=2, orca_samples=64)
DEMO_SIZES = (128, 64, 256)
# --demo's α per modality, so that MoNA's meta term is a visible share of φ's gradient (stage-1 meta_ratio): at
# the default α = 0.01 it is ~0.008 (2D) and ~0.0008 (1D), i.e. stage 1 is Emb's; the tiny 1D body's mixed
# second derivative is ~100× smaller than the 2D one's, hence α = 1 there (meta_ratio ~0.1; 2D at 0.1: ~0.6)
DEMO_ALPHA = {"2d": 0.1, "1d": 1.0}
# --tiny on your own data: the tiny body is random, so stage 2 trains it from scratch, which needs the demo's step
# size; the custom default 1e-4 is a fine-tuning rate for pretrained bodies (a 3-class sine task stayed at chance,
# 61-69 % error, with it, and reached 2-3 % at 1e-3)
TINY_CUSTOM_LR = 1e-3


# --------------------------------------------------------------------------------------------------
# One run, in the paper's order
# --------------------------------------------------------------------------------------------------
def run(cfg: dict, progress: dict | None = None) -> dict:
    """One run of a Table 2 method: the task and the model, stage 1, stage 2, the result. `progress` is filled in
    as the run goes (the stage, the epoch rows), so that main() can say where a Ctrl-C stopped it."""
    m = setup_machine(cfg)
    quiet_libraries(m, cfg)
    state = runs.saved_state(cfg, m)               # --resume / --stage 2: what an earlier run left in --out
    if state.get("finished"):                      # --resume on a run that wrote its result.json: nothing to do
        return runs.finished_result(cfg, m, state["finished"])
    method = METHODS[cfg["method"]]

    # The target task (Tables 8-11) and the model g_θ = h ∘ f ∘ e around the source body θ^S (§2.1, App. A.2)
    td, spec, source, model = build_run(cfg, m)
    runs.restore(state, cfg, model, has_stage1=method["stage1"] is not None)
    log = runs.RunLog(cfg, m, model, state, {} if progress is None else progress)

    # Stage 1: only the target embedder φ_e learns, the body stays at θ^S_f0: MoNA's Alg. 1, Emb's warm-up
    # (§2.2) or ORCA's OTDD alignment
    if method["stage1"] and cfg["stage"] in ("1", "all") and state.get("stage", 1) == 1:
        log.stage(1)
        if method["stage1"] == "orca":
            stage1_orca(cfg, m, model, source, td, spec, state, log.log)
        else:
            stage1(cfg, m, model, source, td, spec, state, log.log, kind=method["stage1"])
        log.save_embedder()
        state = {}

    # Stage 2: Eq. (1), fine-tune g_θ on the target task (Frozen-encoder: the body stays fixed)
    n_train, n_val, n_test = td.info["sizes"]
    result = {"task": cfg["task"], "method": cfg["method"], "protocol": cfg["protocol"], "metric": spec.metric,
              "lower_is_better": True, "n_train": n_train, "n_val": n_val, "n_test": n_test}
    if cfg["stage"] in ("2", "all"):
        log.stage(2)
        if method["frozen"]:
            for p in model.encoder.parameters():
                p.requires_grad_(False)
        best = stage2(cfg, m, model, td, spec, state, log.log)
        if m["main"]:                                  # the test score under both metric definitions (stage2.py)
            result.update(final_result(cfg, model, td, spec, best, m["device"]))

    # The result: result.json and one summary line
    result.update(epochs=cfg["epochs"], stage1_epochs=cfg["stage1_epochs"] if method["stage1"] else 0)
    return log.write_result(result)


# --------------------------------------------------------------------------------------------------
# Building the pieces: task, source model θ^S, target model g_θ = h ∘ f ∘ e
# --------------------------------------------------------------------------------------------------
def build_run(cfg: dict, m: dict):
    custom = {k: cfg[k] for k in ("target_kind", "patch_length") if cfg.get(k) is not None}   # --task custom
    td = data.load_task(cfg["task"], cfg["data_dir"], protocol=cfg["protocol"], synthetic=cfg["synthetic_data"],
                        download=cfg["download"], max_train_samples=cfg["max_train_samples"], seed=cfg["seed"],
                        **custom, **(dict(demo=True, synthetic_sizes=DEMO_SIZES) if cfg["demo"] else {}))
    spec = td.spec
    if cfg["task"] == "custom" and m["main"]:
        print(data.describe_task(td), flush=True)     # what was inferred from the files
    fill_from_spec(cfg, spec)
    if cfg.get("stage1_steps"):                    # steps -> the passes over the training set that hold them
        cfg["stage1_epochs"] = stage1_epochs_for(cfg["stage1_steps"], len(td.train), cfg["stage1_batch_size"],
                                                 m["world"])
    method = METHODS[cfg["method"]]
    cfg["backbone"] = cfg["backbone"] or backbones.DEFAULT_BACKBONE[spec.dim]
    weights = cfg["weights"]
    if cfg["demo"] and weights is None and cfg["backbone"] in backbones.BACKBONES:
        weights = cfg["demo_body"] = demo.demo_body(cfg["backbone"])
        if m["main"]:
            print(demo.describe(weights), flush=True)
    seed_everything(cfg["seed"])                       # the same random embedder/head for every method
    source = backbones.build_backbone(cfg["backbone"], tiny=cfg["tiny"], weights=weights,
                                      pretrained=method["pretrained"])
    if source.modality != spec.dim:
        raise RunError(f"--backbone {cfg['backbone']} is a {source.modality.upper()} body but task "
                       f"{spec.name} takes {spec.dim.upper()} inputs (use {backbones.DEFAULT_BACKBONE[spec.dim]})")
    if spec.dim == "1d" and spec.target_seq_len > source.max_tokens and cfg.get("patch_length"):
        raise RunError(f"--patch-length {cfg['patch_length']} gives {spec.target_seq_len} tokens but {cfg['backbone']} "
                       f"takes at most {source.max_tokens}: use a longer --patch-length (or drop it)")
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
# Configuration: flags, --demo and the task's registry row -> one flat dict
# --------------------------------------------------------------------------------------------------
def resolve_config(args: argparse.Namespace) -> dict:
    """Merge the task's registry row, the method, --demo and explicit flags into one flat dict."""
    if args.method not in METHODS:
        raise RunError(f"unknown --method {args.method!r}; choose one of: {', '.join(METHODS)}")
    if args.task != "custom" and args.task not in data.TASKS:
        raise RunError(f"unknown --task {args.task!r}; choose one of: {', '.join(data.TASKS)}, custom")
    if args.task == "custom" and (args.demo or args.synthetic_data):
        raise RunError("--task custom has no synthetic data (it is your files in --data-dir): drop --demo and "
                       "--synthetic-data (--tiny alone gives the tiny body)")
    if args.stage == "1" and METHODS[args.method]["stage1"] is None:
        raise RunError(f"--stage 1: --method {args.method} has no stage 1 (only {', '.join(_S1)} have one); "
                       f"drop --stage 1")
    cfg = dict(vars(args))
    if args.demo:                                  # tiny + synthetic + short schedule; explicit flags win
        cfg["tiny"] = cfg["synthetic_data"] = True
        for k, v in DEMO.items():
            # ORCA keeps its own stage-1 lr rule; an explicit --stage1-steps replaces the demo's stage-1 epochs
            if cfg.get(k) is None and not (k == "stage1_lr" and args.method == "orca") \
                    and not (k == "stage1_epochs" and cfg.get("stage1_steps")):
                cfg[k] = v
    for k, v in STAGE1_DEFAULTS.items():           # MoNA's settings not given (some have no flag)
        if cfg.get(k) is None:                     # α: the task's (data.TaskSpec.alpha) or --demo's, fill_from_spec
            cfg[k] = v
    cfg["source_dir"] = cfg["source_dir"] or cfg["data_dir"]
    cfg["method_ref"] = METHODS[args.method]["ref"]
    if cfg["backbone"] and not os.path.exists(cfg["backbone"]):
        if cfg["backbone"] not in backbones.BACKBONES and (os.sep in cfg["backbone"] or cfg["backbone"].startswith(".")):
            raise RunError(f"--backbone {cfg['backbone']!r}: no such folder; pass a name of backbones.BACKBONES "
                           f"({', '.join(backbones.BACKBONES)}) or an existing local folder")
    if cfg["weights"] and not os.path.exists(cfg["weights"]):
        raise RunError(f"--weights {cfg['weights']!r}: no such file or folder")
    # Summed accumulation is part of the paper's protocol (ORCA's `train_one_epoch`), averaging of ours;
    # an explicit --accum-reduction wins in both
    cfg["accum_reduction"] = cfg["accum_reduction"] or ("sum" if cfg["protocol"] == "paper" else "mean")
    if cfg["cache_outer_grad"] and cfg["meta"] != "taylor":
        raise RunError("--cache-outer-grad needs --meta taylor (the exact form needs ∇L_outer at θ_f*)")
    cfg["out"] = cfg["out"] or os.path.join("runs", f"{args.task}-{args.method}")
    _check_out(cfg["out"])
    return cfg


def _check_out(out: str) -> None:
    """--out must be a folder, or a path a folder can be made at: a file there (or above it) stops the run before
    any training, in one line, instead of after the first epoch when the first checkpoint is written."""
    path = os.path.abspath(out)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        where = "is" if path == os.path.abspath(out) else f"lies under {path!r}, which is"
        raise RunError(f"--out {out!r} {where} a file, not a folder: a run writes a folder of files (result.json, "
                       f"metrics.jsonl, checkpoints); pass a folder path")


def fill_from_spec(cfg: dict, spec) -> dict:
    """Stage-2 defaults from the task's registry row (Tables 9/11); flags the user gave win."""
    epochs_given = cfg["epochs"] is not None
    if cfg["lr"] is None and cfg["tiny"] and cfg["task"] == "custom":
        cfg["lr"] = TINY_CUSTOM_LR
    for k in ("epochs", "batch_size", "accum", "lr", "weight_decay"):
        if cfg[k] is None:
            cfg[k] = getattr(spec, k)
    cfg["optimizer"], cfg["momentum"], cfg["clip"] = spec.optimizer, spec.momentum, spec.clip
    cfg.setdefault("warmup_epochs", spec.warmup_epochs)   # ORCA's WarmupLR (--demo: 1 epoch)
    # ORCA's linear decay reaches lr 0 at decay_epochs: with --epochs N (and --demo) over the N epochs run, as a
    # user who shortens a run expects the schedule to shorten with it; without --epochs the registry's length (the
    # paper's commands, unchanged), at least the epochs run (else every epoch past it would train at lr 0);
    # --decay-epochs wins
    if cfg.get("decay_epochs") is None:
        cfg["decay_epochs"] = cfg["epochs"] if cfg["demo"] or epochs_given else max(spec.decay_epochs, cfg["epochs"])
    elif cfg["decay_epochs"] <= cfg["warmup_epochs"]:
        raise RunError(f"--decay-epochs {cfg['decay_epochs']} must exceed the task's warm-up of {cfg['warmup_epochs']} "
                       f"epochs (the lr rises over the warm-up, then decays linearly to 0 at --decay-epochs)")
    cfg["betas"] = list(spec.betas)
    if cfg["alpha"] is None:                       # --demo: per modality; else the task's (paper: 0.01)
        cfg["alpha"] = DEMO_ALPHA[spec.dim] if cfg["demo"] else spec.alpha
    if cfg.get("stage1_steps") and cfg.get("stage1_epochs"):
        raise RunError("give --stage1-steps or --stage1-epochs, not both (one sets the length of stage 1)")
    if cfg["stage1_epochs"] is None:              # ORCA's own stage 1: 60 epochs, NinaPro 100 (`embedder_epochs`)
        cfg["stage1_epochs"] = spec.orca_epochs if cfg["method"] == "orca" else spec.stage1_epochs
        # your own data: MoNA / Emb count stage 1 in optimizer steps (spec.stage1_steps), so that a small training
        # set still gets a stage 1 that moves φ (App. A.1's 10 epochs over 50 samples are 20 steps)
        if cfg.get("stage1_steps") is None and cfg["method"] in _PHI_S1 and not cfg["demo"]:
            cfg["stage1_steps"] = spec.stage1_steps
    if cfg["method"] not in _PHI_S1:
        cfg["stage1_steps"] = None                 # ORCA takes one step per epoch: its length is in epochs
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
# Command line (only train.py's own flags; the options the three tools share are support/cli.py's)
# --------------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    """train.py's flags; --help shows each default once (DefaultsHelpFormatter)."""
    p = cli.OneLineParser(prog="train.py", formatter_class=cli.DefaultsHelpFormatter,
                      description="MoNA (ICML 2024) and its baselines: stage 1 (embedder) + stage 2 (fine-tuning).")
    g = p.add_argument_group("what to run")
    g.add_argument("--task", required=True, help="a task of data.TASKS (Tables 8, 10) or 'custom'")
    g.add_argument("--method", default="mona", help="one of: " + ", ".join(METHODS))
    g.add_argument("--download", action="store_true",
                   help="download missing files where a stable public URL exists (CIFAR, PDEBench), checked by MD5")
    g.add_argument("--out", default=None, help="output folder (default: runs/<task>-<method>)")
    g.add_argument("--stage", default="all", choices=["1", "2", "all"], help="run stage 1, stage 2 or both")
    g.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    g.add_argument("--protocol", default="paper", choices=["paper", "strict"],
                   help="paper: ORCA's protocol as the paper ran it (App. A.1), headline = the last epoch's test score; "
                        "strict: the model selected on a validation split, corrected metrics (README, 'Two protocols'; "
                        "stage2.py)")
    cli.add_shared_arguments(p)
    g = p.add_argument_group("your own data (--task custom)")
    g.add_argument("--target-kind", default=None, choices=["classification", "multilabel", "regression", "dense"],
                   help="override the kind inferred from train_y.npy (default: inferred; the start-up line says what)")
    g.add_argument("--patch-length", metavar="N", type=cli.pos_int, default=None,
                   help="1D inputs: values per token along L (the 1D embedder's patch; default: data.py's rule, "
                        "several values per token)")
    g = p.add_argument_group("stage 2: fine-tuning, Eq. (1) (defaults: the task's row of Tables 9/11)")
    g.add_argument("--epochs", type=cli.pos_int, default=None, help="stage-2 epochs (Table 9/11 'Epoch')")
    g.add_argument("--batch-size", type=cli.pos_int, default=None, help="Table 9/11 'Batch Size'")
    g.add_argument("--accum", type=cli.pos_int, default=None, help="gradient accumulation (Table 9/11 'Grad. Accum.')")
    g.add_argument("--accum-reduction", default=None, choices=["mean", "sum"],
                   help="sum: ORCA's summed accumulation (the loss is not divided by accum: an effective SGD lr "
                        "×accum, as Table 9's rates were tuned); mean: average the micro-batch losses. "
                        "Default: sum under --protocol paper, mean under strict")
    g.add_argument("--lr", type=cli.pos_float, default=None,
                   help="stage-2 learning rate (Table 9/11; --task custom: 1e-4, or 1e-3 with --tiny, whose random "
                        "body trains from scratch); metrics.jsonl's `lr` is the rate of each epoch's last optimizer step")
    g.add_argument("--weight-decay", type=cli.nonneg_float, default=None, help="Table 9/11 'Weight Decay'")
    g.add_argument("--decay-epochs", type=cli.pos_int, default=None,
                   help="epochs over which ORCA's warm-up + linear decay takes the lr to 0 (default: --epochs when "
                        "given, so a shortened run decays over its own epochs; else the task's registry value)")
    g.add_argument("--max-train-samples", type=cli.pos_int, default=None, help="subsample the training split")
    g = p.add_argument_group("stage 1 (MoNA, Emb, ORCA; the other methods ignore these flags, with a note)")
    g.add_argument("--stage1-epochs", type=cli.pos_int, default=None,
                   help="stage-1 epochs. The paper says both 10 (App. A.1) and 'only 5' (§4.4); default: App. A.1's "
                        "10 (--stage1-epochs 5 for §4.4's reading); ORCA: its own 60, NinaPro 100")
    g.add_argument("--stage1-steps", type=cli.pos_int, default=None,
                   help="MoNA / Emb: stage-1 length in optimizer steps instead of epochs (the training set is "
                        "cycled, the last pass cut short); default: the paper tasks count epochs (--stage1-epochs), "
                        f"--task custom runs {CUSTOM_DEFAULTS['stage1_steps']} steps (bench/README.md: the stage-1 sweep)")
    g.add_argument("--stage1-batch-size", type=cli.pos_int, default=None,
                   help="target samples per stage-1 batch (MoNA, Emb; ORCA: the granularity of its per-class draws). "
                        "The paper does not state it; default: the stage-2 --batch-size, as ORCA's stage 1 uses its "
                        "task batch size")
    g.add_argument("--stage1-lr", type=cli.pos_float, default=None,
                   help="β, stage-1 learning rate (default: App. A.1's AdamW 3e-5; --task custom: "
                        f"{CUSTOM_DEFAULTS['stage1_lr']}; ORCA: the stage-2 optimizer at the stage-2 lr ×10 when "
                        "≤ 1e-3)")
    g.add_argument("--stage1-weight-decay", type=cli.nonneg_float, default=None,
                   help="stage-1 weight decay (default: App. A.1's 0.1; ORCA: the stage-2 weight decay)")
    g.add_argument("--stage1-train-head", action="store_true",
                   help="also train the predictor θ_h in stage 1 (paper: only φ_e)")
    g.add_argument("--source-dir", metavar="DIR", default=None,
                   help="MoNA / ORCA: the source surrogate's folder, DIR/cifar-10-batches-py/ (2D bodies) or "
                        "DIR/conll2003/eng.train (1D bodies, tokenized with the body's tokenizer) (default: --data-dir)")
    g.add_argument("--alpha", type=cli.nonneg_float, default=None,
                   help=f"α, virtual SGD step of Eq. (3); NOT given in the paper. Default: the paper tasks 0.01, --task "
                        f"custom {CUSTOM_DEFAULTS['alpha']}, which won a sweep on small validation sets by one to three "
                        f"samples (bench/README.md); on your task try 0.01, 0.1, 1 under --protocol strict; "
                        f"--demo: {DEMO_ALPHA['2d']} for 2D bodies, {DEMO_ALPHA['1d']} for 1D. Stage-1 rows log "
                        "meta_ratio = ‖λ·meta term‖ / ‖∇_φ L_inner‖ (near 0, stage 1 acts as Emb's: raise --alpha or "
                        "--lam)")
    g.add_argument("--lam", type=cli.nonneg_float, default=STAGE1_DEFAULTS["lam"], help="λ of Eq. (5); Fig. 6: [0.3, 0.5]")
    g.add_argument("--inner-steps", type=cli.pos_int, default=STAGE1_DEFAULTS["inner_steps"],
                   help="K virtual steps (Fig. 6c); the paper uses 1")
    g.add_argument("--meta", default=STAGE1_DEFAULTS["meta"], choices=["exact", "taylor"],
                   help="exact: Eq. (7) differentiated through the virtual step; taylor: Eq. (9), App. A.3 (memory, "
                        "FLOPs and the flags that fit each card: bench/README.md, 'The paper's scale')")
    g.add_argument("--hvp", default=STAGE1_DEFAULTS["hvp"], choices=["autograd", "finite_difference"],
                   help="Hessian-vector product by double backward or by finite differences (DDP/flash-safe; "
                        "memory per card: bench/README.md, 'The paper's scale')")
    g.add_argument("--cache-outer-grad", action="store_true",
                   help="taylor only: compute ∇θf L_outer(θ_f0) once (θ_f is fixed in stage 1) and reuse it")
    g.add_argument("--outer-loss", default=STAGE1_DEFAULTS["outer_loss"],
                   choices=["align_uniform", "supcon", "davies_bouldin"],
                   help="L_outer: Eq. (4) (minimisation form) or a Table 6 ablation")
    g.add_argument("--no-inner-loss", action="store_true", help="Table 6 ablation: drop L_inner from Eq. (5)")
    g = p.add_argument_group("machine")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available")
    g.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: bf16 autocast (on the CPU too, where it is often slower than fp32)")
    g.add_argument("--workers", type=cli.nonneg_int, default=0, help="DataLoader worker processes")
    g.add_argument("--demo", action="store_true",
                   help="--tiny + --synthetic-data + a short schedule, with a tiny body pretrained for a few seconds "
                        "on the synthetic source (support/demo.py; cached) so that the methods differ (CPU, seconds)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    return p


def unread_flags_note(args: argparse.Namespace) -> str | None:
    """A note naming the flags set (off their defaults) that the chosen method never reads (its stage 1 has no
    such setting, or it has no stage 1): they cannot change the run, so they are ignored, not refused (a loop over
    methods may share flags)."""
    p = get_parser()
    given = [k for k, users in METHOD_FLAGS.items() if args.method not in users and getattr(args, k) != p.get_default(k)]
    if not given:
        return None
    users = [m for m in METHODS if any(m in METHOD_FLAGS[k] for k in given)]
    flags = ", ".join("--" + k.replace("_", "-") for k in given)
    return f"note: {flags} ignored: read only by --method {' / '.join(users)}, not by --method {args.method}"


def main(argv=None) -> int:
    """python train.py ...: 0 on success; a bad flag or an expected mistake one line and 2, a non-finite loss 3,
    Ctrl-C 130 (support/cli.py)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_parser().parse_args(argv)                   # a bad flag: one line, exit 2
    note = unread_flags_note(args)
    if note and is_main_process():
        print(note, file=sys.stderr)
    progress: dict = {}
    return cli.run_command(lambda: run(resolve_config(args), progress),
                           interrupted=lambda: runs.interrupted_line(progress, argv))


if __name__ == "__main__":
    sys.exit(main())
