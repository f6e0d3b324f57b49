"""Modality semantic knowledge discrepancy D(M^s, M^t): Definition 2.1, App. A.4 (Eq. 10-11, Alg. 2), Fig. 4.

Paper: "Learning Modality Knowledge Alignment for Cross-Modality Transfer", Ma et al., ICML 2024,
arXiv 2406.18864. Paper map: §2.3 (Definition 2.1) -> `modality_discrepancy`; Appendix A.4 Eq. (10)-(11)
(0-1 mismatch for one (B, π)) -> `subset_discrepancy`; Alg. 2 (minimum over I random (B, π)) ->
`discrepancy_details(method="random")`; Fig. 4 (D before / after alignment) -> the command line with or
without --checkpoint.

Definition 2.1:  D(M^s, M^t) = inf_{π, B} d( P(Y^s_{π,B} | X̂), P(Y^t | X̂) ),  B ⊂ Y^s, |B| = |Y^t|.
App. A.4 makes it computable: each target sample x^t_i goes through the target embedder into X̂ and then
through the COMPLETE source model (encoder + its own classifier) giving source logits z^s_i; within a
subset B the source "label" is y^s_{i,B} = argmax_{k∈B} [z^s_i]_k; d is the 0-1 mismatch (Eq. 10) averaged
over the n_t target samples (Eq. 11); the infimum over (π, B) is replaced by the minimum over I = 100,000
random experiments, each drawing a random B and a random π (Alg. 2).

Two estimators, one entry point (`modality_discrepancy` / `discrepancy_details`):
  method="random"      the paper's Alg. 2, vectorised over chunks of experiments, seeded.
  method="assignment"  ours: for a fixed B the best π is an assignment problem on the contingency table
                       C[b, t] = #{i : y^s_{i,B} = B[b], y^t_i = t}; maximising the matched mass with
                       scipy's linear_sum_assignment gives min_π D(π, B) = 1 - max_match / n_t EXACTLY.
                       It scores the SAME random subsets as method="random" with the same seed (hence is
                       never larger, see `discrepancy_details`), then improves the best subset by local
                       search (swap one class of B for one outside B). With exhaustive=True it enumerates
                       every B and returns the exact D of Definition 2.1 under the Eq. (10)-(11) choice of d.

Paper symbol -> code name -> shape
  z^s_i, i = 1..n_t            source_logits / z        (n_t, |Y^s|)   complete source model, target inputs
  y^t_i                        target_labels / y        (n_t,)         ints in [0, |Y^t|)
  |Y^s|, |Y^t|                 S, T                     ints, S >= T (the §2.3 assumption)
  B = Y^s_B                    B / "subset"             (T,)           ordered: slot b holds class B[b]
  y^s_{i,B}                    pred / slot              (n_t,)         class / its position b in B
  π                            pi / "permutation"       (T,)           target t is matched with slot pi[t]
  Y^s_{π,B} = π(Y^s_B)         "matching"               (T,)           source class matched with target t
  I                            num_experiments          int            100,000 in App. A.4
  d(.,.) (Eq. 10)              0-1 mismatch             (n_t,)
  D(M^s, M^t) (Eq. 11, min)    return value             float in [0, 1]
  (ours) contingency table     C                        (T, T)         C[b, t]

Each experiment of Alg. 2 is, in effect, one uniformly random one-to-one map from target classes to source
classes (t -> B[π(t)]); we draw B in random order AND π as the paper does, so the counts match Alg. 2.

Tie rule (the paper does not give one): argmax_{k∈B} picks the highest logit and, among equal logits, the
LOWEST source class index, whatever the order of B. This makes y^s_{i,B} a function of the set B.

On the same subsets the assignment method is never worse than the random search, and its local search usually
ends far lower (bench/discrepancy_cost.py measures both; bench/README.md gives the numbers).

The command line (`python discrepancy.py --task TASK ...`: `get_parser`, `main`) is at the end of the file.
It uses argparse like train.py, imported inside those two functions only (the estimator and the other library
functions take explicit arguments), and takes the options it shares with train.py and probe.py (--backbone,
--weights, --tiny, --data-dir, --synthetic-data, --seed) from support/cli.py; it imports torch
and the sibling modules (backbones, data, embedders, support/) lazily too, so the estimator needs only
numpy and scipy. Checkpoints are read by runtime.load_checkpoint (next to checkpoint_dict, which train.py
writes them with); `load_prefixed` loads their "embedder." / "encoder." tensors, for probe.py too.
"""
from __future__ import annotations

import itertools
import math
import sys

import numpy as np

# ---------------------------------------------------------------------------------------------------------
# constants

METHODS = ("random", "assignment")
NUM_EXPERIMENTS = 100_000  # App. A.4: "we conduct random experiment for 100,000 times"
LOCAL_SEARCH_STEPS = 1000  # (ours) most accepted swaps of the local search after the random subsets
MAX_EXHAUSTIVE = 2_000_000  # (ours) most subsets C(|Y^s|, |Y^t|) exhaustive=True will enumerate
_CHUNK_CELLS = 1 << 19  # experiments per chunk * n_t: bounds the (chunk, n_t) work arrays (~2-4 MB each)


class DiscrepancyError(ValueError):
    """Bad input to the discrepancy estimator or its command line; the message is one line."""


# ---------------------------------------------------------------------------------------------------------
# helpers: input checks, rank tables, the random draws of Alg. 2, argmax within B for many subsets


def _check_inputs(source_logits, target_labels, num_target_classes):
    """-> z (n_t, S) float, y (n_t,) int64, S, T. Enforces shapes, label range and |Y^s| >= |Y^t|."""
    z = np.asarray(source_logits)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise DiscrepancyError(f"source_logits must be a non-empty 2-D array (n_t, |Y^s|); got shape {z.shape}")
    if not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
        raise DiscrepancyError(f"source_logits must be real numbers; got dtype {z.dtype}")
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise DiscrepancyError("source_logits contain NaN or inf; check the source model's outputs")
    y = np.asarray(target_labels)
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise DiscrepancyError(
            f"target_labels must have shape (n_t,) = ({z.shape[0]},) to match source_logits; got {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DiscrepancyError(f"target_labels must be integer class indices; got dtype {y.dtype}")
    y = y.astype(np.int64)
    n, S = z.shape
    T = int(y.max()) + 1 if num_target_classes is None else int(num_target_classes)
    if T < 1 or y.min() < 0 or y.max() >= T:
        raise DiscrepancyError(
            f"target_labels must lie in [0, {T}) (|Y^t| = {T}); found range [{y.min()}, {y.max()}]"
        )
    if S < T:
        raise DiscrepancyError(
            f"Definition 2.1 assumes |Y^s| >= |Y^t|; got |Y^s| = {S} source classes < |Y^t| = {T} target classes"
        )
    return z, y, S, T


def _rank_tables(z, block=1024):
    """Rank form of the logits, so that argmax within any B is a running minimum of small integers.

    rank_t[k, i] = position of class k when sample i's logits are sorted high -> low (ties: lower k first);
    order_t[r, i] = the class at position r. Both (S, n_t), int16 when S fits (less memory traffic).
    """
    n, S = z.shape
    dtype = np.int16 if S <= np.iinfo(np.int16).max else np.int32
    rank_t = np.empty((S, n), dtype)
    order_t = np.empty((S, n), dtype)
    positions = np.arange(S, dtype=dtype)
    for lo in range(0, n, block):  # blocks keep argsort's int64 output small for |Y^s| ~ 22k classes
        order = np.argsort(-z[lo:lo + block], axis=1, kind="stable")  # (b, S) stable: ties -> lower class
        order_t[:, lo:lo + block] = order.T
        rank = np.empty(order.shape, dtype)
        np.put_along_axis(rank, order, positions[None, :], axis=1)
        rank_t[:, lo:lo + block] = rank.T
    return rank_t, order_t


def _draw_experiments(rng, c, S, T):
    """Alg. 2's random draws for c experiments: a random subset B (|B| = T) and a random permutation π.

    Each experiment consumes S + T uniforms in row-major order (so results do not depend on the chunk size):
    B = the T classes with the smallest of the first S keys, in key order; π = argsort of the last T keys.
    """
    keys = rng.random((c, S + T))  # (c, S + T)
    part = np.argpartition(keys[:, :S], T - 1, axis=1)[:, :T] if T < S else np.tile(np.arange(S), (c, 1))
    order = np.argsort(np.take_along_axis(keys[:, :S], part, axis=1), axis=1)
    B = np.take_along_axis(part, order, axis=1)  # (c, T) random ordered subset of source classes
    pi = np.argsort(keys[:, S:], axis=1)  # (c, T) pi[e, t] = slot of B[e] matched with target label t
    return B, pi


def _predicted_slots(rank_t, order_t, B):
    """slot[e, i] = b such that B[e, b] = y^s_{i,B_e} = argmax_{k ∈ B_e} z_ik (Eq. 10's source label).  (c, n_t)"""
    c, T = B.shape
    S, n = rank_t.shape
    best = rank_t[B[:, 0]].copy()  # (c, n) best (smallest) rank seen so far within B
    for b in range(1, T):
        np.minimum(best, rank_t[B[:, b]], out=best)
    pred = order_t[best, np.arange(n)[None, :]].astype(np.intp)  # (c, n) y^s_{i,B} as a source class
    pos = np.full((c, S), -1, np.intp)
    np.put_along_axis(pos, B, np.broadcast_to(np.arange(T), B.shape), axis=1)  # pos[e, B[e, b]] = b
    return np.take_along_axis(pos, pred, axis=1)  # (c, n)


def _contingency(slot, y, T):
    """C[e, b, t] = #{i : slot[e, i] = b, y_i = t}.  slot (c, n_t) -> C (c, T, T)."""
    c = slot.shape[0]
    cell = (np.arange(c)[:, None] * T + slot) * T + y[None, :]
    return np.bincount(cell.ravel(), minlength=c * T * T).reshape(c, T, T)


def _best_matching(C):
    """max_π Σ_t C[π(t), t] by linear_sum_assignment -> (matched mass, pi) with pi[t] = slot for target t."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(C, maximize=True)
    pi = np.empty(C.shape[1], np.intp)
    pi[cols] = rows
    return int(C[rows, cols].sum()), pi


def subset_discrepancy(source_logits, target_labels, subset, permutation=None, *, num_target_classes=None):
    """D for ONE subset B: Eq. (11) with the given π, or min over all π (assignment) when permutation=None.

    subset: (|Y^t|,) distinct source classes, slot b holds subset[b]; permutation: (|Y^t|,) pi[t] = slot of
    target t. Returns (D, pi). Plain reference for users and tests; the search loops below are vectorised.
    """
    z, y, S, T = _check_inputs(source_logits, target_labels, num_target_classes)
    B = np.asarray(subset, dtype=np.intp).reshape(1, -1)
    if B.shape[1] != T or len(set(B[0].tolist())) != T or B.min() < 0 or B.max() >= S:
        raise DiscrepancyError(f"subset must hold {T} distinct source classes in [0, {S}); got {B[0].tolist()}")
    slot = _predicted_slots(*_rank_tables(z), B)[0]  # (n,)
    if permutation is None:
        matched, pi = _best_matching(_contingency(slot[None], y, T)[0])
        return (len(y) - matched) / len(y), pi
    pi = np.asarray(permutation, dtype=np.intp)
    if sorted(pi.tolist()) != list(range(T)):
        raise DiscrepancyError(f"permutation must be a permutation of range({T}); got {pi.tolist()}")
    # Eq. (10)-(11): D = 1/n_t Σ_i 1[y^s_{i,B} != π(y^t_i)]
    return float(np.mean(slot != pi[y])), pi


# ---------------------------------------------------------------------------------------------------------
# local search over subsets (ours): swap one class of B for one outside B, matching held fixed


def _swap_gains(rank_t, y, B, pi):
    """Matched mass after every single swap (slot o of B <- class k outside B), with π held fixed.

    Returns (N (K', T), outside (K',), current matched mass). Exact under the tie rule, because a class
    k beats the best class of B for sample i iff rank(k) < rank(best). With a1/a2 the best / second-best
    slot of B for sample i, h1/h2 whether those are matched with y_i, Q[i, o] = 1[y_i is matched with slot o]:
      N[k, o] = Σ_{i: a1≠o} (k beats a1 ? Q[i,o] : h1_i) + Σ_{i: a1=o} (k beats a2 ? Q[i,o] : h2_i).
    """
    T = B.shape[0]
    S, n = rank_t.shape
    ar = np.arange(n)
    ftype = np.float32 if n < (1 << 24) else np.float64  # exact integer counts in the matmuls
    RB = rank_t[B].astype(np.int64)  # (T, n)
    a1 = RB.argmin(0)
    r1 = RB[a1, ar]
    if T > 1:
        RB[a1, ar] = S
        a2 = RB.argmin(0)
        r2 = RB[a2, ar]
    else:  # removing the only class of B: the incoming class wins every sample
        a2, r2 = a1, np.full(n, S)
    sigma = np.empty(T, np.intp)
    sigma[pi] = np.arange(T)  # sigma[slot] = target matched with that slot
    Q = (y[:, None] == sigma[None, :]).astype(ftype)  # (n, T)
    h1, h2 = Q[ar, a1], Q[ar, a2]  # (n,)
    P = np.zeros((n, T), ftype)
    P[ar, a1] = 1.0  # (n, T) one-hot of the best slot
    current = h1.sum()
    base = current - (P * h1[:, None]).sum(0) + (P * h2[:, None]).sum(0)  # (T,) k never wins
    in_B = np.zeros(S, bool)
    in_B[B] = True
    outside = np.flatnonzero(~in_B)  # (K',)
    R_out = rank_t[outside]  # (K', n)
    M1 = (R_out < r1[None, :]).astype(ftype)  # (K', n) class k beats the best class of B for sample i
    M2 = (R_out < r2[None, :]).astype(ftype)  # (K', n) ... beats the second best
    N = base[None, :] + M1 @ ((1.0 - P) * (Q - h1[:, None])) + M2 @ (P * (Q - h2[:, None]))  # (K', T)
    return N, outside, int(round(current))


def _local_search(rank_t, order_t, y, B, pi, matched, max_steps):
    """Best-improvement swaps until none raises the matched mass (or max_steps); re-solve π after each."""
    n, T = len(y), len(B)
    history = []
    for _ in range(max_steps):
        if T == len(rank_t) or matched == n:
            break
        N, outside, _ = _swap_gains(rank_t, y, B, pi)
        k, o = np.unravel_index(np.argmax(N), N.shape)
        if N[k, o] <= matched + 0.5:  # no swap matches more samples under the current π
            break
        B_new = B.copy()
        B_new[o] = outside[k]
        slot = _predicted_slots(rank_t, order_t, B_new[None])
        m_new, pi_new = _best_matching(_contingency(slot, y, T)[0])  # >= N[k, o] > matched
        if m_new <= matched:  # cannot happen under the exact tie rule; guard anyway
            break
        B, pi, matched = B_new, pi_new, m_new
        history.append((n - matched) / n)
    return B, pi, matched, history


# ---------------------------------------------------------------------------------------------------------
# the estimators (Alg. 2 and ours)


def discrepancy_details(source_logits, target_labels, num_experiments=NUM_EXPERIMENTS, method="random", seed=0,
                        *, num_target_classes=None, exhaustive=False, local_search_steps=LOCAL_SEARCH_STEPS,
                        chunk_size=None, progress=True):
    """Estimate D(M^s, M^t) (Definition 2.1 with Eq. 10-11) and return how it was found.

    source_logits: (n_t, |Y^s|) logits of the complete source model on the embedded target samples.
    target_labels: (n_t,) ints in [0, |Y^t|) (|Y^t| = num_target_classes, default max label + 1).
    method="random": Alg. 2. For e = 1..I draw B_e and π_e (numpy Generator seeded by `seed`) and return
        min_e (1/n_t) Σ_i 1[y^s_{i,B_e} != π_e(y^t_i)].
    method="assignment": the same I subsets B_e (same seed -> the same draws), each scored by
        min_π D(π, B_e) = 1 - max_π Σ_t C_e[π(t), t] / n_t, solved exactly by linear_sum_assignment; then a
        local search from the best subset (at most `local_search_steps` improving swaps).
        It NEVER returns more than method="random" with the same seed and num_experiments: for every B_e
        the assignment is optimal over all permutations, including the π_e the random search drew, so
        min_π D(π, B_e) <= D(π_e, B_e) for each e, hence also for the minimum over e; the local search
        only accepts strict decreases. Subsets whose bound 1 - min(Σ_b max_t C[b,t], Σ_t max_b C[b,t]) / n_t
        already reaches the best value so far skip the assignment solve (exact pruning).
        exhaustive=True scores every subset (C(|Y^s|, |Y^t|) <= MAX_EXHAUSTIVE) instead: this is the exact
        infimum over (π, B) of Definition 2.1 for the 0-1 mismatch d.
    The random draws: each experiment uses |Y^s| + |Y^t| uniforms (see _draw_experiments), so the result
    does not depend on chunk_size. Returns a dict with
      discrepancy (float), method, subset (T,) source classes, permutation (T,) pi[t] = slot of target t,
      matching (T,) source class matched with target t (= subset[permutation]), curve (running minimum over
      the subsets scored, in order), num_subsets, num_assignments, local_search_history, and for the
      random draws also random_values (D(π_e, B_e) per experiment) and random_discrepancy (their minimum,
      which is what method="random" returns). n_t, num_source_classes, num_target_classes, seed.
    """
    if method not in METHODS:
        raise DiscrepancyError(f"method must be one of {METHODS}; got {method!r}")
    if exhaustive and method != "assignment":
        raise DiscrepancyError("exhaustive=True enumerates subsets with exact permutations: use method='assignment'")
    z, y, S, T = _check_inputs(source_logits, target_labels, num_target_classes)
    n = len(y)
    if exhaustive:
        total = math.comb(S, T)
        if total > MAX_EXHAUSTIVE:
            raise DiscrepancyError(f"exhaustive search needs C({S}, {T}) = {total} subsets > {MAX_EXHAUSTIVE}; "
                                   "use exhaustive=False (random subsets + local search)")
        combos = itertools.combinations(range(S), T)
    else:
        total = int(num_experiments)
        if total < 1:
            raise DiscrepancyError(f"num_experiments must be >= 1; got {num_experiments}")
    rng = np.random.default_rng(seed)
    rank_t, order_t = _rank_tables(z)
    c_max = int(chunk_size) if chunk_size else max(1, min(4096, _CHUNK_CELLS // n))

    curve = np.empty(total)  # running minimum over scored subsets
    random_values = None if exhaustive else np.empty(total)
    best = (np.inf, None, None)  # (D, B, pi)
    n_assign = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, desc=f"D(M^s,M^t) [{method}]", unit="subset", leave=False)
    done = 0
    while done < total:
        c = min(c_max, total - done)
        if exhaustive:
            B = np.array(list(itertools.islice(combos, c)), dtype=np.intp).reshape(c, T)
        else:
            B, pi = _draw_experiments(rng, c, S, T)  # Alg. 2: random subset B and permutation π
        C = _contingency(_predicted_slots(rank_t, order_t, B), y, T)  # (c, T, T)
        if not exhaustive:
            # Eq. (10)-(11) for each experiment: D_e = 1 - (1/n_t) Σ_t C_e[π_e(t), t]
            matched = C[np.arange(c)[:, None], pi, np.arange(T)[None, :]].sum(1)  # (c,)
            random_values[done:done + c] = (n - matched) / n  # mismatches / n_t
        if method == "random":
            e = int(np.argmin(random_values[done:done + c]))
            if random_values[done + e] < best[0]:
                best = (random_values[done + e], B[e].copy(), pi[e].copy())
            curve[done:done + c] = np.minimum.accumulate(random_values[done:done + c])
        else:
            # bound on the matched mass of the best matching: each slot / each target matched at most once
            upper = np.minimum(C.max(2).sum(1), C.max(1).sum(1))  # (c,)
            for e in range(c):
                if (n - upper[e]) / n < best[0]:
                    m, p = _best_matching(C[e])
                    n_assign += 1
                    if (n - m) / n < best[0]:
                        best = ((n - m) / n, B[e].copy(), p)
                curve[done + e] = best[0]
        if done > 0:
            curve[done:done + c] = np.minimum(curve[done:done + c], curve[done - 1])
        done += c
        bar.update(c)
    bar.close()

    D, B_best, pi_best = best
    history = []
    if method == "assignment" and not exhaustive and local_search_steps > 0:
        matched0 = n - int(round(D * n))  # D = mismatches / n_t exactly
        B_best, pi_best, matched, history = _local_search(rank_t, order_t, y, B_best, pi_best, matched0,
                                                          int(local_search_steps))
        D = (n - matched) / n
    out = {
        "discrepancy": float(D), "method": method, "subset": np.asarray(B_best),
        "permutation": np.asarray(pi_best), "matching": np.asarray(B_best)[np.asarray(pi_best)],
        "curve": curve, "num_subsets": total, "num_assignments": n_assign,
        "local_search_history": history, "n_t": n, "num_source_classes": S, "num_target_classes": T,
        "seed": seed, "exhaustive": bool(exhaustive),
    }
    if random_values is not None:
        out["random_values"] = random_values
        out["random_discrepancy"] = float(random_values.min())
    return out


def modality_discrepancy(source_logits, target_labels, num_experiments=NUM_EXPERIMENTS, method="random", seed=0,
                         **kwargs):
    """D(M^s, M^t) of Definition 2.1 as a float in [0, 1]; see discrepancy_details for the arguments."""
    return discrepancy_details(source_logits, target_labels, num_experiments, method, seed, **kwargs)["discrepancy"]


# ---------------------------------------------------------------------------------------------------------
# command line: source logits of a target task, then D(M^s, M^t). Torch and the sibling modules load here.

def load_prefixed(module, state, prefix, path):
    """module.load_state_dict of the `prefix.*` entries of a checkpoint's model state; one-line error if off."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise DiscrepancyError(f"checkpoint {path!r} has no '{prefix}*' tensors in its model state")
    try:
        module.load_state_dict(sub, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiscrepancyError(f"checkpoint {path!r}: its '{prefix}*' tensors do not fit the rebuilt model "
                               f"({first}); pass the --backbone/--task/--tiny it was trained with") from None


def target_source_logits(task=None, backbone=None, *, data_dir=None, synthetic=False, tiny=False, weights=None,
                         checkpoint=None, max_samples=None, batch_size=64, seed=0, device=None):
    """Source logits z^s_i of every target training sample (App. A.4) -> (z (n_t, |Y^s|), y (n_t,), spec, info).

    x^t_i -> target embedder -> X̂ (tokens) -> source encoder θ^S_f0 -> source classifier θ^S_h0 = z^s_i
    (SourceModel.logits_from_tokens, the complete source model). The target embedder is
      - without `checkpoint`: build_embedder + init_embedder_from_source, i.e. the Finetuning++ start whose
        patch projection is the source patch embedding tiled over the target channels (channel c <- source
        channel c mod 3): the target data seen through the source's own input map, before any training;
      - with `checkpoint` (a train.py file): the trained φ_e of that run ("embedder.*" keys), e.g.
        stage1_embedder.pt, to measure D after MoNA's alignment stage as in Fig. 4.
    The encoder and the head are always the pretrained ones (Definition 2.1 is about the source model).
    Single-label classification only: Eq. (10) uses "the one-hot embedding of its label". Fig. 4 also shows
    FSD50K, which is multi-label; the paper does not say how it was labelled there, so we refuse such tasks
    rather than guess.
    DEVIATION from App. A.4 (image source only): a 1D body's head gives per-token MLM logits (B, T, V); we
    average them over tokens to one (B, V) row per sample, |Y^s| = V.
    """
    import torch

    import backbones
    import data
    import embedders
    from support import runtime

    ckpt = runtime.load_checkpoint(checkpoint) if checkpoint else None
    cfg = ckpt["config"] if ckpt else {}
    task = task or cfg.get("task")
    if not task:
        raise DiscrepancyError("no target task: pass --task (a key of data.TASKS) or a --checkpoint that names one")
    if ckpt and cfg.get("task") not in (None, task):
        raise DiscrepancyError(f"checkpoint {checkpoint!r} was trained on task {cfg['task']!r}, not {task!r}")
    backbone = backbone or cfg.get("backbone")
    tiny = bool(tiny or cfg.get("tiny", False))
    weights = weights or cfg.get("weights")
    td = data.load_task(task, data_dir, synthetic=synthetic, max_train_samples=max_samples, seed=seed)
    spec = td.spec
    if spec.output != "point" or spec.multilabel:
        raise DiscrepancyError(f"task {spec.name!r} is not single-label classification (output={spec.output!r}, "
                               f"multilabel={spec.multilabel}); Definition 2.1 matches target classes to source "
                               f"classes")
    backbone = backbone or backbones.DEFAULT_BACKBONE[spec.dim]
    torch.manual_seed(cfg.get("seed", seed))  # train.py seeds before building: same tiny random source
    source = backbones.build_backbone(backbone, tiny=tiny, weights=weights)
    if source.modality != spec.dim:
        raise DiscrepancyError(f"backbone {backbone!r} is a {source.modality} body but task {spec.name!r} has "
                               f"{spec.dim} inputs; use {backbones.DEFAULT_BACKBONE[spec.dim]}")
    if "clip" in f"{source.name} {source.hub_id}".lower():
        raise DiscrepancyError(f"backbone {backbone!r} has no source classifier (CLIP's head is an image "
                               f"projection): the discrepancy needs source class logits; use swin_base or vit_base")
    if source.source_head is None:             # e.g. a sentence-transformers folder: a bare BertModel
        raise DiscrepancyError(f"backbone {backbone!r} has no source head (its checkpoint holds the encoder only): "
                               "the discrepancy needs the source model's logits; use a body saved with its head "
                               f"(a *ForMaskedLM folder, or {backbones.DEFAULT_BACKBONE[spec.dim]})")
    C = int(spec.input_shape[0])
    if spec.dim == "1d":
        embedder = embedders.build_embedder(source, C, seq_len=int(spec.input_shape[-1]),
                                            target_seq_len=spec.target_seq_len)
    else:
        embedder = embedders.build_embedder(source, C)
    if ckpt:
        load_prefixed(embedder, ckpt["model"], "embedder.", checkpoint)
    else:
        embedders.init_embedder_from_source(embedder, source)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    source.to(device).eval()
    embedder.to(device).eval()
    n = len(td.train) if max_samples is None else min(len(td.train), int(max_samples))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(td.train, range(n)), batch_size=batch_size)
    zs, ys = [], []
    with torch.no_grad():
        for x, y in loader:
            # target tokens come from the target embedder (patches of a signal), never padded: no attention mask
            z = source.logits_from_tokens(embedder(x.to(device).float()))  # z^s = h^S(f(e(x^t)))  (B, |Y^s|)
            if z.ndim == 3:  # DEVIATION (1D body): per-token MLM logits (B, T, V) -> mean over tokens (B, V)
                z = z.mean(1)
            zs.append(z.float().cpu().numpy())
            ys.append(np.asarray(y).reshape(len(z)))  # (B,) class indices y^t_i
    info = dict(task=spec.name, backbone=backbone, tiny=tiny, n_t=n,
                embedder=f"checkpoint {checkpoint}" if ckpt else "source-initialised (" + (
                    "channel-tiled source patch embedding)" if spec.dim == "2d" else "source LayerNorm + positions)"))
    return np.concatenate(zs), np.concatenate(ys).astype(np.int64), spec, info


def get_parser() -> argparse.ArgumentParser:
    """The command line of the Fig. 4 measurement (argparse, imported here only: the estimator needs none).
    The options shared with train.py and probe.py come from support/cli.py (one declaration)."""
    import argparse

    from support import cli

    p = argparse.ArgumentParser(
        prog="discrepancy.py",
        description="D(M^s, M^t) of Definition 2.1 (App. A.4, Eq. 10-11, Alg. 2; Fig. 4): target training samples "
                    "x^t through a target embedder and the COMPLETE source model give source logits z^s; D is the "
                    "smallest 0-1 mismatch between argmax_{k∈B} z^s and π(y^t) over I random (B, π).")
    g = p.add_argument_group("what to measure")
    g.add_argument("--task", default=None,
                   help="target task M^t, a key of data.TASKS (single-label classification); default: the "
                        "--checkpoint's task")
    g.add_argument("--checkpoint", metavar="CKPT", default=None,
                   help="a train.py checkpoint (e.g. stage1_embedder.pt): use ITS target embedder φ_e (Fig. 4 after "
                        "alignment); without it, the source-initialised embedder")
    g.add_argument("--max-samples", metavar="N", type=cli.pos_int, default=None,
                   help="n_t: use at most N target training samples (default: all)")
    cli.add_shared_arguments(p)
    g = p.add_argument_group("the search over (B, π) (Alg. 2)")
    g.add_argument("--num-experiments", metavar="I", type=cli.pos_int, default=NUM_EXPERIMENTS,
                   help="I = number of random experiments of Alg. 2, each a random subset B ⊂ Y^s with |B| = |Y^t| "
                        "and a random permutation π (default: %(default)s, as in App. A.4)")
    g.add_argument("--method", default="random", choices=METHODS,
                   help="random: the paper's Alg. 2 (min over the I draws); assignment: the same I subsets B, each "
                        "with its exact best π (linear_sum_assignment), then a local search over B (never larger); "
                        "default: %(default)s")
    g = p.add_argument_group("machine")
    g.add_argument("--batch-size", metavar="N", type=cli.pos_int, default=64,
                   help="batch size of the source-model forward passes (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    """python discrepancy.py --task TASK [...]: prints D(M^s, M^t) of the task against the source model.

    Usage mistakes exit 2 with argparse's usage line; expected mistakes (unknown task, missing files, a
    non-classification task, a bad checkpoint, ...) print one line "error: ..." and return 2.
    """
    from support import cli, runtime

    args = get_parser().parse_args(argv)  # argparse: usage + one line, exit 2
    runtime.quiet_libraries({"main": True}, {"no_progress": args.no_progress})   # transformers' loading bars
    try:
        z, y, spec, info = target_source_logits(
            args.task, args.backbone, data_dir=args.data_dir, synthetic=args.synthetic_data, tiny=args.tiny,
            weights=args.weights, checkpoint=args.checkpoint, max_samples=args.max_samples,
            batch_size=args.batch_size, seed=args.seed)
        det = discrepancy_details(z, y, args.num_experiments, args.method, args.seed,
                                  num_target_classes=spec.num_classes,
                                  progress=not args.no_progress and sys.stderr.isatty())  # bars on a terminal only
    except cli.expected_errors(DiscrepancyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_USAGE
    print(f"task {info['task']} (n_t = {det['n_t']}, |Y^t| = {det['num_target_classes']}), source {info['backbone']}"
          f"{' (tiny)' if info['tiny'] else ''} (|Y^s| = {det['num_source_classes']}), embedder: {info['embedder']}")
    print(f"method {args.method}, I = {det['num_subsets']} subsets, seed {args.seed}"
          + (f"; paper's random search on the same subsets: {det['random_discrepancy']:.4f}"
             if args.method == "assignment" else ""))
    print(f"D(M^s, M^t) = {det['discrepancy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
