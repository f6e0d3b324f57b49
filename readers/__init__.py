"""The dataset readers: every task's files in their native formats (NAS-Bench-360, FSD50K, PDEBench, your own
.npy arrays), the source surrogates (CIFAR-10, CoNLL-2003, synthetic), splits and safe file access. data.py's
task registry is the entry point; these modules are what it calls."""
