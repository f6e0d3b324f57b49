"""Tests for bench/scale.py's estimator and bench/gpu_check.py's start. Oracles: closed forms (the FLOPs of a linear
layer and of one attention block, the bytes of weights, activations and gradients of a linear layer), the CPU
allocator's own byte count, and the one-line exit of gpu_check.py on a machine without CUDA."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
import scale  # noqa: E402

B, IN, OUT, F32 = 8, 48, 40, 4


def test_linear_flops_forward_and_backward():
    lin = torch.nn.Linear(IN, OUT)
    fwd = []

    def body(mem, flops):
        x = torch.zeros(B, IN, requires_grad=True)
        with flops():
            y = lin(x)
        fwd.append(None)
        with flops():
            y.sum().backward()
    _, total = scale.simulate([lin], body)
    # forward 2·B·in·out; backward: the input gradient and the weight gradient, 2·B·in·out each
    assert total == 3 * 2 * B * IN * OUT

    def forward_only(mem, flops):
        with flops():
            lin(torch.zeros(B, IN))
    assert scale.simulate([lin], forward_only)[1] == 2 * B * IN * OUT


def test_linear_memory_weights_activations_gradients():
    lin = torch.nn.Linear(IN, OUT)
    weights = (IN * OUT + OUT) * F32
    seen = {}

    def body(mem, flops):
        seen["resident"] = mem.live
        x = torch.zeros(B, IN, requires_grad=True)
        y = lin(x)
        seen["forward"] = mem.live                    # + x + y (x and the weight are what autograd saves)
        y.sum().backward()
        del y
        seen["after"] = mem.live                      # y freed; x, x.grad, weight.grad, bias.grad live
        seen["peak"] = mem.peak
    fm = torch._subclasses.fake_tensor.FakeTensorMode()
    with scale.fake_parameters([lin], fm), fm, scale.LiveBytes(block=1, stub=True) as mem:
        mem.track(scale.resident([lin]))
        body(mem, None)
    assert seen["resident"] == weights
    assert seen["forward"] == weights + (B * IN + B * OUT) * F32
    assert seen["after"] == 2 * weights + 2 * B * IN * F32
    assert seen["peak"] >= seen["forward"] + (IN * OUT + B * IN) * F32    # y, weight.grad and x.grad at once
    assert lin.weight.grad is None and not isinstance(lin.weight, torch._subclasses.fake_tensor.FakeTensor)


def test_block_rounding_is_per_storage():
    with scale.LiveBytes(block=512) as mem:
        a = torch.zeros(3)                            # 12 bytes -> one 512-byte block
        b = torch.zeros(200)                          # 800 bytes -> two blocks
        assert mem.live == 512 + 1024
        del a
        assert mem.live == 1024 and mem.peak == 1536
    del b


def test_attention_block_flops():
    """One timm attention block (explicit QKᵀ and AV, as backbones.py sets fused_attn = False): the qkv and output
    projections 2·B·N·D·3D + 2·B·N·D·D, QKᵀ and AV 2·B·N²·D each (summed over heads)."""
    from timm.models.vision_transformer import Attention
    Bt, N, D, H = 2, 16, 32, 4
    attn = Attention(D, num_heads=H, qkv_bias=True)
    attn.fused_attn = False

    def body(mem, flops):
        with flops():
            attn(torch.zeros(Bt, N, D))
    qk_av = 2 * (2 * Bt * N * N * D)
    assert scale.simulate([attn], body)[1] == 2 * Bt * N * D * 3 * D + 2 * Bt * N * D * D + qk_av


def test_stub_answers_data_dependent_ops_on_fake_tensors():
    """The outer loss (boolean mask, unit-norm check with .item()) runs on fake tensors; a mask selects all."""
    import losses

    def body(mem, flops):
        z = F.normalize(torch.zeros(6, 4) + 1, dim=1)
        loss = losses.align_uniform_loss(z, torch.arange(6) % 3)
        return tuple(loss.shape), tuple(torch.zeros(3, 3)[torch.eye(3, dtype=torch.bool)].shape), float(loss)
    shape, masked, value = scale.simulate([torch.nn.Linear(1, 1)], body)[0]
    assert shape == () and masked == (9,) and value != value          # NaN: no values on fake tensors


def test_live_bytes_matches_cpu_allocator_on_a_real_mlp():
    """On real tensors LiveBytes (block 1) and the CPU allocator's byte count agree on an MLP step (no kernel
    workspaces here); validate() does the same on the real architectures."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 10))
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))

    def step():
        F.cross_entropy(mlp(x), y).backward()
    step()                                             # .grad exists: the measured step only accumulates into it
    with scale.LiveBytes(block=1) as mem:
        mem.track([*mlp.parameters(), *(p.grad for p in mlp.parameters()), x, y])   # what exists before
        start = mem.live
        step()
    est = mem.peak - start
    meas = scale.allocator_peak(step)
    assert abs(est / meas - 1) < 0.05, (est, meas)


def test_usable_bytes_leave_context_and_fragmentation():
    assert scale.usable_bytes(80) < 80 * 2 ** 30 and scale.usable_bytes(24) < scale.usable_bytes(40)
    assert scale.fits(int(scale.usable_bytes(40)))  == {"24GB": False, "40GB": True, "80GB": True}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit without CUDA")
def test_gpu_check_without_cuda_exits_with_one_line():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py")], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0] and "Traceback" not in r.stderr
