"""Cost of the discrepancy estimators of discrepancy.py (App. A.4, Alg. 2) on a paper-sized problem.

    python bench/discrepancy_cost.py [I]        # I random experiments (default 100,000, as in App. A.4)

Problem: n_t = 10,000 target samples, |Y^t| = 100 target classes, |Y^s| = 1,000 source classes; random logits
N(0, 1) with planted structure (target class t raises source class B*[t] by +3.0 and a second "confuser"
class by +2.0), so a good (B, π) exists but is not trivial. Reports
  1. the paper's estimator (method="random"): time per experiment and for I experiments, its minimum D;
  2. the assignment method on the SAME subsets (same seed): its minimum, and how many subsets it needs
     before its running minimum reaches the random search's final minimum;
  3. the assignment method's local search started from ONE random subset, and from the best of 100.
Not a test. Uses whatever threads numpy's BLAS is given (set OMP_NUM_THREADS to pin it).
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import discrepancy as dm  # noqa: E402

N_T, T, S = 10_000, 100, 1_000


def planted_problem(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, T, N_T)  # (n_t,)
    z = rng.standard_normal((N_T, S)).astype(np.float32)  # (n_t, |Y^s|)
    B_star = rng.choice(S, T, replace=False)
    confuser = rng.integers(0, S, T)
    z[np.arange(N_T), B_star[y]] += 3.0
    z[np.arange(N_T), confuser[y]] += 2.0
    return z, y, B_star


def main():
    I = int(sys.argv[1]) if len(sys.argv) > 1 else dm.NUM_EXPERIMENTS
    z, y, B_star = planted_problem()
    D_planted, _ = dm.subset_discrepancy(z, y, B_star, np.arange(T))
    print(f"problem: n_t={N_T}, |Y^t|={T}, |Y^s|={S}; planted subset with its own matching: D = {D_planted:.4f}")

    t0 = time.perf_counter()
    r = dm.discrepancy_details(z, y, I, "random", seed=0, progress=False)
    t_random = time.perf_counter() - t0
    per = t_random / I
    print(f"[random, Alg. 2]      I={I}: {t_random:.1f} s ({per * 1e3:.3f} ms/experiment; "
          f"I=100,000 -> {per * 1e5:.0f} s)  D = {r['discrepancy']:.4f}")

    t0 = time.perf_counter()
    a = dm.discrepancy_details(z, y, I, "assignment", seed=0, progress=False, local_search_steps=0)
    t_assign = time.perf_counter() - t0
    reach = int(np.argmax(a["curve"] <= r["discrepancy"])) + 1
    print(f"[assignment, same subsets] {t_assign:.1f} s, {a['num_assignments']} assignment problems solved "
          f"(the rest pruned by the bound)  D = {a['discrepancy']:.4f}; "
          f"its running minimum reaches the random search's final minimum after {reach} subset(s)")

    for n_sub in (1, 100):
        t0 = time.perf_counter()
        ls = dm.discrepancy_details(z, y, n_sub, "assignment", seed=0, progress=False)
        t_ls = time.perf_counter() - t0
        print(f"[assignment, {n_sub} random subset(s) + local search] {t_ls:.1f} s, "
              f"{len(ls['local_search_history'])} swaps: D = {ls['discrepancy']:.4f}")


if __name__ == "__main__":
    main()
