"""pytest set-up shared by every test file: the suite runs single-threaded.

On a 2-core machine, torch's default of one thread per core in every test process (and in every `train.py`
subprocess the tests start) oversubscribes the CPU: the suite took 8 min 38 s on a busy 2-core machine with the
default threads and about 1 min with one thread per process. Set before any test module imports torch; the
environment variables reach the subprocesses too."""
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
