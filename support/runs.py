"""runs.py: the bookkeeping of one train.py run, kept out of its story: what an earlier run left in --out (resume
checks), the log of epoch rows (metrics.jsonl and last.pt after every epoch, atomically), result.json, the
summary line, and the one line a Ctrl-C prints.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024, arXiv 2406.18864.
Nothing of the paper lives here. A run resumed from last.pt replays the same data order and dropout masks as an
uninterrupted one (runtime.epoch_seed), so it reaches the same result."""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

from support.runtime import RunError, barrier, checkpoint_dict, load_checkpoint, save_atomic, write_text_atomic

# settings a run may change when it continues (machine, paths, which stage); every other one must match
CONTINUE_FREE = {"resume", "stage", "out", "data_dir", "source_dir", "download", "weights", "device", "precision",
                 "workers", "no_progress", "method_ref", "demo_body"}


def check_same_run(saved: dict, cfg: dict, path: str, keys=None, given_only: bool = False) -> None:
    """A run continues (--resume, or --stage 2 after --stage 1) only with the configuration that wrote `path`:
    a changed --lr, --epochs, --batch-size, ... would silently give a run that is neither. Names every key that
    differs, old and new value; `given_only`: only the keys this command has set so far (before the registry)."""
    keys = keys or [*cfg, *(k for k in saved if k not in cfg)]      # flags first, in the parser's order
    diff = [k for k in keys if k not in CONTINUE_FREE and saved.get(k) != cfg.get(k)
            and not (given_only and cfg.get(k) is None)]
    if diff:
        old = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        new = ", ".join(f"{k}={cfg.get(k)!r}" for k in diff)
        raise RunError(f"{'--resume' if cfg['resume'] else '--stage 2'}: {path} was started with {old}; now {new}: "
                       f"repeat the original command's flags, or use another --out")


def _paths(cfg: dict) -> tuple[str, str]:
    return os.path.join(cfg["out"], "last.pt"), os.path.join(cfg["out"], "stage1_embedder.pt")


def saved_state(cfg: dict, m: dict) -> dict:
    """What an earlier run left in --out (last.pt) for --resume, or for --stage 2 after --stage 1; {} for a new run.
    Checked against the flags given so far (the task's defaults are not read yet)."""
    out = cfg["out"]
    last, emb_path = _paths(cfg)
    state: dict = {}
    if os.path.exists(last):
        # without --resume, only `--stage 2` may continue a finished `--stage 1` run (its last.pt is in stage 1)
        if cfg["resume"] or (cfg["stage"] == "2" and os.path.exists(emb_path)):
            state = load_checkpoint(last)
        if not cfg["resume"] and state.get("stage") != 1:
            raise RunError(f"{out} already holds a run (last.pt): pass --resume to continue it, or another --out")
        cfg["backbone"] = cfg["backbone"] or state["config"].get("backbone")
        check_same_run(state["config"], cfg, out, given_only=True)   # before the task is read with other flags
        result = finished(cfg) if cfg["resume"] else None
        if result is not None:
            state["finished"] = result               # train.run reports it and stops (finished_result)
    elif cfg["resume"] and m["main"]:
        print(f"note: --resume but no {last} yet; starting from the beginning", file=sys.stderr)
    return state


def finished(cfg: dict) -> dict | None:
    """--out's result.json when it is of a run of the same stage(s) (written last, so that run is complete),
    else None."""
    try:
        with open(os.path.join(cfg["out"], "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    return result if result.get("config", {}).get("stage") == cfg["stage"] else None


def finished_result(cfg: dict, m: dict, result: dict) -> dict:
    """--resume on a finished run (`result`: its result.json): say so and change nothing (result.json,
    metrics.jsonl, checkpoints stay)."""
    path = os.path.join(cfg["out"], "result.json")
    if m["main"]:
        score = f": test {result['metric']} = {result['test']:.4g}" if "test" in result else ""
        print(f"{cfg['out']} is a finished run ({path}{score}); --resume has nothing to continue and changed "
              f"nothing (another --out starts a new run)", flush=True)
    return result


def restore(state: dict, cfg: dict, model, has_stage1: bool) -> None:
    """Load what the run continues from into `model`: last.pt (--resume), or stage 1's embedder (--stage 2)."""
    last, emb_path = _paths(cfg)
    if state:
        check_same_run(state["config"], cfg, cfg["out"])
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


class RunLog:
    """The run's files: one row per epoch (metrics.jsonl, and last.pt to resume from), stage 1's embedder, and
    result.json. `progress` (the stage, the rows, what last.pt holds) lets a Ctrl-C say where the run stopped.
    --out is created by the first file written, so a run that fails on its arguments or data leaves nothing."""

    def __init__(self, cfg: dict, m: dict, model, state: dict, progress: dict):
        self.cfg, self.m, self.model, self.progress = cfg, m, model, progress
        self.history = list(state.get("history", []))
        self.t_start = time.time() - state.get("seconds", 0.0)
        progress.update(history=self.history, epochs={1: cfg["stage1_epochs"], 2: cfg["epochs"]},
                        saved=(self.history[-1]["stage"], self.history[-1]["epoch"]) if self.history else None)

    def stage(self, k: int) -> None:
        self.progress["stage"] = k

    def log(self, row: dict, resume_state: dict) -> None:
        """Append one epoch row; write last.pt (atomically) then metrics.jsonl from the same history."""
        self.history.append(row)
        if self.m["main"]:
            save_atomic(checkpoint_dict(self.cfg, self.model, history=self.history,
                                        seconds=time.time() - self.t_start, **resume_state),
                        os.path.join(self.cfg["out"], "last.pt"))
            self.progress["saved"] = (row["stage"], row["epoch"])
            write_text_atomic("".join(json.dumps(r) + "\n" for r in self.history),
                              os.path.join(self.cfg["out"], "metrics.jsonl"))
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)

    def save_embedder(self) -> None:
        """stage1_embedder.pt: the model after stage 1 (what `--stage 2` starts from)."""
        if self.m["main"]:
            save_atomic(checkpoint_dict(self.cfg, self.model, stage=1, epoch=self.cfg["stage1_epochs"] - 1),
                        _paths(self.cfg)[1])

    def write_result(self, result: dict) -> dict:
        """result.json (time and the resolved configuration added) and the one-line summary."""
        result.update(seconds=round(time.time() - self.t_start, 2), config=self.cfg)
        if self.m["main"]:
            write_text_atomic(json.dumps(result, indent=2) + "\n", os.path.join(self.cfg["out"], "result.json"))
            if "test" in result:
                print(summary_line(result, self.cfg["out"]), flush=True)
        barrier(self.m)
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


def interrupted_line(progress: dict, argv: list) -> str:
    """The one line a Ctrl-C prints: where the run stopped, what last.pt holds, the command that continues it."""
    stage, rows = progress.get("stage"), progress.get("history", [])
    if stage is None:
        where = "before training started"
    else:
        done, total = sum(r["stage"] == stage for r in rows), progress["epochs"][stage]
        where = f"in stage {stage}, epoch {done + 1} of {total}" if done < total else f"after stage {stage}'s last epoch"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world)}"] if world > 1 else ["python"]
    cmd = [*launcher, "train.py", *(a for a in argv if a != "--resume")]
    if progress.get("saved") is None:
        return f"interrupted {where}; nothing was saved, so rerun: {shlex.join(cmd)}"
    s, e = progress["saved"]
    return (f"interrupted {where} (last.pt holds stage {s} up to epoch {e}); continue with: "
            f"{shlex.join([*cmd, '--resume'])}")
