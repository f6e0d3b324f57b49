"""Test hooks for train.py runs, by patching a function (library code reads no test-only settings): a simulated
kill right after a given epoch is logged, or a pause there that gives a test time to send a real SIGINT.

    with kill_after("1:1"): train.main(argv)          # KeyboardInterrupt after stage 1, epoch 1 is saved
    python tests/run_hooks.py 2:1 --task ...          # train.py's command line, paused 120 s after stage 2 epoch 1
"""
import contextlib
import os
import sys
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from support import runs  # noqa: E402


def _after(at: str, action):
    """RunLog.log that runs `action()` once the epoch `at` = "stage:epoch" is logged (its files written)."""
    real = runs.RunLog.log

    def log(self, row, resume_state):
        real(self, row, resume_state)
        if f"{row['stage']}:{row['epoch']}" == at:
            action()
    return log


@contextlib.contextmanager
def kill_after(at: str):
    """A simulated kill (KeyboardInterrupt) right after epoch `at` is logged, inside the `with` block only."""
    def kill():
        raise KeyboardInterrupt(f"simulated kill after {at}")
    with mock.patch.object(runs.RunLog, "log", _after(at, kill)):
        yield


if __name__ == "__main__":                          # python tests/run_hooks.py STAGE:EPOCH <train.py flags>
    import signal

    import train
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the tests were started as a background job
    # (`pytest &` in a script), whose children inherit SIGINT ignored and so never see the test's SIGINT
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with mock.patch.object(runs.RunLog, "log", _after(sys.argv[1], lambda: time.sleep(120))):
        sys.exit(train.main(sys.argv[2:]))
