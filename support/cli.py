"""cli.py: what the three command-line tools (train.py, probe.py, discrepancy.py) share: numeric flag types,
one-line argparse errors, the options every tool takes (source model, data, seed), and the entry point that turns
an expected mistake into one line and an exit code instead of a traceback.

Paper: Ma et al., "Learning Modality Knowledge Alignment for Cross-Modality Transfer", ICML 2024, arXiv 2406.18864.
Nothing of the paper lives here; each tool keeps its own flags (train.py's `get_parser`)."""
from __future__ import annotations

import argparse
import math
import sys

import torch

from support.runtime import NonFiniteLoss, RunError, is_main_process

EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERRUPTED = 2, 3, 130     # 130 = 128 + SIGINT, the shell's code for Ctrl-C


# --------------------------------------------------------------------------------------------------
# Flag types and the parser
# --------------------------------------------------------------------------------------------------
def _number(kind, ok, rule: str):
    """An argparse `type=`: parse `kind`, then accept only finite values with ok(v); else the one-line
    'argument --flag: must be <rule>, got ...' (exit 2)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return v
    parse.__name__ = rule
    return parse


# one rule per meaning, for every numeric flag of train.py, discrepancy.py and probe.py
pos_int = _number(int, lambda v: v >= 1, "an integer >= 1")              # epochs, batch sizes, steps, counts
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")           # workers, seeds
pos_float = _number(float, lambda v: v > 0, "a number > 0")              # learning rates
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")         # weight decays, α, λ


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): 'train.py: error: argument --lr: ...'; exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends '(default: X)' to a flag's help, unless the help states its default itself or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_shared_arguments(p: argparse.ArgumentParser) -> None:
    """The options train.py, discrepancy.py and probe.py share, declared once with one default each.

    Each help states its default itself, so train.py's DefaultsHelpFormatter adds nothing and the analyses'
    plain formatter prints the same text: the three --help outputs agree."""
    g = p.add_argument_group("source model, data and seed (the same in train.py, discrepancy.py and probe.py)")
    g.add_argument("--backbone", metavar="NAME_OR_PATH", default=None,
                   help="source model M^s: a backbones.BACKBONES name or a local folder (default: the (first) "
                        "checkpoint's when one is read, else the body of §4 for the task's inputs: swin_base for 2D, "
                        "roberta_base for 1D; probe.py, which has no task, takes swin_base)")
    g.add_argument("--weights", metavar="PATH", default=None,
                   help="local weight file/folder for --backbone, for machines without a network (default: the "
                        "hub or its local cache)")
    g.add_argument("--tiny", action="store_true",
                   help="tiny random-initialised backbone, for tests and the CPU (default: %(default)s)")
    g.add_argument("--data-dir", metavar="DIR", default="data",
                   help="root of the data layout: the tasks' folders and the source surrogates' "
                        "cifar-10-batches-py/ and conll2003/ (docs/data.md) (default: %(default)s)")
    g.add_argument("--synthetic-data", action="store_true",
                   help="synthetic data in the exact shapes of the task and of the source surrogate, no files "
                        "needed (default: %(default)s)")
    g.add_argument("--seed", metavar="S", type=nonneg_int, default=0,
                   help="seed of everything random: data order and subsamples, random initialisations (--tiny), "
                        "Alg. 2's random (B, π), t-SNE (default: %(default)s, as in ORCA's configs)")


# --------------------------------------------------------------------------------------------------
# Expected mistakes: one line, an exit code, no traceback
# --------------------------------------------------------------------------------------------------
def expected_errors(*extra) -> tuple:
    """Error classes of expected mistakes (bad arguments, files, shapes) of the library, plus a tool's `extra`."""
    import backbones
    import data
    import embedders
    import losses
    import meta
    import predictors
    return (RunError, backbones.BackboneError, data.DataError, embedders.EmbedderError, predictors.PredictorError,
            losses.LossError, meta.MetaGradError, *extra)


def run_command(body, interrupted=None) -> int:
    """Run body() (a tool's work) and return its exit code: 0; an expected mistake prints 'error: ...' (one line)
    and returns 2, a non-finite loss 3; Ctrl-C prints interrupted() (one line, rank 0 only) and returns 130."""
    try:
        body()
    except expected_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE if isinstance(e, NonFiniteLoss) else EXIT_USAGE
    except KeyboardInterrupt:
        if interrupted is not None and is_main_process():
            print(interrupted(), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
