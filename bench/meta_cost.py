"""Cost of one MoNA stage-1 step (meta.py) relative to one plain fine-tuning step. Not a test.

    python bench/meta_cost.py            # a few minutes on a 2-core CPU

Setting: a 4-layer pre-LN transformer encoder θ_f (width 256, 8 heads, FFN 1024,
no dropout, final LayerNorm), batch 32 × 64 tokens, 16 target channels into the embedder φ_e (Linear +
LayerNorm, App. A.2), 48-d source "patches" through a frozen source embedder θ^S_e0, 10 classes, a linear
head on mean-pooled features, cross-entropy L_inner, align + uniform L_outer on L2-normalised pooled
source features, fp32, CPU, default SDPA dispatch (the autograd variants switch to the MATH kernel inside
meta.py). Each variant runs in a fresh subprocess (clean peak RSS), with one intra-op thread: 1 warm-up +
5 measured steps; time = median process CPU time of a step; memory = peak RSS during the steps (the peak
counter is reset after setup via /proc/self/clear_refs) minus RSS after setup. The set of variants is run
ROUNDS times; each round's figures are divided by that round's plain step, and the table shows the median
ratio over rounds (other jobs on a shared machine shift CPU times by 10 % or more within minutes). A step is the gradient
computation only (forward + backward, or the meta-gradient call and assigning φ's .grad); no optimizer
step in any variant. The cached outer_grad v is computed in a separate process and loaded from a file.

CPU time includes the kernel's page-fault time. glibc returns freed heap memory to the OS between the
differently shaped passes of a meta step and faults it back in later (exact-FD: ~43k minor faults per step
against ~17k for its passes run alone, about 0.1 of a plain step on this machine; a plain step in steady
state has none). Exit status 1 when a bar fails.
"""
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import meta  # noqa: E402

B, N, C_T, C_S, D, HEADS, FFN, LAYERS, K = 32, 64, 16, 48, 256, 8, 1024, 4, 10
ALPHA, LAM = 1e-3, 0.5
WARMUP, MEASURED = 1, 5
ROUNDS = 3           # each round runs every variant once, in a fresh process

# name: (label, meta function or None, hvp, steps, cached v)
VARIANTS = {
    "plain": ("plain step (all parameters, loss.backward())", None, None, 1, False),
    "phi_only": ("phi-only first-order step", None, None, 1, False),
    "exact_autograd": ("exact, autograd (double backward)", "exact", "autograd", 1, False),
    "exact_fd": ("exact, finite-difference HVP", "exact", "finite_difference", 1, False),
    "taylor_autograd": ("Taylor, autograd (double backward)", "taylor", "autograd", 1, False),
    "taylor_fd": ("Taylor, finite-difference HVP", "taylor", "finite_difference", 1, False),
    "taylor_fd_cached": ("Taylor, FD HVP, cached outer_grad", "taylor", "finite_difference", 1, True),
    "exact_autograd_k3": ("exact, autograd, K = 3 steps", "exact", "autograd", 3, False),
}
# variant: (max time ratio, max memory ratio)
BARS = {"exact_fd": (3.6, 1.7), "taylor_fd": (3.2, 1.3), "taylor_fd_cached": (2.3, 1.2)}


def align_uniform(z, y, t=2.0):
    """Eq. (4) in minimisation form (losses.align_uniform_loss) on L2-normalised z (n, d)."""
    d2 = (2 - 2 * z @ z.T).clamp_min(0)                       # ‖z_i − z_j‖²   (n, n)
    off = ~torch.eye(len(y), dtype=torch.bool)
    same = (y[:, None] == y[None, :]) & off
    return d2[same].mean() + torch.logsumexp(-t * d2[off], 0) - math.log(int(off.sum()))


def build():
    torch.manual_seed(0)
    embedder = nn.Sequential(nn.Linear(C_T, D), nn.LayerNorm(D))                        # φ_e
    layer = nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    encoder = nn.TransformerEncoder(layer, LAYERS, norm=nn.LayerNorm(D), enable_nested_tensor=False)  # θ_f
    head = nn.Linear(D, K)                                                               # θ_h
    src_embedder = nn.Linear(C_S, D).requires_grad_(False)                               # θ^S_e0 (frozen)
    x_t, y_t = torch.randn(B, N, C_T), torch.randint(0, K, (B,))
    x_s, y_s = torch.randn(B, N, C_S), torch.arange(B) % K
    return embedder, encoder, head, src_embedder, x_t, y_t, x_s, y_s


def make_step(name, v_path=None):
    """Setup for one variant; returns a zero-argument function doing one step."""
    label, fn, hvp, steps, cached = VARIANTS.get(name, (None, None, None, 1, False))
    embedder, encoder, head, src_embedder, x_t, y_t, x_s, y_s = build()
    if name == "plain":
        params = [*embedder.parameters(), *encoder.parameters(), *head.parameters()]

        def step():
            for p in params:
                p.grad = None
            F.cross_entropy(head(encoder(embedder(x_t)).mean(1)), y_t).backward()
        return step
    encoder.requires_grad_(False)                          # stage 1: θ_f stays at θ^S_f0
    head.requires_grad_(False)                             # θ_h fixed during stage 1 (default)
    phi = dict(embedder.named_parameters())
    if name == "phi_only":
        def step():
            for p in phi.values():
                p.grad = None
            F.cross_entropy(head(encoder(embedder(x_t)).mean(1)), y_t).backward()
        return step

    def inner_loss(theta_f, phi):
        tokens = functional_call(embedder, phi, (x_t,))                  # (B, N, D)
        feats = functional_call(encoder, theta_f, (tokens,))            # (B, N, D)
        return F.cross_entropy(head(feats.mean(1)), y_t)

    def outer_loss(theta_f):
        with torch.no_grad():
            tokens = src_embedder(x_s)                                   # e(x^s; θ^S_e0)   (B, N, D)
        feats = functional_call(encoder, theta_f, (tokens,))
        return align_uniform(F.normalize(feats.mean(1), dim=-1), y_s)

    theta_f = dict(encoder.named_parameters())
    if name == "save_v":
        v, _ = meta.outer_gradient(outer_loss, theta_f)
        torch.save(v, v_path)
        return None
    v = torch.load(v_path) if cached else None

    def step():
        if fn == "exact":
            grads, _ = meta.meta_grad_exact(inner_loss, outer_loss, theta_f, phi, ALPHA, LAM, steps=steps, hvp=hvp)
        else:
            grads, _ = meta.meta_grad_taylor(inner_loss, None if cached else outer_loss, theta_f, phi, ALPHA,
                                             LAM, hvp=hvp, outer_grad=v)
        for k, p in phi.items():
            p.grad = grads[k]
    return step


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(name, v_path):
    torch.set_num_threads(1)
    step = make_step(name, v_path)
    if step is None:
        return
    gc.collect()
    try:                                                   # reset the peak-RSS counter (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        peak = lambda: _rss_kib("VmHWM")
    except OSError:
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base = _rss_kib("VmRSS")
    times = []
    for i in range(WARMUP + MEASURED):
        t0 = time.process_time()
        step()
        if i >= WARMUP:
            times.append(time.process_time() - t0)
    print(json.dumps({"time_s": statistics.median(times), "mem_mib": (peak() - base) / 1024}))


def main():
    ratios = {name: {"time": [], "memory": []} for name in VARIANTS}
    absolute = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        v_path = os.path.join(tmp, "v.pt")
        subprocess.run([sys.executable, __file__, "--child", "save_v", v_path], check=True)
        for r in range(ROUNDS):                            # rounds interleave the variants: load drift
            rows = {}                                      # on a shared machine hits all of them alike
            for name in VARIANTS:
                out = subprocess.run([sys.executable, __file__, "--child", name, v_path], check=True,
                                     capture_output=True, text=True).stdout
                rows[name] = json.loads(out.strip().splitlines()[-1])
                absolute[name].append(rows[name])
            for name in VARIANTS:                          # ratios to the plain step of the same round
                ratios[name]["time"].append(rows[name]["time_s"] / rows["plain"]["time_s"])
                ratios[name]["memory"].append(rows[name]["mem_mib"] / rows["plain"]["mem_mib"])
            print(f"  round {r + 1}/{ROUNDS}: " + ", ".join(f"{n} {ratios[n]['time'][-1]:.2f}x/{ratios[n]['memory'][-1]:.2f}x"
                                                         for n in VARIANTS if n != "plain"), flush=True)
    t0 = statistics.median(row["time_s"] for row in absolute["plain"])
    m0 = statistics.median(row["mem_mib"] for row in absolute["plain"])
    print(f"\nMoNA stage-1 step cost, ratios to one plain fine-tuning step ({t0:.3f} s CPU, +{m0:.0f} MiB peak;"
          f" median over {ROUNDS} rounds); torch {torch.__version__}, 1 thread, {LAYERS}x{D} transformer, "
          f"batch {B}x{N}")
    print(f"{'variant':<46} {'time':>6} {'memory':>7}   bars (time / memory)")
    failed = False
    for name, (label, *_rest) in VARIANTS.items():
        t, m = statistics.median(ratios[name]["time"]), statistics.median(ratios[name]["memory"])
        bar = ""
        if name in BARS:
            bt, bm = BARS[name]
            ok_t, ok_m = t <= bt, m <= bm
            failed |= not (ok_t and ok_m)
            bar = f"<= {bt}: {'PASS' if ok_t else 'FAIL'}   <= {bm}: {'PASS' if ok_m else 'FAIL'}"
        print(f"{label:<46} {t:6.2f} {m:7.2f}   {bar}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
