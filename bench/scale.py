"""The paper's scale without a GPU: FLOPs, peak memory and GPU hours of every task, method and meta-gradient mode,
one step each through the REAL Swin-B / RoBERTa-base architectures (random weights, built offline). Not a test.

    python bench/scale.py                 # every task; writes bench/results/scale.json
    python bench/scale.py cifar100 ecg    # some tasks (the file's records of other tasks are kept, so runs over
                                          # disjoint task lists may run side by side)
    python bench/scale.py --validate      # only the check of the memory estimate against the CPU allocator (2 min)
    python bench/scale.py --table         # only the README tables, from the file

Cost: 30–35 min of CPU time on one core, most of it fake-tensor dispatch (1-2 min per task) and the real
5,000 × 5,000 Sinkhorn of ORCA's OTDD source side (4-8 min, once per body width).

What one record is: task × method × (MoNA: meta-gradient mode) × stage × precision. A stage-1 record is ONE stage-1
update as the project runs it (MoNA: `stage1.mona_step`, which calls meta.py; Emb: `stage1.emb_step`; ORCA: one
epoch of `orca.stage1_orca`, which takes one optimizer step per epoch); a stage-2 record is ONE micro-batch of
`stage2.stage2`'s loop body (forward, backward, the paper protocol's per-micro-batch clipping; the optimizer step
is in the memory, not in the FLOPs). scratch / finetune / finetune++ and the stage 2 of orca / emb / mona train
the same parameters of the same architecture, so they share one stage-2 simulation; frozen has its own.

How it is measured
------------------
Every step runs the project's own code (backbones.build_backbone(pretrained=False), predictors.build_target_model,
stage1.mona_step / emb_step, meta.py, orca.OTDDLoss, the task loss of losses.task_objective) on FAKE tensors
(torch._subclasses.fake_tensor.FakeTensorMode): shapes, dtypes and autograd graphs as on a GPU, no arithmetic, so
a Swin-B step at the paper's batch costs seconds. The real model is built once per body on the CPU and its tensors
are swapped for fake ones (`fake_parameters`).
- FLOPs: torch.utils.flop_counter.FlopCounterMode, its convention: matrix products and convolutions (mm, bmm,
  addmm, baddbmm, convolution and their backward), 2 FLOPs per multiply-add; elementwise work (softmax, GELU,
  LayerNorm, the Sinkhorn iterations of ORCA's OTDD) is not counted. Double backward is counted as what autograd
  really dispatches: the second-order pass of `--hvp autograd` runs the backward of the backward graph, whose matrix
  products FlopCounterMode counts like any others (a double backward through a matmul is a few more matmuls), so
  no factor is assumed anywhere.
- Peak memory: `LiveBytes`, a TorchDispatchMode that adds the bytes of every new tensor storage an op returns
  (rounded up to 512 B, the CUDA caching allocator's block) and subtracts them when the storage is freed (a weak
  reference's callback), starting from the resident state: every parameter and buffer of the target model and the
  source model (train.py puts both on the device), and the optimizer state (created before the measured step). The
  peak is what torch.cuda.max_memory_allocated() would report for the same sequence of ops; the CUDA context
  (~0.5 GiB) and allocator fragmentation (reserved − allocated) come on top (`usable_bytes`).
  Data-dependent values do not exist on fake tensors: `.item()` gives NaN (float; every `x > limit` check passes,
  isfinite checks get True), 0 (int) or True (bool), and boolean-mask indexing takes its upper bound (all True;
  only the uniformity term of the outer loss uses one: n² instead of n(n − 1) entries).
- Checked against a real measurement: `--validate` runs the same steps on real CPU tensors at small batches and
  compares LiveBytes' peak with the peak of the CPU allocator's own byte count (torch.profiler's memory events),
  which also sees what kernels allocate internally and LiveBytes cannot (workspaces).
- bf16 rows run under CPU autocast: the backward cannot run on fake "cuda" tensors without a CUDA device. CUDA
  autocast keeps softmax / LayerNorm / GELU outputs in float32 where CPU autocast keeps bfloat16, so the CUDA peak
  lies between a bf16 row and its fp32 row; bench/gpu_check.py measures it.
- ORCA's stage 1 never runs the body: the embedder's forward/backward over one class draw runs on fake tensors; the
  OTDD (orca.OTDDLoss: 5,000 source features, the class draw's features) runs on real CPU tensors of the same
  shapes (its Sinkhorn loop and boolean masks need values), and the two peaks are composed (`orca_stage1`).

The whole run: stage 1 of MoNA / Emb = stage-1 epochs × ⌈n_train / stage-1 batch⌉ updates, ORCA = its epochs
(one update each) plus the source side of the OTDD once; stage 2 = epochs × ⌈n_train / batch⌉ micro-batches;
MoNA with --cache-outer-grad adds its 16 source batches once. n_train (`N_TRAIN`, paper protocol) is not in the
registry; where it comes from is written beside each value; ECG's window count is unknown, so its totals are
null. GPU hours = FLOPs / (utilisation × peak): `CARDS`. Evaluation passes are not in the totals (`eval_hours` of
the summary gives CIFAR-100's).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import types
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import backbones  # noqa: E402
import data  # noqa: E402
import losses  # noqa: E402
import orca  # noqa: E402
import predictors  # noqa: E402
import stage1  # noqa: E402
import train  # noqa: E402
from stage2 import make_optimizer  # noqa: E402
from support.runtime import autocast, write_text_atomic  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scale.json")
GiB = 2 ** 30
CUDA_BLOCK = 512                 # bytes: the CUDA caching allocator rounds every block up to a multiple of this

# Training samples per epoch under the paper protocol (data.py's docstring, "Protocols"); not in the registry
N_TRAIN = {
    "cifar100": (50000, "readers/nb360.py: all 50,000 training images"),
    "spherical": (50000, "readers/nb360.py: all 50,000"),
    "ninapro": (3297, "readers/nb360.py: train + val files, 3,297"),
    "fsd50k": (36796, "FSD50K dev split 'train' (Fonseca et al. 2022): 36,796 clips, one item per clip"),
    "darcyflow": (1000, "readers/nb360.py: smooth1[:1000]"),
    "psicov": (3356, "orca.py: 3,356 DeepCov proteins"),
    "cosmic": (4830, "readers/nb360.py: 4,830 training dirs"),
    "ecg": (None, "windows of ORCA's label-dependent stride: count unknown here"),
    "satellite": (900000, "NAS-Bench-360 (Tu et al. 2022): 800,000 train + 100,000 val in satellite_train.npy"),
    "deepsea": (74243, "NAS-Bench-360: x_train 71,753 + x_val 2,490"),
    **{t: (9000, "PDEBench: 90 % of the file's 10,000 samples") for t in
       ("advection", "burgers", "diffusion-reaction-1d", "diffusion-sorption", "navier-stokes-1d", "darcy-pde")},
    **{t: (900, "PDEBench: 90 % of the file's 1,000 samples") for t in ("shallow-water", "diffusion-reaction-2d")},
}
# Dense peaks (TFLOP/s) and the utilisation GPU hours are quoted at. 40 % of the dense tensor-core peak is a typical
# model FLOP utilisation of a well-fed transformer training step; bf16 peaks without sparsity (A100 SXM 312, H100 SXM
# 989). fp32 is the project's default (--precision fp32) and PyTorch leaves TF32 off for matrix products, so fp32
# matmuls run at the non-tensor-core peak (A100 19.5, H100 SXM 67).
UTIL = 0.4
CARDS = {"a100_bf16": 312e12, "h100_bf16": 989e12, "a100_fp32": 19.5e12, "h100_fp32": 67e12}
REFERENCE = "a100_bf16"          # `gpu_hours` of a record; `gpu_hours_by_card` has all four
# Memory a card leaves to tensors: the CUDA context (~0.5 GiB, not in max_memory_allocated) and a 10 % margin for the
# caching allocator's fragmentation (reserved − allocated) are subtracted from the card's size
CARD_GB = (24, 40, 80)
CONTEXT_BYTES = GiB // 2
FRAGMENTATION = 0.10
SOURCE_SURROGATE = 5000          # ORCA's source features (orca.py); source classes: 10 (CIFAR-10) / 4 (CoNLL-2003)
SOURCE_CLASSES = {"cifar10": 10, "conll2003": 4}
CACHE_BATCHES = 16               # stage1.cached_outer_grad's n_batches
MONA_MODES = [("exact", "autograd", False), ("exact", "finite_difference", False), ("taylor", "autograd", False),
              ("taylor", "finite_difference", False), ("taylor", "finite_difference", True)]
TABLE7 = {"cifar100": (11.57, 12.15), "spherical": (12.40, 12.32), "ninapro": (1.42, 1.15), "fsd50k": (16.20, 17.74)}


def usable_bytes(card_gb: float) -> float:
    """Bytes of tensors (max_memory_allocated) a card of `card_gb` GiB holds (CONTEXT_BYTES, FRAGMENTATION)."""
    return (card_gb * GiB - CONTEXT_BYTES) * (1 - FRAGMENTATION)


# --------------------------------------------------------------------------------------------------
# Live tensor bytes under a dispatch mode
# --------------------------------------------------------------------------------------------------
class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages: every storage an op returns is added once (rounded up to `block` bytes) and
    subtracted when it is freed; `track` adds storages that existed before (parameters). `peak` is the maximum of
    `live` since the last `reset_peak`. stub=True makes data-dependent ops answer on fake tensors (module docstring):
    .item() gives NaN / 0 / True, boolean masks select every element."""

    def __init__(self, block: int = CUDA_BLOCK, stub: bool = False):
        super().__init__()
        self.block, self.stub = block, stub
        self.live = self.peak = 0
        self._seen = WeakIdKeyDictionary()

    def _bytes(self, st) -> int:
        return -(-st.nbytes() // self.block) * self.block

    def _free(self, nbytes: list) -> None:
        self.live -= nbytes[0]

    def track(self, tensors) -> None:
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                st = t.untyped_storage()
                if st in self._seen:                            # known: resized in place?
                    nb = self._seen[st]
                    if self._bytes(st) != nb[0]:
                        self.live += self._bytes(st) - nb[0]
                        nb[0] = self._bytes(st)
                    continue
                nb = [self._bytes(st)]
                self._seen[st] = nb
                weakref.finalize(st, self._free, nb)
                self.live += nb[0]
        self.peak = max(self.peak, self.live)

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.stub:
            if func is torch.ops.aten._local_scalar_dense.default:
                dt = args[0].dtype
                return True if dt == torch.bool else (0 if not dt.is_floating_point else math.nan)
            if func is torch.ops.aten.nonzero.default:        # upper bound: every element selected
                m = args[0]
                return torch.zeros((m.numel(), m.dim()), dtype=torch.long, device=m.device)
            if func is torch.ops.aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
                args = (args[0], [j for i in args[1] for j in _all_true_index(i)])
        out = func(*args, **kwargs)
        self.track(torch.utils._pytree.tree_leaves(out))
        return out


def _all_true_index(i) -> tuple:
    """An index of aten.index as a tuple of indices: a boolean mask becomes the integer indices of an all-True mask
    of its shape, one per masked dimension."""
    if i is None or i.dtype != torch.bool:
        return (i,)
    grids = torch.meshgrid(*[torch.arange(s, device=i.device) for s in i.shape], indexing="ij")
    return tuple(g.reshape(-1) for g in grids)


@contextlib.contextmanager
def fake_parameters(modules, fake_mode):
    """Swap every parameter and buffer of `modules` (shared submodules and tied weights once) for a fake tensor of
    `fake_mode` for the duration of the block; the real tensors are put back afterwards."""
    seen, swapped, fakes = set(), [], {}
    for root in modules:
        for mod in root.modules():
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(mod, kind).items():
                    if t is None:
                        continue
                    if id(t) not in fakes:
                        f = fake_mode.from_tensor(t.detach())
                        fakes[id(t)] = torch.nn.Parameter(f, requires_grad=t.requires_grad) \
                            if isinstance(t, torch.nn.Parameter) else f
                    swapped.append((mod, kind, name, t))
                    getattr(mod, kind)[name] = fakes[id(t)]
    try:
        yield
    finally:
        for mod, kind, name, t in swapped:
            getattr(mod, kind)[name] = t


def resident(modules) -> list:
    """Every parameter and buffer of `modules` (what train.py moves to the device)."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


# --------------------------------------------------------------------------------------------------
# The steps, as the project runs them
# --------------------------------------------------------------------------------------------------
M = dict(device=torch.device("cpu"), rank=0, world=1, main=True)      # train.py's machine dict (gpu_check: cuda)


def run_config(task: str, method: str, meta: str = "exact", hvp: str = "autograd", cache: bool = False,
               precision: str = "fp32") -> dict:
    """train.py's resolved configuration for these flags (registry row, method, STAGE1_DEFAULTS)."""
    argv = ["--task", task, "--method", method, "--meta", meta, "--hvp", hvp, "--precision", precision,
            "--device", "cpu"] + (["--cache-outer-grad"] if cache else [])
    cfg = train.resolve_config(train.get_parser().parse_args(argv))
    return train.fill_from_spec(cfg, data.TASKS[task])


def inputs(spec, batch: int):
    """A target batch of the task's shapes and label types (zeros; on a fake mode, fake)."""
    dev = M["device"]
    x = torch.zeros(batch, *spec.input_shape, device=dev)
    if spec.loss == "cross_entropy":
        y = torch.zeros(batch, dtype=torch.long, device=dev)
    else:
        y = torch.zeros(batch, *(spec.output_shape if spec.output == "dense" else (spec.num_classes,)), device=dev)
    return x, y


def source_batch(spec, source, cfg: dict, per_class: int | None = None):
    """One class-balanced source-surrogate batch as stage1.source_batches yields it: tokens e(x^s; θ^S_e0) (under
    no_grad), mask, labels. CIFAR-10 images (3, 32, 32) for 2D bodies, CoNLL-2003 ids (32,) for 1D ones."""
    k = min(cfg["source_classes"], SOURCE_CLASSES[spec.source])
    n = k * (per_class or cfg["source_per_class"])
    dev = M["device"]
    if spec.source == "cifar10":
        xs, mask = torch.zeros(n, 3, 32, 32, device=dev), None
    else:
        from readers.sources import CONLL_SEQ_LEN
        xs = torch.full((n, CONLL_SEQ_LEN), 5, dtype=torch.long, device=dev)
        mask = torch.ones(n, CONLL_SEQ_LEN, dtype=torch.bool, device=dev)
    with torch.no_grad():
        tokens = source.source_embedder(xs)
    return tokens, mask, torch.arange(n, device=dev) % k


def task_loss_of(spec):
    return losses.task_objective(spec, types.SimpleNamespace(output_decoder=None), M["device"])[0]


def stage2_microbatch(model, spec, cfg: dict, x, y, params, task_loss):
    """stage2.stage2's loop body for one micro-batch (paper protocol): forward, loss, backward, clipping."""
    with autocast(cfg, M["device"]):
        out = model(x)
    loss = task_loss(out.float(), y)
    loss.backward()
    if cfg["clip"]:
        torch.nn.utils.clip_grad_norm_(params, cfg["clip"])


def simulate(modules, body, stub=True):
    """Run body(mem, flops) on fake copies of `modules`; returns body's result. `flops` is a context factory that
    counts what runs inside it; mem a LiveBytes already holding the resident tensors."""
    fm = torch._subclasses.fake_tensor.FakeTensorMode()
    counted = []

    @contextlib.contextmanager
    def flops():
        with FlopCounterMode(display=False) as fc:
            yield
        counted.append(fc.get_total_flops())

    with fake_parameters(modules, fm), fm, LiveBytes(stub=stub) as mem:
        mem.track(resident(modules))
        result = body(mem, flops)
    return result, sum(counted)


def stage2_record(model, source, spec, cfg: dict, frozen: bool) -> dict:
    """One stage-2 micro-batch at the paper's batch size: FLOPs of forward + backward, peak bytes with the
    optimizer state and (accum > 1) the running gradient already allocated, the optimizer step included."""
    flags = [p.requires_grad for p in model.encoder.parameters()]
    if frozen:
        model.encoder.requires_grad_(False)
    task_loss = task_loss_of(spec)
    fwd = []

    def body(mem, flops):
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(cfg, params, cfg["lr"])
        for p in params:                               # the optimizer state of a run in progress
            p.grad = torch.zeros_like(p)
        opt.step()
        if cfg["accum"] == 1:
            opt.zero_grad(set_to_none=True)
        x, y = inputs(spec, cfg["batch_size"])
        with torch.no_grad(), FlopCounterMode(display=False) as fc:     # forward only: the evaluation cost
            with autocast(cfg, M["device"]):
                model(x)
        fwd.append(fc.get_total_flops())
        mem.reset_peak()
        with flops():
            stage2_microbatch(model, spec, cfg, x, y, params, task_loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return mem.peak, sum(p.numel() for p in params)

    try:
        (peak, trained), fl = simulate([model, source], body)
    finally:
        for p, f in zip(model.encoder.parameters(), flags):
            p.requires_grad_(f)
            p.grad = None
        for p in model.parameters():
            p.grad = None
    return dict(flops_per_step=fl, peak_bytes=peak, trained_params=trained,
                forward_flops_per_sample=fwd[0] / cfg["batch_size"])


def stage1_record(model, source, spec, cfg: dict, kind: str) -> dict:
    """One stage-1 update of MoNA (stage1.mona_step: meta.py's gradient + AdamW on φ) or Emb (stage1.emb_step),
    the body frozen at θ^S_f0 as stage1.stage1 holds it. With --cache-outer-grad: v = stage1.cached_outer_grad is
    resident (θ_f-sized), and its one-time cost is measured on one source batch (×16 in the run)."""
    flags = [p.requires_grad for p in model.encoder.parameters()]
    task_loss, outer_fn = task_loss_of(spec), losses.OUTER_LOSSES[cfg["outer_loss"]]
    once = []

    def body(mem, flops):
        phi = stage1.stage1_parameters(model, cfg)
        model.encoder.requires_grad_(False)
        model.train()
        opt = torch.optim.AdamW(phi.values(), lr=cfg["stage1_lr"], weight_decay=cfg["stage1_weight_decay"])
        for p in phi.values():
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        v, batch = None, None
        if kind == "mona":
            batch = source_batch(spec, source, cfg)
            if cfg["cache_outer_grad"]:
                with FlopCounterMode(display=False) as fc:
                    v = stage1.cached_outer_grad(model, source, iter([batch]), outer_fn, cfg, M, n_batches=1)
                once.append(fc.get_total_flops() * CACHE_BATCHES)
        x, y = inputs(spec, cfg["stage1_batch_size"])
        mem.reset_peak()
        with flops():
            if kind == "mona":
                stage1.mona_step(model, source, phi, opt, x, y, batch, task_loss, outer_fn, v, cfg, M, 0)
            else:
                stage1.emb_step(model, phi, opt, x, y, task_loss, cfg, M, 0)
        return mem.peak

    try:
        peak, fl = simulate([model, source], body)
    finally:
        for p, f in zip(model.encoder.parameters(), flags):
            p.requires_grad_(f)
        for p in model.parameters():
            p.grad = None
    return dict(flops_per_step=fl, peak_bytes=peak, flops_once=once[0] if once else 0)


_OTDD: dict = {}


def otdd_parts(width: int, source_name: str, n_target: int) -> dict:
    """ORCA's OTDD on real CPU tensors of the run's shapes: orca.OTDDLoss over SOURCE_SURROGATE source features of
    `width` (built once per width: its peak, what stays resident, its FLOPs) and one call + backward on n_target
    features of one target class (its peak above the live bytes before it, its FLOPs)."""
    key = (width, source_name)
    if key not in _OTDD:
        k = SOURCE_CLASSES[source_name]
        g = torch.Generator().manual_seed(0)
        x_s, y_s = torch.randn(SOURCE_SURROGATE, width, generator=g), torch.arange(SOURCE_SURROGATE) % k
        with LiveBytes() as mem, FlopCounterMode(display=False) as fc:
            mem.track([x_s, y_s])
            otdd = orca.OTDDLoss(x_s, y_s)
        del x_s, y_s
        _OTDD[key] = dict(otdd=otdd, build_peak=mem.peak, build_flops=fc.get_total_flops(),
                          resident=sum(t.untyped_storage().nbytes() for t in
                                       {id(t): t for t in [otdd.x_s, otdd.y_s, otdd.code, otdd.self_term,
                                                           *otdd.clouds]}.values()))
    part = _OTDD[key]
    feats = torch.randn(n_target, width, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with LiveBytes() as mem, FlopCounterMode(display=False) as fc:
        mem.track([feats])
        start = mem.live
        loss = part["otdd"](feats)
        loss.backward()
        del loss
    return dict(part, call_peak=mem.peak - start, call_flops=fc.get_total_flops(), grad=feats.grad)


def orca_classes(spec, n_train: int | None) -> tuple[int, int]:
    """(classes visited per epoch, samples per class draw): the labels of single-label tasks, else k = 10 k-means
    clusters (orca.orca_target_labels); a draw is orca.orca_draw_size, capped at the class's size when known."""
    k = spec.num_classes if spec.loss == "cross_entropy" else 10
    return k, None if n_train is None else max(2, n_train // k)


def orca_record(model, source, spec, cfg: dict, n_train: int | None) -> dict:
    """One epoch of orca.stage1_orca (one optimizer step per epoch): per class, the embedder's forward over the
    class draw in stage-1 batches, w_c·OTDD, backward. The embedder part runs on fake tensors, the OTDD on real ones
    (otdd_parts); peak = resident + max(OTDD build, OTDD resident + max(embedder peak, embedder live + OTDD call))."""
    k, size = orca_classes(spec, n_train)
    draw = orca.orca_draw_size(cfg["orca_maxsamples"], cfg["stage1_batch_size"])
    n = draw if size is None else min(draw, size)

    def body(mem, flops):
        model.train()
        opt = make_optimizer(cfg, model.embedder.parameters(), cfg["stage1_lr"],
                             weight_decay=cfg["stage1_weight_decay"])
        for p in model.embedder.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        base = mem.live
        mem.reset_peak()
        with flops():
            feats = []
            for lo in range(0, n, cfg["stage1_batch_size"]):
                x, _ = inputs(spec, min(cfg["stage1_batch_size"], n - lo))
                feats.append(model.embedder(x).mean(1).float())
            f = torch.cat(feats)
            live_fwd = mem.live - base
            f.backward(torch.ones_like(f))        # the OTDD's gradient w.r.t. the features (its values: real part)
        del feats, f
        opt.step()
        return base, live_fwd, mem.peak - base, int(model.embedder(inputs(spec, 1)[0]).shape[-1])

    (base, live_fwd, emb_peak, width), fl = simulate([model, source], body)
    part = otdd_parts(width, spec.source, n)
    peak = base + max(part["build_peak"], part["resident"] + max(emb_peak, live_fwd + part["call_peak"]))
    per_epoch = k * (fl + part["call_flops"])
    return dict(flops_per_step=per_epoch, peak_bytes=peak, flops_once=part["build_flops"], class_draw=n, classes=k)


# --------------------------------------------------------------------------------------------------
# Schedules, GPU hours, records
# --------------------------------------------------------------------------------------------------
def steps_in_run(cfg: dict, stage: str, n_train: int | None) -> int | None:
    """Updates (stage 1) or micro-batches (stage 2) of a whole run from the registry's schedule."""
    if stage == "2":
        return None if n_train is None else cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    if cfg["method"] == "orca":
        return cfg["stage1_epochs"]
    return None if n_train is None else cfg["stage1_epochs"] * math.ceil(n_train / cfg["stage1_batch_size"])


def hours(flops: float | None) -> dict | None:
    return None if flops is None else {c: flops / (UTIL * peak) / 3600 for c, peak in CARDS.items()}


def fits(peak: int) -> dict:
    return {f"{gb}GB": peak <= usable_bytes(gb) for gb in CARD_GB}


def make_record(task, method, meta, hvp, cache, stage, precision, cfg, res, n_train) -> dict:
    steps = steps_in_run(cfg, stage, n_train)
    run = None if steps is None else steps * res["flops_per_step"] + res.get("flops_once", 0)
    h = hours(run)
    return dict(task=task, method=method, meta=meta, hvp=hvp, cache_outer_grad=cache, stage=stage,
                precision=precision, batch=cfg["batch_size"] if stage == "2" else cfg["stage1_batch_size"],
                accum=cfg["accum"] if stage == "2" else 1, backbone=cfg["backbone"] or backbones.DEFAULT_BACKBONE[
                    data.TASKS[task].dim], flops_per_step=res["flops_per_step"],
                flops_once=res.get("flops_once", 0), steps_in_run=steps, run_flops=run, peak_bytes=res["peak_bytes"],
                peak_gib=round(res["peak_bytes"] / GiB, 3), fits=fits(res["peak_bytes"]),
                gpu_hours=None if h is None else h[REFERENCE], gpu_hours_by_card=h,
                **{k: v for k, v in res.items() if k not in ("flops_per_step", "peak_bytes", "flops_once")})


_SOURCES: dict = {}


def body_of(spec):
    name = backbones.DEFAULT_BACKBONE[spec.dim]
    if name not in _SOURCES:
        torch.manual_seed(0)
        _SOURCES.clear()                               # one real body in memory at a time
        _SOURCES[name] = backbones.build_backbone(name, pretrained=False)
    return _SOURCES[name]


def task_records(task: str, precisions=("fp32", "bf16"), log=print) -> list:
    """Every record of one task: stage 2 (shared, frozen), stage 1 of emb, every MoNA mode and orca."""
    spec = data.TASKS[task]
    n_train = N_TRAIN[task][0]
    source = body_of(spec)
    model = predictors.build_target_model(spec, source, init="source")
    out = []
    for precision in precisions:
        t0 = time.time()
        cfg = run_config(task, "finetune", precision=precision)
        full = stage2_record(model, source, spec, cfg, frozen=False)
        for method in ("scratch", "finetune", "finetune++", "orca", "emb", "mona"):
            c = run_config(task, method, precision=precision)
            out.append(make_record(task, method, None, None, False, "2", precision, c, full, n_train))
        c = run_config(task, "frozen", precision=precision)
        out.append(make_record(task, "frozen", None, None, False, "2", precision, c,
                               stage2_record(model, source, spec, c, frozen=True), n_train))
        c = run_config(task, "emb", precision=precision)
        out.append(make_record(task, "emb", None, None, False, "1", precision, c,
                               stage1_record(model, source, spec, c, "emb"), n_train))
        for meta, hvp, cache in MONA_MODES:
            c = run_config(task, "mona", meta, hvp, cache, precision)
            out.append(make_record(task, "mona", meta, hvp, cache, "1", precision, c,
                                   stage1_record(model, source, spec, c, "mona"), n_train))
        if precision == "fp32":                        # orca.py runs no autocast: one record serves both
            c = run_config(task, "orca")
            res = orca_record(model, source, spec, c, n_train)
            for p in precisions:
                out.append(make_record(task, "orca", None, None, False, "1", p, c, res, n_train))
        log(f"  {task} {precision}: {time.time() - t0:.1f} s")
    return out


# --------------------------------------------------------------------------------------------------
# Validation: LiveBytes on fake tensors against the CPU allocator on real ones
# --------------------------------------------------------------------------------------------------
def allocator_peak(fn) -> int:
    """Peak of the CPU allocator's allocated bytes while fn() runs, above its level at the start (torch.profiler
    memory events: 'Total Allocated' is a running count that survives between profiles, so the level before the
    first event, its total minus its own bytes, is subtracted)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    mem = [e["args"] for e in events if e.get("name") == "[memory]"]
    if not mem:
        return 0
    start = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return max(0, *(e["Total Allocated"] - start for e in mem))


def validate(log=print) -> list:
    """The memory estimate against a measurement, on the real architectures: stage-2 micro-batches and MoNA
    (exact, autograd) steps at small batches, once on fake tensors (LiveBytes, block 1) and once on real CPU tensors
    (the allocator's peak). Both count above the resident state."""
    rows = []
    cases = [("cifar100", "2", 1), ("cifar100", "2", 2), ("cifar100", "mona", 1), ("ecg", "2", 2),
             ("ecg", "2", 4), ("ecg", "mona", 2)]
    for task, what, batch in cases:
        spec = data.TASKS[task]
        source = body_of(spec)
        model = predictors.build_target_model(spec, source, init="source")
        cfg = run_config(task, "mona")
        cfg.update(batch_size=batch, stage1_batch_size=batch, source_classes=2, source_per_class=2)
        task_loss, outer_fn = task_loss_of(spec), losses.OUTER_LOSSES[cfg["outer_loss"]]

        def step():
            x, y = inputs(spec, batch)
            if what == "2":
                stage2_microbatch(model, spec, cfg, x, y, [], task_loss)
            else:
                phi = stage1.stage1_parameters(model, cfg)
                grads, _ = stage1.meta.meta_grad_exact(*stage1.mona_losses(
                    model, source, x, y, *source_batch(spec, source, cfg), task_loss, outer_fn, cfg, M["device"]),
                    theta_f=dict(model.encoder.named_parameters()), phi=phi, alpha=cfg["alpha"], lam=cfg["lam"])
                del grads

        model.train()
        if what != "2":
            model.encoder.requires_grad_(False)

        def fake_body(mem, flops):
            base = mem.live
            mem.reset_peak()
            step()
            return mem.peak - base

        t0 = time.time()
        pred, _ = simulate([model, source], fake_body)
        meas = allocator_peak(step)
        for p in model.parameters():
            p.grad = None
        model.encoder.requires_grad_(True)
        err = pred / meas - 1
        rows.append(dict(task=task, step="stage-2 micro-batch" if what == "2" else "MoNA exact/autograd",
                         batch=batch, source_batch=4 if what != "2" else 0, estimated_bytes=pred,
                         measured_bytes=meas, rel_error=err))
        log(f"  validate {task} {rows[-1]['step']} batch {batch}: estimated {pred / GiB:.3f} GiB, CPU allocator "
            f"{meas / GiB:.3f} GiB ({100 * err:+.1f} %), {time.time() - t0:.0f} s")
    return rows


# --------------------------------------------------------------------------------------------------
# Summary and main
# --------------------------------------------------------------------------------------------------
def summary(records: list) -> dict:
    """CIFAR-100 beside Table 7: whole-run GPU hours of MoNA (exact and Taylor modes) and ORCA, stage 1 + stage 2,
    and their ratio (paper: 12.15 / 11.57 = 1.05); MoNA also with §4.4's 5 stage-1 epochs; evaluation apart."""
    out = {}
    for task, (orca_h, mona_h) in TABLE7.items():
        rec = {(r["method"], r["meta"], r["hvp"], r["cache_outer_grad"], r["stage"]): r for r in records
               if r["task"] == task and r["precision"] == "fp32"}
        if not rec:
            continue
        s2 = rec[("mona", None, None, False, "2")]
        if s2["run_flops"] is None:
            continue
        orca_f = rec[("orca", None, None, False, "1")]["run_flops"] + s2["run_flops"]
        row = {"table7_gpu_hours": {"orca": orca_h, "mona": mona_h, "ratio": round(mona_h / orca_h, 3)},
               "orca_run_flops": orca_f, "orca_hours": hours(orca_f), "mona": {}}
        for meta, hvp, cache in MONA_MODES:
            s1 = rec[("mona", meta, hvp, cache, "1")]
            f10 = s1["run_flops"] + s2["run_flops"]
            f5 = s1["run_flops"] / 2 + s2["run_flops"]        # §4.4: 5 stage-1 epochs
            key = f"{meta}/{hvp}" + ("/cached" if cache else "")
            row["mona"][key] = {"run_flops": f10, "hours": hours(f10), "ratio_to_orca": f10 / orca_f,
                                "run_flops_5_epochs": f5, "ratio_to_orca_5_epochs": f5 / orca_f,
                                "stage1_peak_gib": s1["peak_gib"]}
        n_test = {"cifar100": 10000, "spherical": 10000}.get(task)
        if n_test:
            epochs = s2["steps_in_run"] / math.ceil(N_TRAIN[task][0] / s2["batch"])
            ev = s2["forward_flops_per_sample"] * n_test * epochs
            row["eval_hours"] = hours(ev)
        out[task] = row
    return out


# MoNA's flags in order of preference on a card (the first that fits both stages wins): the default, the same
# gradient from first-order passes, then bf16, then the Taylor form with the cached source gradient
MONA_PREFERENCE = [("exact", "autograd", False, "fp32"), ("exact", "finite_difference", False, "fp32"),
                   ("exact", "autograd", False, "bf16"), ("exact", "finite_difference", False, "bf16"),
                   ("taylor", "finite_difference", True, "fp32"), ("taylor", "finite_difference", True, "bf16")]


def mona_flags(meta: str, hvp: str, cache: bool, precision: str) -> str:
    flags = ([] if meta == "exact" else ["--meta taylor"]) + ([] if hvp == "autograd" else ["--hvp finite_difference"])
    flags += (["--cache-outer-grad"] if cache else []) + (["--precision bf16"] if precision == "bf16" else [])
    return " ".join(flags) or "defaults"


def markdown(results: dict) -> str:
    """The tables of bench/README.md's section from scale.json: peak memory per task and mode, and per card the
    flags of MoNA (and of the other methods) that fit."""
    rec = {(r["task"], r["method"], r["meta"], r["hvp"], r["cache_outer_grad"], r["stage"], r["precision"]): r
           for r in results["records"]}
    tasks = [t for t in data.TASKS if (t, "finetune", None, None, False, "2", "fp32") in rec]
    gib = lambda b: f"{b / GiB:.1f}"                                          # noqa: E731
    modes = [("mona", m, h, c, "1") for m, h, c in MONA_MODES]
    head = ("| task | body | batch | stage 2 | frozen | emb | orca | MoNA exact/autograd | exact/FD | taylor/autograd "
            "| taylor/FD | taylor/FD/cached |")
    lines = ["Peak memory (GiB, torch.cuda.max_memory_allocated; fp32 / bf16 autocast), one step at the paper's batch:",
             "", head, "|" + "---|" * 12]
    for t in tasks:
        cells = []
        for key in [("finetune", None, None, False, "2"), ("frozen", None, None, False, "2"),
                    ("emb", None, None, False, "1"), ("orca", None, None, False, "1"), *modes]:
            a, b = rec[(t, *key, "fp32")], rec[(t, *key, "bf16")]
            both = f"{gib(a['peak_bytes'])} / {gib(b['peak_bytes'])}"
            cells.append(gib(a["peak_bytes"]) if key[0] == "orca" else both)
        s2 = rec[(t, "finetune", None, None, False, "2", "fp32")]
        s1 = rec[(t, "mona", "exact", "autograd", False, "1", "fp32")]
        lines.append(f"| {t} | {s2['backbone']} | {s2['batch']}×{s2['accum']} / {s1['batch']} | " + " | ".join(cells)
                     + " |")
    lines += ["", "What fits (usable = (card − 0.5 GiB context) × 0.9): MoNA's flags per card (the first of: "
              "defaults, `--hvp finite_difference`, `--precision bf16`, both, `--meta taylor --hvp finite_difference "
              "--cache-outer-grad` [+ bf16]); the other methods: fp32, else bf16:", "",
              "| task | MoNA 24 GB | MoNA 40 GB | MoNA 80 GB | other methods 24 / 40 / 80 GB |",
              "|---|---|---|---|---|"]
    for t in tasks:
        cells = []
        for gb in CARD_GB:
            use = usable_bytes(gb)
            pick = next((f for f in MONA_PREFERENCE if max(rec[(t, "mona", *f[:3], "1", f[3])]["peak_bytes"],
                                                          rec[(t, "mona", None, None, False, "2", f[3])]["peak_bytes"])
                         <= use), None)
            cells.append("does not fit" if pick is None else f"`{mona_flags(*pick)}`")
        other = []
        for gb in CARD_GB:
            others = [("finetune", "2"), ("frozen", "2"), ("emb", "1"), ("orca", "1")]
            worst = {p: max(rec[(t, m, None, None, False, st, p)]["peak_bytes"] for m, st in others)
                     for p in ("fp32", "bf16")}
            other.append("fp32" if worst["fp32"] <= usable_bytes(gb) else
                         "bf16" if worst["bf16"] <= usable_bytes(gb) else "no")
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {' / '.join(other)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="*", help="tasks of data.TASKS (default: all)")
    p.add_argument("--validate", action="store_true", help="only compare the memory estimate with the CPU allocator")
    p.add_argument("--table", action="store_true", help="only print the README tables from the results file")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    unknown = [t for t in args.tasks if t not in data.TASKS]
    if unknown:
        print(f"unknown task(s) {', '.join(unknown)}; choose from: {', '.join(data.TASKS)}", file=sys.stderr)
        return 2
    old = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
    if args.table:
        print(markdown(old))
        return 0
    t_start = time.time()
    if args.validate:
        old["validation"] = validate()
    else:
        tasks, mine = args.tasks or list(data.TASKS), []
        for task in sorted(tasks, key=lambda t: data.TASKS[t].dim):     # one body at a time
            mine += task_records(task)
            old = _merged(args.out, mine)       # the file's other tasks kept: runs over other tasks may write too
            write_text_atomic(json.dumps(old, indent=1), args.out)
        old["summary"] = summary(old["records"])
        old["seconds"] = round(time.time() - t_start, 1)
    old["settings"] = dict(utilisation=UTIL, peak_flops=CARDS, reference_card=REFERENCE, cuda_block=CUDA_BLOCK,
                           context_bytes=CONTEXT_BYTES, fragmentation=FRAGMENTATION,
                           usable_bytes={f"{gb}GB": usable_bytes(gb) for gb in CARD_GB},
                           n_train={k: v[0] for k, v in N_TRAIN.items()},
                           n_train_source={k: v[1] for k, v in N_TRAIN.items()}, torch=torch.__version__)
    write_text_atomic(json.dumps(old, indent=1), args.out)
    print(f"wrote {args.out} ({time.time() - t_start:.0f} s)")
    return 0


def _merged(path: str, records: list) -> dict:
    """The results file as it is now, its records of the tasks in `records` replaced by them."""
    cur = {}
    if os.path.exists(path):
        with open(path) as f:
            cur = json.load(f)
    tasks = {r["task"] for r in records}
    cur["records"] = [r for r in cur.get("records", []) if r["task"] not in tasks] + records
    return cur


if __name__ == "__main__":
    sys.exit(main())
