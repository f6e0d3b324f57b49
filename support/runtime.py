"""support/runtime.py: what a training run needs from the machine, kept out of the maths and out of train.py's story.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024,
arXiv 2406.18864. No equation lives here; this module serves the training protocol of App. A.1 (Tables 9
and 11) as train.py, stage1.py, stage2.py and orca.py run it: seeds, devices, DDP, bf16 autocast, atomic
checkpoints, loaders, progress bars, and the clean stops on a non-finite loss and on Ctrl-C.

Paper map
---------
| paper                                          | here                                             |
|------------------------------------------------|--------------------------------------------------|
| App. A.1, Tables 9 / 11 "Batch Size"           | `make_loader` (per process under torchrun)       |
| Alg. 1, φ_e ← φ_e − β ∇_φe L'_outer on n GPUs  | `all_reduce_mean_`: ∇_φ averaged over processes   |
| seeds (not in the paper; ORCA's configs: 0)    | `seed_everything`, `epoch_seed`                  |

Symbols: φ (the parameters stage 1 trains) -> the `grads` dict passed to `all_reduce_mean_`; `m` is the
machine dict of `setup_machine`: {"device", "rank", "world", "main"}.

Resumption: every epoch reseeds everything from (seed, stage, epoch) (`epoch_seed`), so a run resumed from
last.pt replays the same data order and dropout masks as an uninterrupted one without saving RNG states.
"""
from __future__ import annotations

import contextlib
import os
import random
import sys

import numpy as np
import torch


class RunError(Exception):
    """An expected mistake (bad argument, missing file, ...): printed as one line, no traceback."""


class NonFiniteLoss(RunError):
    """A NaN or infinite loss: the run stops and the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(cfg: dict, stage: int, epoch: int) -> int:
    """Every epoch reseeds everything from (seed, stage, epoch): a resumed run replays the same
    data order and dropout masks as an uninterrupted one, without saving RNG states."""
    return cfg["seed"] * 1_000_003 + stage * 10_007 + epoch


# --------------------------------------------------------------------------------------------------
# Devices and distribution (torchrun)
# --------------------------------------------------------------------------------------------------
def is_main_process() -> bool:
    """Rank 0 under torchrun (RANK), or a single process: the one that prints."""
    return int(os.environ.get("RANK", "0")) == 0


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
    elif cfg.get("tiny") and "OMP_NUM_THREADS" not in os.environ:
        # a tiny body's matrices are too small to share among threads: one thread is as fast on an idle CPU and
        # many times faster on a busy one (a demo's stage 1 took 1.6 s with one thread, 21 s with two while two
        # other jobs held both cores: bench/README.md, "Demo"); OMP_NUM_THREADS, when set, decides instead
        torch.set_num_threads(1)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    if cfg["precision"] == "bf16" and not use_cuda and rank == 0:
        print("note: --precision bf16 on the CPU: bf16 autocast acts on the CPU too (matrix products in bfloat16, "
              "results differ slightly from fp32); it is often slower than fp32 on CPUs without native bf16",
              file=sys.stderr)
    return dict(device=device, rank=rank, world=world, main=rank == 0)


def all_reduce_mean_(tensors, m: dict) -> None:
    """Average gradients over processes in place. Stage 1 uses it for the meta-gradient of φ: DDP does not
    synchronise gradients of gradients (github.com/pytorch/pytorch/issues/47562 and /63812), so stage 1 runs
    the virtual step on the unwrapped model and all-reduces φ's gradient by hand (orca.py's stage 1 uses it too)."""
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


# --------------------------------------------------------------------------------------------------
# Files: checkpoints written atomically, and their one reader
# --------------------------------------------------------------------------------------------------
def checkpoint_dict(cfg: dict, model, **extra) -> dict:
    return {"format": "mona-checkpoint-v1", "config": cfg, "model": model.state_dict(), **extra}


def _write_atomic(path: str, write) -> None:
    """write(tmp) to a temporary file, then rename: a kill never leaves a half-written file, and an interrupted
    write leaves no temporary file. The folder is created here, by the first file a run writes, so a run that
    fails before writing anything leaves no empty --out folder behind."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def save_atomic(obj, path: str) -> None:
    """torch.save, atomically (`_write_atomic`)."""
    _write_atomic(path, lambda tmp: torch.save(obj, tmp))


def write_text_atomic(text: str, path: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    _write_atomic(path, write)


def load_checkpoint(path: str) -> dict:
    """A checkpoint train.py wrote (`checkpoint_dict`: {"format": "mona-checkpoint-v1", "config", "model", ...});
    the one reader of the project (train.py, probe.py and discrepancy.py). RunError (one line) otherwise."""
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


# --------------------------------------------------------------------------------------------------
# Loaders, progress bars, the non-finite stop
# --------------------------------------------------------------------------------------------------
def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, m: dict, workers: int = 0):
    """A DataLoader whose order depends only on `seed`; sharded over processes under torchrun."""
    sampler = None
    if m["world"] > 1 and shuffle:
        sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, seed=seed)
        shuffle = False
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                                       generator=g, num_workers=workers, drop_last=False)


def bars_off(m: dict, cfg: dict) -> bool:
    """No progress bars: --no-progress, a process other than rank 0, or stderr not a terminal."""
    return cfg["no_progress"] or not m["main"] or not sys.stderr.isatty()


def quiet_libraries(m: dict, cfg: dict) -> None:
    """Where our bars are off (`bars_off`), the libraries' own (Hugging Face downloads and weight loading) too."""
    if bars_off(m, cfg):
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()                     # transformers reads this when it is imported
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def progress(it, m: dict, cfg: dict, desc: str):
    from tqdm import tqdm
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, disable=bars_off(m, cfg))


def check_finite(loss: torch.Tensor, where: str, out: str) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLoss(f"non-finite loss or gradient ({loss.item()}) at {where}; stopped, the last good checkpoint "
                            f"is kept in {out} (lower --lr or use --resume after fixing the cause)")
