"""Tests for embedders.py and predictors.py (App. A.2 of arXiv 2406.18864; ORCA's src/embedder.py).

Oracles: explicit per-patch Linear maps, brute-force loops for the heads, torchvision's resize, the
library tensors of the source bodies (timm / transformers), and float64 central finite differences for
the second-order gradient through the encoder. Bodies are the tiny random-init variants of backbones.py.
"""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import backbones
from embedders import (Embedder1D, Embedder2D, EmbedderError, build_embedder, compute_stack_num,
                       init_embedder_from_source)
from predictors import (ClassificationHead, DenseHead1D, DenseHead2D, PredictorError, TargetModel,
                        build_predictor, build_target_model)

# ---------------------------------------------------------------------------------------------------
# The paper's 18 task shapes (Tables 8 and 10; per-sample shapes as the NAS-Bench-360 and PDEBench files hold them; 1D target_seq_len,
# stack_num and token counts from ORCA's configs/*.yaml and Embeddings1D in src/embedder.py)
# ---------------------------------------------------------------------------------------------------
# name, input_shape, output, K (point) / output_shape (dense)
TASKS_2D = [
    ("cifar100",      (3, 32, 32),    "point", 100),
    ("spherical",     (3, 60, 60),    "point", 100),
    ("ninapro",       (1, 16, 52),    "point", 18),
    ("fsd50k",        (1, 96, 102),   "point", 200),
    ("darcy_nb360",   (3, 85, 85),    "dense", (1, 85, 85)),
    ("psicov",        (57, 512, 512), "dense", (1, 512, 512)),
    ("cosmic",        (1, 128, 128),  "dense", (1, 128, 128)),
    ("pde_darcy",     (1, 64, 64),    "dense", (1, 64, 64)),
    ("shallow_water", (1, 128, 128),  "dense", (1, 128, 128)),
    ("diff_react_2d", (1, 128, 128),  "dense", (1, 128, 128)),
]
# name, input_shape, output, K / output_shape, target_seq_len, ORCA stack_num, ORCA "Tokens"
TASKS_1D = [
    ("ecg",             (1, 1000), "point", 4,         64,  20, 50),
    ("satellite",       (1, 46),   "point", 24,        512, 1,  46),
    ("deepsea",         (4, 1000), "point", 36,        512, 2,  500),
    ("advection",       (1, 256),  "dense", (1, 256),  512, 1,  256),
    # Burgers: ORCA declares L = 256 with tsl 128 (-> stack_num 2) but the data has L = 1024; with the true
    # length, tsl 512 reproduces ORCA's 512 tokens (tsl 128 would give stack_num 8). See test below.
    ("burgers",         (1, 1024), "dense", (1, 1024), 512, 2,  512),
    ("diff_react_1d",   (1, 1024), "dense", (1, 1024), 256, 4,  256),
    ("diff_sorption",   (1, 1024), "dense", (1, 1024), 32,  32, 32),
    ("navier_stokes_1d", (1, 3072), "dense", (1, 3072), 128, 24, 128),
]
assert len(TASKS_2D) + len(TASKS_1D) == 18


def make_spec(name, dim, input_shape, output, k_or_shape, tsl=None):
    """A duck-typed TaskSpec with the attributes predictors.py reads."""
    if output == "point":
        num_classes, output_shape = k_or_shape, (k_or_shape,)
    else:
        num_classes, output_shape = k_or_shape[0], tuple(k_or_shape)
    return SimpleNamespace(name=name, dim=dim, input_shape=tuple(input_shape), output=output,
                           num_classes=num_classes, output_shape=output_shape, target_seq_len=tsl)


def expected_out(spec, batch=2):
    return (batch, spec.num_classes) if spec.output == "point" else (batch, *spec.output_shape)


# ---------------------------------------------------------------------------------------------------
# Tiny bodies (built once per module)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return {n: backbones.build_backbone(n, tiny=True, pretrained=False).eval()
            for n in ("swin_base", "vit_base", "clip_vit_b16", "roberta_base")}


@pytest.fixture(scope="module")
def roberta514(tmp_path_factory):
    """Tiny RoBERTa with roberta-base's 514 position rows (512 usable), so every 1D task fits."""
    import transformers
    cfg = dict(backbones.BACKBONES["roberta_base"].tiny, max_position_embeddings=514)
    torch.manual_seed(1)
    lib = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**cfg, attn_implementation="eager"))
    folder = tmp_path_factory.mktemp("roberta514")
    lib.save_pretrained(folder)
    return backbones.build_backbone(str(folder)).eval()


# ---------------------------------------------------------------------------------------------------
# Every task shape through embedder -> encoder -> predictor
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["swin_base", "vit_base", "clip_vit_b16"])
def test_2d_task_shapes(tiny, body):
    source = tiny[body]
    for name, in_shape, output, k in TASKS_2D:
        spec = make_spec(name, "2d", in_shape, output, k)
        model = build_target_model(spec, source, init="source").eval()
        assert model.encoder is source.encoder
        assert model.embedder.num_tokens == (source.image_size // source.patch_size) ** 2
        with torch.no_grad():
            out = model(torch.randn(2, *in_shape))
        assert out.shape == expected_out(spec), (body, name, out.shape)
        assert torch.isfinite(out).all()


def test_1d_task_shapes_and_orca_token_counts(roberta514):
    source = roberta514
    assert source.max_tokens == 512
    for name, in_shape, output, k, tsl, stack_num, tokens in TASKS_1D:
        spec = make_spec(name, "1d", in_shape, output, k, tsl)
        model = build_target_model(spec, source, init="source").eval()
        assert (model.embedder.stack_num, model.embedder.num_tokens) == (stack_num, tokens), name
        with torch.no_grad():
            out = model(torch.randn(2, *in_shape))
        assert out.shape == expected_out(spec), (name, out.shape)
        assert torch.isfinite(out).all()


def test_stack_num_rule():
    # ORCA's arithmetic on the *declared* Burgers length: L = 256, tsl = 128 -> stack_num 2 (512 tokens of
    # the real 1024-long input); the true length needs tsl >= 512 for the same 512 tokens.
    assert compute_stack_num(256, 128) == 2 and compute_stack_num(1024, 128) == 8
    assert compute_stack_num(1024, 512) == 2
    for L, tsl in [(1000, 64), (46, 512), (3072, 128), (997, 10), (1024, 1)]:
        s = compute_stack_num(L, tsl)
        assert L % s == 0 and L // s <= tsl
        assert all(L % i or L // i > tsl for i in range(1, s))   # smallest such divisor (brute force)
    assert compute_stack_num(997, 10) == 997                    # a prime falls back to one token


def test_1d_too_many_tokens_is_a_clear_error(tiny):
    source = tiny["roberta_base"]                               # 130 position rows -> 128 tokens
    with pytest.raises(EmbedderError, match="at most 128"):
        build_embedder(source, 4, seq_len=1000, target_seq_len=512)
    assert build_embedder(source, 4, seq_len=1000).num_tokens <= 128   # tsl defaults to max_tokens


def test_modality_mismatch_is_a_clear_error(tiny):
    spec = make_spec("ecg", "1d", (1, 1000), "point", 4, 64)
    with pytest.raises(PredictorError, match="1d"):
        build_target_model(spec, tiny["swin_base"])


def test_target_model_composition_and_state_dict(tiny):
    source = tiny["swin_base"]
    spec = make_spec("cosmic", "2d", (1, 128, 128), "dense", (1, 128, 128))
    model = build_target_model(spec, source).eval()
    assert isinstance(model, TargetModel) and model.encoder is source.encoder   # shared, not copied
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        ref = model.predictor(source.encoder(model.embedder(x)))
        assert torch.equal(model(x), ref)
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"embedder", "encoder", "predictor"}
    assert {k[len("encoder."):] for k in keys if k.startswith("encoder.")} == set(source.encoder.state_dict())


# ---------------------------------------------------------------------------------------------------
# Embedders against explicit oracles
# ---------------------------------------------------------------------------------------------------
def test_embedder2d_equals_linear_on_flattened_patches():
    torch.manual_seed(0)
    C, D, p, S = 2, 6, 4, 12
    emb = Embedder2D(C, D, patch_size=p, image_size=S)
    with torch.no_grad():
        emb.norm.weight.normal_(), emb.norm.bias.normal_()
    x = torch.randn(3, C, S, S)
    W = emb.projection.weight.reshape(D, C * p * p)             # e_2D as a Linear on R^{C·p²}
    g = S // p
    tokens = []
    for r in range(g):                                          # row-major over the patch grid
        for q in range(g):
            patch = x[:, :, r * p:(r + 1) * p, q * p:(q + 1) * p].reshape(3, C * p * p)
            tokens.append(patch @ W.T + emb.projection.bias)
    ref = F.layer_norm(torch.stack(tokens, 1), (D,), emb.norm.weight, emb.norm.bias, eps=1e-5)
    torch.testing.assert_close(emb(x), ref, rtol=1e-5, atol=1e-5)
    assert emb(x).shape == (3, g * g, D) and emb.num_tokens == g * g


def test_embedder2d_resize_matches_torchvision():
    from torchvision.transforms import functional as TF
    torch.manual_seed(0)
    emb = Embedder2D(3, 8, patch_size=4, image_size=32)
    for H, W in [(20, 45), (64, 64)]:                           # up- and down-sampling
        x = torch.randn(2, 3, H, W)
        ref = emb(TF.resize(x, [32, 32], antialias=False))      # ORCA's torchvision Resize on tensors
        torch.testing.assert_close(emb(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(EmbedderError, match=r"\(B, 3, H, W\)"):
        emb(torch.randn(2, 4, 32, 32))


def test_embedder1d_against_loop():
    torch.manual_seed(0)
    C, L, D, tsl = 3, 12, 5, 4
    emb = Embedder1D(C, L, D, tsl)
    s, T = emb.stack_num, emb.num_tokens
    assert (s, T) == (3, 4)
    with torch.no_grad():
        emb.position_embeddings.normal_(), emb.norm.weight.normal_(), emb.norm.bias.normal_()
    x = torch.randn(2, C, L)
    W = emb.projection.weight.reshape(D, C * s)
    ref = torch.stack([F.layer_norm(x[:, :, t * s:(t + 1) * s].reshape(2, C * s) @ W.T + emb.projection.bias,
                                    (D,), emb.norm.weight, emb.norm.bias) + emb.position_embeddings[t]
                       for t in range(T)], 1)                   # LayerNorm first, then + p_t (ORCA)
    torch.testing.assert_close(emb(x), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Initialisation: Finetuning++ copies what it claims; random init does not
# ---------------------------------------------------------------------------------------------------
def _perturb_(*modules):
    """Give the source norms non-default values so 'copied' and 'left at 1/0' are distinguishable."""
    with torch.no_grad():
        for m in modules:
            m.weight.normal_(), m.bias.normal_()


def test_finetuning_pp_2d_swin(tiny):
    source = copy.deepcopy(tiny["swin_base"])                    # the norms get perturbed below
    pe = source.library_model.patch_embed                       # timm PatchEmbed: .proj conv, .norm LN
    _perturb_(pe.norm)
    C = 5                                                       # wraps around the 3 source channels
    emb = build_embedder(source, C)
    W_src = pe.proj.weight                                      # (D, 3, 4, 4)
    assert not any(torch.equal(emb.projection.weight[:, c], W_src[:, c % 3]) for c in range(C))
    assert not torch.equal(emb.norm.weight, pe.norm.weight)
    names = init_embedder_from_source(emb, source)
    assert names == ["projection.weight", "projection.bias", "norm.weight", "norm.bias"]
    for c in range(C):                                          # channel c <- source channel c mod 3, unscaled
        assert torch.equal(emb.projection.weight[:, c], W_src[:, c % 3])
    assert torch.equal(emb.projection.bias, pe.proj.bias)
    assert torch.equal(emb.norm.weight, pe.norm.weight) and torch.equal(emb.norm.bias, pe.norm.bias)
    # a copy, not shared storage: training the target embedder must not move the source embedder
    assert emb.projection.weight.data_ptr() != W_src.data_ptr()
    # with 3 channels Finetuning++ reproduces the source patch embedding exactly (same resize aside)
    x = torch.randn(2, 3, source.image_size, source.image_size)
    emb3 = build_embedder(source, 3)
    init_embedder_from_source(emb3, source)
    with torch.no_grad():
        torch.testing.assert_close(emb3(x), source.source_embedder(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body", ["vit_base", "clip_vit_b16"])
def test_finetuning_pp_2d_vit_clip(tiny, body):
    source = tiny[body]
    proj = source.library_model.patch_embed.proj
    emb = build_embedder(source, 2)
    names = init_embedder_from_source(emb, source)
    for c in range(2):
        assert torch.equal(emb.projection.weight[:, c], proj.weight[:, c])
    if proj.bias is None:                                       # CLIP: bias-free patch conv
        assert names == ["projection.weight"] and torch.count_nonzero(emb.projection.bias) == 0
    else:
        assert names == ["projection.weight", "projection.bias"]
        assert torch.equal(emb.projection.bias, proj.bias)
    # ViT/CLIP have no patch-embedding LayerNorm: ours stays at 1/0
    assert torch.equal(emb.norm.weight, torch.ones_like(emb.norm.weight))
    assert torch.equal(emb.norm.bias, torch.zeros_like(emb.norm.bias))


def test_finetuning_pp_1d_roberta(roberta514):
    source = copy.deepcopy(roberta514)                          # the LayerNorm gets perturbed below
    emb_lib = source.library_model.roberta.embeddings
    _perturb_(emb_lib.LayerNorm)
    spec = make_spec("ecg", "1d", (1, 1000), "point", 4, 64)
    rand = build_target_model(spec, source, init="random").embedder
    srcinit = build_target_model(spec, source, init="source").embedder
    T = srcinit.num_tokens
    # RoBERTa numbers real positions from padding_idx + 1 = 2: token t <- row t + 2 (ORCA does the same)
    pos_rows = emb_lib.position_embeddings.weight[2:2 + T]
    assert torch.equal(srcinit.position_embeddings, pos_rows)
    assert torch.equal(rand.position_embeddings, pos_rows)       # positions copied in both branches (ORCA)
    assert torch.equal(srcinit.norm.weight, emb_lib.LayerNorm.weight)
    assert torch.equal(srcinit.norm.bias, emb_lib.LayerNorm.bias)
    assert not torch.equal(rand.norm.weight, emb_lib.LayerNorm.weight)
    assert torch.equal(rand.norm.weight, torch.ones_like(rand.norm.weight))
    emb = build_embedder(source, 1, seq_len=1000, target_seq_len=64)
    assert init_embedder_from_source(emb, source) == ["norm.weight", "norm.bias", "position_embeddings"]


def test_random_init_statistics(roberta514, tiny):
    torch.manual_seed(0)
    e2 = build_embedder(tiny["swin_base"], 64)
    w = e2.projection.weight
    assert abs(w.std().item() - 0.02) < 0.002 and torch.count_nonzero(e2.projection.bias) == 0
    e1 = build_embedder(roberta514, 8, seq_len=64, target_seq_len=4)      # Conv1d(8, 64, 16)
    fan_in, fan_out = 8 * 16, 64 * 16
    bound = math.sqrt(2.0) * math.sqrt(6.0 / (fan_in + fan_out))         # xavier_uniform, gain √2
    w = e1.projection.weight
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound


# ---------------------------------------------------------------------------------------------------
# Predictors against brute-force references
# ---------------------------------------------------------------------------------------------------
def _adaptive_bins(n_in, n_out):
    return [(math.floor(i * n_in / n_out), math.ceil((i + 1) * n_in / n_out)) for i in range(n_out)]


def test_classification_head_against_mean_linear():
    torch.manual_seed(0)
    head = ClassificationHead(7, 3)
    z = torch.randn(2, 5, 7)
    z_bar = sum(z[:, n] for n in range(5)) / 5                   # average pooling over N' tokens
    ref = z_bar @ head.linear.weight.T + head.linear.bias
    torch.testing.assert_close(head(z), ref)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])      # real tokens only under a mask
    z_bar = torch.stack([z[b, :int(mask[b].sum())].sum(0) / mask[b].sum() for b in range(2)])
    torch.testing.assert_close(head(z, mask), z_bar @ head.linear.weight.T + head.linear.bias)
    assert ClassificationHead.return_prefix and not DenseHead2D.return_prefix and not DenseHead1D.return_prefix
    with pytest.raises(PredictorError, match="no parameters"):
        ClassificationHead(7, 3, readout=torch.nn.Linear(7, 7))


# ---------------------------------------------------------------------------------------------------
# Readout: the body's own (Swin / BERT-family mean, ViT/CLIP final-norm class token), one module for all
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ["swin_base", "vit_base", "clip_vit_b16"])
def test_readout_is_the_checkpoints_own(tiny, body):
    """Oracle: timm's own pre-logits feature, forward_head(forward_features(x), pre_logits=True) (Swin: average
    pool; the in21k ViT-B and CLIP ViT-B/16 tags: global_pool "token", fc_norm Identity, i.e. the class token)."""
    source = tiny[body]
    lib = source.library_model
    if body != "swin_base":
        assert lib.global_pool == "token" and source.feature_pool.pool == "token"
    x = torch.randn(2, 3, source.image_size, source.image_size)
    with torch.no_grad():
        ref = lib.forward_head(lib.forward_features(x), pre_logits=True)         # (B, d)
        torch.testing.assert_close(source.pooled_features(x), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("body", ["vit_base", "clip_vit_b16"])
def test_vit_clip_head_reads_the_class_token(tiny, body):
    source = tiny[body]
    model = build_target_model(make_spec("cifar100", "2d", (3, 32, 32), "point", 10), source).eval()
    seen = []
    model.predictor.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        tokens = model.embedder(x)
        with_prefix = source.encoder(tokens, return_prefix=True)                 # (B, 1 + N, d)
        (head_in,) = seen
        assert head_in.shape == (2, 1 + tokens.shape[1], source.feature_dim)
        assert torch.equal(head_in, with_prefix)
        cls = with_prefix[:, 0]                                                  # final-norm class token
        torch.testing.assert_close(out, cls @ model.predictor.linear.weight.T + model.predictor.linear.bias)
        assert torch.equal(model.readout(with_prefix), cls) and torch.equal(source.readout(with_prefix), cls)
        # stage 1's functional form: encoder with return_prefix=predictor.return_prefix, then the predictor
        theta_f = dict(model.encoder.named_parameters())
        feats = functional_call(model.encoder, theta_f, (tokens,), {"return_prefix": model.predictor.return_prefix})
        assert torch.equal(model.predictor(feats), out)
        # patch tokens without the class token are refused, not silently read as "the first token"
        with pytest.raises(backbones.BackboneError, match="return_prefix=True"):
            model.predictor(source.encoder(tokens))
        # dense heads keep the patch tokens
        dense = build_target_model(make_spec("cosmic", "2d", (1, 128, 128), "dense", (1, 128, 128)), source).eval()
        y = torch.randn(2, 1, 128, 128)
        assert torch.equal(dense(y), dense.predictor(source.encoder(dense.embedder(y))))


@pytest.mark.parametrize("body", ["swin_base", "roberta_base"])
def test_mean_readout_heads_unchanged(tiny, body):
    """Swin and BERT-family point heads compute exactly what they did before the readout existed: Linear of z.mean(1)."""
    source = tiny[body]
    if body == "swin_base":
        spec = make_spec("cifar100", "2d", (3, 32, 32), "point", 10)
    else:
        spec = make_spec("ecg", "1d", (1, 1000), "point", 4, 64)
    model = build_target_model(spec, source).eval()
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        old = model.predictor.linear(source.encoder(model.embedder(x)).mean(dim=1))
        assert torch.equal(model(x), old)
        feats = source.encoder(model.embedder(x), return_prefix=True)
        assert torch.equal(model.readout(feats), feats.mean(dim=1)) and model.feature_pool is source.feature_pool


@pytest.mark.parametrize("K,out_size", [(1, (5, 4)), (2, (9, 13))])
def test_dense_head_2d_against_brute_force(K, out_size):
    torch.manual_seed(0)
    d, (g0, g1), s, B = 5, (2, 3), 2, 2
    head = DenseHead2D(d, (g0, g1), s, K, out_size)
    with torch.no_grad():
        head.decoder.bias.normal_()
    z = torch.randn(B, g0 * g1, d)
    Wl = head.decoder.weight.reshape(3 * s * s, d)
    H, W = g0 * s, g1 * s
    img = torch.zeros(B, 3, H, W)
    for n in range(g0 * g1):                                    # per-token Linear, then pixel rearrangement
        y = z[:, n] @ Wl.T + head.decoder.bias                  # (B, 3·s²)
        r, q = divmod(n, g1)
        for c in range(3):
            for i in range(s):
                for j in range(s):
                    img[:, c, r * s + i, q * s + j] = y[:, c * s * s + i * s + j]
    chan = torch.stack([img[:, a:b].mean(1) for a, b in _adaptive_bins(3, K)], 1)   # (B, K, H, W)
    ref = torch.zeros(B, K, *out_size)
    for i, (a, b) in enumerate(_adaptive_bins(H, out_size[0])):
        for j, (c0, c1) in enumerate(_adaptive_bins(W, out_size[1])):
            ref[:, :, i, j] = chan[:, :, a:b, c0:c1].mean((-1, -2))
    torch.testing.assert_close(head(z), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("C_out", [1, 2])
def test_dense_head_1d_against_loop(C_out):
    torch.manual_seed(0)
    B, T, d, s = 2, 4, 10, 3
    head = DenseHead1D(C_out, s, T * s)
    assert sum(p.numel() for p in head.parameters()) == 0
    z = torch.randn(B, T, d)
    bins = _adaptive_bins(d, C_out * s)
    ref = torch.zeros(B, C_out, T * s)
    for t in range(T):                                          # value (c, j) of token t -> position t·s + j
        for c in range(C_out):
            for j in range(s):
                a, b = bins[c * s + j]
                ref[:, c, t * s + j] = z[:, t, a:b].mean(-1)
    torch.testing.assert_close(head(z), ref)
    if C_out == 1:                                              # identical to ORCA's plain reshape
        torch.testing.assert_close(head(z), F.adaptive_avg_pool1d(z, s).reshape(B, 1, T * s))


def test_build_predictor_kinds(tiny):
    swin = tiny["swin_base"]
    p = build_predictor(swin, make_spec("darcy", "2d", (3, 85, 85), "dense", (1, 85, 85)))
    g = swin.image_size // swin.output_stride
    assert isinstance(p, DenseHead2D) and p.grid == (g, g)
    assert p.decoder.out_channels == 3 * swin.output_stride ** 2
    assert isinstance(build_predictor(swin, make_spec("c", "2d", (3, 32, 32), "point", 10)), ClassificationHead)
    with pytest.raises(PredictorError, match="stack_num"):
        build_predictor(tiny["roberta_base"], make_spec("adv", "1d", (1, 256), "dense", (1, 256), 128))


# ---------------------------------------------------------------------------------------------------
# Second order through the encoder: one virtual step θ_f' = θ_f − α ∇_θf L_in(θ_f, φ), then ∇_φ L_out(θ_f')
# ---------------------------------------------------------------------------------------------------
def _bilevel(model, x, y_task, task_loss, src_tokens, src_target, alpha):
    names_f = [n for n, _ in model.encoder.named_parameters()]

    def F_outer(phi):
        theta_f = dict(model.encoder.named_parameters())
        tokens = functional_call(model.embedder, phi, (x,))
        L_in = task_loss(model.predictor(functional_call(model.encoder, theta_f, (tokens,))), y_task)
        grads = torch.autograd.grad(L_in, [theta_f[n] for n in names_f], create_graph=True, allow_unused=True)
        # Eq. (5)-style virtual step: θ_f' = θ_f − α ∇_θf L_in(θ_f, φ)
        theta_new = {n: theta_f[n] if g is None else theta_f[n] - alpha * g for n, g in zip(names_f, grads)}
        feats = functional_call(model.encoder, theta_new, (src_tokens,))
        return ((feats - src_target) ** 2).mean()               # L_out depends on φ only through θ_f'
    return F_outer


@pytest.mark.parametrize("chain", ["2d_swin", "1d_roberta"])
def test_second_order_gradient_through_encoder(tiny, chain):
    torch.manual_seed(0)
    if chain == "2d_swin":
        source = tiny["swin_base"]
        spec = make_spec("cifar100", "2d", (3, 32, 32), "point", 10)
    else:
        source = tiny["roberta_base"]
        spec = make_spec("ecg", "1d", (1, 1000), "point", 4, 64)
    source = copy.deepcopy(source)                              # converted to float64 below
    model = build_target_model(spec, source, init="source").eval().double()
    x = torch.randn(2, *spec.input_shape, dtype=torch.float64)
    y = torch.tensor([1, 3])
    N = model.embedder.num_tokens
    src_tokens = torch.randn(2, N, source.embed_dim, dtype=torch.float64)
    with torch.no_grad():
        src_target = torch.randn_like(model.encoder(src_tokens))
    F_outer = _bilevel(model, x, y, F.cross_entropy, src_tokens, src_target, alpha=0.5)
    phi = {n: p.detach().clone().requires_grad_(True) for n, p in model.embedder.named_parameters()}
    grads = torch.autograd.grad(F_outer(phi), list(phi.values()))
    flat = torch.cat([g.flatten() for g in grads])
    assert torch.isfinite(flat).all() and flat.abs().max() > 0
    # oracle: central finite difference along a random direction (float64)
    v = {n: torch.randn_like(p) for n, p in phi.items()}
    eps = 1e-5
    plus = F_outer({n: (phi[n] + eps * v[n]).detach() for n in phi}).item()
    minus = F_outer({n: (phi[n] - eps * v[n]).detach() for n in phi}).item()
    fd = (plus - minus) / (2 * eps)
    an = sum((g * v[n]).sum() for g, n in zip(grads, phi)).item()
    assert abs(fd - an) <= 1e-5 * max(1.0, abs(an)), (fd, an)


@pytest.mark.parametrize("body", ["swin_base", "vit_base", "clip_vit_b16", "roberta_base"])
def test_functional_call_swaps_every_encoder_tensor(tiny, body):
    """functional_call(model.encoder, θ_f', ·) equals the encoder with θ_f' loaded into it. A θ_f tensor reached
    through a second path (an unregistered reference, the unwrapped library model) would keep its old value under
    functional_call and silently drop that part of the meta-gradient; this comparison would then differ."""
    torch.manual_seed(0)
    source = copy.deepcopy(tiny[body])
    if body == "roberta_base":
        spec = make_spec("ecg", "1d", (1, 1000), "point", 4, 64)
    else:
        spec = make_spec("cifar100", "2d", (3, 32, 32), "point", 10)
    model = build_target_model(spec, source, init="source").eval()
    g = torch.Generator().manual_seed(1)
    theta = {k: p.detach() + 0.1 * torch.randn(p.shape, generator=g) for k, p in model.encoder.named_parameters()}
    twin = copy.deepcopy(model)                                 # the same perturbation, loaded in place
    with torch.no_grad():
        for k, p in twin.encoder.named_parameters():
            p.copy_(theta[k])
        x = torch.randn(2, *spec.input_shape)
        tokens = model.embedder(x)
        base = model.encoder(tokens)
        swapped = functional_call(model.encoder, theta, (tokens,))
        loaded = twin.encoder(tokens)
        assert not torch.allclose(swapped, base, atol=1e-3)      # the perturbation matters
        torch.testing.assert_close(swapped, loaded, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encoder(tokens), base, rtol=0, atol=0)   # functional_call restored θ_f
        # the whole g_θ with "encoder.*" keys reaches the same tensors
        full = functional_call(model, {f"encoder.{k}": v for k, v in theta.items()}, (x,))
        torch.testing.assert_close(full, twin(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Contract with data.py's task registry (skipped while data.py is absent)
# ---------------------------------------------------------------------------------------------------
def test_registry_tasks_build(tiny, roberta514):
    data = pytest.importorskip("data")
    for name, spec in data.TASKS.items():
        source = tiny["swin_base"] if spec.dim == "2d" else roberta514
        model = build_target_model(spec, source).eval()
        x = torch.randn(2, *spec.input_shape)
        with torch.no_grad():
            out = model(x)
        assert out.shape == expected_out(spec), (name, out.shape)
